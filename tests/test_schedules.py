"""The schedule model on a clock the test controls: a week of firings, DST changes, sunset
in two cities and near the pole, the chat phrases, the records kept in Slack, and the
file's automations — all pure, in milliseconds."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from pydantic import ValidationError

from troupe import schedulestore as store
from troupe.automations import Automation, LocationSettings
from troupe.schedules import WEEKDAYS, ScheduleProblem, When, parse
from troupe.sun import Location, sun_is_up, sun_time

PARIS = Location(48.8566, 2.3522, "Europe/Paris")
SYDNEY = Location(-33.8688, 151.2093, "Australia/Sydney")
TROMSO = Location(69.6492, 18.9553, "Europe/Oslo")


def at(where: Location, *args: int) -> float:
    return dt.datetime(*args, tzinfo=where.tz).timestamp()


def local(t: float, where: Location) -> str:
    return dt.datetime.fromtimestamp(t, where.tz).strftime("%a %Y-%m-%d %H:%M")


def firings(when: When, start: float, end: float, where: Location) -> list[str]:
    out, t = [], start
    while (t := when.next_after(t, where)) is not None and t <= end:
        out.append(local(t, where))
    return out


def test_a_week_of_weekday_mornings_fires_five_times_at_seven():
    monday = at(PARIS, 2026, 11, 30, 0, 0)
    week = firings(When(clock=dt.time(7), days=WEEKDAYS), monday, monday + 7 * 86400, PARIS)
    assert week == [
        f"{d} 2026-{m}-{n:02d} 07:00"
        for d, m, n in (
            ("Mon", 11, 30),
            ("Tue", 12, 1),
            ("Wed", 12, 2),
            ("Thu", 12, 3),
            ("Fri", 12, 4),
        )
    ]


def test_seven_in_the_morning_stays_seven_across_both_dst_changes():
    daily = When(clock=dt.time(7))
    spring = firings(daily, at(PARIS, 2026, 3, 28, 12, 0), at(PARIS, 2026, 3, 30, 12, 0), PARIS)
    assert spring == ["Sun 2026-03-29 07:00", "Mon 2026-03-30 07:00"]
    gap = at(PARIS, 2026, 3, 29, 7, 0) - at(PARIS, 2026, 3, 28, 7, 0)
    assert gap == 23 * 3600  # the night the clocks went forward is an hour short
    autumn = firings(daily, at(PARIS, 2026, 10, 24, 12), at(PARIS, 2026, 10, 26, 12), PARIS)
    assert autumn == ["Sun 2026-10-25 07:00", "Mon 2026-10-26 07:00"]


def test_a_time_skipped_or_repeated_by_dst_fires_once():
    half_two = When(clock=dt.time(2, 30))
    skipped = firings(half_two, at(PARIS, 2026, 3, 29, 0), at(PARIS, 2026, 3, 29, 23), PARIS)
    assert skipped == ["Sun 2026-03-29 03:30"]  # 02:30 does not exist that night
    twice = firings(half_two, at(PARIS, 2026, 10, 25, 0), at(PARIS, 2026, 10, 25, 23), PARIS)
    assert len(twice) == 1  # 02:30 happens twice that night: the first one only


def test_sunset_in_paris_and_sydney_the_same_day():
    paris = sun_time("sunset", dt.date(2026, 12, 1), PARIS)
    sydney = sun_time("sunset", dt.date(2026, 12, 1), SYDNEY)
    assert paris is not None and sydney is not None
    assert paris.strftime("%H:%M") in ("16:55", "16:56", "16:57")
    assert sydney.strftime("%H:%M") in ("19:48", "19:49", "19:50", "19:51")
    dusk = When(sun="sunset", offset_s=-15 * 60)
    start = at(PARIS, 2026, 12, 1, 0, 0)
    assert dusk.next_after(start, PARIS) == pytest.approx(paris.timestamp() - 900)
    week = firings(When(sun="sunset"), start, start + 7 * 86400, SYDNEY)
    assert len(week) == 7 and all("19:" in f for f in week)


def test_no_sunrise_in_the_polar_night_waits_for_the_sun_to_come_back():
    assert sun_time("sunrise", dt.date(2026, 12, 21), TROMSO) is None
    first = When(sun="sunrise").next_after(at(TROMSO, 2026, 12, 1, 12, 0), TROMSO)
    assert first is not None
    assert dt.datetime.fromtimestamp(first, TROMSO.tz).date() > dt.date(2027, 1, 10)
    assert not sun_is_up(dt.datetime(2026, 12, 21, 12, tzinfo=TROMSO.tz), TROMSO)


NOW = at(PARIS, 2026, 11, 30, 20, 0)  # a Monday evening


@pytest.mark.parametrize(
    ("text", "described", "command", "first"),
    [
        (
            "every weekday at 7:00 turn on the kitchen lamp",
            "every weekday at 07:00",
            "turn on the kitchen lamp",
            "Tue 2026-12-01 07:00",
        ),
        (
            "at sunset turn on the porch switch",
            "on 2026-12-01 at sunset",
            "turn on the porch switch",
            "Tue 2026-12-01 16:56",
        ),
        (
            "tomorrow at 6:30 turn on the hall light",
            "on 2026-12-01 at 06:30",
            "turn on the hall light",
            "Tue 2026-12-01 06:30",
        ),
        (
            "in 20 minutes turn off the garden pump",
            "on 2026-11-30 at 20:20",
            "turn off the garden pump",
            "Mon 2026-11-30 20:20",
        ),
        (
            "turn on the porch switch every day at 30 minutes after sunset",
            "every day at 30 minutes after sunset",
            "turn on the porch switch",
            "Tue 2026-12-01 17:26",
        ),
        (
            "every Monday and Friday at 8 pm, turn off the hall light",
            "every Monday and Friday at 20:00",
            "turn off the hall light",
            "Fri 2026-12-04 20:00",
        ),
        (
            "at 7 turn on the lamp",
            "on 2026-12-01 at 07:00",
            "turn on the lamp",
            "Tue 2026-12-01 07:00",
        ),
        (
            "tonight at 9 turn on the porch switch",
            "on 2026-11-30 at 21:00",
            "turn on the porch switch",
            "Mon 2026-11-30 21:00",
        ),
    ],
)
def test_chat_phrases(text, described, command, first):
    phrase = parse(text, NOW, PARIS)
    assert phrase is not None
    assert (phrase.when.describe(), phrase.command) == (described, command)
    assert local(phrase.when.next_after(NOW, PARIS), PARIS) == first
    again = parse(f"{described} {command}", NOW, PARIS)  # the record reads back the same
    assert again is not None and again.when == phrase.when


@pytest.mark.parametrize(
    "text",
    [
        "turn on the kitchen lamp",
        "set the hall light at 50",
        "turn on the lamp at 7",
        "list schedules",
        "what is on",
        "turn on the hall light for 10 minutes",
    ],
)
def test_commands_and_chatter_are_not_schedules(text):
    assert parse(text, NOW, PARIS) is None


def test_a_schedule_that_cannot_work_says_why():
    with pytest.raises(ScheduleProblem, match="say when tomorrow"):
        parse("tomorrow turn on the hall light", NOW, PARIS)
    with pytest.raises(ScheduleProblem, match="already passed"):
        parse("today at 7:00 turn on the hall light", NOW, PARIS)


def test_a_record_in_slack_reads_back_as_the_same_schedule():
    when = parse("every weekday at 7:00 turn on the kitchen lamp", NOW, PARIS).when
    text = store.record_text(3, when, "turn on the kitchen lamp", "U0ALICE")
    job = store.read_record({"text": text, "ts": f"{NOW:.6f}"}, "C0HOME", PARIS)
    assert job is not None
    assert (job.key, job.whens, job.commands, job.owner) == (
        "s3",
        (when,),
        ("turn on the kitchen lamp",),
        "U0ALICE",
    )
    assert store.is_record({"text": text})
    firing = store.firing_text(job, at(PARIS, 2026, 12, 1, 7, 0), PARIS)
    assert store.read_firing(firing) == ("s3", at(PARIS, 2026, 12, 1, 7, 0))
    assert store.read_cancelled(store.cancelled_text(job, "U0BOB")) == "s3"
    assert store.read_record({"text": "Schedule me a haircut", "ts": "1.0"}, "C", PARIS) is None


AUTOMATION = """
alias: Porch light at dusk
trigger:
  - platform: sun
    event: sunset
    offset: "-00:15:00"
  - trigger: time
    at: "07:00"
    weekday: [mon, fri]
  - trigger: state
    entity_id: hall motion
    to: "on"
condition:
  - condition: time
    after: "16:00"
    before: "02:00"
  - condition: sun
    after: sunset
  - condition: state
    device: porch switch
    state: "off"
action:
  - command: turn on the porch switch
  - device: hall light
    state: on
    brightness: 40
"""


def test_an_automation_in_home_assistants_shape():
    auto = Automation.model_validate(yaml.safe_load(AUTOMATION))
    assert auto.key == "a:porch-light-at-dusk"
    assert auto.timed() == [
        When(sun="sunset", offset_s=-900),
        When(clock=dt.time(7), days=frozenset({0, 4})),
    ]
    assert auto.commands() == ["turn on the porch switch", "set the hall light to 40%"]
    (motion,) = [t for t in auto.triggers if t.trigger == "state"]
    assert motion.matches("hall motion", "off", "on")
    assert not motion.matches("hall motion", "on", "on") and not motion.matches("x", None, "on")
    evening = dt.datetime(2026, 12, 1, 18, 30, tzinfo=PARIS.tz)
    assert auto.allowed(evening, PARIS, {"porch switch": "off"})
    assert not auto.allowed(evening, PARIS, {"porch switch": "on"})
    noon = dt.datetime(2026, 12, 1, 12, 0, tzinfo=PARIS.tz)
    assert not auto.allowed(noon, PARIS, {"porch switch": "off"})


def test_a_bad_time_zone_or_trigger_is_refused_at_load():
    with pytest.raises(ValidationError, match="not a time zone"):
        LocationSettings(latitude=1, longitude=2, timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        Automation.model_validate({"alias": "x", "trigger": {"platform": "moon"}, "action": []})
    with pytest.raises(ValidationError, match="not a time of day"):
        Automation.model_validate(
            {"alias": "x", "trigger": {"platform": "time", "at": "7 ish"}, "action": []}
        )


def test_a_sun_schedules_due_times_are_whole_seconds_and_never_repeat():
    job = store.chat_job(1, When(sun="sunset"), "turn on the porch switch", "U0A", "C", "0")
    t, dues = at(PARIS, 2026, 12, 1, 0, 0), []
    for _ in range(3):
        t = job.next_after(t, PARIS)
        dues.append(t)
    assert all(d == int(d) for d in dues) and len(set(dues)) == 3
    assert dues[1] - dues[0] == pytest.approx(86400, abs=120)
    assert job.last_at_or_before(dues[1] + 5, dues[0], PARIS) == dues[1]


def test_help_shows_the_schedule_phrases_readably():
    from types import SimpleNamespace

    from troupe.plugin import PluginSet, describe
    from troupe.scheduler import Scheduler

    bot = SimpleNamespace(
        plugins=PluginSet(),
        services=[],
        fleet_messages=[],
        state_listeners=[],
        event_listeners=[],
        recognizer=None,
    )
    Scheduler(PARIS).attach(bot)  # type: ignore[arg-type]
    lines = describe(bot.plugins.commands)
    assert lines[0].startswith("• `list/show [all/my/the] schedules")
    assert lines[2].startswith("• `every <days> at <time>/at <time or sunset>/tomorrow at")
    for line in lines:
        assert not any(junk in line for junk in ("(?", "  ", "s+", "\\d"))
