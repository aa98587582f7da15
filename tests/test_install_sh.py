"""deploy/install.sh into a throwaway root: options, dry runs, files and modes, releases,
migration, upgrades, the updater and uninstall."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from deploykit import (
    APP_TOKEN,
    BOT,
    BOT_TOKEN,
    INSTALL,
    REPO,
    RULE,
    UNIT,
    UPDATE_UNIT,
    fake_wheel,
    require_tool,
)

from troupe.config import check
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
