"""The federation file's `events:` section: which device events are posted, where, how quietly."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from troupe.devents import KINDS, Kind


def _channel(value: object) -> object:
    from troupe.config.schema import _channel as channel_ref

    return channel_ref(value)


def _name(value: object) -> object:
    return " ".join(str(value).split()).lower() if isinstance(value, str) else value


def _hours(value: str | None) -> str | None:
    clock = r"([01]\d|2[0-3]):[0-5]\d"
    if value is not None and not re.fullmatch(f"{clock}-{clock}", value):
        raise ValueError(f"{value!r} is not a span of the day like 22:00-07:00")
    return value


def _zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a time zone like Europe/Berlin") from None
    return value


class EventRule(BaseModel):
    """What to announce for a device, an area or the whole federation; unset keys inherit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: tuple[Kind, ...] | None = None
    """The events to post (pressed, motion, offline, online, changed); [] posts none."""
    channel: Annotated[str | None, BeforeValidator(lambda v: v if v is None else _channel(v))] = (
        None
    )
    """Where; unset: the area's channel, else the federation's."""
    debounce_s: float | None = Field(default=None, ge=0)
    """Post an event only once the device kept still this long (no newer event of the
    same sort); offline then online within it posts nothing."""
    per_minute: int | None = Field(default=None, ge=0)
    """At most this many posts per device per minute, counting the whole fleet's."""
    quiet_hours: Annotated[str | None, AfterValidator(_hours)] = None
    """A span of the day with no posts, like 22:00-07:00 (in `timezone`)."""


class EventsSettings(EventRule):
    """The federation file's `events:` section."""

    timezone: Annotated[str, AfterValidator(_zone)] = "UTC"
    """The zone quiet hours are read in."""
    watch_s: float = Field(default=2.0, gt=0)
    """How long each later-ranked bot waits for the fleet's post of a shared device's event."""
    areas: dict[Annotated[str, BeforeValidator(_name)], EventRule] = Field(default_factory=dict)
    devices: dict[Annotated[str, BeforeValidator(_name)], EventRule] = Field(default_factory=dict)

    def problems(
        self, devices: Collection[str], areas: Collection[str], channels: Collection[str]
    ) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Names this section uses that the file does not declare: (where, sentence)."""
        from troupe.config.wording import hint  # the config package imports this module

        for section, known, what in (("devices", devices, "device"), ("areas", areas, "area")):
            for name in getattr(self, section):
                if name not in known:
                    yield (
                        ("events", section, name),
                        f"there is no {what} called {name!r}; name one of the file's "
                        f"{section}{hint(name, list(known))}",
                    )
        rules = [(("events",), self)]
        rules += [(("events", "areas", n), r) for n, r in self.areas.items()]
        rules += [(("events", "devices", n), r) for n, r in self.devices.items()]
        for where, rule in rules:
            if rule.channel is not None and rule.channel not in channels:
                yield (
                    (*where, "channel"),
                    f"{rule.channel} is not a channel of the federation; add it under channels",
                )


@dataclass(frozen=True)
class Rule:
    """The limits that hold for one device, everything inherited filled in."""

    kinds: tuple[str, ...] = KINDS
    channel: str | None = None
    debounce_s: float = 0.0
    per_minute: int = 6
    quiet_hours: str | None = None


def rule_for(settings: EventsSettings, device: str, area: str | None) -> Rule:
    """Device over area over the section's own keys over the defaults."""
    found: dict[str, Any] = {}
    layers = [settings, settings.areas.get(area or ""), settings.devices.get(device)]
    for layer in layers:
        if layer is None:
            continue
        for key in ("kinds", "channel", "debounce_s", "per_minute", "quiet_hours"):
            value = getattr(layer, key)
            if value is not None:
                found[key] = value
    return Rule(**found)
