"""The tree's promise (docs/architecture.md): the runtime never reaches into the dev kit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
