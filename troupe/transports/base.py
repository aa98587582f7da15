"""The one Event type every transport produces, and the Transport contract."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Ack = Callable[[], Awaitable[None]]
"""Acknowledge the event to Slack (Socket Mode); a no-op where Slack wants no ack (RTM)."""

EventHandler = Callable[["Event", Ack], Awaitable[None]]

KINDS = frozenset(
    {"message", "app_mention", "pin_added", "pin_removed", "reaction_added", "reaction_removed"}
)


@dataclass(frozen=True)
class Event:
    """A Slack event as troupe reads it, whichever way it came.

    `ts` is the ts of the message the event is about: the message itself, or the pinned
    or reacted-to message for pin and reaction events.
    """

    kind: str
    channel: str
    ts: str
    user: str | None = None
    text: str = ""
    bot_id: str | None = None
    thread_ts: str | None = None
    subtype: str | None = None
    reaction: str | None = None
    retry_attempt: int = 0
    relay: str | None = None
    """shared-app mode: how the event reached this bot over the bus ("owned": run only this
    bot's own devices; "each": a plugin every bot runs); None when it came from Slack."""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_slack(cls, event: Mapping[str, Any], retry_attempt: int = 0) -> Event | None:
        """Read Slack's inner event dict; None for kinds troupe does not use or junk."""
        kind = event.get("type")
        if kind not in KINDS:
            return None
        try:
            if kind in ("message", "app_mention"):
                subtype = event.get("subtype")
                if subtype in ("message_changed", "message_deleted"):
                    return None
                return cls(
                    kind=kind,
                    channel=str(event["channel"]),
                    ts=str(event["ts"]),
                    user=event.get("user"),
                    text=str(event.get("text") or ""),
                    bot_id=event.get("bot_id"),
                    thread_ts=event.get("thread_ts"),
                    subtype=subtype,
                    retry_attempt=retry_attempt,
                    raw=event,
                )
            item = event["item"]
            if kind.startswith("pin_"):
                message = item.get("message") or {}
                return cls(
                    kind=kind,
                    channel=str(event.get("channel_id") or item["channel"]),
                    ts=str(message.get("ts") or item.get("ts")),
                    user=event.get("user"),
                    retry_attempt=retry_attempt,
                    raw=event,
                )
            return cls(
                kind=kind,
                channel=str(item["channel"]),
                ts=str(item["ts"]),
                user=event.get("user"),
                reaction=event.get("reaction"),
                retry_attempt=retry_attempt,
                raw=event,
            )
        except (KeyError, TypeError, AttributeError):
            return None

    @property
    def from_bot(self) -> bool:
        return bool(self.bot_id) or self.subtype == "bot_message"


Reconnected = Callable[[], Awaitable[None]]
"""Called after each reconnect (not the first connect): RTM replays nothing it missed, and
Socket Mode's retries of what no connection got may come a minute late (Bot._catch_up)."""


class Transport(Protocol):
    """Delivers events to one handler until stopped. Reconnects by itself."""

    mode: str
    on_reconnect: Reconnected | None
    connected_since: float | None
    """When the current connection opened (time.monotonic, the event loop's clock), None
    before the first: for a while after it the bot reads back what it may have missed
    (Bot._look_back), and a peer's silence counts only from it (wait_for_holder)."""

    async def start(self, handler: EventHandler) -> None:
        """Connect (returns once the first connection is up) and deliver events."""

    async def stop(self) -> None:
        """Disconnect and stop delivering."""

    @property
    def connected(self) -> bool: ...


class Backoff:
    """Exponential backoff with full jitter, so a fleet does not reconnect in lockstep."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = (
            0.0
            if self.attempt == 0
            else random.uniform(0, min(self.cap, self.base * 2**self.attempt))
        )
        self.attempt += 1
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self.attempt = 0
