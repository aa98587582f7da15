"""Build and run one bot from the federation file: the glue between config and runtime."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from troupe import systemd
from troupe.access import Access
from troupe.bot import Bot, DeviceSpec, device_infos
from troupe.config import Federation
from troupe.errors import TroupeError
from troupe.federation import Settings
from troupe.intents import Recognizer
from troupe.journal import Journal
from troupe.plugin import load_plugins
from troupe.redact import install as redact_secrets
from troupe.slackapi import async_client
from troupe.transports.base import Transport

if TYPE_CHECKING:
    from troupe.bus import Bus

log = logging.getLogger(__name__)

AUTH_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked"}
AUTH_ERRORS |= {"token_expired", "not_allowed_token_type"}


class StartError(TroupeError, ValueError):
    """The bot cannot start and restarting will not help (exit status 2): a token Slack
    refuses, a channel or user that does not exist, a driver no plugin provides."""


def _reveal(secret: Any) -> str | None:
    return None if secret is None else secret.reveal()


def _transport(fed: Federation, name: str, bot_token: str, web: Any) -> Transport:
    if fed.slack.mode == "rtm":
        from troupe.transports.rtm import RtmTransport

        return RtmTransport(bot_token, fed.slack.base_url)
    from troupe.transports.socketmode import SocketModeTransport

    app_token = _reveal(fed.bot(name).app_token)
    if not app_token:
        raise ValueError(f"{name} has no app token for Socket Mode; set app_token")
    return SocketModeTransport(app_token, web)


def build_bot(
    fed: Federation,
    name: str,
    *,
    journal_path: str | Path | None = None,
    bot_class: type[Bot] | None = None,
) -> Bot:
    """Everything one bot needs, from the federation file and its own name; StartError
    when a secret, a plugin or a setting cannot work. `bot_class` is a Bot subclass (the
    development kit's chaos bot); the runtime uses Bot."""
    try:
        return _build_bot(fed, name, journal_path, bot_class or Bot)
    except (TroupeError, ValueError) as err:  # a secret, a plugin import, a setting
        raise StartError(str(err)) from err


def _build_bot(
    fed: Federation, name: str, journal_path: str | Path | None, bot_class: type[Bot]
) -> Bot:
    # Installed first: each secret registers itself with it whenever it is read, at start
    # and after a rotation (troupe.secrets), so no value read later reaches a log line.
    redact_secrets()
    bot_token = _reveal(fed.bot(name).bot_token)
    if not bot_token:
        raise ValueError(f"{name} has no bot token; set bot_token in the federation file")
    for secret in (
        fed.bot(name).app_token,
        fed.hue and fed.hue.username,
        fed.mqtt and fed.mqtt.password,
    ):
        _reveal(secret)  # read now: a missing secret stops the start, not a later reconnect
    web = async_client(bot_token, fed.slack.base_url)
    devices = [
        DeviceSpec(
            name=dev_name,
            kind=dev.kind,
            area=dev.area,
            driver=dev.driver,
            owner=dev.owner,
            aliases=tuple(dev.aliases),
            options=dict(dev.options),
            confirm=dev.confirm,
        )
        for dev_name, dev in fed.devices.items()
    ]
    recognizer = Recognizer(
        device_infos(devices),
        {area: list(aliases) for area, aliases in fed.areas.items()},
        language=fed.language,
        aliases=dict(fed.aliases),
        scenes=list(fed.scenes),
    )
    driver_options = {
        section: dict(getattr(fed, section))
        for section in ("hue", "mqtt")
        if getattr(fed, section, None) is not None
    }
    # The drivers this bot's devices use, and those whose section the file has (`pair hue`
    # works before any hue device exists): only their plugins and libraries are imported.
    drivers = {d.driver for d in devices if d.owner in (None, name)} | driver_options.keys()
    path = journal_path or fed.journal_path(name)
    channels: dict[str, str | None] = {fed.slack.channel: None}
    channels.update(fed.channels)
    bot = bot_class(
        name=name,
        roster=list(fed.bots),
        devices=devices,
        plugins=load_plugins(fed.plugins, drivers=drivers),
        web=web,
        transport=_transport(fed, name, bot_token, web),
        journal=Journal(path, name),
        recognizer=recognizer,
        settings=Settings(
            stale_s=fed.slackmq.stale_s,
            lease_s=fed.slackmq.lease_s,
            stagger_s=fed.slackmq.stagger_s,
            linger_s=fed.slackmq.linger_s,
        ),
        channels=channels,
        access=Access.build(
            admins=fed.access.admins,
            users=fed.access.users,
            direct=fed.access.direct,
            rules=fed.access.rules,
        ),
        allowed_bots=list(fed.access.bots),
        max_duration_s=fed.access.max_duration_s,
        scenes={
            scene: {dev: state.model_dump(exclude_none=True) for dev, state in states.items()}
            for scene, states in fed.scenes.items()
        },
        mode=fed.slack.mode,
        bus=_bus(fed, name),
        driver_options=driver_options,
    )
    if fed.mqtt is not None and fed.mqtt.discovery:  # Home Assistant's MQTT discovery
        from troupe.discovery import attach as attach_discovery

        attach_discovery(bot, fed)
    from troupe.scheduler import attach as attach_schedules

    attach_schedules(bot, fed)
    if "troupe.plugins.devops" in bot.plugins.modules:
        from troupe.plugins.devops import FleetService

        bot.services.append(FleetService(fed.update))
    return bot


def _bus(fed: Federation, name: str) -> Bus | None:
    """shared-app mode relays over the MQTT bus; the other modes need none."""
    if fed.slack.mode != "shared-app" or fed.mqtt is None or not fed.mqtt.bus:
        return None
    from troupe.bus import Bus

    return Bus(fed.federation, name, dict(fed.mqtt))


async def run_bot(bot: Bot) -> None:
    """Start the bot and run until SIGTERM or SIGINT, then stop it cleanly.

    Under systemd (Type=notify) it says READY=1 once the bot printed its ready line and
    pings the watchdog from this event loop; StartError says why a start cannot work.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    interval = systemd.watchdog_interval()
    pinging = asyncio.ensure_future(systemd.watchdog(interval)) if interval else None
    try:
        try:
            await bot.start()
        except SlackApiError as err:
            raise StartError(_slack_refused(bot.name, err)) from err
        except ValueError as err:  # a channel, user or driver the federation file names
            raise StartError(str(err)) from err
        systemd.notify("READY=1")
        await stop.wait()
        systemd.notify("STOPPING=1")
        log.info("%s stopping", bot.name)
        await bot.stop()
    finally:
        if pinging is not None:
            pinging.cancel()


def _slack_refused(name: str, err: SlackApiError) -> str:
    code = str(err.response.get("error") or "an error")
    if code in AUTH_ERRORS:
        return (
            f"Slack refused {name}'s token ({code}); put the bot's current xoxb- token "
            "(and its xapp- token for Socket Mode) where the federation file's bot_token "
            "and app_token point"
        )
    return f"Slack refused to start {name} ({code}); fix the app's setup or the federation file"
