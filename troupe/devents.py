"""Device events: what a device did by itself (a press, motion, offline, back, changed).

A driver reports one with `await self.emit(device, kind, detail)`; the bot stamps it with
Slack's time and hands the frozen DeviceEvent to every listener on `bot.event_listeners`
(the announcer that posts it in chat, automations that trigger on it). Listeners run as
their own tasks, so a slow one never holds up a driver or another listener.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from troupe.tasks import spawn

log = logging.getLogger(__name__)

Kind = Literal["pressed", "motion", "offline", "online", "changed"]
KINDS: tuple[str, ...] = typing.get_args(Kind)


@dataclass(frozen=True)
class DeviceEvent:
    """One thing a device did, as one bot saw it."""

    device: str
    """The device's canonical name (the federation file's)."""
    kind: Kind
    """pressed (a wall switch), motion, offline, online, changed (by itself, not by troupe)."""
    at: float
    """When the bot saw it, on Slack's clock (never the Pi's)."""
    detail: str = ""
    """A few words: the new state after a press or a change ("on", "off"), the reason a
    device is offline, a motion sensor's own message."""
    seen_by: str = ""
    """The bot that saw it."""


Emit = Callable[[str, Kind, str], Awaitable[None]]
"""What a driver calls: emit(device, kind, detail)."""
Listener = Callable[[DeviceEvent], Awaitable[None]]
"""What the bot's parts subscribe: called once per event this bot sees."""


def dispatch(listeners: Iterable[Listener], event: DeviceEvent) -> None:
    """Start every listener on the event, each in its own task (a failure is logged)."""
    for listener in listeners:
        spawn(listener(event), f"the {event.kind} event of the {event.device}", logger=log)
