"""`troupe manifest BOT`: the Slack app manifest (YAML) that makes one bot's Slack app."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import yaml

from troupe.errors import TroupeError

if TYPE_CHECKING:
    from troupe.config import Federation

# What troupe calls (chat.postMessage, pins.*, reactions.*, conversations.list over public
# and private channels, users.*) and hears: messages in channels, private channels and DMs.
BOT_SCOPES: tuple[str, ...] = (
    "app_mentions:read",
    "channels:history",
    "channels:read",
    "chat:write",
    "groups:history",
    "groups:read",
    "im:history",
    "im:read",
    "im:write",
    "pins:read",
    "pins:write",
    "reactions:read",
    "reactions:write",
    "users:read",
)
BOT_EVENTS: tuple[str, ...] = (
    "app_mention",
    "message.channels",
    "message.groups",
    "message.im",
    "pin_added",
    "pin_removed",
    "reaction_added",
    "reaction_removed",
)

# Slack's manifest schema: display_information.name is 1-35 characters, description 1-140.
NAME_MAX = 35
DESCRIPTION_MAX = 140
_BOT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


class ManifestError(TroupeError, ValueError):
    """No manifest can be made for this bot; the message says why and what to do."""


def _check_name(bot_name: str) -> str:
    name = bot_name.strip().lower()
    if not _BOT_NAME.fullmatch(name):
        raise ManifestError(
            f"{bot_name!r} is not a bot name; use the Pi's host name (letters, digits, '-')"
        )
    if len(name) > NAME_MAX:
        raise ManifestError(f"{name!r} is longer than the {NAME_MAX} characters Slack allows")
    return name


def _description(name: str, federation: Federation | None) -> str:
    if federation is None:
        text = f"{name}: a troupe bot that runs the home from chat"
    elif federation.slack.mode == "shared-app":
        text = f"The Slack app shared by every troupe bot of the federation {federation.federation}"
    else:
        text = f"{name}: one troupe bot of the federation {federation.federation}"
    return text[:DESCRIPTION_MAX]


def manifest_data(bot_name: str, federation: Federation | None = None) -> dict[str, Any]:
    """The manifest as a dict shaped exactly like Slack's app manifest (schema version 1).

    One Slack app per bot (mode app-per-bot): every app receives every event, so every bot
    sees every command and the federation settles which one acts. With a federation, the
    bot must be in its roster; a shared-app federation gets the manifest of its one app.
    """
    name = _check_name(bot_name)
    if federation is not None:
        mode = federation.slack.mode
        if mode == "rtm":
            raise ManifestError(
                "mode rtm needs a classic Slack app, which no manifest can make; "
                "use mode app-per-bot (one app per bot, Socket Mode)"
            )
        if mode == "app-per-bot" and name not in federation.bots:
            roster = ", ".join(federation.bots)
            raise ManifestError(f"{name!r} is not a bot in the roster; use one of {roster}")
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": name,
            "description": _description(name, federation),
            "background_color": "#2c2d30",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": name, "always_online": False},
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": {"bot_events": list(BOT_EVENTS)},
            "interactivity": {"is_enabled": False},
            "org_deploy_enabled": False,
            "socket_mode_enabled": True,
            "token_rotation_enabled": False,
        },
    }


def manifest(bot_name: str, federation: Federation | None = None) -> str:
    """The app manifest for `bot_name` as YAML, ready to paste into api.slack.com/apps."""
    header = (
        f"# Slack app manifest for the troupe bot {_check_name(bot_name)}.\n"
        "# api.slack.com/apps -> Create New App -> From a manifest -> paste this (YAML tab).\n"
        "# Then: Basic Information -> App-Level Tokens -> Generate (scope connections:write)\n"
        "# gives the xapp- token; Install App gives the xoxb- token. See docs/install.md.\n"
    )
    body = yaml.safe_dump(
        manifest_data(bot_name, federation), sort_keys=False, default_flow_style=False
    )
    return header + body


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="troupe manifest",
        description="Print the Slack app manifest (YAML) for one bot of the federation.",
    )
    parser.add_argument("bot", help="the bot's name: the Pi's host name, like kitchen-pi")
    parser.add_argument(
        "--config", help="the federation file; checks that BOT is in its roster and names it"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`troupe manifest BOT [--config FILE]`: print the manifest; 2 when it cannot be made.

    Without --config only PyYAML is needed, so a fresh checkout can print a manifest
    before anything else is installed: python3 -m troupe.manifest kitchen-pi
    """
    args = build_parser().parse_args(argv)
    federation = None
    if args.config:
        from troupe.config import ConfigError, load

        try:
            federation = load(args.config)
        except ConfigError as err:
            print(f"troupe manifest: {err}", file=sys.stderr)
            return 2
    try:
        text = manifest(args.bot, federation)
    except ManifestError as err:
        print(f"troupe manifest: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
