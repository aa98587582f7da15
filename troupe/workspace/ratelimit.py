"""STUB: Slack's rate-limit tiers; to be written."""

from __future__ import annotations


class RateLimiter:
    def __init__(self, multiplier: float | None) -> None:
        self.multiplier = multiplier
