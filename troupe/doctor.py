"""`troupe doctor`: one bot's setup checked live from its Pi, one finding per line.

Offline it runs `troupe check --bot` (the file, the plugins, the drivers, the secrets);
live it asks Slack (token, scopes, channels, Socket Mode or RTM, clock), the MQTT broker
(the login), the Hue bridge (the username, each light) and the GPIO chip (each pin free).
Nothing is switched: every question is a read or a connection that is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError
from slack_sdk.errors import SlackApiError

from troupe.config import Federation, MqttSettings, check, load
from troupe.manifest import BOT_SCOPES
from troupe.plugin import DriverError
from troupe.secrets import Secret, SecretError
from troupe.slackapi import SLACK_API, ClockedWebClient, async_client, in_thread, paged, tls_context
from troupe.slackclock import SlackClock

Level = Literal["ok", "warn", "fail"]
CLOCK_TOLERANCE_S = 5.0
"""Slack's Date header has whole seconds; more than this apart and claims go stale early."""
GPIO_CHIP = Path("/dev/gpiochip0")


@dataclass(frozen=True)
class Finding:
    """One line of the report: ok, warn or fail, what it is about, and one sentence."""

    level: Level
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.level:<4} {self.subject}: {self.message}"


def ok(subject: str, message: str) -> Finding:
    return Finding("ok", subject, message)


def warn(subject: str, message: str) -> Finding:
    return Finding("warn", subject, message)


def fail(subject: str, message: str) -> Finding:
    return Finding("fail", subject, message)


async def diagnose(
    path: str | Path,
    bot: str | None = None,
    *,
    clock: Callable[[], float] = time.time,
    gpio_chip: Path = GPIO_CHIP,
    timeout: float = 5.0,
) -> list[Finding]:
    """Every finding for bot `bot` (default: $TROUPE_BOT, then the hostname)."""
    problems = check(path, bot=bot)
    findings = [fail("federation file", str(problem)) for problem in problems]
    try:
        fed = load(path)
        name = fed.resolve_bot_name(bot)
    except ValueError:  # ConfigError: already among the problems above
        return findings
    if not problems:
        findings.append(ok("federation file", f"{path} is sound and {name}'s secrets can be read"))
    findings += await _slack(fed, name, clock, timeout)
    if fed.mqtt is not None:
        findings.append(await asyncio.to_thread(_mqtt_login, fed.mqtt, timeout))
    findings += await _hue(fed, name, timeout)
    findings += _gpio(fed, name, gpio_chip)
    return findings


# --- Slack ------------------------------------------------------------------------------


def _reveal(secret: Secret | None) -> str | None:
    try:
        return secret.reveal() if secret is not None else None
    except SecretError:
        return None  # `check --bot` has said why


async def _slack(
    fed: Federation, name: str, clock: Callable[[], float], timeout: float
) -> list[Finding]:
    settings = fed.bot(name)
    token = _reveal(settings.bot_token)
    if token is None:
        return []
    base = fed.slack.base_url or SLACK_API
    web = async_client(token, base, timeout=int(timeout) or 1, clock=SlackClock(local=clock))
    try:
        resp = await web.auth_test()
    except SlackApiError as err:
        return [
            fail(
                "bot token",
                f"Slack refuses it ({err.response.get('error')}); copy the Bot User OAuth Token "
                "(xoxb-…) from the app's Install App page again",
            )
        ]
    except (OSError, HTTPException) as err:
        return [fail("slack", f"cannot reach Slack at {base} ({err}); check the network")]
    found = [ok("bot token", f"it is {resp['user']} ({resp['user_id']}) in {resp['team']}")]
    headers = {k.lower(): v for k, v in dict(resp.headers).items()}
    found.append(_clock(web.clock))
    if fed.slack.mode != "rtm":
        found.append(_scopes(headers.get("x-oauth-scopes")))
    found += await _channels(web, fed, name)
    found.append(await _connection(fed, name, web, base, timeout))
    return found


def _clock(slack: SlackClock) -> Finding:
    """troupe runs on Slack's clock whatever this Pi's says; a Pi far off still confuses
    logs, `history` times and timers set before a restart, so it is worth a warning."""
    if slack.offset is None:
        return warn("clock", "Slack's answer had no Date header to compare the clock with")
    skew = -slack.offset
    if abs(skew) <= CLOCK_TOLERANCE_S:
        return ok("clock", f"within {CLOCK_TOLERANCE_S:g} s of Slack's")
    side = "ahead of" if skew > 0 else "behind"
    return warn(
        "clock",
        f"{abs(skew):.0f} s {side} Slack's: troupe uses Slack's time for commands, but the "
        "logs and history read this one; turn on time sync (sudo timedatectl set-ntp true)",
    )


def _scopes(header: str | None) -> Finding:
    if header is None:
        return warn("scopes", "Slack did not say which scopes the bot token has")
    granted = {scope.strip() for scope in header.split(",")}
    missing = [scope for scope in BOT_SCOPES if scope not in granted]
    if missing:
        return fail(
            "scopes",
            f"the bot token lacks {', '.join(missing)}; add them under OAuth & Permissions "
            "(or make the app again from `troupe manifest`) and reinstall the app",
        )
    return ok("scopes", "the bot token has every scope `troupe manifest` asks for")


async def _channels(web: ClockedWebClient, fed: Federation, name: str) -> list[Finding]:
    wanted = [fed.slack.channel, *(c for c in fed.channels if c != fed.slack.channel)]
    seen: dict[str, dict[str, Any]] = {}
    try:
        async for channel in paged(
            web.conversations_list,
            "channels",
            types="public_channel,private_channel",
            exclude_archived=True,
        ):
            seen[channel["id"]] = seen["#" + channel["name"]] = channel
    except SlackApiError as err:
        return [
            fail(
                "channels",
                f"Slack refuses to list them ({err.response.get('error')}); "
                "the app needs channels:read and groups:read",
            )
        ]
    found = []
    for ref in wanted:
        channel = seen.get(ref)
        if channel is None:
            found.append(
                fail(
                    f"channel {ref}",
                    f"{name} cannot see it; create it, or /invite @{name} if it is private",
                )
            )
        elif not channel.get("is_member"):
            found.append(fail(f"channel {ref}", f"{name} is not in it; /invite @{name} there"))
        else:
            found.append(ok(f"channel {ref}", f"{name} is a member"))
    return found


async def _connection(
    fed: Federation, name: str, web: ClockedWebClient, base: str, timeout: float
) -> Finding:
    if fed.slack.mode == "rtm":
        subject, call = "rtm", web.rtm_connect
        refused = "RTM needs a classic Slack app; use mode app-per-bot for a new app"
    else:
        app_token = _reveal(fed.bot(name).app_token)
        if app_token is None:
            return fail("socket mode", "there is no app token to open it with")
        subject, call = (
            "socket mode",
            functools.partial(web.apps_connections_open, app_token=app_token),
        )
        refused = (
            "generate an app-level token with connections:write under Basic Information "
            "and turn Socket Mode on"
        )
    try:
        url = (await call())["url"]
        hello = await in_thread(_first_message, url, timeout)
    except SlackApiError as err:
        return fail(subject, f"Slack refuses to open it ({err.response.get('error')}); {refused}")
    except (OSError, HTTPException, ValueError) as err:
        return fail(subject, f"the connection did not open ({err or type(err).__name__})")
    if hello.get("type") != "hello":
        return fail(subject, f"the connection opened but said {hello.get('type')!r}, not hello")
    return ok(subject, "a connection opens and Slack says hello")


def _first_message(url: str, timeout: float) -> dict[str, Any]:
    """Open the WebSocket at `url` with slack_sdk's builtin client (the one the bot uses)
    and read its first message, then close it; blocking."""
    from slack_sdk.socket_mode.builtin.connection import Connection, ConnectionState

    said: queue.Queue[str | Exception] = queue.Queue()
    quiet = logging.Logger(__name__)  # what went wrong is the finding, not a log line
    quiet.addHandler(logging.NullHandler())
    conn = Connection(
        url=url,
        logger=quiet,
        receive_timeout=timeout,
        ssl_context=tls_context(),
        on_message_listener=said.put,
        on_error_listener=said.put,
    )
    conn.connect()
    state = ConnectionState()
    try:
        if not conn.is_active():
            first = said.get_nowait() if not said.empty() else None
            raise first if isinstance(first, Exception) else ConnectionError("refused")
        threading.Thread(target=conn.run_until_completion, args=(state,), daemon=True).start()
        try:
            first = said.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"nothing said within {timeout:g} s") from None
    finally:
        state.terminated = True
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    if isinstance(first, Exception):
        raise first
    return dict(json.loads(first))


# --- MQTT -------------------------------------------------------------------------------


def _mqtt_login(settings: MqttSettings, timeout: float) -> Finding:
    """Connect once with the file's login and read the broker's answer (paho, blocking)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    where = f"{settings.host}:{settings.port}"
    version = mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=version)
    if settings.username:
        client.username_pw_set(settings.username, _reveal(settings.password))
    answer: list[Any] = []
    client.on_connect = lambda _c, _u, _flags, reason, _props: answer.append(reason)
    try:
        if settings.tls:
            client.tls_set(ca_certs=settings.ca_file)
        client.connect(settings.host, settings.port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except (OSError, ValueError) as err:
        return fail("mqtt", f"cannot reach the broker at {where} ({err}); check mqtt.host/port")
    finally:
        client.disconnect()
    if not answer:
        return fail("mqtt", f"the broker at {where} did not answer within {timeout:g} s")
    reason = answer[0]
    if reason.is_failure:
        return fail(
            "mqtt",
            f"the broker at {where} refuses the login ({reason}); "
            "check mqtt.username and mqtt.password",
        )
    return ok("mqtt", f"the broker at {where} accepts the login")


# --- Hue --------------------------------------------------------------------------------


async def _hue(fed: Federation, name: str, timeout: float) -> list[Finding]:
    devices = {n: d.options for n, d in fed.devices.items() if d.driver == "hue"}
    if not devices or fed.section("hue") is None:
        return []  # `check` reports a missing hue: section
    from troupe.plugins.hue import HueDriver

    driver = HueDriver(name, dict(fed.section("hue")))
    driver.timeout_s = timeout
    found = []
    try:
        await driver.start(devices)
        for device in devices:
            try:
                state = await driver.state(device)
            except DriverError as err:
                found.append(fail(f"hue {device}", str(err)))
                continue
            if state.online:
                found.append(ok(f"hue {device}", f"the bridge has it ({state.describe()})"))
            else:
                found.append(warn(f"hue {device}", f"{state.detail}; is it powered?"))
    except DriverError as err:
        found.append(fail("hue", str(err)))
    finally:
        await driver.stop()
    return found


# --- GPIO -------------------------------------------------------------------------------


def _gpio(fed: Federation, name: str, chip: Path) -> list[Finding]:
    from troupe.plugins.gpio_relay import DeviceOptions

    pins: dict[int, str] = {}
    adapter = TypeAdapter(DeviceOptions)
    for device, spec in fed.devices_owned_by(name).items():
        if spec.driver != "gpio_relay":
            continue
        try:
            options = adapter.validate_python(spec.options)
        except ValidationError:
            continue  # `check` reports it
        for role in ("pin", "button", "motion"):
            if (pin := getattr(options, role, None)) is not None:
                pins[pin] = f"{device}'s {'relay' if role == 'pin' else role}"
    if not pins:
        return []
    if os.environ.get("GPIOZERO_PIN_FACTORY") == "mock":
        from troupe.hardware.gpio import board_for

        board = board_for(name)
        chip_finding = ok("gpio", f"the simulated board of {name} (GPIOZERO_PIN_FACTORY=mock)")
        users: Mapping[int, str] | None = {w.pin: w.device for w in board.wires}
    elif not chip.exists():
        return [fail("gpio", f"{chip} does not exist; is this a Raspberry Pi?")]
    elif not os.access(chip, os.R_OK | os.W_OK):
        return [
            fail("gpio", f"{chip}: permission denied; add the user to the gpio group and log in")
        ]
    else:
        chip_finding = ok("gpio", f"{chip} can be opened")
        users = _line_users(chip, list(pins))
    if users is None:
        return [chip_finding, warn("gpio", "cannot tell which pins are free without lgpio")]
    found = [chip_finding]
    for pin, role in sorted(pins.items()):
        user = users.get(pin)
        if user:
            found.append(
                fail(f"gpio {pin}", f"{role} is on a pin in use by {user}; free it or move it")
            )
        else:
            found.append(ok(f"gpio {pin}", f"free for {role}"))
    return found


def _line_users(chip: Path, pins: list[int]) -> dict[int, str] | None:
    """Who holds each pin (the kernel's consumer label), read without claiming it."""
    try:
        import lgpio  # type: ignore[import-not-found]
    except ImportError:
        return None
    handle = lgpio.gpiochip_open(int(chip.name.removeprefix("gpiochip") or 0))
    try:
        users = {}
        for pin in pins:
            _status, _offset, flags, _name, user = lgpio.gpio_get_line_info(handle, pin)
            if flags & 1:  # lgpio's line flag bit 0: in use (by the kernel or a program)
                users[pin] = user or "the kernel"
        return users
    finally:
        lgpio.gpiochip_close(handle)
