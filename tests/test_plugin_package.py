"""docs/plugins.md, followed to the letter: both example packages are built and installed
offline, `troupe check` accepts a file that uses them, and a bot runs them."""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pipekit import fleet

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
FILE = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)```", re.DOTALL)
DEVICES = """\
devices:
  hall light: {kind: light, area: hall, driver: counter}
  desk lamp: {kind: light, area: office, driver: toy, dims: true}
areas: {hall: [], office: [], kitchen: []}
"""


def _unpack(into: Path) -> list[Path]:
    """Write every `file:` block of the guide under `into`; the package folders."""
    files = {m["path"]: m["body"] for m in FILE.finditer(GUIDE.read_text())}
    assert {"troupe-hello/pyproject.toml", "troupe-toy/troupe_toy.py"} <= files.keys()
    for name, body in files.items():
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_text(body)
    return sorted({(into / name).parent for name in files})


def _install(packages: list[Path], target: Path) -> None:
    """pip builds each package with this environment's setuptools: no network at all."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
        + ["--no-build-isolation", "--disable-pip-version-check", "--target", str(target)]
        + [str(p) for p in packages],
        check=True,
        capture_output=True,
        timeout=180,
    )


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The guide's packages installed into a folder put on sys.path, as pip on a Pi would."""
    target = tmp_path / "site"
    _install(_unpack(tmp_path / "src"), target)
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    yield target
    for name in ("troupe_hello", "troupe_toy"):
        sys.modules.pop(name, None)


async def _check(path: Path, target: Path) -> tuple[int, str]:
    """`troupe check` in its own process, with the installed packages on its path."""
    code = f"import sys; sys.path.insert(0, {str(target)!r}); from troupe.cli import main"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code + "; sys.exit(main())",
        "check",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_the_guides_plugins_install_pass_check_and_run(
    tmp_path: Path, installed: Path
) -> None:
    async with fleet(tmp_path, start=("kitchen-pi",), devices=DEVICES) as f:
        path = tmp_path / "federation.yaml"
        code, out = await _check(path, installed)
        assert (code, out.strip()) == (0, f"{path}: ok")
        assert "troupe_hello" in f.bots["kitchen-pi"].plugins.modules  # from its entry point

        ts = await f.say("hello Alice")
        assert await f.answered(ts) == ["Hello Alice, from kitchen-pi!"]
        ts = await f.say("turn on the desk lamp")
        assert await f.answered(ts) == ["Turned on the desk lamp."]
        ts = await f.say("set the desk lamp to 40%")
        assert await f.answered(ts) == ["Set the desk lamp to 40%."]
        ts = await f.say("is the desk lamp on")
        assert await f.answered(ts) == ["The desk lamp is on, 40%."]

        bad = tmp_path / "misspelt.yaml"
        bad.write_text(path.read_text().replace("dims: true", "dim: true"))
        code, out = await _check(bad, installed)
        assert code == 1
        said = "'dim' is not an option of the toy driver; did you mean 'dims'?"
        assert re.fullmatch(
            rf"{re.escape(str(bad))}:\d+: devices\.desk lamp\.dim: {re.escape(said)}\n", out
        )


async def test_the_guides_plugin_test_passes(installed: Path) -> None:
    test = installed.parent / "src" / "troupe-hello" / "test_hello.py"
    namespace: dict[str, object] = {}
    exec(compile(test.read_text(), str(test), "exec"), namespace)
    await namespace["test_hello"]()  # type: ignore[operator]
