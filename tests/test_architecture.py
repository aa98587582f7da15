"""The tree's promise (docs/architecture.md): the runtime never reaches into the dev kit."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleetkit import write_federation
from troupe.bot import Bot
from troupe.devkit.faults import DieAfterClaim, chaos_bot

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = [
    path
    for folder in ("troupe", "plugins", "hardware")
    for path in (ROOT / folder).rglob("*.py")
    if "devkit" not in path.relative_to(ROOT).parts
]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_runtime_list_is_the_whole_package() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in RUNTIME}
    assert {"troupe/bot.py", "troupe/runner.py", "plugins/gpio_relay.py"} <= names
    assert not any(name.startswith("troupe/devkit/") for name in names)


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_runtime_module_imports_the_devkit(path: Path) -> None:
    devkit = {name for name in _imports(path) if name.startswith("troupe.devkit")}
    assert devkit == set(), f"{path.name} imports {sorted(devkit)}"


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_runtime_module_reads_the_fault_switches(path: Path) -> None:
    text = path.read_text()
    assert "TROUPE_FAULTS" not in text and "TROUPE_TIMER_SCALE" not in text


def test_the_chaos_bot_only_overrides_the_bots_seams() -> None:
    chaos = chaos_bot(["die-after-claim", "die-mid-action"], timer_scale=60)
    assert issubclass(chaos, Bot)
    overridden = {name for name in vars(chaos) if not name.startswith("__")}
    assert overridden == {"_claim_lock", "_start_drivers", "_timer_delay"}
    assert chaos._timer_delay(chaos.__new__(chaos), 60.0) == pytest.approx(1.0)
    assert isinstance(chaos._claim_lock(chaos.__new__(chaos), object()), DieAfterClaim)  # type: ignore[arg-type]
    plain = chaos_bot([])
    assert plain._claim_lock(plain.__new__(plain), lock := object()) is lock  # type: ignore[arg-type]


def test_an_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        chaos_bot(["die-sometimes"])


RUN_A_BOT = """\
import asyncio, json, sys
import troupe.cli, troupe.doctor, troupe.slackmq
import troupe.transports.rtm, troupe.transports.socketmode
import troupe.plugins.counter, troupe.plugins.gpio_relay, troupe.plugins.hue, troupe.plugins.mqtt
from troupe.config import load
from troupe.runner import build_bot

async def main():
    bot = build_bot(load(sys.argv[1]), "kitchen-pi", journal_path=sys.argv[2])
    await bot.start()
    connected = bot.transport.connected
    await bot.stop()
    return connected

connected = asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "aiohttp")
print(json.dumps({"connected": connected, "aiohttp": loaded}))
"""


def test_a_running_bot_never_loads_aiohttp(tmp_path: Path, workspace) -> None:
    """aiohttp costs a Pi Zero about 9 MB and a tenth of a CPU-second (bench/reports/
    footprint.md): a bot's whole run path (the CLI, the runner, both transports, every
    driver, the doctor) and a Socket Mode start and stop go without it. The development
    kit's workspace and the hardware simulators may use it."""
    path = write_federation(tmp_path, workspace.api_url)
    cmd = [sys.executable, "-c", RUN_A_BOT, str(path), str(tmp_path / "kitchen.sqlite3")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen == {"connected": True, "aiohttp": []}
