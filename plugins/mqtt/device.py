"""What every MQTT device shares: what it heard, the command it sends, its last known state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from troupe.federation import Action
from troupe.plugin import DeviceState, DriverError


class Malformed(ValueError):
    """A device sent something this driver cannot read; logged, never fatal."""


@dataclass(frozen=True)
class Heard:
    """What one message from a device told: the waiters of act() look at this."""

    on: bool | None = None
    brightness: int | None = None
    mireds: int | None = None
    xy: tuple[float, float] | None = None
    rpc_id: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Command:
    """A message to publish, and what the device must say back for it to count as done."""

    topic: str
    payload: str
    confirms: Callable[[Heard], bool] | None
    """None: nothing will confirm it (a generic device without a state topic)."""
    retain: bool = False
    assumed: bool | None = None
    """The state to assume once published, when nothing confirms it."""


def percent_of(action: Action) -> int | None:
    value = action.kwargs.get("brightness")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise DriverError(f"brightness must be between 0 and 100 percent, not {value}")
    return round(value)


def wants_on(op: str, current: bool | None) -> bool | None:
    """The state an op leads to; None for a toggle of an unknown state."""
    if op == "off":
        return False
    if op == "toggle":
        return None if current is None else not current
    return True


class Device:
    """One device: the topics it speaks on, how to command it, what it last said."""

    options: Any

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.options = options
        self.available: bool | None = None
        """None until the device has said (a retained LWT or availability message)."""
        self.tells_online = False
        """Whether the device has said if it is online since troupe started: after a
        reconnect, a command waits (bounded) for it to say so again."""
        self.on: bool | None = None
        self.brightness: int | None = None
        self.color: str | None = None
        self.temperature: int | None = None
        self.lock = asyncio.Lock()
        self.waiters: list[tuple[Callable[[Heard], bool], asyncio.Future[Heard]]] = []

    def subscriptions(self) -> list[str]:
        raise NotImplementedError

    def refresh(self) -> list[tuple[str, str]]:
        """Messages that make the device report its state (sent after each connect)."""
        return []

    def receive(self, topic: str, payload: bytes) -> Heard | None:
        raise NotImplementedError

    def command(self, action: Action) -> Command:
        raise NotImplementedError

    def forget(self) -> None:
        """The connection dropped: retained availability will be sent again."""
        self.tells_online = self.tells_online or self.available is not None
        self.available = None

    def snapshot(self) -> DeviceState:
        if self.available is False:
            return DeviceState(online=False, detail="offline")
        return DeviceState(
            on=self.on,
            brightness=self.brightness if self.on else None,
            color=self.color if self.on else None,
            temperature=self.temperature if self.on else None,
            detail="" if self.on is not None else "no state reported yet",
        )

    def _switch_only(self, action: Action) -> None:
        if action.op == "set":
            raise DriverError(f"the {self.name} is a switch: it cannot dim or change colour")


def text_of(payload: bytes) -> str:
    return payload.decode(errors="replace").strip()


def json_payload(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        raise Malformed("it is not JSON") from None


def on_off(value: object, on: str = "ON", off: str = "OFF") -> bool:
    if isinstance(value, str) and value.upper() in (on.upper(), off.upper()):
        return value.upper() == on.upper()
    raise Malformed(f"{value!r} is neither {on} nor {off}")
