"""When a schedule fires: the pure model ("every weekday at 07:00", "at sunset", "in 20
minutes"), its next firing in the federation's time zone, and the chat phrases for it.

No clock is read here: every function takes the time (Slack's, as epoch seconds) it is
asked about, so a week of firings, a DST change or a sunset in two cities are computed in
microseconds by the tests.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from troupe.sun import Location, SunEvent, sun_time

DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EVERY_DAY = frozenset(range(7))
WEEKDAYS = frozenset(range(5))
WEEKEND = frozenset({5, 6})
UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
WORD_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "five": 5, "ten": 10}
WORD_NUMBERS |= {"fifteen": 15, "twenty": 20, "thirty": 30, "half an": 0.5}


class ScheduleProblem(ValueError):
    """A schedule phrase that cannot work; the message is the sentence for the person."""


@dataclass(frozen=True)
class When:
    """When a schedule fires: a time of day or a sun event, on some weekdays or on one date.

    Exactly one of `clock` and `sun` is set. `on` set means once, on that local date.
    """

    clock: dt.time | None = None
    """A local time of day (wall-clock: 07:00 stays 07:00 across a DST change)."""
    sun: SunEvent | None = None
    offset_s: int = 0
    """Seconds after (positive) or before (negative) the sun event."""
    days: frozenset[int] = EVERY_DAY
    """Weekdays (0 = Monday) a repeating schedule fires on."""
    on: dt.date | None = None
    """The one local date of a schedule that fires once."""

    @property
    def once(self) -> bool:
        return self.on is not None

    def moment(self, day: dt.date, where: Location) -> dt.datetime | None:
        """When it fires on the local `day` (whether or not `days` includes it); None if
        the sun event does not happen that day.

        A time that does not exist (the hour skipped in spring) fires as the clock reads
        it an hour later; one that happens twice (autumn) fires at its first occurrence.
        """
        if self.clock is not None:
            naive = dt.datetime.combine(day, self.clock)
            # fold=0 (PEP 495): the first of two, or the one before the gap
            return naive.replace(tzinfo=where.tz)
        assert self.sun is not None
        base = sun_time(self.sun, day, where)
        return None if base is None else base + dt.timedelta(seconds=self.offset_s)

    def next_after(self, t: float, where: Location) -> float | None:
        """The first firing strictly after `t` (epoch seconds), or None (a once that has
        passed)."""
        tz = where.tz
        if self.on is not None:
            moment = self.moment(self.on, where)
            if moment is None:
                return None
            at = moment.timestamp()
            return at if at > t else None
        start = dt.datetime.fromtimestamp(t, tz).date() - dt.timedelta(days=1)
        for n in range(0, 9 + 366):  # a sun event may skip days near the poles
            day = start + dt.timedelta(days=n)
            if day.weekday() not in self.days:
                continue
            moment = self.moment(day, where)
            if moment is not None and moment.timestamp() > t:
                return moment.timestamp()
        return None

    def last_at_or_before(self, t: float, since: float, where: Location) -> float | None:
        """The latest firing in (since, t], or None: the firing a returning bot may have
        missed."""
        found = None
        at = self.next_after(since, where)
        while at is not None and at <= t:
            found = at
            at = self.next_after(at, where)
        return found

    def describe(self) -> str:
        """The canonical phrase (what `parse` reads back)."""
        if self.sun is not None:
            what = self.sun
            if self.offset_s:
                minutes = abs(self.offset_s) // 60
                side = "after" if self.offset_s > 0 else "before"
                what = f"{minutes} minute{'s' if minutes != 1 else ''} {side} {self.sun}"
        else:
            assert self.clock is not None
            what = self.clock.strftime("%H:%M:%S" if self.clock.second else "%H:%M")
        if self.on is not None:
            return f"on {self.on.isoformat()} at {what}"
        return f"{_days_phrase(self.days)} at {what}"


def _days_phrase(days: frozenset[int]) -> str:
    if days == EVERY_DAY:
        return "every day"
    if days == WEEKDAYS:
        return "every weekday"
    if days == WEEKEND:
        return "every weekend day"
    names = [DAY_NAMES[d].capitalize() for d in sorted(days)]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"every {listed}"


# chat phrases ---------------------------------------------------------------------------

_DAY = r"(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|sat(?:ur)?|sun)(?:day)?s?"
_SUN = r"(?:sunrise|sunset|dawn|dusk)"
_HOUR = (
    r"(?:[01]?\d|2[0-3])(?::[0-5]\d){1,2}|(?:1[0-2]|0?[1-9])(?::[0-5]\d)?\s*(?:am|pm|a\.m\.|p\.m\.)"
)
_HOUR_BARE = r"(?:[01]?\d|2[0-3])"
_NUM = r"(?:\d+|a|an|one|two|three|five|ten|fifteen|twenty|thirty|half an)"
_OFFSET = rf"{_NUM}\s+(?:minutes?|mins?|hours?)\s+(?:before|after)\s+{_SUN}"
_MOMENT = rf"(?:{_OFFSET}|{_SUN}|noon|midnight|{_HOUR})"
_MOMENT_BARE = rf"(?:{_MOMENT}|{_HOUR_BARE}(?:\s*o'?clock)?)"
_DAYS = rf"(?:day|weekday|weekend(?:\s+day)?|{_DAY}(?:(?:\s*,\s*|\s+and\s+){_DAY})*)"
_CLAUSE = (
    rf"(?:(?:every|each)\s+{_DAYS}\s+at\s+{{m}}|daily\s+at\s+{{m}}"
    rf"|(?:today|tonight|tomorrow)(?:\s+at\s+{{m}})?"
    rf"|on\s+(?:{_DAY}|\d{{{{4}}}}-\d\d-\d\d)\s+at\s+{{m}}"
    rf"|at\s+{{m}}|in\s+{_NUM}\s+(?:seconds?|secs?|minutes?|mins?|hours?|days?))"
)
CLAUSE_FIRST = _CLAUSE.format(m=_MOMENT_BARE).replace("{{4}}", "{4}")
CLAUSE_LAST = _CLAUSE.format(m=_MOMENT).replace("{{4}}", "{4}")
SCHEDULE = re.compile(
    rf"(?P<first>{CLAUSE_FIRST})\s*,?\s+(?P<then>\S.*)|(?P<command>\S.*?)\s+(?P<last>{CLAUSE_LAST})",
    re.IGNORECASE,
)
"""A home command with a time clause before or after it."""
LIST = re.compile(
    r"(?:list|show) (?:all |my |the )?schedules|schedules|what(?:'s| is) scheduled", re.I
)
CANCEL = re.compile(r"(?:cancel|delete|remove|stop) schedule #?(?P<id>\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Phrase:
    """A schedule asked for in chat: when, and the command text to run then."""

    when: When
    command: str


def parse(text: str, now: float, where: Location) -> Phrase | None:
    """A chat message as a schedule, or None when it is not shaped like one; raises
    ScheduleProblem for a schedule that cannot work ("at 7:00" that already passed is
    tomorrow's 7:00, never a problem)."""
    found = SCHEDULE.fullmatch(text.strip().rstrip("!.").strip())
    if found is None:
        return None
    clause = found.group("first") or found.group("last")
    command = (found.group("then") or found.group("command")).strip(" ,")
    return Phrase(read_clause(clause, now, where), command)


def read_clause(clause: str, now: float, where: Location, *, ahead: bool = True) -> When:
    """The When of one time clause, relative to `now` (epoch seconds); `ahead=False` reads
    a stored schedule back, whose one date may have passed."""
    c = " ".join(clause.lower().split())
    today = dt.datetime.fromtimestamp(now, where.tz).date()
    if m := re.fullmatch(rf"in ({_NUM}) (second|sec|minute|min|hour|day)s?", c):
        unit = {"sec": "second", "min": "minute"}.get(m.group(2), m.group(2))
        seconds = _number(m.group(1)) * UNITS[unit]
        if seconds <= 0:
            raise ScheduleProblem("a schedule needs a time in the future: say `in 5 minutes`")
        at = dt.datetime.fromtimestamp(now + seconds, where.tz)
        return When(clock=at.time().replace(microsecond=0), on=at.date())
    if m := re.fullmatch(r"(every|each) (.+?) at (.+)|daily at (.+)", c):
        days = _days(m.group(2)) if m.group(2) else EVERY_DAY
        return _at(m.group(3) or m.group(4), replace_days=days)
    if m := re.fullmatch(r"(today|tonight|tomorrow)(?: at (.+))?", c):
        day = today + dt.timedelta(days=1 if m.group(1) == "tomorrow" else 0)
        moment = m.group(2) or ("sunset" if m.group(1) == "tonight" else None)
        if moment is None:
            raise ScheduleProblem(f"say when {m.group(1)}: `{m.group(1)} at 6:30`")
        when = _at(moment, on=day, evening=m.group(1) == "tonight")
        _must_be_ahead(when, now, where)
        return when
    if m := re.fullmatch(r"on (\d{4}-\d\d-\d\d) at (.+)", c):
        when = _at(m.group(2), on=dt.date.fromisoformat(m.group(1)))
        if ahead:
            _must_be_ahead(when, now, where)
        return when
    if m := re.fullmatch(r"on (\S+) at (.+)", c):
        (weekday,) = _days(m.group(1))
        day = today + dt.timedelta(days=(weekday - today.weekday()) % 7)
        when = _at(m.group(2), on=day)
        if (when.next_after(now, where) or 0) <= now:
            when = _at(m.group(2), on=day + dt.timedelta(days=7))
        return when
    if m := re.fullmatch(r"at (.+)", c):  # the next such moment: today's, else tomorrow's
        when = _at(m.group(1), on=today)
        if when.next_after(now, where) is None:
            when = _at(m.group(1), on=today + dt.timedelta(days=1))
        return when
    raise ScheduleProblem(f"I cannot read the time in “{clause}”; try `every day at 7:00`")


def _must_be_ahead(when: When, now: float, where: Location) -> None:
    if when.next_after(now, where) is None:
        raise ScheduleProblem(f"{when.describe()} has already passed; give a time still to come")


def _number(word: str) -> float:
    return float(word) if word.isdigit() else float(WORD_NUMBERS[word])


def _days(text: str) -> frozenset[int]:
    text = text.strip()
    if text in ("day", "days"):
        return EVERY_DAY
    if text in ("weekday", "weekdays"):
        return WEEKDAYS
    if text.startswith("weekend"):
        return WEEKEND
    days = set()
    for word in re.split(r"\s*,\s*|\s+and\s+", text):
        day = next((i for i, n in enumerate(DAY_NAMES) if n.startswith(word[:3])), None)
        if day is None:
            raise ScheduleProblem(f"I do not know the day “{word}”; name it like `Monday`")
        days.add(day)
    return frozenset(days)


def _at(
    moment: str,
    *,
    replace_days: frozenset[int] = EVERY_DAY,
    on: dt.date | None = None,
    evening: bool = False,
) -> When:
    """The When of "at <moment>" (a time of day or a sun event with its offset)."""
    m = moment.strip().replace("a.m.", "am").replace("p.m.", "pm")
    sun = {"dawn": "sunrise", "dusk": "sunset"}
    if found := re.fullmatch(rf"({_NUM}) (minute|min|hour)s? (before|after) (\w+)", m):
        seconds = int(_number(found.group(1)) * (3600 if found.group(2) == "hour" else 60))
        event = sun.get(found.group(4), found.group(4))
        offset = seconds if found.group(3) == "after" else -seconds
        return When(sun=event, offset_s=offset, days=replace_days, on=on)  # type: ignore[arg-type]
    if m in ("sunrise", "sunset", "dawn", "dusk"):
        return When(sun=sun.get(m, m), days=replace_days, on=on)  # type: ignore[arg-type]
    if m in ("noon", "midnight"):
        return When(clock=dt.time(12 if m == "noon" else 0), days=replace_days, on=on)
    found = re.fullmatch(r"(\d{1,2})(?::(\d\d))?(?::(\d\d))?\s*(am|pm|o'?clock)?", m)
    if found is None:
        raise ScheduleProblem(f"I cannot read the time “{moment}”; write it like `7:30`")
    hour, minute, second = (int(g or 0) for g in found.group(1, 2, 3))
    suffix = found.group(4) or ""
    if suffix in ("am", "pm"):
        if not 1 <= hour <= 12:
            raise ScheduleProblem(f"“{moment}” is not a time; write it like `7:30 pm`")
        hour = hour % 12 + (12 if suffix == "pm" else 0)
    elif evening and hour < 12:
        hour += 12
    if hour > 23 or minute > 59 or second > 59:
        raise ScheduleProblem(f"“{moment}” is not a time of day; write it like `19:30`")
    return When(clock=dt.time(hour, minute, second), days=replace_days, on=on)


def local_time(t: float, where: Location) -> str:
    """An instant as the federation's people read it: "Tue 1 Dec 07:00"."""
    at = dt.datetime.fromtimestamp(t, where.tz)
    return at.strftime("%a %-d %b %H:%M")
