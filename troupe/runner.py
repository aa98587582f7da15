"""Build and run one bot from the federation file: the glue between config and runtime."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from troupe import announcer, systemd
from troupe.access import Access
from troupe.bot import Bot, DeviceSpec, device_infos
from troupe.config import ConfigError, Federation
from troupe.config.loader import secrets_in
from troupe.errors import TroupeError
from troupe.federation import Settings
from troupe.intents import Recognizer
from troupe.journal import Journal
from troupe.plugin import load_plugins
from troupe.plugincheck import driver_problems, section_settings
from troupe.redact import install as redact_secrets
from troupe.services import declared_services
from troupe.slackapi import async_client
from troupe.tasks import spawn
from troupe.transports.base import Transport

if TYPE_CHECKING:
    from troupe.bus import Bus
    from troupe.mqttclient import MqttClient

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
    _reveal(fed.bot(name).app_token)  # read now: a missing secret stops the start
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
    # The drivers this bot's devices use, and those whose section the file has (`pair hue`
    # works before any hue device exists): only their plugins and libraries are imported.
    mine = [d for d in devices if d.owner in (None, name)]
    wanted = {d.driver for d in mine} | fed.driver_sections.keys()
    plugins = load_plugins(fed.plugins, drivers=wanted | ({"mqtt"} if fed.mqtt else set()))
    found = driver_problems(fed, plugins.drivers, [d.name for d in mine])
    if found:  # the lines `troupe check` would have printed
        raise ConfigError([fed.problem(loc, message) for loc, message in found])
    sections = section_settings(fed, plugins.drivers)
    for section in sections.values():
        for _, secret in secrets_in(section):
            secret.reveal()  # read now: a missing secret stops the start, not a reconnect
    path = journal_path or fed.journal_path(name)
    channels: dict[str, str | None] = {fed.slack.channel: None}
    channels.update(fed.channels)
    bot = bot_class(
        name=name,
        roster=list(fed.bots),
        devices=devices,
        plugins=plugins,
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
        bus=None,
        driver_options={section: dict(value) for section, value in sections.items()},
    )
    client = _mqtt_client(fed, name, needed="mqtt" in {d.driver for d in mine})
    if client is not None:
        bot.clients["mqtt"] = client
        bot.bus = _bus(fed, name, client)
    if fed.mqtt is not None and fed.mqtt.discovery:  # Home Assistant's MQTT discovery
        from troupe.discovery import attach as attach_discovery

        attach_discovery(bot, fed, client)
    announcer.attach(bot, fed.events)  # device events to chat, once across the fleet
    from troupe.scheduler import attach as attach_schedules

    attach_schedules(bot, fed)
    for spec in declared_services(bot.plugins.modules):  # a plugin's @service (devops)
        settings = sections.get(spec.section) or fed.section(spec.section or "")
        bot.services.append(spec.factory(settings))
    return bot


def _uses_bus(fed: Federation) -> bool:
    """shared-app mode relays over the MQTT bus; the other modes need none."""
    return fed.slack.mode == "shared-app" and fed.mqtt is not None and fed.mqtt.bus


def _mqtt_client(fed: Federation, name: str, *, needed: bool) -> MqttClient | None:
    """The bot's one MQTT connection, shared by its mqtt devices, discovery and the bus;
    None when none of them is used. The bus's relays wait at the broker for a bot that is
    briefly away, so with the bus the session is kept."""
    if fed.mqtt is None or not (needed or fed.mqtt.discovery or _uses_bus(fed)):
        return None
    from troupe.mqttclient import MqttClient

    client_id = f"troupe-{fed.federation}-{name}"
    return MqttClient(fed.mqtt, client_id, name, persistent=_uses_bus(fed))


def _bus(fed: Federation, name: str, client: MqttClient) -> Bus | None:
    if not _uses_bus(fed):
        return None
    from troupe.bus import Bus

    return Bus(fed.federation, name, client.settings, client=client)


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
    pinging = spawn(systemd.watchdog(interval), "the systemd watchdog") if interval else None
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
