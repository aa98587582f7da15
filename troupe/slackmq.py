"""SlackMQ v2: claim, mark done, elect a taker and release one Slack message.

A pin is the lock. `pins.add` succeeding means this bot won; Slack's `already_pinned`
means a peer won (a normal False); every other answer is an error, never "not mine".
The pin is released late (at the message's ts + linger, past the stale limit), so a late
bot always meets `already_pinned` or finds the command stale.

Also the seed's API, `slackmq(token, channel, ts).ack() / .unack()`, made safe: no blocking
sleep, no early unpin, and inside a command troupe already holds, ack() is simply True.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from troupe.errors import ClaimError
from troupe.slackapi import sync_client

log = logging.getLogger(__name__)

DONE = "white_check_mark"
"""The done mark: the reaction a bot adds once every action of a command is carried out."""

TAKEOVER = "arrows_counterclockwise"
"""The takeover ballot: the first bot to react with it finishes a dead holder's command."""

DEFAULT_STALE_S = 30.0
DEFAULT_LINGER_S = 45.0


def message_age(ts: str, now: float | None = None) -> float:
    """Seconds since Slack stamped the message (its ts is the Unix time it was posted)."""
    return (time.time() if now is None else now) - float(ts)


class Lock(Protocol):
    """What the federation needs from Slack to coordinate one message (an I/O port).

    The Slack implementation is SlackMQ below; tests and the model checker use an
    in-memory one, so the federation logic runs without sockets.
    """

    async def claim(self, channel: str, ts: str) -> bool:
        """Pin the message: True if this bot now holds it, False if a peer does."""

    async def mark_done(self, channel: str, ts: str) -> None:
        """Add the done mark."""

    async def is_done(self, channel: str, ts: str) -> bool:
        """Whether any bot has put the done mark on the message."""

    async def elect(self, channel: str, ts: str) -> bool:
        """Cast the takeover ballot: True if this bot is the first and no done mark exists."""

    async def release(self, channel: str, ts: str) -> None:
        """Unpin (no error if already unpinned)."""


class SlackMQ:
    """The Lock on Slack's Web API (pins and reactions), for one bot user."""

    def __init__(self, client: AsyncWebClient, user_id: str) -> None:
        self.client = client
        self.user_id = user_id

    async def _call(self, method: str, ok_codes: frozenset[str] = frozenset(), **kw: Any) -> str:
        """Call a method; return "ok" or an expected error code; raise ClaimError otherwise."""
        try:
            await getattr(self.client, method.replace(".", "_"))(**kw)
        except SlackApiError as err:
            code = str(err.response.get("error", "unknown_error"))
            if code in ok_codes:
                return code
            raise ClaimError(method, code) from err
        return "ok"

    async def claim(self, channel: str, ts: str) -> bool:
        code = await self._call(
            "pins.add", frozenset({"already_pinned"}), channel=channel, timestamp=ts
        )
        return code == "ok"

    async def mark_done(self, channel: str, ts: str) -> None:
        await self._call(
            "reactions.add",
            frozenset({"already_reacted"}),
            channel=channel,
            timestamp=ts,
            name=DONE,
        )

    async def _reactions(self, channel: str, ts: str) -> dict[str, list[str]]:
        try:
            resp = await self.client.reactions_get(channel=channel, timestamp=ts, full=True)
        except SlackApiError as err:
            raise ClaimError("reactions.get", str(err.response.get("error"))) from err
        message = resp.get("message") or {}
        return {r["name"]: list(r.get("users", [])) for r in message.get("reactions", [])}

    async def is_done(self, channel: str, ts: str) -> bool:
        return DONE in await self._reactions(channel, ts)

    async def elect(self, channel: str, ts: str) -> bool:
        code = await self._call(
            "reactions.add",
            frozenset({"already_reacted"}),
            channel=channel,
            timestamp=ts,
            name=TAKEOVER,
        )
        reactions = await self._reactions(channel, ts)
        if DONE in reactions:
            return False
        ballots = reactions.get(TAKEOVER, [])
        # Bots sharing one bot user (rtm, shared-app) see already_reacted when a peer voted.
        return code == "ok" and bool(ballots) and ballots[0] == self.user_id

    async def release(self, channel: str, ts: str) -> None:
        await self._call(
            "pins.remove",
            frozenset({"no_pin", "message_not_found"}),
            channel=channel,
            timestamp=ts,
        )


# --- the seed's API ----------------------------------------------------------------

_held: ContextVar[frozenset[tuple[str, str]]] = ContextVar("troupe_held", default=frozenset())


@contextmanager
def holding(channel: str, ts: str) -> Iterator[None]:
    """Mark (channel, ts) as held by troupe while a plugin runs, so its ack() is True."""
    token = _held.set(_held.get() | {(channel, ts)})
    try:
        yield
    finally:
        _held.reset(token)


def _default_base_url() -> str | None:
    return os.environ.get("TROUPE_SLACK_BASE_URL") or None


class slackmq:
    """The seed's `slackmq(token, channel, ts)` with ack()/unack(), made safe.

    - Inside a command troupe holds, ack() is True at once and unack() does nothing:
      troupe claimed the message and will release it.
    - Standalone: ack() pins (True), meets already_pinned (False), refuses a stale message
      (False); any other error raises ClaimError instead of reading as "not mine".
      unack() puts the done mark and releases the pin at ts + linger in the background,
      so a late duplicate still meets the pin — and nothing sleeps.
    """

    base_url: str | None = None
    stale_s: float = DEFAULT_STALE_S
    linger_s: float = DEFAULT_LINGER_S

    def __init__(self, api_token: str, channel: str, timestamp: str) -> None:
        self.api_token = api_token
        self.channel = channel
        self.timestamp = timestamp

    def _inside_troupe(self) -> bool:
        return (self.channel, self.timestamp) in _held.get()

    def _client(self) -> Any:
        return sync_client(self.api_token, self.base_url or _default_base_url())

    def ack(self, emoji: str | None = None, stars: bool | None = None) -> bool:
        if self._inside_troupe():
            return True
        if message_age(self.timestamp) > self.stale_s:
            log.info(
                "not acking %s/%s: older than %.0f s", self.channel, self.timestamp, self.stale_s
            )
            return False
        client = self._client()
        try:
            client.pins_add(channel=self.channel, timestamp=self.timestamp)
        except SlackApiError as err:
            code = str(err.response.get("error"))
            if code == "already_pinned":
                return False
            raise ClaimError("pins.add", code) from err
        if emoji:
            client.reactions_add(channel=self.channel, timestamp=self.timestamp, name=emoji)
        if stars:
            log.warning("slackmq: stars are gone from Slack's API; ignoring stars=%r", stars)
        return True

    def unack(self, emoji: str | None = None, stars: bool | None = None) -> bool:
        if self._inside_troupe():
            return True
        client = self._client()
        try:
            client.reactions_add(channel=self.channel, timestamp=self.timestamp, name=DONE)
        except SlackApiError as err:
            if err.response.get("error") != "already_reacted":
                raise ClaimError("reactions.add", str(err.response.get("error"))) from err
        delay = max(0.0, float(self.timestamp) + self.linger_s - time.time())
        timer = threading.Timer(delay, self._release, args=(client, emoji))
        timer.daemon = True
        timer.start()
        return True

    def _release(self, client: Any, emoji: str | None) -> None:
        try:
            client.pins_remove(channel=self.channel, timestamp=self.timestamp)
            if emoji:
                client.reactions_remove(channel=self.channel, timestamp=self.timestamp, name=emoji)
        except SlackApiError as err:
            log.warning(
                "slackmq: could not release %s/%s: %s",
                self.channel,
                self.timestamp,
                err.response.get("error"),
            )
