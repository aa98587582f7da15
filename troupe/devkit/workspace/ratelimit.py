"""Slack's Web API rate limits: per app, per method, over a sliding window.

Slack publishes a tier per method (Tier 1 "1+ per minute" up to Tier 4 "100+ per
minute", bursts tolerated) and a special limit for chat.postMessage (about one message
per second per channel, short bursts allowed). Each app (a bot token's app) has its own
budget per method, so three bots of three apps never starve each other, while the bots
of one shared app do. Humans' user tokens are not limited here.

The limit of a method is its tier's count times the configured multiplier, counted over
`window_s` (60 s, as Slack). Tests may shorten the window through the control API
(POST /control/ratelimit) so a 429's Retry-After is seconds, not a minute; the counts
per window stay the same.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

TIER_PER_MINUTE = {1: 10, 2: 20, 3: 50, 4: 100}
"""Calls per window by tier. Tier 1 is "1+ per minute" with bursts tolerated: 10 lets
several RTM connections of one classic app (re)connect at once, as Slack allows."""

POST_PER_CHANNEL = 60
"""chat.postMessage: about one per second per channel, counted per minute so that short
bursts go through."""

METHOD_TIERS: dict[str, int | str] = {
    "api.test": 4,
    "auth.test": 4,
    "apps.connections.open": 1,
    "rtm.connect": 1,
    "rtm.start": 1,
    "chat.postMessage": "post",
    "chat.update": 3,
    "chat.delete": 3,
    "conversations.history": 3,
    "conversations.replies": 3,
    "conversations.list": 2,
    "conversations.info": 3,
    "conversations.join": 3,
    "conversations.members": 4,
    "conversations.open": 3,
    "users.list": 2,
    "users.info": 4,
    "users.getPresence": 3,
    "bots.info": 3,
    "pins.add": 2,
    "pins.remove": 2,
    "pins.list": 2,
    "reactions.add": 3,
    "reactions.remove": 2,
    "reactions.get": 3,
}
"""Slack's published tier of every method served ("post": chat.postMessage's own limit)."""


class RateLimiter:
    """Counts calls per (app, method[, channel]) and says when one is over the limit.

    `multiplier` None turns limits off. Calls answered 429 do not use up the budget.
    """

    def __init__(
        self,
        multiplier: float | None,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.multiplier = multiplier
        self.window_s = window_s
        self._clock = clock
        self._calls: dict[tuple[str, ...], deque[float]] = {}

    def limit(self, method: str) -> int | None:
        """Calls allowed per window for one app (per channel for chat.postMessage)."""
        tier = METHOD_TIERS.get(method)
        if self.multiplier is None or tier is None:
            return None
        base = POST_PER_CHANNEL if tier == "post" else TIER_PER_MINUTE[int(tier)]
        return max(1, math.floor(base * self.multiplier))

    def hit(self, app_id: str | None, method: str, *, channel: str | None = None) -> int | None:
        """Record one call; None if allowed, else the Retry-After seconds (>= 1)."""
        limit = self.limit(method)
        if app_id is None or limit is None:
            return None
        key: tuple[str, ...] = (app_id, method)
        if METHOD_TIERS.get(method) == "post":
            key += (channel or "",)
        now = self._clock()
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - self.window_s:
            calls.popleft()
        if len(calls) >= limit:
            return max(1, math.ceil(calls[0] + self.window_s - now))
        calls.append(now)
        return None

    def configure(
        self, *, window_s: float | None = None, multiplier: float | str | None = ""
    ) -> None:
        """Change the window and/or the multiplier ("" keeps it) and forget past calls."""
        if window_s is not None:
            self.window_s = window_s
        if multiplier != "":
            self.multiplier = None if multiplier is None else float(multiplier)
        self.reset()

    def reset(self) -> None:
        """Forget every counted call."""
        self._calls.clear()
