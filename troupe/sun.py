"""Sunrise and sunset where the federation is, from astral (what Home Assistant uses).

astral is imported at the first sun time asked for: a bot whose schedules and automations
never name the sun does without it (2.6 MB on a Pi Zero's budget).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from astral import Observer

SunEvent = Literal["sunrise", "sunset"]


@dataclass(frozen=True)
class Location:
    """Where the federation is (the federation file's `location:`): sun times and the
    time zone every schedule is read in."""

    latitude: float = 0.0
    longitude: float = 0.0
    timezone: str = "UTC"
    """An IANA zone ("Europe/Paris"): zoneinfo handles the DST changes."""

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def sun_time(event: SunEvent, day: dt.date, where: Location) -> dt.datetime | None:
    """The moment of `event` on the local `day`, aware; None on a day it does not happen
    (polar day or night)."""
    from astral import sun as astral_sun

    calc = astral_sun.sunrise if event == "sunrise" else astral_sun.sunset
    try:
        return calc(_observer(where), date=day, tzinfo=where.tz)
    except ValueError:  # astral: the sun never rises or never sets that day
        return None


def sun_is_up(moment: dt.datetime, where: Location) -> bool:
    """Whether the sun is above the horizon at `moment` (for `condition: sun`)."""
    local = moment.astimezone(where.tz)
    rise = sun_time("sunrise", local.date(), where)
    set_ = sun_time("sunset", local.date(), where)
    if rise is None or set_ is None:  # polar: up all day in summer, down in winter
        from astral import sun as astral_sun

        return astral_sun.elevation(_observer(where), local) > 0
    return rise <= local < set_


def _observer(where: Location) -> Observer:
    from astral import Observer

    return Observer(latitude=where.latitude, longitude=where.longitude)
