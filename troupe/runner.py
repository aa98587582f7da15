"""Build and run one bot from the federation file: the glue between config and runtime."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from troupe.access import Access
from troupe.bot import Bot, DeviceSpec, device_infos
from troupe.bus import Bus
from troupe.config import Federation
from troupe.discovery import attach as attach_discovery
from troupe.federation import Settings
from troupe.intents import Recognizer
from troupe.journal import Journal
from troupe.pagestates import PageStates
from troupe.plugin import load_plugins
from troupe.redact import install as redact_secrets
from troupe.slackapi import async_client
from troupe.transports.base import Transport

log = logging.getLogger(__name__)


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


def build_bot(fed: Federation, name: str, *, journal_path: str | Path | None = None) -> Bot:
    """Everything one bot needs, from the federation file and its own name."""
    bot_token = _reveal(fed.bot(name).bot_token)
    if not bot_token:
        raise ValueError(f"{name} has no bot token; set bot_token in the federation file")
    others = (fed.bot(name).app_token, fed.hue and fed.hue.username, fed.mqtt and fed.mqtt.password)
    redact_secrets([bot_token, *(_reveal(s) for s in others)])
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
    path = journal_path or fed.journal_path(name)
    channels: dict[str, str | None] = {fed.slack.channel: None}
    channels.update(fed.channels)
    bot = Bot(
        name=name,
        roster=list(fed.bots),
        devices=devices,
        plugins=load_plugins(fed.plugins),
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
        driver_options={
            section: dict(getattr(fed, section))
            for section in ("hue", "mqtt")
            if getattr(fed, section, None) is not None
        },
    )
    attach_discovery(bot, fed)  # Home Assistant MQTT discovery when mqtt.discovery is true
    page = PageStates.from_env()
    if page is not None:
        bot.services.append(page)
    if "troupe.plugins.devops" in bot.plugins.modules:
        from troupe.plugins.devops import FleetService

        bot.services.append(FleetService(fed.update))
    return bot


def _bus(fed: Federation, name: str) -> Bus | None:
    """shared-app mode relays over the MQTT bus; the other modes need none."""
    if fed.slack.mode != "shared-app" or fed.mqtt is None or not fed.mqtt.bus:
        return None
    return Bus(fed.federation, name, dict(fed.mqtt))


async def run_bot(bot: Bot) -> None:
    """Start the bot and run until SIGTERM or SIGINT, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bot.start()
    await stop.wait()
    log.info("%s stopping", bot.name)
    await bot.stop()
