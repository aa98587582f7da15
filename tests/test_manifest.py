"""`troupe manifest`: the Slack app manifest, its scopes and events."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import (
    BOT,
    DEPLOY,
    REPO,
)

from troupe import manifest as manifest_module
from troupe.manifest import BOT_EVENTS, BOT_SCOPES, ManifestError, manifest, manifest_data

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
