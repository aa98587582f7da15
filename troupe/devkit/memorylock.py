"""An in-memory Slack board of pins and reactions: the Lock for tests and the model checker.

It keeps Slack's rules that SlackMQ relies on (one pin per message, already_pinned,
reactions per user in the order they were added) and tells every subscribed bot what
happened, each after its own delay, the way Slack's events would.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from troupe.federation import Coordinator
from troupe.slackmq import DONE, TAKEOVER, WORKING


@dataclass
class MemoryBoard:
    """The shared pins and reactions, plus per-bot event delays."""

    pins: set[tuple[str, str]] = field(default_factory=set)
    reactions: dict[tuple[str, str], dict[str, list[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    subscribers: dict[str, Coordinator] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def subscribe(self, user: str, coordinator: Coordinator) -> None:
        self.subscribers[user] = coordinator

    def _emit(self, kind: str, key: tuple[str, str]) -> None:
        loop = asyncio.get_running_loop()
        for user, coordinator in self.subscribers.items():
            seen = {
                "pin": coordinator.seen_pin,
                DONE: coordinator.seen_done,
                TAKEOVER: coordinator.seen_ballot,
                WORKING: coordinator.seen_renewal,
            }.get(kind)
            if seen is not None:
                loop.call_later(self.delays.get(user, 0.0), seen, *key)


@dataclass
class MemoryLock:
    """One bot's Lock on a MemoryBoard."""

    board: MemoryBoard
    user: str

    async def claim(self, channel: str, ts: str) -> bool:
        self.board.calls.append((self.user, "pins.add"))
        key = (channel, ts)
        if key in self.board.pins:
            return False
        self.board.pins.add(key)
        self.board._emit("pin", key)
        return True

    async def _react(self, channel: str, ts: str, name: str) -> bool:
        self.board.calls.append((self.user, "reactions.add"))
        users = self.board.reactions[(channel, ts)][name]
        if self.user in users:
            return False
        users.append(self.user)
        self.board._emit(name, (channel, ts))
        return True

    async def mark_done(self, channel: str, ts: str) -> None:
        await self._react(channel, ts, DONE)

    async def marks(self, channel: str, ts: str) -> frozenset[str]:
        self.board.calls.append((self.user, "reactions.get"))
        return frozenset(
            name for name, users in self.board.reactions[(channel, ts)].items() if users
        )

    async def is_done(self, channel: str, ts: str) -> bool:
        return DONE in await self.marks(channel, ts)

    async def taken_up(self, channel: str, ts: str) -> bool:
        self.board.calls.append((self.user, "reactions.get"))
        reactions = self.board.reactions[(channel, ts)]
        return bool(reactions[DONE]) or any(u != self.user for u in reactions[TAKEOVER])

    async def elect(self, channel: str, ts: str) -> bool:
        voted = await self._react(channel, ts, TAKEOVER)
        if await self.is_done(channel, ts):
            return False
        return voted and self.board.reactions[(channel, ts)][TAKEOVER][0] == self.user

    def won_by_ballot(self, channel: str, ts: str) -> bool:
        return False  # no one outside the fleet pins on this board

    def claim_sent(self, channel: str, ts: str) -> float | None:
        return None  # no rate limits hold a claim up on this board

    async def renew(self, channel: str, ts: str) -> None:
        """Flip this user's ⏳, as SlackMQ does (one call)."""
        users = self.board.reactions[(channel, ts)][WORKING]
        shown = self.user in users
        self.board.calls.append((self.user, "reactions.remove" if shown else "reactions.add"))
        if shown:
            users.remove(self.user)
        else:
            users.append(self.user)
        self.board._emit(WORKING, (channel, ts))

    async def release(self, channel: str, ts: str) -> None:
        self.board.calls.append((self.user, "pins.remove"))
        self.board.pins.discard((channel, ts))
