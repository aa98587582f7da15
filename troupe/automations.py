"""The federation file's `location:` and `automations:`: Home Assistant's trigger /
condition / action shape, read into models the scheduler fires (troupe.scheduler).

    location: {latitude: 48.85, longitude: 2.35, timezone: Europe/Paris}
    automations:
      - alias: porch light at dusk
        triggers:
          - trigger: sun
            event: sunset
            offset: "-00:15:00"
        conditions:
          - condition: state
            device: porch switch
            state: "off"
        actions:
          - command: turn on the porch switch

Both of Home Assistant's spellings are read: `trigger:`/`triggers:`, `platform:`/`trigger:`,
`condition:`/`conditions:`, `action:`/`actions:`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from troupe.schedules import DAY_NAMES, EVERY_DAY, When
from troupe.sun import Location, sun_is_up


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _list(value: Any) -> Any:
    """Home Assistant lets one item stand for a list of one."""
    return [value] if isinstance(value, dict | str) else value


def _duration(value: Any) -> int:
    """ "-00:15:00", "00:10", -900 or "-15 minutes"-less plain seconds -> seconds."""
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    sign = -1 if text.startswith("-") else 1
    parts = text.lstrip("+-").split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        raise ValueError(f"{value!r} is not a duration; write it like '-00:15:00'")
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    return sign * (numbers[0] * 3600 + numbers[1] * 60 + numbers[2])


def _clock(value: Any) -> dt.time:
    if isinstance(value, int):  # YAML reads 07:00 unquoted as a base-60 number
        return (
            dt.time(value // 3600 % 24, value // 60 % 60, value % 60)
            if value >= 60
            else dt.time(value)
        )
    try:
        return dt.time.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day; write it like '07:00'") from None


def _weekdays(value: Any) -> frozenset[int]:
    days = set()
    for item in _list(value):
        name = str(item).strip().lower()[:3]
        day = next((i for i, n in enumerate(DAY_NAMES) if n.startswith(name)), None)
        if day is None:
            raise ValueError(f"{item!r} is not a weekday; write mon, tue, ... sun")
        days.add(day)
    return frozenset(days)


Clock = Annotated[dt.time, BeforeValidator(_clock)]
Weekdays = Annotated[frozenset[int], BeforeValidator(_weekdays)]
Seconds = Annotated[int, BeforeValidator(_duration)]
OnOff = Annotated[str, BeforeValidator(lambda v: {True: "on", False: "off"}.get(v, str(v)).lower())]


class LocationSettings(_Frozen):
    """Where the federation is: sun times and the time zone of every schedule."""

    latitude: float = Field(0.0, ge=-90, le=90)
    longitude: float = Field(0.0, ge=-180, le=180)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _zone(self) -> LocationSettings:
        try:
            self.location.tz  # noqa: B018 (reads the zone database)
        except Exception:
            raise ValueError(
                f"{self.timezone!r} is not a time zone; use an IANA name like Europe/Paris"
            ) from None
        return self

    @property
    def location(self) -> Location:
        return Location(self.latitude, self.longitude, self.timezone)


class ScheduleSettings(_Frozen):
    """The federation file's `schedules:`: how late a missed firing may still act."""

    grace_s: float = Field(600.0, ge=0)
    """A firing every eligible bot missed is carried out if no later than this after its
    time (on Slack's clock), else only reported."""
    lookback_s: float = Field(86400.0, ge=0)
    """A bot that starts looks this far back for firings nobody posted."""


class TimeTrigger(_Frozen):
    """At a time of day (on some weekdays)."""

    trigger: Literal["time"]
    at: Clock
    weekday: Weekdays = EVERY_DAY

    def when(self) -> When:
        return When(clock=self.at, days=self.weekday)


class SunTrigger(_Frozen):
    """At sunrise or sunset, with an offset ("-00:15:00": a quarter of an hour before)."""

    trigger: Literal["sun"]
    event: Literal["sunrise", "sunset"]
    offset: Seconds = 0
    weekday: Weekdays = EVERY_DAY

    def when(self) -> When:
        return When(sun=self.event, offset_s=self.offset, days=self.weekday)


class StateTrigger(_Frozen):
    """When a device's state changes (to `to`, from `from`): a motion sensor turning on."""

    trigger: Literal["state"]
    device: str = Field(validation_alias=AliasChoices("device", "entity_id"))
    to: OnOff | None = None
    from_: OnOff | None = Field(None, validation_alias=AliasChoices("from", "from_"))

    def matches(self, device: str, before: str | None, after: str) -> bool:
        return (
            device == self.device
            and (self.to is None or after == self.to)
            and (self.from_ is None or before == self.from_)
            and before != after
        )


Trigger = Annotated[TimeTrigger | SunTrigger | StateTrigger, Field(discriminator="trigger")]


def _trigger_key(value: Any) -> Any:
    """`platform: time` (Home Assistant before 2024.10) reads as `trigger: time`."""
    if isinstance(value, dict) and "platform" in value and "trigger" not in value:
        value = {("trigger" if k == "platform" else k): v for k, v in value.items()}
    return value


class TimeCondition(_Frozen):
    """Between two times of day (across midnight when after > before), on some weekdays."""

    condition: Literal["time"]
    after: Clock | None = None
    before: Clock | None = None
    weekday: Weekdays = EVERY_DAY

    def holds(self, moment: dt.datetime, where: Location, states: dict[str, str]) -> bool:
        local = moment.astimezone(where.tz)
        if local.weekday() not in self.weekday:
            return False
        now = local.time()
        after, before = self.after, self.before
        if after is not None and before is not None and after > before:
            return now >= after or now < before
        return (after is None or now >= after) and (before is None or now < before)


class SunCondition(_Frozen):
    """The sun is up or down (`after: sunset` / `before: sunrise` as in Home Assistant,
    or plainly `state: up|down`)."""

    condition: Literal["sun"]
    state: Literal["up", "down"] | None = None
    after: Literal["sunrise", "sunset"] | None = None
    before: Literal["sunrise", "sunset"] | None = None

    def holds(self, moment: dt.datetime, where: Location, states: dict[str, str]) -> bool:
        up = sun_is_up(moment, where)
        if self.state is not None:
            return up == (self.state == "up")
        if self.after == "sunset" or self.before == "sunrise":
            return not up
        if self.after == "sunrise" or self.before == "sunset":
            return up
        return True


class StateCondition(_Frozen):
    """A device is in a state ("on"/"off") as this bot knows it when the trigger fires."""

    condition: Literal["state"]
    device: str = Field(validation_alias=AliasChoices("device", "entity_id"))
    state: OnOff

    def holds(self, moment: dt.datetime, where: Location, states: dict[str, str]) -> bool:
        return states.get(self.device) == self.state


Condition = Annotated[
    TimeCondition | SunCondition | StateCondition, Field(discriminator="condition")
]


class CommandAction(_Frozen):
    """Run a chat command, as if a person had typed it."""

    command: str


class DeviceAction(_Frozen):
    """Set a device: on or off, with optional brightness (0-100) or color."""

    device: str
    state: OnOff
    brightness: int | None = Field(None, ge=0, le=100)
    color: str | None = None

    def phrase(self) -> str:
        """The action as the chat command the recognizer reads."""
        if self.state == "off":
            return f"turn off the {self.device}"
        if self.brightness is not None:
            return f"set the {self.device} to {self.brightness}%"
        if self.color is not None:
            return f"set the {self.device} to {self.color}"
        return f"turn on the {self.device}"


Action = CommandAction | DeviceAction


class Automation(_Frozen):
    """One automation: when any trigger fires and every condition holds, run the actions."""

    alias: str = Field(validation_alias=AliasChoices("alias", "id", "name"))
    triggers: Annotated[
        tuple[Annotated[Trigger, BeforeValidator(_trigger_key)], ...], BeforeValidator(_list)
    ] = Field(validation_alias=AliasChoices("triggers", "trigger"))
    conditions: Annotated[tuple[Condition, ...], BeforeValidator(_list)] = Field(
        (), validation_alias=AliasChoices("conditions", "condition")
    )
    actions: Annotated[tuple[Action, ...], BeforeValidator(_list)] = Field(
        validation_alias=AliasChoices("actions", "action")
    )
    channel: str | None = None
    """Where its firings are reported (default: the federation's channel)."""

    @property
    def key(self) -> str:
        """Its name in firing messages: the alias as a slug."""
        return "a:" + re.sub(r"[^a-z0-9]+", "-", self.alias.lower()).strip("-")

    def commands(self) -> list[str]:
        """The actions as chat commands."""
        return [a.command if isinstance(a, CommandAction) else a.phrase() for a in self.actions]

    def timed(self) -> list[When]:
        """The time and sun triggers as schedules."""
        return [t.when() for t in self.triggers if isinstance(t, TimeTrigger | SunTrigger)]

    def allowed(self, moment: dt.datetime, where: Location, states: dict[str, str]) -> bool:
        """Whether every condition holds at `moment` (states: device -> "on"/"off")."""
        return all(c.holds(moment, where, states) for c in self.conditions)

    def devices(self) -> set[str]:
        """The devices its state triggers and conditions name (checked at load)."""
        named = {t.device for t in self.triggers if isinstance(t, StateTrigger)}
        named |= {c.device for c in self.conditions if isinstance(c, StateCondition)}
        return named | {a.device for a in self.actions if isinstance(a, DeviceAction)}
