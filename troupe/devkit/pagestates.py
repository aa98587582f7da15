"""Show a bot's device states on the local workspace's chat page (the demo's Devices panel).

A bot Service: at start and after every action it POSTs the states of the devices it
drives to the workspace's /page/devices. Only for the local workspace: the runner adds it
when $TROUPE_PAGE_URL and $TROUPE_PAGE_TOKEN are set. urllib in a thread, as the bot's
Slack client: a demo bot loads no aiohttp either, so it weighs what a Pi's bot weighs.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from http.client import HTTPException
from typing import TYPE_CHECKING, Any

from troupe.slackapi import in_thread

if TYPE_CHECKING:
    from troupe.bot import Bot
    from troupe.plugin import DeviceState

log = logging.getLogger(__name__)


class PageStates:
    """Publishes device states to the workspace page."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/page/devices"
        self.token = token
        self._bot: Bot | None = None

    @classmethod
    def from_env(cls) -> PageStates | None:
        url, token = os.environ.get("TROUPE_PAGE_URL"), os.environ.get("TROUPE_PAGE_TOKEN")
        return cls(url, token) if url and token else None

    async def start(self, bot: Bot) -> None:
        self._bot = bot
        bot.state_listeners.append(self.publish)
        first = bool(bot.roster) and bot.roster[0] == bot.name
        for name, device in bot.devices.items():
            # Owners show their own devices; the roster's first bot the shared ones.
            if device.owner == bot.name or (device.owner is None and first):
                await self.publish(name, await bot.device_state(name))

    async def publish(self, name: str, state: DeviceState) -> None:
        if self._bot is None:
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
            await in_thread(self._post, body)
        except urllib.error.HTTPError as err:
            log.warning("the page refused a device state: HTTP %s", err.code)
        except (OSError, HTTPException) as err:
            log.warning("cannot show device states on the page: %s", err)

    def _post(self, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=3) as resp:
            resp.read()

    async def stop(self) -> None:
        self._bot = None
