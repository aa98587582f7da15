"""RTM through slackbot's client (mode rtm): one classic bot token, many connections.

slackbot is synchronous (websocket-client), so its socket is read in a thread and each
event crosses into the event loop with call_soon_threadsafe. slackbot calls the Web API
through slacker, which would put the token in the URL query string and open RTM with
rtm.start; Slack refuses both to apps created since 2021, so the client is given a slacker
that sends the token in the Authorization header and connects with rtm.connect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import requests
import slacker
from slackbot.slackclient import SlackClient
from websocket import WebSocketConnectionClosedException, WebSocketTimeoutException

from troupe.tasks import spawn
from troupe.transports.base import Backoff, Event, EventHandler, Reconnected

log = logging.getLogger(__name__)


def point_slacker_at(base_url: str | None) -> None:
    """slacker builds every URL with its get_api_url; aim it at another Web API root."""
    if base_url:
        root = base_url if base_url.endswith("/") else base_url + "/"
        slacker.get_api_url = lambda method: root + method  # type: ignore[attr-defined]


RATE_LIMIT_RETRIES = 30
"""What slackbot's own SlackClient gives slacker."""


def header_auth_slacker(token: str) -> slacker.Slacker:
    """A slacker client that sends `token` in the Authorization header of every call.

    slacker adds its token to the query string only when it has one; this one has none and
    its session carries the header instead, as Slack requires of apps created since
    24 February 2021 (and accepts from every app).
    """
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return slacker.Slacker(None, session=session, rate_limit_retries=RATE_LIMIT_RETRIES)


def _rtm_connect(client: SlackClient) -> None:
    """slackbot's rtm_connect with rtm.connect instead of rtm.start (which Slack retired:
    it answers rtm_connect_required to apps created since 30 November 2021), and without
    the second slackbot sleeps after it. rtm.connect's answer has all slackbot reads."""
    client.parse_slack_login_data(client.webapi.rtm.connect().body)


async def _noop_ack() -> None:
    return None


class RtmTransport:
    """One RTM connection, through slackbot's SlackClient."""

    mode = "rtm"

    def __init__(self, token: str, base_url: str | None = None) -> None:
        self.token = token
        self.base_url = base_url
        self._client: SlackClient | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: EventHandler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.on_reconnect: Reconnected | None = None
        """RTM does not replay what was said while a connection was down: this catches up."""
        self.connected_since: float | None = None
        """When the current connection opened (its peers' renewals sent before then were
        never heard). After a reconnect the bot catches up (on_reconnect), and does not
        read back before each command (Bot._look_back is app-per-bot's only)."""

    async def start(self, handler: EventHandler) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        point_slacker_at(self.base_url)
        self._client = await asyncio.to_thread(self._connect_once)
        self._thread = threading.Thread(target=self._read_loop, name="rtm", daemon=True)
        self._thread.start()

    def _connect_once(self) -> SlackClient:
        client = SlackClient(self.token, connect=False)
        client.webapi = header_auth_slacker(self.token)
        client.list_users_and_channels()
        _rtm_connect(client)
        client.websocket.settimeout(0.5)
        self.connected_since = time.monotonic()
        self._connected.set()
        return client

    def _reconnect(self) -> None:
        self._connected.clear()
        backoff = Backoff()
        while not self._stop.is_set():
            backoff_delay = backoff.next_delay()
            if self._stop.wait(backoff_delay):
                return
            try:
                assert self._client is not None
                _rtm_connect(self._client)
                self._client.websocket.settimeout(0.5)
                self.connected_since = time.monotonic()
                self._connected.set()
                log.info("RTM reconnected")
                if self.on_reconnect is not None and self._loop is not None:
                    asyncio.run_coroutine_threadsafe(self.on_reconnect(), self._loop)
                return
            except Exception as err:  # any failure: wait longer and try again
                log.warning("RTM reconnect failed: %s", err)

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            client = self._client
            if client is None:
                return
            try:
                data = client.websocket.recv()
            except WebSocketTimeoutException:
                continue
            except (WebSocketConnectionClosedException, OSError) as err:
                if self._stop.is_set():
                    return
                log.warning("RTM connection lost (%s); reconnecting", err)
                self._reconnect()
                continue
            self._dispatch(data)

    def _dispatch(self, data: str | bytes) -> None:
        try:
            frame = json.loads(data)
        except (ValueError, TypeError):
            log.warning("RTM: ignoring a frame that is not JSON")
            return
        if not isinstance(frame, dict):
            return
        event = Event.from_slack(frame)
        if event is None or self._loop is None or self._handler is None:
            return
        self._loop.call_soon_threadsafe(self._spawn, event)

    def _spawn(self, event: Event) -> None:
        assert self._handler is not None
        spawn(self._handler(event, _noop_ack), "an RTM event", self._tasks, logger=log)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def stop(self) -> None:
        self._stop.set()
        if self._client is not None and self._client.websocket is not None:
            try:
                self._client.websocket.close(timeout=1)
            except Exception as err:  # already closed: nothing more to do
                log.debug("closing RTM socket: %s", err)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
