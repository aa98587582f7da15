"""Show a bot's device states on the local workspace's chat page (the demo's Devices panel).

A bot Service: at start and after every action it POSTs the states of the devices it
drives to the workspace's /page/devices. Only for the local workspace: the runner adds it
when $TROUPE_PAGE_URL and $TROUPE_PAGE_TOKEN are set.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from troupe.bot import Bot
    from troupe.plugin import DeviceState

log = logging.getLogger(__name__)


class PageStates:
    """Publishes device states to the workspace page."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/page/devices"
        self.token = token
        self._session: aiohttp.ClientSession | None = None
        self._bot: Bot | None = None

    @classmethod
    def from_env(cls) -> PageStates | None:
        url, token = os.environ.get("TROUPE_PAGE_URL"), os.environ.get("TROUPE_PAGE_TOKEN")
        return cls(url, token) if url and token else None

    async def start(self, bot: Bot) -> None:
        self._bot = bot
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        bot.state_listeners.append(self.publish)
        first = bool(bot.roster) and bot.roster[0] == bot.name
        for name, device in bot.devices.items():
            # Owners show their own devices; the roster's first bot the shared ones.
            if device.owner == bot.name or (device.owner is None and first):
                await self.publish(name, await bot.device_state(name))

    async def publish(self, name: str, state: DeviceState) -> None:
        if self._session is None or self._bot is None:
            return
        device = self._bot.devices[name]
        body = {
            "id": name,
            "name": name,
            "room": device.area or "",
            "state": state.describe(),
            "bot": device.owner or "any bot",
        }
        try:
            async with self._session.post(
                self.url, json=body, headers={"Authorization": f"Bearer {self.token}"}
            ) as resp:
                if resp.status != 200:
                    log.warning("the page refused a device state: HTTP %s", resp.status)
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("cannot show device states on the page: %s", err)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
