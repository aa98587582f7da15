"""Fires the fleet's schedules and automations, each firing once across the fleet, and
answers the chat phrases that make, list and cancel schedules (docs/automations.md).

A firing: at the due time (Slack's clock) the first bot in a rendezvous order for
(schedule, due time) posts a firing message; the next one posts only if it has seen none
a lease later. Every bot then treats the firing message like a person's command: the
claim protocol picks one bot, which checks that no earlier firing message for the same
(schedule, due time) exists (two bots with different clocks, or a late one, each posted
one: the earliest wins), carries out the actions and answers in its thread who did what.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from troupe import schedulestore as store
from troupe.automations import Automation, ScheduleSettings, StateTrigger
from troupe.federation import Action, first_set, rank
from troupe.plugin import CommandSpec, Context, DeviceState
from troupe.schedules import CANCEL, LIST, SCHEDULE, ScheduleProblem, local_time, parse
from troupe.schedulestore import Job
from troupe.sun import Location
from troupe.transports.base import Event

if TYPE_CHECKING:
    from troupe.bot import Bot
    from troupe.devents import DeviceEvent

log = logging.getLogger(__name__)


class Scheduler:
    """The schedules service of one bot (a `troupe.bot.Service`)."""

    def __init__(
        self,
        location: Location,
        automations: Sequence[Automation] = (),
        settings: ScheduleSettings | None = None,
    ) -> None:
        self.where = location
        self.automations = {a.key: a for a in automations}
        self.settings = settings or ScheduleSettings()
        self.jobs: dict[str, Job] = {}
        self._cursor: dict[str, float] = {}
        """Per job, the due time handled last (the next firing is after it)."""
        self._seen: dict[tuple[str, float], asyncio.Event] = {}
        """Firing messages seen, by (key, due)."""
        self._states: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bot: Bot | None = None

    # wiring -------------------------------------------------------------------------------

    def attach(self, bot: Bot) -> None:
        """Add the chat phrases (ahead of the plugins' commands), the fleet-message
        listener and the device-state listener, and start with the bot."""
        specs = [
            _spec("list schedules", LIST, self._list, "What is scheduled, and when next."),
            _spec("cancel schedule", CANCEL, self._cancel, "Cancel one (its maker or an admin)."),
            _spec(
                "schedule",
                _Understood(bot),  # type: ignore[arg-type]
                self._make,
                "Do a command later, once across the fleet: “every weekday at 7:00 turn on "
                "the kitchen lamp”, “at sunset …”, “tomorrow at 6:30 …”, “in 20 minutes …”.",
            ),
        ]
        bot.plugins.commands[0:0] = specs
        bot.services.append(self)
        bot.fleet_messages.append(self.saw)
        bot.state_listeners.append(self._state_changed)
        bot.event_listeners.append(self._device_event)

    async def start(self, bot: Bot) -> None:
        self.bot = bot
        now = bot.clock.now()
        main = next(iter(bot.channel_areas), "")
        for auto in self.automations.values():
            unknown = sorted(auto.devices() - set(bot.devices))
            if unknown:
                raise ValueError(
                    f"the automation “{auto.alias}” names {', '.join(unknown)}, which the "
                    "federation file's devices do not have; fix the name in automations:"
                )
            channel = _channel_id(bot, auto.channel) or main
            job = Job(
                auto.key,
                tuple(auto.timed()),
                tuple(auto.commands()),
                channel,
                f"Automation “{auto.alias}”",
                0.0,
            )
            self.jobs[job.key] = job
        for channel in bot.channel_areas:
            try:
                resp = await bot.web.pins_list(channel=channel)
            except SlackApiError as err:
                log.warning("cannot read the schedules of %s: %s", channel, err)
                continue
            for item in resp.get("items", []):
                message = item.get("message") or {}
                if not bot.is_fleet_user(item.get("created_by") or message.get("user")):
                    continue
                job = store.read_record(message, channel, self.where)
                if job is not None:
                    self.jobs[job.key] = job
        for key in self.jobs:
            self._cursor[key] = now
        await self._catch_up(now)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # the timer ------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Sleep until the next due firing (Slack's clock), then fire it; a schedule made
        or cancelled meanwhile wakes the loop to look again."""
        assert self.bot is not None
        bot = self.bot
        while True:
            self._wake.clear()
            due = [
                (at, key)
                for key, job in self.jobs.items()
                if (at := job.next_after(self._cursor.get(key, 0.0), self.where)) is not None
            ]
            if not due:
                await self._wake.wait()
                continue
            at, key = min(due)
            delay = bot._timer_delay(max(0.0, at - bot.clock.now()))
            if await first_set((self._wake,), delay):
                continue
            self._cursor[key] = at
            self._spawn(self._due(self.jobs[key], at))

    async def _catch_up(self, now: float) -> None:
        """At start: the newest firing of each schedule in the look-back window that has
        no firing message in Slack (every bot was down) is fired now, late (or reported,
        past the grace). One conversations.history per channel concerned. An automation
        of the file counts as missed only if it fired earlier in the window (it may just
        have been added to the file)."""
        assert self.bot is not None
        start = now - self.settings.lookback_s
        missed = {}
        for key, job in self.jobs.items():
            if not job.whens:
                continue
            last = job.last_at_or_before(now, start, self.where)
            if last is not None:
                missed[key] = last
        found: set[tuple[str, float]] = set()
        for channel in {self.jobs[k].channel for k in missed}:
            found |= set(await self._firings(channel, start - 60, None))
        fired_keys = {key for key, _due in found}
        for key, due in missed.items():
            if (key, due) in found:
                continue
            if key not in fired_keys and self.jobs[key].record_ts is None:
                continue  # an automation with no firing in the window: maybe new in the file
            self._spawn(self._due(self.jobs[key], due))

    async def _firings(
        self, channel: str, oldest: float, latest: str | None
    ) -> list[tuple[str, float]]:
        """The fleet's firing messages in a channel since `oldest` (and before `latest`)."""
        assert self.bot is not None
        found = []
        cursor = None
        while True:
            args: dict[str, Any] = {"channel": channel, "oldest": f"{oldest:.6f}", "limit": 200}
            if latest:
                args["latest"] = latest
            if cursor:
                args["cursor"] = cursor
            resp = await self.bot.web.conversations_history(**args)
            for message in resp.get("messages", []):
                firing = store.read_firing(str(message.get("text") or ""))
                if firing and self.bot.is_fleet_user(message.get("user")):
                    found.append((*firing, str(message["ts"])))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return [(k, d) for k, d, _ts in found]

    async def _due(self, job: Job, due: float, *, observed: bool = False) -> None:
        """Post the firing message if this bot is first in line (or the ones before it
        posted none a lease each later), then take part in it like any bot. A device
        change (`observed`) is posted at once by the bot that saw it, the only one that
        did, whether or not it can carry out the actions."""
        bot = self.bot
        assert bot is not None
        candidates = self._candidates(job)
        if bot.name not in candidates and not observed:
            return
        position = 0 if observed else rank(f"{job.key}@{int(due)}", candidates).index(bot.name)
        seen = self._seen.setdefault((job.key, due), asyncio.Event())
        if await first_set((seen,), position * bot.settings.lease_s):
            return
        if position > 0:  # the ones before this bot are down, or their message is late
            try:
                if (job.key, due) in await self._firings(job.channel, self._since(due), None):
                    return
            except SlackApiError as err:
                log.warning("cannot read %s before firing %s: %s", job.channel, job.key, err)
        if job.key not in self.jobs:
            return  # cancelled meanwhile
        text = store.firing_text(job, due, self.where)
        resp = await bot.web.chat_postMessage(channel=job.channel, text=text)
        event = Event("message", job.channel, str(resp["ts"]), bot.user_id, text, bot.bot_id)
        await self._fire(event)

    # the firing message, on every bot ----------------------------------------------------------

    def saw(self, event: Event) -> None:
        """A message of a fleet bot: a firing, a new schedule's record or a cancellation."""
        if event.kind != "message":
            return
        if (cancelled := store.read_cancelled(event.text)) is not None:
            self.jobs.pop(cancelled, None)
            self._wake.set()
        elif event.thread_ts and store.is_record(event.raw or {"text": event.text}):
            message = {"text": event.text, "ts": event.ts, "user": event.user}
            job = store.read_record(message, event.channel, self.where)
            if job is not None and self.bot is not None:
                self._cursor[job.key] = self.bot.clock.now()
                self.jobs[job.key] = job
                self._wake.set()
        elif not event.thread_ts and store.read_firing(event.text):
            self._spawn(self._fire(event))

    async def _fire(self, event: Event) -> None:
        bot = self.bot
        assert bot is not None and bot.coordinator is not None
        firing = store.read_firing(event.text)
        if firing is None:
            return
        key, due = firing
        self._seen.setdefault(firing, asyncio.Event()).set()
        job = self.jobs.get(key)
        if job is None or not bot.journal.begin(event.channel, event.ts, event.text, event.user):
            return
        candidates = self._candidates(job)

        async def work(takeover: bool) -> list[str]:
            return await self._carry_out(event, job, due, takeover)

        try:
            result = await bot._claimed(event, candidates, work)
            if result is not None and result.value:
                await bot.reply(event, "\n".join(result.value) + f"\n— {bot.name}")
                if job.record_ts and job.next_after(due, self.where) is None:
                    await self._retire(job)
        finally:
            bot.journal.finish(event.channel, event.ts, "done", f"firing {key}")

    async def _carry_out(self, event: Event, job: Job, due: float, takeover: bool) -> list[str]:
        """The holder's part: only the earliest firing message acts; a schedule cancelled
        meanwhile, one past its grace, or an automation whose conditions fail does not."""
        bot = self.bot
        assert bot is not None
        earlier = await self._firings(event.channel, self._since(due), event.ts)
        if (job.key, due) in earlier:
            return ["This firing was already posted above; nothing done here."]
        if job.record_ts is not None and not await self._still_pinned(job):
            self.jobs.pop(job.key, None)
            return [f"{job.title.split(' (')[0]} was cancelled; nothing done."]
        late = bot.clock.now() - due
        if late > self.settings.grace_s:
            return [
                f"Missed: no bot that can do this was running at {local_time(due, self.where)}, "
                f"and it is now {_span(late)} late (more than the {_span(self.settings.grace_s)} "
                "grace), so nothing was done."
            ]
        auto = self.automations.get(job.key)
        if auto is not None:
            moment = dt.datetime.fromtimestamp(bot.clock.now(), self.where.tz)
            if not auto.allowed(moment, self.where, await self._known_states(auto)):
                return ["Its conditions did not hold, so nothing was done."]
        lines = []
        if late > max(60.0, bot.settings.lease_s):
            lines.append(f"Late by {_span(late)} (no bot could fire it on time):")
        for text in job.commands:
            actions = self._actions(text, job.channel)
            if not actions:
                lines.append(f"I could not read “{text}” as a home command; nothing done.")
                continue
            lines += await bot._act(event, actions, takeover=takeover)
        return lines

    async def _retire(self, job: Job) -> None:
        """A one-time schedule has fired: its record is unpinned, so pins do not pile up
        (the record stays in the thread for people to read)."""
        assert self.bot is not None
        self.jobs.pop(job.key, None)
        try:
            await self.bot.web.pins_remove(channel=job.channel, timestamp=job.record_ts)
        except SlackApiError as err:
            log.warning("could not unpin the record of %s: %s", job.key, err)

    def _since(self, due: float) -> float:
        """Where to look for the firing messages of `due`: a minute before it (a bot's
        estimate of Slack's time may run a little early), or before now when a test's
        timers run fast."""
        assert self.bot is not None
        return min(due, self.bot.clock.now()) - 60

    async def _still_pinned(self, job: Job) -> bool:
        """Whether the schedule's record is still pinned (not cancelled by a message this
        bot missed): one pins.list."""
        assert self.bot is not None
        resp = await self.bot.web.pins_list(channel=job.channel)
        return any(
            (i.get("message") or {}).get("ts") == job.record_ts for i in resp.get("items", [])
        )

    async def _known_states(self, auto: Automation) -> dict[str, str]:
        assert self.bot is not None
        states = dict(self._states)
        for device in auto.devices():
            if device in self.bot.devices and device not in states:
                state = await self.bot.device_state(device)
                if state.online and state.on is not None:
                    states[device] = "on" if state.on else "off"
        return states

    # state triggers -----------------------------------------------------------------------

    async def _state_changed(self, device: str, state: DeviceState) -> None:
        """A device this bot drives changed (its action, a wall switch): state triggers
        of automations fire, from this bot (the only one that saw the change)."""
        if state.on is None:
            return
        after = "on" if state.on else "off"
        before = self._states.get(device)
        self._states[device] = after
        if self.bot is None:
            return
        for auto in self.automations.values():
            if any(
                isinstance(t, StateTrigger) and t.matches(device, before, after)
                for t in auto.triggers
            ):
                job = self.jobs.get(auto.key)
                if job is not None:
                    due = float(int(self.bot.clock.now()))
                    self._spawn(self._due(job, due, observed=True))

    async def _device_event(self, event: DeviceEvent) -> None:
        """Motion is the sensor turning on; a device switched at its own button is its new
        state. An owned device's event reaches its owner alone; a shared one's reaches every
        bot, and the first-ranked for it fires (when that bot is down, the trigger is missed:
        docs/automations.md)."""
        bot = self.bot
        spec = bot.devices.get(event.device) if bot is not None else None
        if bot is None or spec is None:
            return
        if spec.owner is None and rank(f"{event.device}\0{event.kind}", bot.roster)[0] != bot.name:
            return
        if event.kind == "motion":
            self._states[event.device] = "off"
            await self._state_changed(event.device, DeviceState(on=True))
        elif event.kind == "changed" and event.detail in ("on", "off"):
            await self._state_changed(event.device, DeviceState(on=event.detail == "on"))

    # chat -------------------------------------------------------------------------------

    async def _make(self, ctx: Context) -> None:
        assert self.bot is not None
        bot, event = self.bot, ctx.message
        now = bot.clock.now()
        try:
            phrase = parse(ctx.match.group(0), now, self.where)
        except ScheduleProblem as err:
            await ctx.say(_sentence(str(err)))
            return
        assert phrase is not None
        actions = self._actions(phrase.command, event.channel)
        if not actions:
            await ctx.say(
                f"I can schedule a home command, but I do not understand “{phrase.command}”; "
                "try `every day at 7:00 turn on the kitchen lamp`."
            )
            return
        subjects = {a.device for a in actions}
        where = {event.channel, *bot.channel_refs.get(event.channel, ())}
        decision = bot.access.decide(event.user, where, subjects)
        if not decision.allowed:
            await ctx.say(_sentence(decision.reason))
            return
        owner = event.user or ""
        draft = store.chat_job(0, phrase.when, phrase.command, owner, event.channel, event.ts)
        if not self._candidates(draft):
            await ctx.say(
                "No one bot can drive all of those devices; make one schedule per device."
            )
            return
        number = await self._next_number(event.channel)
        text = store.record_text(number, phrase.when, phrase.command, owner)
        next_at = phrase.when.next_after(now, self.where)
        if next_at is not None:
            text += f" Next: {local_time(next_at, self.where)}."
        resp = await bot.web.chat_postMessage(channel=event.channel, text=text, thread_ts=event.ts)
        await bot.web.pins_add(channel=event.channel, timestamp=resp["ts"])
        job = store.chat_job(
            number, phrase.when, phrase.command, owner, event.channel, resp["ts"], bot.user_id
        )
        self.jobs[job.key] = job
        self._cursor[job.key] = now
        self._wake.set()

    async def _next_number(self, channel: str) -> int:
        """One more than the highest schedule number known, this channel's pinned
        records included (one pins.list): a record whose message has not reached this
        bot yet still counts."""
        assert self.bot is not None
        numbers = {j.number or 0 for j in self.jobs.values()}
        resp = await self.bot.web.pins_list(channel=channel)
        for item in resp.get("items", []):
            job = store.read_record(item.get("message") or {}, channel, self.where)
            if job is not None:
                numbers.add(job.number or 0)
        return max(numbers, default=0) + 1

    async def _list(self, ctx: Context) -> None:
        assert self.bot is not None
        now = self.bot.clock.now()
        lines = []
        for job in sorted(
            self.jobs.values(), key=lambda j: (j.number is None, j.number or 0, j.key)
        ):
            at = job.next_after(max(now, self._cursor.get(job.key, 0.0)), self.where)
            nxt = f"next {local_time(at, self.where)}" if at else "no firing ahead"
            whens = ", ".join(w.describe() for w in job.whens) or "on a device's change"
            name = f"{job.number}." if job.number else f"“{job.key[2:]}” (file):"
            lines.append(f"{name} {whens} → {'; '.join(job.commands)} ({nxt})")
        await ctx.say("\n".join(lines) if lines else "Nothing is scheduled.")

    async def _cancel(self, ctx: Context) -> None:
        assert self.bot is not None
        bot, event = self.bot, ctx.message
        key = f"s{int(ctx.match.group('id'))}"
        job = self.jobs.get(key)
        if job is None or job.record_ts is None:
            await ctx.say(f"There is no schedule {key[1:]}; `list schedules` shows them.")
            return
        if event.user != job.owner and not bot.access.is_admin(event.user):
            await ctx.say(
                f"Only <@{job.owner}>, who made schedule {key[1:]}, or an admin can cancel it."
            )
            return
        original = store.record_text(
            job.number or 0, job.whens[0], job.commands[0], job.owner or ""
        )
        try:
            await bot.web.pins_remove(channel=job.channel, timestamp=job.record_ts)
        except SlackApiError as err:
            if err.response.get("error") != "no_pin":
                raise
        if job.poster == bot.user_id:  # Slack lets only the poster edit a message
            struck = f"~{original}~ Cancelled by <@{event.user}>."
            await bot.web.chat_update(channel=job.channel, ts=job.record_ts, text=struck)
        self.jobs.pop(key, None)
        self._wake.set()
        await ctx.say(store.cancelled_text(job, event.user or ""))

    # helpers ----------------------------------------------------------------------------

    def _actions(self, text: str, channel: str) -> list[Action]:
        """The device actions a command text asks for (none: not a device command)."""
        assert self.bot is not None
        area = self.bot.channel_areas.get(channel)
        command = self.bot.recognizer.recognize(text, area=area)
        if command is None or command.unknown or command.problem or not command.devices:
            return []
        return [a for a in self.bot.actions_for(command) if a.op != "query"]

    def _candidates(self, job: Job) -> list[str]:
        """The bots able to carry out every action of the job (an owned device: its
        owner only)."""
        assert self.bot is not None
        bots = set(self.bot.roster)
        routes = self.bot.routes
        for text in job.commands:
            for action in self._actions(text, job.channel):
                bots &= routes[action.device].bots
        return sorted(bots)


class _Understood:
    """The schedule phrase's pattern, matching only when the rest is a home command, so
    "dinner at 7:30" stays chatter (no call, no answer)."""

    pattern = (
        "(?:every <days> at <time>|at <time or sunset>|tomorrow at <time>|in <n> minutes) <command>"
    )
    """What `help` shows (troupe.plugin.describe reads it as a pattern)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    def fullmatch(self, text: str) -> re.Match[str] | None:
        found = SCHEDULE.fullmatch(text)
        if found is None:
            return None
        command = (found.group("then") or found.group("command")).strip(" ,")
        return found if self.bot.recognizer.recognize(command) is not None else None


def _spec(name: str, pattern: re.Pattern[str], func: Any, help: str) -> CommandSpec:
    return CommandSpec(name, pattern, func, help, "troupe.scheduler")


def _channel_id(bot: Bot, ref: str | None) -> str | None:
    if ref is None:
        return None
    for channel, refs in bot.channel_refs.items():
        if ref in refs or ref == channel or "#" + ref.lstrip("#") in refs:
            return channel
    return None


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _span(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 90:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} s"


def attach(bot: Bot, fed: Any) -> Scheduler:
    """Give a bot the schedules of the federation file (`location:`, `automations:`)."""
    scheduler = Scheduler(fed.location.location, fed.automations, fed.schedules)
    scheduler.attach(bot)
    return scheduler
