"""Schedules kept in Slack itself: the texts of a schedule's record, of a firing and of a
cancellation, and reading them back, so any bot knows them after any other is gone.

A schedule made in chat is the fleet's answer in the command's thread, pinned:

    Schedule 3: every weekday at 07:00 → turn on the kitchen lamp (set by <@U0ALICE>; …)

Its text is both what a person reads and what a bot parses back at start (one
`pins.list` per channel). Cancelling edits the record, unpins it and answers with a
`[cancelled s3]` line. A firing is a top-level message of the fleet ending in
`[s3@1764568800]` (the schedule's key and its due time on Slack's clock): the claim
protocol runs on that message as on a person's command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from troupe.schedules import ScheduleProblem, When, local_time, read_clause
from troupe.sun import Location

RECORD = re.compile(
    r"^Schedule (?P<id>\d+): (?P<when>.+?) → (?P<command>.+?) \(set by <@(?P<owner>[A-Z0-9]+)>"
)
FIRING = re.compile(r"\[(?P<key>s\d+|a:[a-z0-9-]+)@(?P<due>\d+)\]\s*$")
CANCELLED = re.compile(r"\[cancelled s(?P<id>\d+)\]\s*$")


@dataclass(frozen=True)
class Job:
    """Something the fleet fires: a schedule made in chat or an automation of the file."""

    key: str
    """"s3" (schedule 3) or "a:porch-at-dusk" (an automation): the firing's name."""
    whens: tuple[When, ...]
    commands: tuple[str, ...]
    channel: str
    """Where it fires and reports (a channel id)."""
    title: str
    since: float
    """No firing at or before this (the schedule's making, on Slack's clock)."""
    owner: str | None = None
    """Who made it (a user id); None for the file's automations."""
    record_ts: str | None = None
    """The pinned record's ts (chat schedules)."""
    poster: str | None = None
    """The fleet bot user that posted the record (only it may edit it)."""

    @property
    def number(self) -> int | None:
        return int(self.key[1:]) if self.key.startswith("s") else None

    def next_after(self, t: float, where: Location) -> float | None:
        """Its first due time after `t`, in whole seconds (as firing messages carry it)."""
        times = [at for w in self.whens if (at := w.next_after(max(t, self.since), where))]
        return float(math.ceil(min(times))) if times else None

    def last_at_or_before(self, t: float, since: float, where: Location) -> float | None:
        """Its newest due time in (since, t], in whole seconds."""
        since = max(since, self.since)
        times = [a for w in self.whens if (a := w.last_at_or_before(t, since, where))]
        return float(math.ceil(max(times))) if times else None


def record_text(number: int, when: When, command: str, owner: str) -> str:
    return (
        f"Schedule {number}: {when.describe()} → {command} (set by <@{owner}>; "
        f"`cancel schedule {number}` cancels it)."
    )


def chat_job(
    number: int,
    when: When,
    command: str,
    owner: str,
    channel: str,
    ts: str,
    poster: str | None = None,
) -> Job:
    title = f"Schedule {number} ({when.describe()}, set by <@{owner}>)"
    return Job(f"s{number}", (when,), (command,), channel, title, float(ts), owner, ts, poster)


def read_record(message: Mapping[str, Any], channel: str, where: Location) -> Job | None:
    """A schedule from its pinned record message; None for any other message."""
    found = RECORD.match(str(message.get("text") or ""))
    if found is None or not message.get("ts"):
        return None
    ts = str(message["ts"])
    try:
        when = read_clause(found.group("when"), float(ts), where, ahead=False)
    except ScheduleProblem:
        return None
    owner, poster = found["owner"], message.get("user")
    return chat_job(int(found["id"]), when, found["command"], owner, channel, ts, poster)


def is_record(message: Mapping[str, Any]) -> bool:
    """A pinned schedule record: the pin sweep must leave it (it is storage, not a lock)."""
    return RECORD.match(str(message.get("text") or "")) is not None


def firing_text(job: Job, due: float, where: Location) -> str:
    what = "; ".join(job.commands)
    return f"⏰ {job.title}: {what} — due {local_time(due, where)} [{job.key}@{int(due)}]"


def read_firing(text: str) -> tuple[str, float] | None:
    """(key, due) of a firing message, or None."""
    found = FIRING.search(text)
    return None if found is None else (found["key"], float(found["due"]))


def cancelled_text(job: Job, who: str) -> str:
    n = job.number
    what = f"{job.whens[0].describe()} → {'; '.join(job.commands)}"
    return f"Cancelled schedule {n} ({what}), as <@{who}> asked. [cancelled s{n}]"


def read_cancelled(text: str) -> str | None:
    """The key of the schedule a fleet message says was cancelled, or None."""
    found = CANCELLED.search(text)
    return None if found is None else f"s{found['id']}"
