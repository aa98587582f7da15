"""deploy/: install.sh into a throwaway root, the systemd unit, Docker, Ansible, the manifest."""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from troupe import manifest as manifest_module
from troupe.config import check
from troupe.devkit.workspace.config import demo_config
from troupe.manifest import BOT_EVENTS, BOT_SCOPES, ManifestError, manifest, manifest_data
from troupe.release import write_lock
from troupe.update import (
    Layout,
    Machine,
    UpdateSource,
    apply_update,
    install,
    switch,
    write_health,
)

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


# --- install.sh ---------------------------------------------------------------------------


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


def run_install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TROUPE_")}
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        env=base | (env or {}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def install_args(root: Path, wheel: Path) -> list[str]:
    return [
        "--root",
        str(root),
        "--bot",
        BOT,
        "--source",
        str(wheel),
        "--python",
        sys.executable,
        "--pip-args",
        "--no-deps --no-index",
    ]


def token_files(where: Path, bot: str = BOT_TOKEN, app: str = APP_TOKEN) -> list[str]:
    """install.sh's options that hand over the tokens in files (mode 0600), as a user does."""
    where.mkdir(parents=True, exist_ok=True)
    args = []
    for kind, value in (("bot", bot), ("app", app)):
        path = where / f"{kind}.token"
        path.write_text(value + "\n")
        path.chmod(0o600)
        args += [f"--{kind}-token-file", str(path)]
    return args


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file with its mode, inode and mtime, the releases' too: what a no-op run keeps."""
    seen = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        seen[str(path.relative_to(root))] = (info.st_mode, info.st_ino, info.st_mtime_ns)
    return seen


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dest = tmp_path_factory.mktemp("wheels")
    return {version: fake_wheel(dest, version) for version in ("0.1.0", "0.2.0")}


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]
) -> Iterator[tuple[Path, subprocess.CompletedProcess]]:
    """One install into a throwaway root, shared by the tests that only look at it."""
    root = tmp_path_factory.mktemp("root")
    tokens = token_files(tmp_path_factory.mktemp("tokens"))
    result = run_install(*install_args(root, wheels["0.1.0"]), *tokens)
    assert result.returncode == 0, result.stdout + result.stderr
    yield root, result


def test_install_sh_is_clean_under_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "--shell=bash", str(INSTALL)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_help_lists_every_option() -> None:
    assert os.access(INSTALL, os.X_OK), "git must keep deploy/install.sh executable (100755)"
    result = run_install("--help")
    assert result.returncode == 0
    for option in ("--source", "--bot", "--root", "--dry-run", "--uninstall", "--purge"):
        assert option in result.stdout


def test_unknown_option_and_lone_purge_are_refused() -> None:
    bad = run_install("--frobnicate")
    assert bad.returncode == 1
    assert "unknown option --frobnicate" in bad.stderr
    purge = run_install("--purge", "--dry-run")
    assert purge.returncode == 1
    assert "--purge goes with --uninstall" in purge.stderr


def test_a_token_in_the_environment_is_refused_and_never_echoed() -> None:
    """Tokens come from a file or the prompt: a command line and an environment end up in
    shell history and in ps."""
    for name, value in (("TROUPE_BOT_TOKEN", BOT_TOKEN), ("TROUPE_APP_TOKEN", APP_TOKEN)):
        refused = run_install("--dry-run", env={name: value})
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1
        assert "--bot-token-file F, --app-token-file F or the prompt" in refused.stderr
        assert value not in refused.stdout + refused.stderr


def test_dry_run_prints_each_step_and_changes_nothing(
    tmp_path: Path, wheels: dict[str, Path]
) -> None:
    root = tmp_path / "root"
    tokens = token_files(tmp_path / "tokens")
    result = run_install("--dry-run", *install_args(root, wheels["0.1.0"]), *tokens)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"would run: install -d -m 0750 {root}/etc/troupe" in out
    assert f"would run: install -d -m 0750 {root}/var/lib/troupe" in out
    staging = f"{root}/opt/troupe/releases/.staging"
    assert re.search(rf"would run: \S+ -m venv {staging}\n", out)
    assert re.search(
        rf"would run: {staging}/bin/python -m pip install .*"
        rf"--no-deps --no-index {wheels['0.1.0']}",
        out,
    )
    assert f"would move {staging} to {root}/opt/troupe/releases/VERSION" in out
    assert f"would run: ln -sfn releases/VERSION {root}/opt/troupe/.venv.new" in out
    assert f"would run: mv -T {root}/opt/troupe/.venv.new {root}/opt/troupe/venv" in out
    assert f"would write: {root}/usr/local/bin/troupe (mode 0755" in out
    for written in ("federation.yaml", "troupe.env", f"{BOT}.bot.token", f"{BOT}.app.token"):
        assert f"would write: {root}/etc/troupe/{written}" in out
    for unit in ("troupe.service", "troupe-update@.service"):
        assert f"would write: {root}/etc/systemd/system/{unit} (mode 0644" in out
    assert f"would run: install -d -m 0755 {root}/etc/polkit-1/rules.d" in out
    assert f"would write: {root}/etc/polkit-1/rules.d/50-troupe.rules (mode 0644" in out
    assert "skip (--root): user troupe" in out
    assert not any(line.startswith("+ ") for line in out.splitlines())
    assert re.search(r"dry run: \d+ change\(s\) would be made", out)
    assert not root.exists()
    assert BOT_TOKEN not in out + result.stderr
    assert APP_TOKEN not in out + result.stderr


def test_dry_run_on_the_machine_itself_only_looks(tmp_path: Path) -> None:
    watched = [
        Path("/etc/troupe"),
        Path("/opt/troupe"),
        Path("/etc/systemd/system/troupe.service"),
        Path("/etc/systemd/system/troupe-update@.service"),
        Path("/etc/polkit-1/rules.d/50-troupe.rules"),
        Path("/usr/local/bin/troupe"),
    ]
    before = [p.exists() for p in watched]
    result = run_install("--dry-run", "--bot", BOT, "--python", sys.executable)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not any(line.startswith("+ ") for line in lines)
    assert "troupe check" in result.stdout or "NOT STARTED" in result.stdout
    assert [p.exists() for p in watched] == before


def test_install_into_a_root_creates_the_files_with_their_modes(
    installed: tuple[Path, subprocess.CompletedProcess],
) -> None:
    root, result = installed
    etc = root / "etc/troupe"
    assert mode(etc) == 0o750
    assert mode(root / "var/lib/troupe") == 0o750
    assert mode(root / "opt/troupe") == 0o755
    for kind, token in (("bot", BOT_TOKEN), ("app", APP_TOKEN)):
        path = etc / f"{BOT}.{kind}.token"
        assert mode(path) == 0o600
        assert path.read_text() == token + "\n"
    assert mode(etc / "federation.yaml") == 0o644
    assert (etc / "troupe.env").read_text() == f"TROUPE_BOT={BOT}\n"
    for installed_as, shipped in (
        ("etc/systemd/system/troupe.service", UNIT),
        ("etc/systemd/system/troupe-update@.service", UPDATE_UNIT),
        ("etc/polkit-1/rules.d/50-troupe.rules", RULE),
    ):
        assert mode(root / installed_as) == 0o644, installed_as
        assert (root / installed_as).read_bytes() == shipped.read_bytes(), installed_as
    assert mode(root / "etc/polkit-1/rules.d") == 0o755
    assert "skip (--root): troupe check, systemctl enable and start troupe" in result.stdout
    assert re.search(r"troupe: done, \d+ change\(s\)", result.stdout)
    assert BOT_TOKEN not in result.stdout + result.stderr
    assert APP_TOKEN not in result.stdout + result.stderr


def run_version(*argv: str | Path) -> list[str]:
    """What a fake troupe prints, run from the checkout: troupe's own package is right there,
    so a `python -m troupe` that looked in the working directory would run it instead."""
    done = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=30, check=True, cwd=REPO
    )
    return done.stdout.split()


def test_install_makes_a_release_the_venv_link_points_at(
    installed: tuple[Path, subprocess.CompletedProcess],
) -> None:
    root, result = installed
    opt = root / "opt/troupe"
    venv = opt / "venv"
    assert venv.is_symlink()
    assert os.readlink(venv) == "releases/0.1.0"
    release = opt / "releases/0.1.0"
    assert release.is_dir() and not release.is_symlink()
    assert (release / ".troupe-installed").read_text() == "0.1.0\n"
    assert sorted(p.name for p in (opt / "releases").iterdir()) == ["0.1.0"]  # no staging
    assert not (opt / "previous").exists() and not (opt / "previous").is_symlink()
    assert f"troupe 0.1.0 installed in {release}" in result.stdout
    # What the service runs, and the console script, whose first line pip wrote for the
    # staging directory: install.sh rewrote it for the release's own path.
    assert run_version(venv / "bin/python", "-P", "-m", "troupe", "--version") == [
        "troupe",
        "0.1.0",
        "--version",
    ]
    assert run_version(venv / "bin/troupe", "check") == ["troupe", "0.1.0", "check"]
    assert ".staging" not in (release / "bin/troupe").read_text()
    assert str(release) in (release / "bin/activate").read_text()
    # troupe.update reads the same layout: the release in use is 0.1.0.
    assert Layout(opt, current_name="venv").version_of(venv) == "0.1.0"


def test_usr_local_bin_troupe_is_a_wrapper_that_runs_the_current_release(
    installed: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    root, _ = installed
    wrapper = root / "usr/local/bin/troupe"
    assert not wrapper.is_symlink()
    assert mode(wrapper) == 0o755
    text = wrapper.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert 'exec /opt/troupe/venv/bin/python -P -m troupe "$@"\n' in text
    # The same script with /opt/troupe moved under the throwaway root runs that release,
    # with its arguments passed on.
    moved = tmp_path / "troupe"
    moved.write_text(text.replace("/opt/troupe/", f"{root}/opt/troupe/"))
    moved.chmod(0o755)
    assert run_version(moved, "check", "--bot", BOT) == ["troupe", "0.1.0", "check", "--bot", BOT]


def fleet_doc_block(caption: str) -> list[str]:
    """The lines of the code block that follows CAPTION in docs/fleet.md."""
    text = FLEET_DOC.read_text()
    found = re.search(re.escape(caption) + r"\n\n```\w*\n(.*?)\n```", text, re.DOTALL)
    assert found, f"docs/fleet.md has no code block after {caption}"
    return found.group(1).splitlines()


def test_the_update_unit_and_polkit_rule_are_what_docs_fleet_md_shows() -> None:
    unit = [line for line in UPDATE_UNIT.read_text().splitlines() if not line.startswith("#")]
    assert unit == fleet_doc_block("`/etc/systemd/system/troupe-update@.service`:")
    assert (
        "ExecStart=/opt/troupe/venv/bin/python -m troupe.update install %i "
        "--config /etc/troupe/federation.yaml --root /opt/troupe --state /var/lib/troupe"
    ) in unit
    assert "Type=oneshot" in unit
    rule = [line for line in RULE.read_text().splitlines() if not line.startswith("//")]
    assert rule == fleet_doc_block("`/etc/polkit-1/rules.d/50-troupe.rules`:")
    text = "\n".join(rule)
    assert 'action.id != "org.freedesktop.systemd1.manage-units"' in text
    assert 'subject.user != "troupe"' in text
    assert 'verb == "restart" && unit == "troupe.service"' in text
    # The rule's unit pattern lets through exactly the instances troupe.update starts.
    [js] = re.findall(r"/(\^troupe-update@.*?\$)/\.test\(unit\)", text)
    pattern = re.compile(js)
    for unit_name in (
        "troupe-update@0.2.0.service",
        "troupe-update@v1.2.3-rc1+b.service",
        "troupe-update@downgrade-0.1.0.service",
    ):
        assert pattern.search(unit_name), unit_name
    for unit_name in (
        "troupe.service",
        "troupe-update@.service",
        "troupe-update@-x.service",
        "troupe-update@main.service",
        "troupe-update@downgrade-main.service",
        "troupe-update@0.2.0.service.d",
        "sshd.service",
        "troupe-update@0.2.0/../x.service",
    ):
        assert not pattern.search(unit_name), unit_name


# Loads the rule the way polkitd does (a script that calls polkit.addRule), then asks it
# about each [action id, user, unit, verb] read from stdin.
POLKIT_HARNESS = """
const fs = require("fs");
let rule = null;
const polkit = {
  Result: {YES: "yes", NO: "no", NOT_HANDLED: "not_handled"},
  addRule(f) { rule = f; },
};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const asked = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(asked.map(([id, user, unit, verb]) =>
  rule({id, lookup: (key) => ({unit, verb})[key]}, {user}))));
"""


def test_the_polkit_rule_allows_the_updater_and_the_restart_and_nothing_else() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed to run the polkit rule")
    manage = "org.freedesktop.systemd1.manage-units"
    cases = {
        (manage, "troupe", "troupe-update@0.2.0.service", "start"): "yes",
        (manage, "troupe", "troupe-update@v0.3.0-rc1.service", "start"): "yes",
        (manage, "troupe", "troupe-update@downgrade-0.1.0.service", "start"): "yes",
        (manage, "troupe", "troupe-update@main.service", "start"): "not_handled",
        (manage, "troupe", "troupe.service", "restart"): "yes",
        (manage, "troupe", "troupe.service", "stop"): "not_handled",
        (manage, "troupe", "troupe.service", "start"): "not_handled",
        (manage, "troupe", "troupe-update@0.2.0.service", "stop"): "not_handled",
        (manage, "troupe", "troupe-update@0.2.0.service", "restart"): "not_handled",
        (manage, "troupe", "troupe-update@.service", "start"): "not_handled",
        (manage, "troupe", "troupe-update@0.2.0.service.d", "start"): "not_handled",
        (manage, "troupe", "x-troupe-update@0.2.0.service", "start"): "not_handled",
        (manage, "troupe", "ssh.service", "restart"): "not_handled",
        (manage, "pi", "troupe-update@0.2.0.service", "start"): "not_handled",
        (manage, "pi", "troupe.service", "restart"): "not_handled",
        ("org.freedesktop.systemd1.manage-unit-files", "troupe", "troupe.service", "restart"): (
            "not_handled"
        ),
    }
    done = subprocess.run(
        [node, "-e", POLKIT_HARNESS, str(RULE)],
        input=json.dumps([list(case) for case in cases]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert dict(zip(cases, json.loads(done.stdout), strict=True)) == cases


def test_the_starter_federation_file_is_valid_and_points_at_the_token_files(
    installed: tuple[Path, subprocess.CompletedProcess],
) -> None:
    root, _ = installed
    federation = root / "etc/troupe/federation.yaml"
    assert check(federation) == []
    data = yaml.safe_load(federation.read_text())
    assert data["bots"] == {
        BOT: {
            "bot_token": f"file:/etc/troupe/{BOT}.bot.token",
            "app_token": f"file:/etc/troupe/{BOT}.app.token",
        }
    }
    assert data["journal"] == "/var/lib/troupe/{bot}.sqlite3"


def test_the_installed_units_pass_systemd_analyze(
    installed: tuple[Path, subprocess.CompletedProcess],
) -> None:
    root, _ = installed
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # systemd-analyze follows /opt/troupe/venv/bin/python inside the root, through the
    # release, to the base Python the venv links to by its absolute path: give the root a
    # stand-in there, as a real machine has its /usr/bin/python3.
    python = root / "opt/troupe/venv/bin/python"
    while python.is_symlink():
        target = Path(os.readlink(python))
        python = root / target.relative_to("/") if target.is_absolute() else python.parent / target
    if not python.exists():
        python.parent.mkdir(parents=True, exist_ok=True)
        python.write_text("#!/bin/sh\n")
        python.chmod(0o755)
    result = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            "--recursive-errors=no",
            f"--root={root}",
            "troupe.service",
            "troupe-update@0.2.0.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ignoring" not in result.stderr, result.stderr


SECURITY_GOALS = {UNIT: 2.5, UPDATE_UNIT: 5.0}
"""The exposure each unit may have at most (issue 12); docs/security.md has the scores."""


def exposure(unit: Path) -> float:
    """systemd-analyze's overall exposure of a unit file, read offline as shipped."""
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout[-500:] + result.stderr
    return float(found.group(1))


@pytest.mark.parametrize("unit", list(SECURITY_GOALS), ids=lambda unit: unit.name)
def test_units_meet_their_systemd_analyze_security_goal(unit: Path) -> None:
    score = exposure(unit)
    assert score <= SECURITY_GOALS[unit], f"{unit.name} scores {score}"
    command = f"systemd-analyze security --offline=true deploy/{unit.name}"
    doc = (REPO / "docs/security.md").read_text()
    assert f"| `{command}` | {score:.1f} |" in doc, "docs/security.md shows another score"


def old_layout(root: Path) -> None:
    """What install.sh made before releases: /opt/troupe/venv a plain venv directory, and
    /usr/local/bin/troupe a link to its console script."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root / "opt/troupe/venv")],
        check=True,
        timeout=60,
    )
    (root / "opt/troupe/venv/old-install").write_text("the venv of an older install.sh\n")
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/troupe").symlink_to("/opt/troupe/venv/bin/troupe")


def test_install_migrates_is_idempotent_repairs_upgrades_switches_back_and_uninstalls(
    tmp_path: Path, wheels: dict[str, Path]
) -> None:
    root = tmp_path / "root"
    opt = root / "opt/troupe"
    wrapper = root / "usr/local/bin/troupe"
    old_layout(root)
    args = install_args(root, wheels["0.1.0"])
    first = run_install(*args, *token_files(tmp_path / "tokens"))
    assert first.returncode == 0, first.stderr
    assert "migrating: /opt/troupe/venv is a venv directory" in first.stdout
    assert os.readlink(opt / "venv") == "releases/0.1.0"
    assert not (opt / "venv/old-install").exists()
    assert not (opt / ".venv.old").exists()
    assert not wrapper.is_symlink() and "-m troupe" in wrapper.read_text()

    before = snapshot(root)
    again = run_install(*args, *token_files(tmp_path / "tokens"))
    assert again.returncode == 0, again.stderr
    assert "installed already" in again.stdout
    assert " -m pip " not in again.stdout  # the pinned wheel's release is found, not rebuilt
    assert again.stdout.splitlines()[-1] == "troupe: nothing to change"
    assert snapshot(root) == before

    token = root / f"etc/troupe/{BOT}.bot.token"
    (tmp_path / "rotated").write_text("xoxb-9999-rotated\n")
    token.chmod(0o644)
    repaired = run_install(*args)
    assert f"+ chmod 0600 {token}" in repaired.stdout
    assert repaired.stdout.splitlines()[-1] == "troupe: done, 1 change(s)"
    assert mode(token) == 0o600
    assert token.read_text() == BOT_TOKEN + "\n"

    rotated = run_install(*args, "--bot-token-file", str(tmp_path / "rotated"))
    assert rotated.returncode == 0, rotated.stderr
    assert token.read_text() == "xoxb-9999-rotated\n"
    assert mode(token) == 0o600
    assert "xoxb-9999-rotated" not in rotated.stdout + rotated.stderr

    (tmp_path / "wrong").write_text("xoxb-not-an-app-token\n")
    wrong = run_install(*args, "--app-token-file", str(tmp_path / "wrong"))
    assert wrong.returncode == 1
    assert "the app token must start with xapp-" in wrong.stderr
    assert "xoxb-not-an-app-token" not in wrong.stdout + wrong.stderr
    assert (root / f"etc/troupe/{BOT}.app.token").read_text() == APP_TOKEN + "\n"

    first_release = (opt / "releases/0.1.0").stat().st_ino
    upgraded = run_install(*install_args(root, wheels["0.2.0"]))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"troupe 0.2.0 installed in {opt}/releases/0.2.0" in upgraded.stdout
    assert os.readlink(opt / "venv") == "releases/0.2.0"
    assert os.readlink(opt / "previous") == "releases/0.1.0"
    assert (opt / "releases/0.2.0/.troupe-installed").read_text() == "0.2.0\n"
    assert run_version(opt / "venv/bin/python", "-P", "-m", "troupe") == ["troupe", "0.2.0"]
    assert run_version(opt / "previous/bin/python", "-P", "-m", "troupe") == ["troupe", "0.1.0"]

    # Back to 0.1.0: its release is still whole, so install.sh switches without pip.
    back = run_install(*args)
    assert back.returncode == 0, back.stderr
    assert " -m pip " not in back.stdout
    assert os.readlink(opt / "venv") == "releases/0.1.0"
    assert os.readlink(opt / "previous") == "releases/0.2.0"
    assert (opt / "releases/0.1.0").stat().st_ino == first_release

    (opt / "venv").unlink()
    (opt / "venv").write_text("not a venv\n")
    blocked = run_install(*args)
    assert blocked.returncode == 1
    assert blocked.stderr == (
        f"install.sh: {opt}/venv is neither a link nor a venv directory; "
        "move it away and run install.sh again\n"
    )
    (opt / "venv").unlink()
    assert run_install(*args).returncode == 0

    removed = run_install("--root", str(root), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    for gone in (
        "etc/systemd/system/troupe.service",
        "etc/systemd/system/troupe-update@.service",
        "etc/polkit-1/rules.d/50-troupe.rules",
        "opt/troupe",
        "usr/local/bin/troupe",
        "etc/troupe/troupe.env",
    ):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    for kept in ("etc/troupe/federation.yaml", f"etc/troupe/{BOT}.app.token", "var/lib/troupe"):
        assert (root / kept).exists(), kept
    assert run_install("--root", str(root), "--uninstall").stdout.splitlines()[-1] == (
        "troupe: nothing to change"
    )

    purged = run_install("--root", str(root), "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/troupe").exists()
    assert not (root / "var/lib/troupe").exists()
    assert "skip (--root): userdel troupe" in purged.stdout


def test_uninstall_leaves_someone_elses_usr_local_bin_troupe(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    theirs = root / "usr/local/bin/troupe"
    theirs.write_text("#!/bin/sh\necho not troupe\n")
    removed = run_install("--root", str(root), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert theirs.read_text() == "#!/bin/sh\necho not troupe\n"
    assert removed.stdout.splitlines()[-1] == "troupe: nothing to change"


def test_the_updater_switches_an_installed_machine_to_a_new_release_and_back(
    installed: tuple[Path, subprocess.CompletedProcess],
    wheels: dict[str, Path],
    tmp_path: Path,
) -> None:
    """troupe.update on the layout install.sh made (what troupe-update@0.2.0.service runs,
    with the restart and the bot's health played here), then install.sh again."""
    root = tmp_path / "root"
    shutil.copytree(installed[0], root, symlinks=True)
    layout = Layout(root / "opt/troupe", current_name="venv")
    state = root / "var/lib/troupe"
    ran: list[str] = []

    def restart() -> None:  # systemctl restart troupe: the bot starts from the venv link
        version = run_version(layout.current / "bin/python", "-P", "-m", "troupe")[1]
        ran.append(version)
        write_health(
            state,
            {"version": version, "pid": 4242, "connected": True, "plugins": ["devops"]},
        )

    source = UpdateSource(kind="wheel", value=str(wheels["0.2.0"]))
    write_lock(wheels["0.2.0"], out=tmp_path / "troupe-0.2.0.lock")
    source = source.model_copy(update={"lock": str(tmp_path / "troupe-{version}.lock")})
    result = apply_update(
        Machine(layout, state, restart, lambda: 4242),
        "0.2.0",
        lambda version: install(
            layout,
            source,
            version,
            python=str(layout.current / "bin/python"),
            pip=[sys.executable, "-m", "pip"],
            pip_args=["--no-deps", "--no-index"],
            timeout=120,
        ),
        timeout_s=20,
        poll_s=0.05,
    )
    assert result["ok"] is True, result
    assert result["from"] == "0.1.0"
    assert ran == ["0.2.0"]
    assert layout.version_of(layout.current) == "0.2.0"
    assert layout.version_of(layout.previous) == "0.1.0"
    assert (layout.release("0.2.0") / ".troupe-installed").read_text() == "0.2.0\n"

    # install.sh reads the updater's absolute links: with 0.1.0 it switches back (that
    # release is whole, so without pip) and 0.2.0 becomes previous ...
    back = run_install(*install_args(root, wheels["0.1.0"]))
    assert back.returncode == 0, back.stderr
    assert " -m pip " not in back.stdout
    assert layout.version_of(layout.current) == "0.1.0"
    assert layout.version_of(layout.previous) == "0.2.0"
    assert run_version(layout.current / "bin/python", "-P", "-m", "troupe") == ["troupe", "0.1.0"]
    # ... and where the updater's link already names the release, it has nothing to do.
    switch(layout, "0.1.0")
    assert os.readlink(layout.current) == str(layout.release("0.1.0"))
    same = run_install(*install_args(root, wheels["0.1.0"]))
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines()[-1] == "troupe: nothing to change"
    assert os.readlink(layout.current) == str(layout.release("0.1.0"))


def test_install_refuses_a_bad_bot_name_and_a_missing_wheel(
    tmp_path: Path, wheels: dict[str, Path]
) -> None:
    args = install_args(tmp_path / "root", wheels["0.1.0"])
    bad = run_install(*args, "--bot", "Kitchen_Pi")
    assert bad.returncode == 1
    assert "'kitchen_pi' is not a bot name" in bad.stderr
    missing = run_install(*install_args(tmp_path / "root", tmp_path / "nowhere.whl"))
    assert missing.returncode == 1
    assert "no wheel at" in missing.stderr


# --- the systemd unit ---------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_runs_the_bot_hardened_and_restarts_on_failure() -> None:
    unit = unit_settings()
    assert unit["ExecStart"] == [
        "/opt/troupe/venv/bin/python -m troupe run --config /etc/troupe/federation.yaml"
    ]
    assert unit["User"] == ["troupe"]
    assert unit["EnvironmentFile"] == ["/etc/troupe/troupe.env"]
    # `python -m troupe` with the bot's writable state directory as working directory: only
    # PYTHONSAFEPATH keeps a troupe/ written there from being imported as the bot's code.
    assert "PYTHONSAFEPATH=1" in unit["Environment"][0].split()
    assert unit["WorkingDirectory"] == ["/var/lib/troupe"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert unit["Type"] == ["notify"] and unit["WatchdogSec"] == ["30"]
    assert unit["DeviceAllow"] == ["char-gpiochip rw"] and unit["DevicePolicy"] == ["closed"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["/var/lib/troupe"]
    assert unit["WantedBy"] == ["multi-user.target"]
    assert "PrivateDevices" not in unit
    script = INSTALL.read_text()
    assert "readonly VENV=/opt/troupe/venv" in script
    assert "readonly RELEASES=/opt/troupe/releases" in script
    assert "readonly STATE=/var/lib/troupe" in script
    assert "TROUPE_BOT=%s" in script


# --- Docker -------------------------------------------------------------------------------


def compose_config(*args: str) -> dict[str, Any]:
    tool = require_tool("docker-compose")
    result = subprocess.run(
        [
            tool,
            "--project-directory",
            str(REPO),
            "-f",
            str(REPO / "docker-compose.yml"),
            *args,
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith(("TROUPE_", "COMPOSE_"))},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_docker_compose_config_passes_with_the_bots_and_mosquitto() -> None:
    config = compose_config()
    services = config["services"]
    assert {"mosquitto", "kitchen-pi", "hall-pi", "garage-pi"} <= set(services)
    for name in ("kitchen-pi", "hall-pi", "garage-pi"):
        bot = services[name]
        assert bot["environment"]["TROUPE_BOT"] == name
        assert bot["command"] == ["run", "--config", "/etc/troupe/federation.yaml"]
        assert "/etc/troupe:/etc/troupe:ro" in bot["volumes"]
        assert bot["read_only"] is True
        assert "profiles" not in bot
    assert services["mosquitto"]["ports"][0].startswith("127.0.0.1:")


def test_docker_compose_demo_profile_runs_the_workspace_and_simulators() -> None:
    config = compose_config("--env-file", str(DEPLOY / "demo.env"))
    services = config["services"]
    for name in ("workspace", "hue", "devices"):
        assert services[name]["profiles"] == ["demo"]
        assert services[name]["entrypoint"] == ["troupe-dev"]
    workspace = services["workspace"]
    assert workspace["command"][:3] == ["workspace", "--host", "0.0.0.0"]
    assert all(port.startswith("127.0.0.1:") for port in workspace["ports"])
    assert services["hue"]["command"][:2] == ["hardware", "hue"]
    assert services["devices"]["command"][:2] == ["hardware", "mqtt"]
    kitchen = services["kitchen-pi"]
    assert f"{DEPLOY}/demo:/etc/troupe:ro" in kitchen["volumes"]
    tokens = {app.name: app for app in demo_config().apps}
    assert kitchen["environment"]["KITCHEN_PI_BOT_TOKEN"] == tokens["kitchen-pi"].bot_token
    assert kitchen["environment"]["KITCHEN_PI_APP_TOKEN"] == tokens["kitchen-pi"].app_token


def test_the_demo_federation_is_valid_and_matches_the_compose_bots() -> None:
    federation = DEPLOY / "demo" / "federation.yaml"
    assert check(federation) == []
    roster = set(yaml.safe_load(federation.read_text())["bots"])
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    bots = {
        name
        for name, svc in compose["services"].items()
        if "TROUPE_BOT" in (svc.get("environment") or {})
    }
    assert bots == roster
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "demo.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for bot in roster:
        prefix = bot.upper().replace("-", "_")
        assert env[f"{prefix}_BOT_TOKEN"].startswith("xoxb-")
        assert env[f"{prefix}_APP_TOKEN"].startswith("xapp-")


def test_dockerfile_is_slim_multiarch_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in instructions
    assert [line for line in instructions if line.startswith("FROM")] == [
        "FROM ${PYTHON_IMAGE} AS build",
        "FROM ${PYTHON_IMAGE}",
    ]
    users = [line for line in instructions if line.startswith("USER")]
    assert users and "root" not in users[-1] and not users[-1].endswith(" 0")
    assert not re.search(r"amd64|arm64|armv7|aarch64|x86_64|--platform", "\n".join(instructions))
    assert 'ENTRYPOINT ["troupe"]' in instructions
    assert 'CMD ["run", "--config", "/etc/troupe/federation.yaml"]' in instructions
    for copied in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", text, re.MULTILINE):
        for source in copied.split():
            assert (REPO / source).exists(), source
    assert "--device /dev/gpiochip" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for needed in ("!pyproject.toml", "!README.md", "!troupe/", "!plugins/", "!hardware/"):
        assert needed in ignore


# --- Ansible ------------------------------------------------------------------------------


def test_ansible_playbook_installs_one_pi_at_a_time() -> None:
    ansible = DEPLOY / "ansible"
    [play] = yaml.safe_load((ansible / "playbook.yml").read_text())
    assert play["hosts"] == "troupe"
    assert play["serial"] == 1
    assert play["max_fail_percentage"] == 0
    assert play["become"] is True
    assert play["roles"] == ["troupe"]
    tasks = yaml.safe_load((ansible / "roles/troupe/tasks/main.yml").read_text())
    names = [task["name"] for task in tasks]
    assert "Run install.sh" in names
    assert "The bot stayed up without restarting" in names
    run = next(task for task in tasks if task["name"] == "Run install.sh")
    assert run["no_log"] is True
    assert "environment" not in run and "--bot-token-file" in run["ansible.builtin.command"]["argv"]
    staged = next(task for task in tasks if task["name"] == "Stage the tokens")
    assert staged["no_log"] is True and staged["ansible.builtin.copy"]["mode"] == "0600"
    assert names.index("Remove the staged tokens") > names.index("Run install.sh")
    copied = next(task for task in tasks if task["name"] == "Copy install.sh and the systemd unit")
    for item in copied["loop"]:
        assert (DEPLOY / item["name"]).is_file()
    assert {item["name"] for item in copied["loop"]} == {
        "install.sh",
        UNIT.name,
        UPDATE_UNIT.name,
        RULE.name,
    }
    defaults = yaml.safe_load((ansible / "roles/troupe/defaults/main.yml").read_text())
    assert defaults["troupe_deploy_dir"] == "{{ playbook_dir }}/.."
    inventory = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",))
    inventory.read(ansible / "inventory.example.ini")
    assert "troupe" in inventory.sections()
    assert {"kitchen-pi", "hall-pi", "garage-pi"} <= set(inventory["troupe"])


def test_ansible_playbook_passes_syntax_check_when_ansible_is_here() -> None:
    tool = shutil.which("ansible-playbook")
    if tool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ansible-playbook is missing; .ci/run must install ansible-core")
        pytest.skip("ansible-playbook is not installed")
    ansible = DEPLOY / "ansible"
    result = subprocess.run(
        [
            tool,
            "-i",
            str(ansible / "inventory.example.ini"),
            str(ansible / "playbook.yml"),
            "--syntax-check",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- troupe manifest ----------------------------------------------------------------------

# The keys Slack's manifest schema (version 1) allows in the sections troupe writes.
SCHEMA_KEYS = {
    "": {"_metadata", "display_information", "features", "oauth_config", "settings"},
    "_metadata": {"major_version", "minor_version"},
    "display_information": {"name", "description", "background_color", "long_description"},
    "features": {"app_home", "bot_user", "shortcuts", "slash_commands", "unfurl_domains"},
    "features.app_home": {
        "home_tab_enabled",
        "messages_tab_enabled",
        "messages_tab_read_only_enabled",
    },
    "features.bot_user": {"display_name", "always_online"},
    "oauth_config": {"scopes", "redirect_urls", "token_management_enabled"},
    "oauth_config.scopes": {"bot", "user"},
    "settings": {
        "allowed_ip_address_ranges",
        "event_subscriptions",
        "incoming_webhooks",
        "interactivity",
        "org_deploy_enabled",
        "socket_mode_enabled",
        "token_rotation_enabled",
    },
    "settings.event_subscriptions": {"request_url", "bot_events", "user_events"},
    "settings.interactivity": {"is_enabled", "request_url", "message_menu_options_url"},
}

# The scope each Slack method troupe calls needs (None: no bot scope, or not in Socket Mode).
METHOD_SCOPES: dict[str, tuple[str, ...] | None] = {
    "auth_test": None,
    "apps_connections_open": None,
    "rtm_connect": None,
    "chat_postMessage": ("chat:write",),
    "chat_update": ("chat:write",),
    "chat_delete": ("chat:write",),
    "pins_add": ("pins:write",),
    "pins_remove": ("pins:write",),
    "pins_list": ("pins:read",),
    "reactions_add": ("reactions:write",),
    "reactions_remove": ("reactions:write",),
    "reactions_get": ("reactions:read",),
    "conversations_list": ("channels:read", "groups:read"),
    "conversations_info": ("channels:read", "groups:read"),
    "conversations_history": ("channels:history", "groups:history"),
    "conversations_replies": ("channels:history", "groups:history"),
    "conversations_open": ("im:write",),
    "users_info": ("users:read",),
    "users_list": ("users:read",),
}
_SLACK_CALL = re.compile(
    r"\b(?:web|client|_client)\.((?:auth|apps|rtm|chat|pins|reactions|conversations|users|"
    r"bots|team|files|emoji|usergroups|dnd)_[A-Za-z_]+)\("
)


def walk(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield prefix, data
    for key, value in data.items():
        if isinstance(value, dict):
            yield from walk(value, f"{prefix}.{key}" if prefix else key)


def test_manifest_is_yaml_with_the_scopes_and_events() -> None:
    data = yaml.safe_load(manifest(BOT))
    assert data == manifest_data(BOT)
    assert data["display_information"]["name"] == BOT
    assert data["features"]["bot_user"]["display_name"] == BOT
    assert data["oauth_config"]["scopes"]["bot"] == sorted(data["oauth_config"]["scopes"]["bot"])
    assert set(data["oauth_config"]["scopes"]["bot"]) == {
        "chat:write",
        "pins:read",
        "pins:write",
        "reactions:read",
        "reactions:write",
        "channels:history",
        "channels:read",
        "groups:history",
        "groups:read",
        "im:history",
        "im:read",
        "im:write",
        "users:read",
        "app_mentions:read",
    }
    assert set(data["settings"]["event_subscriptions"]["bot_events"]) == {
        "message.channels",
        "message.groups",
        "message.im",
        "app_mention",
        "pin_added",
        "pin_removed",
        "reaction_added",
        "reaction_removed",
    }
    settings = data["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["org_deploy_enabled"] is False
    assert settings["interactivity"] == {"is_enabled": False}
    assert "request_url" not in settings["event_subscriptions"]
    assert data["features"]["app_home"]["messages_tab_enabled"] is True


def test_manifest_keeps_to_slacks_schema() -> None:
    data = manifest_data("a-very-long-but-allowed-bot-name-35")
    for path, section in walk(data):
        if path in SCHEMA_KEYS:
            assert set(section) <= SCHEMA_KEYS[path], path
    assert data["_metadata"]["major_version"] == 1
    info = data["display_information"]
    assert 1 <= len(info["name"]) <= 35
    assert 1 <= len(info["description"]) <= 140
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", info["background_color"])
    assert 1 <= len(data["features"]["bot_user"]["display_name"]) <= 80
    for scope in data["oauth_config"]["scopes"]["bot"]:
        assert len(scope) <= 50
    events = data["settings"]["event_subscriptions"]["bot_events"]
    assert len(events) == len(set(events))
    with pytest.raises(ManifestError, match="longer than the 35 characters"):
        manifest_data("x" * 36)


def test_manifest_grants_every_slack_method_troupe_calls() -> None:
    sources = [*(REPO / "troupe").glob("*.py"), *(REPO / "troupe/transports").glob("*.py")]
    sources += list((REPO / "plugins").glob("*.py"))
    called = {m for path in sources for m in _SLACK_CALL.findall(path.read_text())}
    assert "pins_add" in called
    unknown = called - set(METHOD_SCOPES)
    assert not unknown, f"add these methods' scopes to BOT_SCOPES and METHOD_SCOPES: {unknown}"
    for method in called:
        for scope in METHOD_SCOPES[method] or ():
            assert scope in BOT_SCOPES, (method, scope)
    assert set(BOT_EVENTS) >= {"message.channels", "pin_added", "reaction_added"}


def test_manifest_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manifest_module.main([BOT]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == manifest_data(BOT)

    assert manifest_module.main(["Kitchen_Pi"]) == 2
    assert "is not a bot name" in capsys.readouterr().err

    federation = DEPLOY / "demo" / "federation.yaml"
    assert manifest_module.main(["hall-pi", "--config", str(federation)]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert "federation demo" in data["display_information"]["description"]

    assert manifest_module.main(["cellar-pi", "--config", str(federation)]) == 2
    err = capsys.readouterr().err
    assert "'cellar-pi' is not a bot in the roster" in err
    assert "kitchen-pi, hall-pi, garage-pi" in err

    broken = tmp_path / "broken.yaml"
    broken.write_text("federation: home\n")
    assert manifest_module.main([BOT, "--config", str(broken)]) == 2
    assert "slack" in capsys.readouterr().err


def test_manifest_refuses_rtm_and_names_the_shared_app(tmp_path: Path) -> None:
    from troupe.config import load

    base = (DEPLOY / "demo" / "federation.yaml").read_text()
    rtm = tmp_path / "rtm.yaml"
    rtm.write_text(base.replace("mode: app-per-bot", "mode: rtm\n  bot_token: env:CLASSIC_TOKEN"))
    with pytest.raises(ManifestError, match="classic Slack app"):
        manifest_data("home", load(rtm))
    shared = tmp_path / "shared.yaml"
    shared.write_text(
        base.replace(
            "mode: app-per-bot",
            "mode: shared-app\n  bot_token: env:SHARED_BOT\n  app_token: env:SHARED_APP",
        ).replace(
            "mqtt: {host: mosquitto, port: 1883}",
            "mqtt: {host: mosquitto, bus: true, bus_key: env:BUS_KEY}",
        )
    )
    data = manifest_data("home", load(shared))
    assert data["display_information"]["name"] == "home"
    assert "shared by every troupe bot" in data["display_information"]["description"]
