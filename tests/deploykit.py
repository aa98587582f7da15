"""Test support for deploy/: where its files are, a bot and its tokens, and tools CI has."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
UNIT = DEPLOY / "troupe.service"
UPDATE_UNIT = DEPLOY / "troupe-update@.service"
RULE = DEPLOY / "50-troupe.rules"
FLEET_DOC = REPO / "docs" / "fleet.md"
BOT = "kitchen-pi"
BOT_TOKEN = "xoxb-1111-2222-sekrit"
APP_TOKEN = "xapp-1-A0-3333-sekrit"


def require_tool(name: str) -> str:
    """The tool's path; in CI a missing tool fails the test, elsewhere it skips it."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is not installed; .ci/run must apt-get install it")
    pytest.skip(f"{name} is not installed")


def fake_wheel(dest: Path, version: str) -> Path:
    """A tiny wheel named troupe whose `troupe` script and `python -m troupe` print its
    version: pip installs it offline in a second, where the real package would need its
    dependencies from an index."""
    info = f"troupe-{version}.dist-info"
    files = {
        "troupe/__init__.py": f'__version__ = "{version}"\n',
        "troupe/__main__.py": "from troupe.cli import main\n\nraise SystemExit(main())\n",
        "troupe/cli.py": (
            "import sys\nfrom troupe import __version__\n\n\n"
            "def main():\n    print('troupe', __version__, *sys.argv[1:])\n    return 0\n"
        ),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: troupe\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\ntroupe = troupe.cli:main\n",
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={b64},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = dest / f"troupe-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel
