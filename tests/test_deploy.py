"""deploy/: install.sh into a throwaway root, the systemd unit, Docker, Ansible, the manifest."""

from __future__ import annotations

import base64
import configparser
import hashlib
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
from troupe.manifest import BOT_EVENTS, BOT_SCOPES, ManifestError, manifest, manifest_data
from troupe.workspace.config import demo_config

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
UNIT = DEPLOY / "troupe.service"
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
    """A tiny wheel named troupe whose `troupe` script prints its version: pip installs it
    offline in a second, where the real package would need its dependencies from an index."""
    info = f"troupe-{version}.dist-info"
    files = {
        "troupe/__init__.py": f'__version__ = "{version}"\n',
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


def tokens_env() -> dict[str, str]:
    return {"TROUPE_BOT_TOKEN": BOT_TOKEN, "TROUPE_APP_TOKEN": APP_TOKEN}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file outside the venv with its mode, inode and mtime: what a no-op run keeps."""
    seen = {}
    for path in sorted(root.rglob("*")):
        if "venv" in path.relative_to(root).parts:
            continue
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
    result = run_install(*install_args(root, wheels["0.1.0"]), env=tokens_env())
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


def test_dry_run_prints_each_step_and_changes_nothing(
    tmp_path: Path, wheels: dict[str, Path]
) -> None:
    root = tmp_path / "root"
    result = run_install("--dry-run", *install_args(root, wheels["0.1.0"]), env=tokens_env())
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"would run: install -d -m 0750 {root}/etc/troupe" in out
    assert f"would run: install -d -m 0750 {root}/var/lib/troupe" in out
    assert re.search(rf"would run: \S+ -m venv {root}/opt/troupe/venv", out)
    assert re.search(
        rf"would run: {root}/opt/troupe/venv/bin/python -m pip install .*"
        rf"--no-deps --no-index {wheels['0.1.0']}",
        out,
    )
    assert f"would run: ln -sfn /opt/troupe/venv/bin/troupe {root}/usr/local/bin/troupe" in out
    for written in ("federation.yaml", "troupe.env", f"{BOT}.bot.token", f"{BOT}.app.token"):
        assert f"would write: {root}/etc/troupe/{written}" in out
    assert f"would write: {root}/etc/systemd/system/troupe.service (mode 0644" in out
    assert "skip (--root): user troupe" in out
    assert not any(line.startswith("+ ") for line in out.splitlines())
    assert re.search(r"dry run: \d+ change\(s\) would be made", out)
    assert not root.exists()
    assert BOT_TOKEN not in out + result.stderr
    assert APP_TOKEN not in out + result.stderr


def test_dry_run_on_the_machine_itself_only_looks(tmp_path: Path) -> None:
    watched = [Path("/etc/troupe"), Path("/opt/troupe"), Path("/etc/systemd/system/troupe.service")]
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
    unit = root / "etc/systemd/system/troupe.service"
    assert mode(unit) == 0o644
    assert unit.read_bytes() == UNIT.read_bytes()
    link = root / "usr/local/bin/troupe"
    assert os.readlink(link) == "/opt/troupe/venv/bin/troupe"
    version = subprocess.run(
        [str(root / "opt/troupe/venv/bin/troupe"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert version.stdout.split() == ["troupe", "0.1.0", "--version"]
    assert "skip (--root): troupe check, systemctl enable and start troupe" in result.stdout
    assert re.search(r"troupe: done, \d+ change\(s\)", result.stdout)
    assert BOT_TOKEN not in result.stdout + result.stderr
    assert APP_TOKEN not in result.stdout + result.stderr


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


def test_the_installed_unit_passes_systemd_analyze(
    installed: tuple[Path, subprocess.CompletedProcess],
) -> None:
    root, _ = installed
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            "--recursive-errors=no",
            f"--root={root}",
            "troupe.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ignoring" not in result.stderr, result.stderr


def test_install_is_idempotent_repairs_modes_upgrades_and_uninstalls(
    tmp_path: Path, wheels: dict[str, Path]
) -> None:
    root = tmp_path / "root"
    args = install_args(root, wheels["0.1.0"])
    first = run_install(*args, env=tokens_env())
    assert first.returncode == 0, first.stderr

    before = snapshot(root)
    again = run_install(*args, env=tokens_env())
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "troupe: nothing to change"
    assert snapshot(root) == before

    token = root / f"etc/troupe/{BOT}.bot.token"
    token.chmod(0o644)
    repaired = run_install(*args)
    assert f"+ chmod 0600 {token}" in repaired.stdout
    assert repaired.stdout.splitlines()[-1] == "troupe: done, 1 change(s)"
    assert mode(token) == 0o600
    assert token.read_text() == BOT_TOKEN + "\n"

    rotated = run_install(*args, env={"TROUPE_BOT_TOKEN": "xoxb-9999-rotated"})
    assert rotated.returncode == 0, rotated.stderr
    assert token.read_text() == "xoxb-9999-rotated\n"
    assert mode(token) == 0o600
    assert "xoxb-9999-rotated" not in rotated.stdout + rotated.stderr

    wrong = run_install(*args, env={"TROUPE_APP_TOKEN": "xoxb-not-an-app-token"})
    assert wrong.returncode == 1
    assert "the app token must start with xapp-" in wrong.stderr
    assert "xoxb-not-an-app-token" not in wrong.stdout + wrong.stderr
    assert (root / f"etc/troupe/{BOT}.app.token").read_text() == APP_TOKEN + "\n"

    upgraded = run_install(*install_args(root, wheels["0.2.0"]))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"troupe changed in {root}/opt/troupe/venv" in upgraded.stdout
    version = subprocess.run(
        [str(root / "opt/troupe/venv/bin/troupe")], capture_output=True, text=True, timeout=30
    )
    assert version.stdout.split() == ["troupe", "0.2.0"]

    removed = run_install("--root", str(root), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    for gone in (
        "etc/systemd/system/troupe.service",
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
        "/opt/troupe/venv/bin/troupe run --config /etc/troupe/federation.yaml"
    ]
    assert unit["User"] == ["troupe"]
    assert unit["EnvironmentFile"] == ["/etc/troupe/troupe.env"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["/var/lib/troupe"]
    assert unit["WantedBy"] == ["multi-user.target"]
    assert "PrivateDevices" not in unit
    script = INSTALL.read_text()
    assert "readonly VENV=/opt/troupe/venv" in script
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
    assert "TROUPE_BOT_TOKEN" in run["environment"]
    copied = next(task for task in tasks if task["name"] == "Copy install.sh and the systemd unit")
    for item in copied["loop"]:
        assert (DEPLOY / item["name"]).is_file()
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
        ).replace("mqtt: {host: mosquitto, port: 1883}", "mqtt: {host: mosquitto, bus: true}")
    )
    data = manifest_data("home", load(shared))
    assert data["display_information"]["name"] == "home"
    assert "shared by every troupe bot" in data["display_information"]["description"]
