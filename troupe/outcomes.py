"""How a command ended, as plain values, and the one place each becomes words in its thread.

Every command a person sends ends in exactly one of these: the pipeline decides the value,
`render` says it. A driver returns its device's new state (Acted), never a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

from troupe.federation import Action
from troupe.intents import Command
from troupe.operations import describe_setting
from troupe.plugin import DeviceState

UNKNOWN = "I don't know that — try `help`."


@dataclass(frozen=True)
class NotUnderstood:
    """Text addressed to a bot (mention, direct message) that is no command."""


@dataclass(frozen=True)
class NearMiss:
    """The shape of a command, naming no known device, area or scene (or a bad value)."""

    command: Command


@dataclass(frozen=True)
class Refused:
    """Not allowed for this person, here, or at this size."""

    reason: str


@dataclass(frozen=True)
class Stale:
    """Older than the stale limit on Slack's clock: never run."""

    age_s: float
    limit_s: float


@dataclass(frozen=True)
class OwnerOffline:
    """Devices only their owners drive, and no owner answered."""

    devices: tuple[str, ...]
    owners: tuple[str, ...]


@dataclass(frozen=True)
class ClaimFailed:
    """Slack refused the claim with an error (not a peer's pin)."""

    code: str
    where: str


@dataclass(frozen=True)
class Superseded:
    """A newer command on the same device acted, or is about to (nothing answered it yet):
    this late one leaves the device to it."""

    device: str
    newer_at: str


@dataclass(frozen=True)
class LeaseLost:
    """The holder's lease ran out before this device's turn: a taker may be acting."""

    device: str


@dataclass(frozen=True)
class TooLate:
    """A taken-over or resumed command that passed the stale limit before this device's
    turn: a newer command may already have acted, so it is not run."""

    device: str
    limit: float


@dataclass(frozen=True)
class NotRepeated:
    """A taker's turn on an action that is not safe to repeat (a toggle, a relative step):
    the holder may have done it already, and doing it twice would undo it."""

    device: str
    op: str


@dataclass(frozen=True)
class AlreadyDone:
    """This bot's journal shows it did the action before a restart: answered, not redone."""

    device: str


@dataclass(frozen=True)
class AlreadyShown:
    """An action a stop cut short, found already done on the device once back: it either
    got the action before the stop or already was so; the journal cannot tell which, so
    the answer says what is true either way and the action is not sent again."""

    device: str
    state: DeviceState


@dataclass(frozen=True)
class Acted:
    """A driver did the action; `state` is the device's state it returned."""

    action: Action
    state: DeviceState


@dataclass(frozen=True)
class Queried:
    """A question about a device ("is the porch switch on"), answered from its state."""

    device: str
    state: DeviceState


Outcome = (
    NotUnderstood
    | NearMiss
    | Refused
    | Stale
    | OwnerOffline
    | ClaimFailed
    | Superseded
    | LeaseLost
    | TooLate
    | NotRepeated
    | AlreadyDone
    | AlreadyShown
    | Acted
    | Queried
)


def _near_miss(command: Command) -> str:
    if command.problem:
        return f"I can't do that: {command.problem}."
    text = f"I don't know a device or area called “{command.unknown}”"
    if command.suggestion:
        return f"{text} — did you mean the {command.suggestion}?"
    return f"{text} — try `devices`."


def _and(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _acted(action: Action, state: DeviceState) -> str:
    device = action.device
    if action.op in ("on", "off"):
        return f"turned {action.op} the {device}"
    if action.op == "toggle":
        now = "" if state.on is None else f" (now {'on' if state.on else 'off'})"
        return f"toggled the {device}{now}"
    setting = describe_setting(action.kwargs)
    if action.op == "set" and state.on is False:
        return f"turned off the {device}"  # brightness 0
    if not setting:
        return f"turned on the {device}"
    return f"set the {device} to {setting}"


def render(outcome: Outcome) -> str:
    """One clear sentence for how a command ended."""
    match outcome:
        case Acted(action, state):
            return _acted(action, state)
        case Queried(device, state):
            return f"The {device} is {state.describe()}."
        case NotUnderstood():
            return UNKNOWN
        case NearMiss(command):
            return _near_miss(command)
        case Refused(reason):
            return f"Sorry, {reason}."
        case Stale(age, limit):
            return (
                f"That command is {age:.0f} s old, past the {limit:.0f} s limit, so I did"
                " not run it."
            )
        case OwnerOffline(devices, owners):
            which = "belongs" if len(devices) == 1 else "belong"
            verb = "has" if len(owners) == 1 else "have"
            return (
                f"The {_and(devices)} {which} to {_and(owners)}, which {verb} not answered;"
                " nothing was done: check that Pi and ask again."
            )
        case ClaimFailed("too_many_pins", where):
            return (
                f"I could not take this command: {where} has 100 pinned messages, Slack's"
                " limit. Unpin a few and ask again."
            )
        case ClaimFailed(code, _):
            return f"I could not take this command: Slack said `{code}`. Ask again in a moment."
        case Superseded(device, at):
            return f"I left the {device} to the newer command at {at}."
        case LeaseLost(device):
            return (
                f"I did not get to the {device}: my hold on this command ran out while I"
                " waited for Slack, so another bot finishes it."
            )
        case TooLate(device, limit):
            return (
                f"I did not change the {device}: the command passed the {limit:.0f} s limit"
                " before I could take it over, so it is not run."
            )
        case NotRepeated(device, op):
            verb = "change" if op == "step" else op
            return (
                f"I did not {verb} the {device}: the claiming bot may have done it already,"
                " and doing it twice would undo it. Check it and ask again."
            )
        case AlreadyDone(device):
            return f"I had already done that to the {device} before I restarted."
        case AlreadyShown(device, state):
            return (
                f"The {device} is {state.describe()} already: I restarted in the middle of"
                " this command, so I did not send it again."
            )
    raise TypeError(f"no words for {outcome!r}")
