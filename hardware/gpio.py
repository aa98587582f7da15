"""A simulated GPIO board over gpiozero's MockFactory: pin levels by device, and the outside world.

The gpio_relay driver wires its relays, wall switches and motion sensors onto a board's
factory and labels each pin with its device, so the demo page can show "kitchen lamp: on"
and a test or the demo can press a wall switch or walk past a motion sensor.
Boards are kept per bot (`board_for`), so a driver started with GPIOZERO_PIN_FACTORY=mock
and the page showing it meet on the same pins within one process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gpiozero.pins.mock import MockFactory, MockPin

Role = Literal["relay", "wall switch", "motion sensor"]


@dataclass(frozen=True)
class Wire:
    """What one pin is connected to: a device's relay, wall switch or motion sensor."""

    device: str
    role: Role
    pin: int
    active_high: bool = True
    """The level that means "on" (relay), "pressed" (switch, low) or "motion" (sensor)."""


class BoardError(ValueError):
    """The outside world was asked something the board cannot do (a button on an output)."""


class GpioBoard:
    """A Raspberry Pi header made of MockPins, with labels and the outside world's hands."""

    def __init__(self, factory: MockFactory | None = None) -> None:
        self.factory = factory or MockFactory()
        self._wires: dict[int, Wire] = {}
        self._lock = threading.Lock()

    # wiring (the driver) ----------------------------------------------------------------

    def wire(self, wire: Wire) -> None:
        """Label a pin with what the driver connected to it."""
        with self._lock:
            self._wires[wire.pin] = wire

    def unwire(self, device: str) -> None:
        """Forget a device's labels (its driver stopped); the pins keep their history."""
        with self._lock:
            self._wires = {p: w for p, w in self._wires.items() if w.device != device}

    @property
    def wires(self) -> list[Wire]:
        with self._lock:
            return sorted(self._wires.values(), key=lambda w: w.pin)

    # pins ---------------------------------------------------------------------------------

    def pin(self, pin: int | str) -> MockPin:
        """The MockPin of a BCM number, or of a device's input (its wall switch or sensor)."""
        number = self._number(pin)
        found: MockPin = self.factory.pin(number)
        return found

    def level(self, pin: int | str) -> bool:
        """The pin's electrical level right now: True is high (3.3 V)."""
        return bool(self.pin(pin).state)

    def history(self, pin: int | str) -> list[bool]:
        """Every level the pin went through, oldest first (MockPin.states)."""
        return [bool(s.state) for s in self.pin(pin).states]

    def assert_states(self, pin: int | str, expected: Sequence[bool | int]) -> None:
        """Check the pin went through exactly these levels (AssertionError if not)."""
        seen = self.history(pin)
        wanted = [bool(v) for v in expected]
        if seen != wanted:
            raise AssertionError(f"GPIO {self._number(pin)} went through {seen}, not {wanted}")

    def clear_history(self, pin: int | str) -> None:
        self.pin(pin).clear_states()

    # the outside world ----------------------------------------------------------------

    def press(self, pin: int | str) -> None:
        """Press and release a wall switch: the button pulls its pulled-up pin to ground."""
        target = self._input(pin, "pressed")
        target.drive_low()
        target.drive_high()

    def hold(self, pin: int | str) -> None:
        """Press a wall switch and keep it pressed (release() lets go)."""
        self._input(pin, "pressed").drive_low()

    def release(self, pin: int | str) -> None:
        self._input(pin, "released").drive_high()

    def motion(self, pin: int | str, present: bool = True) -> None:
        """Someone walks past a PIR sensor (its output goes high) or the room is still again."""
        target = self._input(pin, "triggered")
        if present:
            target.drive_high()
        else:
            target.drive_low()

    def still(self, pin: int | str) -> None:
        self.motion(pin, present=False)

    # the demo page --------------------------------------------------------------------------

    def states(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every labelled pin by device and role: {"kitchen lamp": {"relay": {"pin": 17,
        "level": False, "active": True}}}; `active` is on / pressed / motion."""
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for wire in self.wires:
            level = self.level(wire.pin)
            found.setdefault(wire.device, {})[wire.role] = {
                "pin": wire.pin,
                "level": level,
                "active": level == wire.active_high,
            }
        return found

    # helpers -------------------------------------------------------------------------------

    def _number(self, pin: int | str) -> int:
        if isinstance(pin, int) and not isinstance(pin, bool):
            return pin
        if isinstance(pin, str):
            inputs = [w for w in self.wires if w.device == pin and w.role != "relay"]
            if len(inputs) == 1:
                return inputs[0].pin
            if not inputs:
                raise BoardError(f"no wall switch or sensor of a device called {pin!r} is wired")
        raise BoardError(f"{pin!r} is not a BCM pin number or a wired device name")

    def _input(self, pin: int | str, verb: str) -> MockPin:
        target = self.pin(pin)
        if target.function != "input":
            number = self._number(pin)
            wire = self._wires.get(number)
            what = f" ({wire.device}'s {wire.role})" if wire else ""
            raise BoardError(f"GPIO {number}{what} is an output; only an input can be {verb}")
        return target


_boards: dict[str, GpioBoard] = {}
_boards_lock = threading.Lock()


def board_for(bot: str, *, create: bool = True) -> GpioBoard | None:
    """The board of a bot in this process, made on first use when `create` is true."""
    with _boards_lock:
        board = _boards.get(bot)
        if board is None and create:
            board = _boards[bot] = GpioBoard()
        return board


def register(bot: str, board: GpioBoard) -> None:
    """Give a bot this board (the demo or a test builds it first, then starts the bot)."""
    with _boards_lock:
        _boards[bot] = board


def forget(bot: str) -> None:
    with _boards_lock:
        _boards.pop(bot, None)
