"""Checks across sections: names that collide, tokens a mode needs, areas and devices that exist."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from troupe.config.schema import DEVICE_FIELDS, SlackmqSettings, SlackSettings
from troupe.config.sections import Sections
from troupe.config.wording import Loc, hint
from troupe.eventsettings import EventsSettings
from troupe.mqttsettings import MqttSettings
from troupe.secrets import looks_like_slack_token
from troupe.slackmq import REDELIVERY_S


def cross_checks(s: Sections) -> Iterator[tuple[Loc, str]]:
    if s.values.get("bots") == {}:
        yield ("bots",), "the roster is empty; list each bot by its Pi's hostname"
    yield from _check_collisions(s)
    yield from _check_slack(s)
    yield from _check_devices(s)
    yield from _check_scenes(s)
    areas = s.entries("areas")
    for channel, area in s.entries("channels").items():
        if area is not None and area not in areas:
            yield ("channels", channel), _unknown_area(area, areas)
    events, slack = s.values.get("events"), s.values.get("slack")
    if isinstance(events, EventsSettings):
        channels = set(s.entries("channels")) | ({slack.channel} if slack else set())
        yield from events.problems(set(s.entries("devices")), set(areas), channels)
    slackmq = s.values.get("slackmq")
    if isinstance(slackmq, SlackmqSettings):
        yield from _check_timings(slackmq)


def _check_timings(slackmq: SlackmqSettings) -> Iterator[tuple[Loc, str]]:
    takeover = slackmq.lease_s + REDELIVERY_S
    if slackmq.stale_s <= takeover:
        yield (
            ("slackmq", "stale_s"),
            (
                f"must be greater than lease_s + {REDELIVERY_S:g} ({takeover:g}): a command "
                f"whose holder died is taken over one lease after Slack hands it out again "
                f"({REDELIVERY_S:g} s after sending it), and must not go stale before that"
            ),
        )
    if slackmq.linger_s <= slackmq.stale_s:
        yield (
            ("slackmq", "linger_s"),
            (
                f"must be greater than stale_s ({slackmq.stale_s:g}): a bot that starts late must "
                "still find the claim pin before it is taken for stale and removed"
            ),
        )


def _check_collisions(s: Sections) -> Iterator[tuple[Loc, str]]:
    for section, raw in s.raw_keys.items():
        for key, spellings in raw.items():
            if len(spellings) > 1:
                yield (
                    (section, str(spellings[-1])),
                    (
                        f"{spellings[-1]!r} and {spellings[0]!r} are the same name "
                        f"({key!r}); keep one"
                    ),
                )
    named: dict[str, str] = {}
    for name, device in s.entries("devices").items():
        named.setdefault(name, name)
        for index, alias in enumerate(device.aliases if device else ()):
            owner = named.setdefault(alias, name)
            if owner != name:
                yield (
                    ("devices", name, "aliases", index),
                    (
                        f"{alias!r} already names device {owner!r}; "
                        "each name must lead to one device"
                    ),
                )
    for name in s.entries("devices"):
        if named[name] != name:
            yield (
                ("devices", name),
                (
                    f"{name!r} is already an alias of device {named[name]!r}; "
                    "each name must lead to one device"
                ),
            )
    area_names: dict[str, str] = {a: a for a in s.entries("areas")}
    for area, aliases in s.entries("areas").items():
        for index, alias in enumerate(aliases or ()):
            owner = area_names.setdefault(alias, area)
            if owner != area:
                yield ("areas", area, index), f"{alias!r} already names area {owner!r}"


def _check_slack(s: Sections) -> Iterator[tuple[Loc, str]]:
    slack = s.values.get("slack")
    if not isinstance(slack, SlackSettings):
        return
    mode = slack.mode
    if mode == "app-per-bot":
        for name, bot in s.entries("bots").items():
            missing = [t for t in ("bot_token", "app_token") if bot and getattr(bot, t) is None]
            if missing:
                yield (
                    ("bots", name, missing[0]),
                    (
                        f"bot {name!r} has no {' and no '.join(missing)}; in mode app-per-bot each "
                        "bot is its own Slack app: give it bot_token and app_token as env:NAME or "
                        "file:PATH (or leave them out to read $NAME_BOT_TOKEN and $NAME_APP_TOKEN)"
                    ),
                )
        for token in ("bot_token", "app_token"):
            if getattr(slack, token) is not None:
                yield (
                    ("slack", token),
                    ("is not used in mode app-per-bot (each bot has its own); move it under bots"),
                )
        return
    needed = ("bot_token", "app_token") if mode == "shared-app" else ("bot_token",)
    for token in needed:
        if getattr(slack, token) is None:
            yield (
                ("slack", token),
                (
                    f"mode {mode} needs slack.{token}: the one {token.replace('_', ' ')} "
                    "every bot shares (env:NAME or file:PATH)"
                ),
            )
    if mode == "rtm" and slack.app_token is not None:
        yield ("slack", "app_token"), "is not used in mode rtm (RTM needs only the bot token)"
    for name, bot in s.entries("bots").items():
        unused = [t for t in ("bot_token", "app_token") if bot and getattr(bot, t) is not None]
        if unused:
            yield (
                ("bots", name),
                (
                    f"{' and '.join(unused)} of bot {name!r} are not used in mode {mode}, where "
                    "every bot uses the tokens under slack; remove them or use mode app-per-bot"
                ),
            )


def _check_devices(s: Sections) -> Iterator[tuple[Loc, str]]:
    bots, areas = s.entries("bots"), s.entries("areas")
    slack, mqtt = s.values.get("slack"), s.values.get("mqtt")
    shared = isinstance(slack, SlackSettings) and slack.mode == "shared-app"
    # An mqtt section that failed its own checks was reported already: no second line.
    no_bus = not (isinstance(mqtt, MqttSettings) and mqtt.bus) and "mqtt" not in s.failed
    for name, device in s.entries("devices").items():
        if device is None:
            continue
        if device.owner is not None and "bots" in s.values and device.owner not in bots:
            yield (
                ("devices", name, "owner"),
                (f"{device.owner!r} is not a bot in the roster; use one of {', '.join(bots)}"),
            )
        elif device.owner is not None and shared and no_bus:
            yield (
                ("devices", name, "owner"),
                (
                    f"{name!r} is owned by {device.owner!r}, but in mode shared-app Slack hands "
                    "each event to one bot only, so another bot can reach it only over the MQTT "
                    "bus; use mode app-per-bot, or configure mqtt with bus: true"
                ),
            )
        if device.area is not None and device.area not in areas:
            yield ("devices", name, "area"), _unknown_area(device.area, areas)
        unset = [f for f in DEVICE_FIELDS if f not in device.model_fields_set]
        for option in device.options:
            close = difflib.get_close_matches(option, unset, n=1, cutoff=0.75)
            if close:
                yield (
                    ("devices", name, option),
                    (
                        f"did you mean {close[0]!r}? ({option!r} would be passed to the "
                        f"{device.driver} driver as an option)"
                    ),
                )


def _unknown_area(area: str, areas: dict[str, Any]) -> str:
    for declared, aliases in areas.items():
        if area in (aliases or ()):
            return f"{area!r} is an alias of area {declared!r}; use the area's name"
    if not areas:
        return f"area {area!r} is not declared; list it under areas"
    return f"area {area!r} is not declared in areas; declare it or use one of {', '.join(areas)}"


def _check_scenes(s: Sections) -> Iterator[tuple[Loc, str]]:
    devices = s.entries("devices")
    names = {n: n for n in devices}
    for name, device in devices.items():
        for alias in device.aliases if device else ():
            names.setdefault(alias, name)
    for scene, states in s.entries("scenes").items():
        for target in states or {}:
            if target not in names:
                choices = f"; use one of {', '.join(devices)}" if devices else ""
                suggestion = hint(target, list(names)) or choices
                yield ("scenes", scene, target), f"{target!r} is not a device{suggestion}"
            elif (device := devices[names[target]]) is not None and device.kind == "sensor":
                yield ("scenes", scene, target), f"{target!r} is a sensor; a scene cannot set it"


def literal_tokens(value: object, loc: Loc) -> Iterator[Loc]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from literal_tokens(item, (*loc, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from literal_tokens(item, (*loc, index))
    elif isinstance(value, str) and looks_like_slack_token(value):
        yield loc
