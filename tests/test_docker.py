"""deploy/'s Docker image and compose file."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import yaml
from deploykit import (
    DEPLOY,
    REPO,
    require_tool,
)

from troupe.config import check
from troupe.devkit.workspace.config import demo_config


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
