"""Socket Mode through slack_sdk's builtin client (threads, no aiohttp): modes app-per-bot
and shared-app."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from troupe.slackapi import ClockedWebClient, in_thread
from troupe.tasks import spawn
from troupe.transports.base import Backoff, Event, EventHandler, Reconnected

log = logging.getLogger(__name__)

Send = Callable[[SocketModeResponse], Awaitable[None]]
"""Sends an acknowledgement on the connection the envelope came by."""


class _Client(SocketModeClient):
    """slack_sdk's builtin client, with jittered exponential backoff between reconnects
    that a close cuts short."""

    backoff: Backoff
    stopping: threading.Event

    def issue_new_wss_url(self, *args: Any, **kwargs: Any) -> str:
        if self.stopping.wait(self.backoff.next_delay()):
            raise ConnectionAbortedError("Socket Mode is closing; not reconnecting")
        return super().issue_new_wss_url(*args, **kwargs)

    def _monitor_current_session(self) -> None:
        """Every ping_interval: after slack_sdk's own check, a ping that could not be sent
        (a broken pipe: the connection is gone) reconnects now. slack_sdk waits for five
        failed checks in a row, 10 s, while Slack's events for this bot pile up."""
        super()._monitor_current_session()  # type: ignore[misc]
        session = self.current_session
        if (
            self.auto_reconnect_enabled
            and not self.stopping.is_set()
            and session is not None
            and session.consecutive_check_state_error_count > 0
        ):
            self.logger.info("Socket Mode: a ping could not be sent; reconnecting now")
            session.disconnect()
            self.connect_to_new_endpoint()

    def close(self) -> None:
        """Stop at once: the reader thread is woken from its blocking receive and the
        message thread from its queue (slack_sdk's own close waits out the socket's 3 s
        receive timeout and the queue's 1 s: a bot's stop, then its timers, would wait)."""
        self.stopping.set()
        self.closed = True
        self.auto_reconnect_enabled = False
        self.current_session_state.terminated = True
        sock = self.current_session.sock if self.current_session is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.message_queue.put(None)  # read as "nothing", then the loop sees `closed`
        super().close()


CLOSE_WAIT_S = 10.0
"""How long stop() waits for slack_sdk's threads to finish (they take well under 1 s)."""

ACK_DEADLINE_S = 2.5
"""Slack redelivers an envelope not acknowledged within 3 s; ack by then whatever happens."""


class SocketModeTransport:
    """One Socket Mode connection for one bot.

    The handler acknowledges an envelope when it has done its part (claimed and acted),
    or the transport does at ACK_DEADLINE_S. So when a bot dies holding an unfinished
    command, Slack redelivers the event to a live connection, which takes it over; and a
    redelivery of a finished command meets the claim and the journal.

    slack_sdk's client reads in its own threads: each envelope crosses into the event
    loop, and each acknowledgement is sent from a thread of its own (a send can wait on a
    reconnect), so the loop never blocks on the socket.
    """

    mode = "socket"

    def __init__(
        self, app_token: str, web_client: ClockedWebClient, ping_interval: float = 2.0
    ) -> None:
        self.app_token = app_token
        self.web_client = web_client
        self.ping_interval = ping_interval
        self._client: _Client | None = None
        self._handler: EventHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connected_since: float | None = None
        """When Slack's hello opened the current connection (time.monotonic)."""
        self.on_reconnect: Reconnected | None = None
        """Called on the loop at each hello after the first: Slack retries what no
        connection acknowledged, but its second retry comes a minute later (Bot._catch_up)."""

    async def start(self, handler: EventHandler) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        client = _Client(
            app_token=self.app_token,
            web_client=self.web_client.sync,
            ping_interval=self.ping_interval,
            auto_reconnect_enabled=True,
            concurrency=1,  # envelopes reach the loop in Slack's order: the listener hands over
        )
        client.backoff = Backoff()
        client.stopping = threading.Event()
        client.message_listeners.append(self._on_message)
        client.socket_mode_request_listeners.append(self._on_request)
        self._client = client
        try:
            await in_thread(client.connect)
            if not client.is_connected():
                raise ConnectionError(
                    "Socket Mode did not connect (the log above says why); check the "
                    "network and that Socket Mode is on for the app"
                )
        except BaseException:
            await self._close()
            raise

    def _on_message(self, _client: SocketModeClient, message: dict[str, Any], _raw: str) -> None:
        """slack_sdk's thread: Slack's hello opens each connection (what came meanwhile is
        late, so the bot reads back for a while: Bot._look_back)."""
        if message.get("type") != "hello":
            return
        reopened = self.connected_since is not None
        self.connected_since = time.monotonic()
        loop, on_reconnect = self._loop, self.on_reconnect
        if reopened and on_reconnect is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
                asyncio.run_coroutine_threadsafe(on_reconnect(), loop)

    def _on_request(self, client: SocketModeClient, req: SocketModeRequest) -> None:
        """slack_sdk's listener, in one of its threads: hand the envelope to the loop."""
        send = functools.partial(in_thread, client.send_socket_mode_response)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
                loop.call_soon_threadsafe(self._received, req, send)

    def _received(self, req: SocketModeRequest, send: Send) -> None:
        """An envelope, on the event loop: handle its event, and ack it once."""
        if isinstance(self._client, _Client):
            self._client.backoff.reset()

        acked = False

        async def ack() -> None:
            nonlocal acked
            if not acked:
                acked = True
                await send(SocketModeResponse(envelope_id=req.envelope_id))

        event = None
        if req.type == "events_api":
            payload = req.payload or {}
            event = Event.from_slack(payload.get("event") or {}, req.retry_attempt or 0)
        if event is None or self._handler is None:
            self._spawn(ack())
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
        return self._client is not None and self._client.is_connected()

    async def stop(self) -> None:
        await self._close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        closing = asyncio.ensure_future(in_thread(client.close))
        _, late = await asyncio.wait({closing}, timeout=CLOSE_WAIT_S)
        if late:  # its threads are daemons: they do not hold the process up
            log.warning("Socket Mode did not close within %g s; leaving it", CLOSE_WAIT_S)
