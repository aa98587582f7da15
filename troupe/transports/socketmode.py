"""Socket Mode through slack_sdk's aiohttp client: modes app-per-bot and shared-app."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from troupe.tasks import spawn
from troupe.transports.base import Backoff, Event, EventHandler

log = logging.getLogger(__name__)


class _Client(SocketModeClient):
    """slack_sdk's client, with jittered exponential backoff between reconnects."""

    backoff: Backoff

    async def issue_new_wss_url(self, *args: Any, **kwargs: Any) -> str:
        await self.backoff.wait()
        return await super().issue_new_wss_url(*args, **kwargs)


ACK_DEADLINE_S = 2.5
"""Slack redelivers an envelope not acknowledged within 3 s; ack by then whatever happens."""


class SocketModeTransport:
    """One Socket Mode connection for one bot.

    The handler acknowledges an envelope when it has done its part (claimed and acted),
    or the transport does at ACK_DEADLINE_S. So when a bot dies holding an unfinished
    command, Slack redelivers the event to a live connection, which takes it over; and a
    redelivery of a finished command meets the claim and the journal.
    """

    mode = "socket"
    on_reconnect = None
    """Unused: Slack retries an envelope no connection acknowledged, so nothing is missed."""

    def __init__(self, app_token: str, web_client: AsyncWebClient, ping_interval: float = 2.0):
        self.app_token = app_token
        self.web_client = web_client
        self.ping_interval = ping_interval
        self._client: _Client | None = None
        self._handler: EventHandler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connected_since: float | None = None
        """When Slack's hello opened the current connection (time.monotonic)."""

    async def start(self, handler: EventHandler) -> None:
        self._handler = handler
        client = _Client(
            app_token=self.app_token,
            web_client=self.web_client,
            ping_interval=self.ping_interval,
            auto_reconnect_enabled=True,
        )
        client.backoff = Backoff()
        client.message_listeners.append(self._on_message)
        client.socket_mode_request_listeners.append(self._on_request)
        self._client = client
        await client.connect()

    async def _on_message(
        self, _client: SocketModeClient, message: dict[str, Any], _raw: str
    ) -> None:
        if message.get("type") == "hello":  # a new connection: what came meanwhile is late
            self.connected_since = time.monotonic()

    async def _on_request(self, client: SocketModeClient, req: SocketModeRequest) -> None:
        if isinstance(self._client, _Client):
            self._client.backoff.reset()

        acked = False

        async def ack() -> None:
            nonlocal acked
            if not acked:
                acked = True
                await client.send_socket_mode_response(
                    SocketModeResponse(envelope_id=req.envelope_id)
                )

        event = None
        if req.type == "events_api":
            payload = req.payload or {}
            event = Event.from_slack(payload.get("event") or {}, req.retry_attempt or 0)
        if event is None or self._handler is None:
            await ack()
            return
        deadline = asyncio.get_running_loop().call_later(ACK_DEADLINE_S, lambda: self._spawn(ack()))
        task = self._spawn(self._handler(event, ack))

        def _finished(_task: asyncio.Task[Any]) -> None:
            deadline.cancel()
            if not acked:
                self._spawn(ack())

        task.add_done_callback(_finished)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return spawn(coro, "an event handler", self._tasks, logger=log)

    @property
    def connected(self) -> bool:
        session = self._client.current_session if self._client else None
        return session is not None and not session.closed

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            await self._client.aiohttp_client_session.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
