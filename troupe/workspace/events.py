"""STUB: the event hub (Socket Mode / RTM delivery); to be written."""

from __future__ import annotations

from typing import Any


class EventHub:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def publish(self, event: dict[str, Any], *, channel: str) -> None:
        """Deliver one Slack event (the inner event dict) for a channel."""

    async def close(self) -> None:
        """Close every connection."""
