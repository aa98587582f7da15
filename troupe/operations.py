"""The device operations, defined once: each one's name, whether repeating it is safe, its args.

Every layer reads this table: the recognizer's intents become these operations, the
federation protocol asks `idempotent` before a taker repeats one, a driver's act() gets
one and returns the device's new state, and the runtime words the answer from the
operation, its arguments and that state (troupe.outcomes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Argument:
    """One argument an operation takes."""

    name: str
    doc: str
    unit: str = ""
    """How a value is written in an answer: "%" gives "30%", " K" gives "2700 K"."""

    def words(self, value: Any) -> str:
        return f"{value.lower() if isinstance(value, str) else value}{self.unit}"


@dataclass(frozen=True)
class Operation:
    """What can be done to a device."""

    name: str
    idempotent: bool
    """Safe to repeat: a bot taking over a silent one may do it again. A toggle is not
    (twice undoes it), so a taker reports it instead of guessing."""
    arguments: tuple[Argument, ...] = ()
    changes: bool = True
    """False for a question (query): it reads the state and never reaches act()."""
    doc: str = ""


BRIGHTNESS = Argument("brightness", "0-100 percent; 0 turns the device off", "%")
COLOR = Argument("color", "a colour name (troupe.colour): a CSS colour or a named white")
TEMPERATURE = Argument("temperature", "a white's colour temperature in kelvin", " K")
DURATION = Argument(
    "duration_s", "undo after this many seconds: the runtime's timer, never given to act()"
)

OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in (
        Operation("on", True, (DURATION,), doc="switch it on"),
        Operation("off", True, (DURATION,), doc="switch it off"),
        Operation("toggle", False, doc="switch it to the opposite of what it is"),
        Operation(
            "set",
            True,
            (BRIGHTNESS, COLOR, TEMPERATURE, DURATION),
            doc="switch it on with a brightness, a colour or a colour temperature",
        ),
        Operation("query", True, changes=False, doc="say its state"),
    )
}
"""Every operation, by name."""

SETTINGS = tuple(a for a in OPERATIONS["set"].arguments if a is not DURATION)
"""What a "set" changes on the device, in the order an answer names them."""


def operation(name: str) -> Operation:
    """The operation called `name`; ValueError (one sentence) for one that does not exist."""
    found = OPERATIONS.get(name)
    if found is None:
        raise ValueError(f"there is no operation {name!r}; there are {', '.join(OPERATIONS)}")
    return found


def describe_setting(args: Mapping[str, Any]) -> str:
    """The part of a "set" that was asked for, as words: "30%, red" or "2700 K" ("" if none)."""
    parts = [a.words(args[a.name]) for a in SETTINGS if args.get(a.name) not in (None, "")]
    return ", ".join(parts)
