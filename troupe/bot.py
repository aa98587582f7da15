"""The runtime of one bot: transport -> ignore self -> match -> plan -> claim -> act ->
mark done -> reply -> release. The pipeline reads top to bottom in `Bot.handle`."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from troupe import __version__, faults
from troupe.access import Access, Person
from troupe.bus import Bus
from troupe.federation import Action, Coordinator, Outcome, Plan, Route, Settings, plan, rank
from troupe.intents import Command, DeviceInfo, Recognizer
from troupe.journal import Journal, Timer
from troupe.people import People
from troupe.plugin import (
    CommandSpec,
    DeviceState,
    Driver,
    DriverError,
    PluginSet,
    command_origin,
)
from troupe.roster import fleet_user_ids
from troupe.slackmq import DONE, TAKEOVER, SlackMQ, holding
from troupe.transports.base import Ack, Event, Transport

log = logging.getLogger(__name__)

MAX_TEXT = 4000
"""Longer messages are not read as commands (Slack itself allows 40,000 characters)."""
STATUS = re.compile(r"status|what(?:'s| is) on", re.IGNORECASE)
"""Every device's state: owners answer for theirs, one claimed bot for the shared ones."""
UNKNOWN = "I don't know that — try `help`."
STALE = "That command is {age:.0f} s old, past the {limit:.0f} s limit, so I did not run it."
INTERRUPTED = (
    "I was stopped while I was going to {what}, and the command is now past the {limit:.0f} s"
    " limit, so I did not finish it: check the device and ask again if you still want it."
)


@dataclass(frozen=True)
class BotInfo:
    """Who this bot is, for roll call and status."""

    name: str
    host: str
    version: str
    mode: str
    started: float = field(default_factory=time.time)

    @property
    def uptime_s(self) -> float:
        return time.time() - self.started


@dataclass(frozen=True)
class DeviceSpec:
    """A device as the runtime needs it: the federation file's entry, flattened."""

    name: str
    kind: str
    area: str | None
    driver: str
    owner: str | None
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a troupe command function receives."""

    bot: Bot
    event: Event
    match: re.Match[str]

    async def say(self, text: str) -> None:
        """Answer in the command's thread."""
        await self.bot.reply(self.event, text)


class Service(Protocol):
    """Something that runs beside the bot for its whole life (e.g. Home Assistant
    discovery): started after the drivers, stopped before them."""

    async def start(self, bot: Bot) -> None: ...

    async def stop(self) -> None: ...


class Bot:
    """One bot of the federation."""

    def __init__(
        self,
        *,
        name: str,
        roster: Sequence[str],
        devices: Sequence[DeviceSpec],
        plugins: PluginSet,
        web: AsyncWebClient,
        transport: Transport,
        journal: Journal,
        recognizer: Recognizer,
        settings: Settings,
        channels: Mapping[str, str | None],
        access: Access | None = None,
        allowed_bots: Sequence[str] = (),
        max_text: int = MAX_TEXT,
        max_duration_s: float = 24 * 3600,
        scenes: Mapping[str, Mapping[str, Any]] | None = None,
        mode: str = "app-per-bot",
        driver_options: Mapping[str, Mapping[str, Any]] | None = None,
        on_ready: Callable[[str], None] | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.name = name
        self.roster = tuple(roster)
        self.devices = {d.name: d for d in devices}
        self.plugins = plugins
        self.web = web
        self.transport = transport
        self.journal = journal
        self.recognizer = recognizer
        self.settings = settings
        self.channel_names = dict(channels)
        self.channel_areas: dict[str, str | None] = {}
        self.access = access or Access.build(admins=(), users=("*",))
        self.people = People(web)
        self.allowed_bots = set(allowed_bots)
        self.max_text = max_text
        self.max_duration_s = max_duration_s
        self.channel_refs: dict[str, set[str]] = {}
        self.scenes = dict(scenes or {})
        self.driver_options = dict(driver_options or {})
        self.info = BotInfo(name, socket.gethostname(), __version__, mode)
        self.on_ready = on_ready or (lambda line: print(line, flush=True))
        self.drivers: dict[str, Driver] = {}
        self.bus = bus
        self.user_id = ""
        self.bot_id = ""
        self.coordinator: Coordinator | None = None
        self.ready = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.services: list[Service] = []
        """Long-running companions started after the drivers (Home Assistant discovery)."""
        self.state_listeners: list[Callable[[str, DeviceState], Awaitable[None]]] = []
        """Called after every successful action with the device's new state."""

    # lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        # Warming the recognizer takes the better part of a second: do it meanwhile.
        warm = asyncio.ensure_future(asyncio.to_thread(self.recognizer.warm))
        auth = await self.web.auth_test()
        self.user_id = auth["user_id"]
        self.bot_id = auth.get("bot_id") or ""
        self.access = self.access.for_team(auth.get("team_id"))
        self.fleet_user_ids: frozenset[str] = await fleet_user_ids(
            self.web, self.roster, self.user_id, self.info.mode
        )
        await self._resolve_channels()
        await self._resolve_users()
        await self._start_drivers()
        lock = faults.wrap(SlackMQ(self.web, self.user_id))
        self.coordinator = Coordinator(self.name, lock, self.settings)
        for timer in self.journal.timers():
            if timer.device in self.devices and self.devices[timer.device].owner in (
                None,
                self.name,
            ):
                self._schedule(timer)
        interrupted = self.journal.interrupt()
        for service in self.services:
            await service.start(self)
        if self.bus is not None:
            await self.bus.start(self._on_relay)
        await warm
        self.transport.on_reconnect = self._catch_up
        await self.transport.start(self.handle)
        await self._sweep_pins()
        for command in interrupted:
            self._spawn(self._resume(*command))
        self.ready.set()
        self.on_ready(f"{self.name} ready ({self.info.mode}, {len(self._driven())} devices)")

    async def stop(self) -> None:
        """SIGTERM: finish what is in hand, keep pins that must linger, then stop."""
        await self.transport.stop()
        for handle in self._timers.values():
            handle.cancel()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self.settings.lease_s)
        if self.coordinator is not None:
            pending = await self.coordinator.close()
            if pending:
                log.info(
                    "%d pins left to linger; the next bot to start releases them", len(pending)
                )
        for service in self.services:
            await service.stop()
        for driver in self.drivers.values():
            await driver.stop()
        if self.bus is not None:
            await self.bus.stop()
        self.journal.close()

    async def _resume(self, channel: str, ts: str, text: str, user: str | None) -> None:
        """A command the last run began and never finished (a crash, a power cut).

        While it is fresh it goes through the pipeline again, so the claim decides who
        finishes it and a peer that already took over is not repeated; the journal lets
        only the interrupted actions run again. Past the stale limit it is reported in
        its thread, once, by the bot whose device actions were cut short.
        """
        event = Event.from_slack(
            {"type": "message", "channel": channel, "ts": ts, "text": text, "user": user}
        )
        assert event is not None and self.coordinator is not None
        if not self.coordinator.is_stale(ts):
            log.warning("resuming %s/%s %r, interrupted by the last stop", channel, ts, text)
            await self._handle(event, _no_ack)
            return
        cut = self.journal.interrupted_actions(channel, ts)
        self.journal.finish(channel, ts, "failed", "interrupted by a stop; too old to finish")
        log.warning(
            "%s/%s %r was interrupted by the last stop, too old to finish", channel, ts, text
        )
        if not cut or await self.coordinator.lock.is_done(channel, ts):
            return
        for action in cut:
            self.journal.action_end(channel, ts, action.device, action.action, False, "interrupted")
        verbs = {"on": "turn on", "off": "turn off"}
        what = ", ".join(f"{verbs.get(a.action, a.action)} the {a.device}" for a in cut)
        await self.reply(event, INTERRUPTED.format(what=what, limit=self.settings.stale_s))

    async def _catch_up(self) -> None:
        """After a reconnect that replays nothing (RTM): the channels' messages of the last
        stale_s go through the pipeline. The journal skips what this bot saw, a done mark
        skips what a peer finished, and the claim keeps the rest to one bot."""
        assert self.coordinator is not None
        oldest = f"{time.time() - self.settings.stale_s:.6f}"
        for channel in self.channel_areas:
            try:
                resp = await self.web.conversations_history(channel=channel, oldest=oldest)
            except SlackApiError as err:
                log.warning("cannot catch up on %s: %s", channel, err.response.get("error"))
                continue
            for message in reversed(resp.get("messages", [])):
                event = Event.from_slack({**message, "type": "message", "channel": channel})
                if event is None or self.journal.status(channel, event.ts) is not None:
                    continue
                marks = {r.get("name") for r in message.get("reactions", [])}
                if DONE in marks:
                    continue
                if channel in message.get("pinned_to", []):
                    self.coordinator.seen_pin(channel, event.ts)
                self._spawn(self.handle(event, _no_ack))

    async def _sweep_pins(self) -> None:
        """Release pins troupe left behind: a bot that stopped before its pins' linger
        ended, or a command whose holder and takers all died. Only pins past linger on
        messages carrying troupe's marks (or pinned by this bot user) are touched."""
        horizon = time.time() - self.settings.linger_s
        for channel in self.channel_areas:
            try:
                resp = await self.web.pins_list(channel=channel)
            except SlackApiError as err:
                log.warning("cannot list pins in %s: %s", channel, err.response.get("error"))
                continue
            for item in resp.get("items", []):
                message = item.get("message") or {}
                ts = message.get("ts")
                if not ts or float(ts) > horizon:
                    continue
                marks = {r.get("name") for r in message.get("reactions", [])}
                if not (marks & {DONE, TAKEOVER} or item.get("created_by") == self.user_id):
                    continue
                try:
                    await self.web.pins_remove(channel=channel, timestamp=ts)
                except SlackApiError as err:
                    if err.response.get("error") not in ("no_pin", "message_not_found"):
                        log.warning("cannot release %s/%s: %s", channel, ts, err)

    async def _resolve_channels(self) -> None:
        """Map '#name' and ids of the configured channels to ids, and note their areas."""
        wanted = dict(self.channel_names)
        known: dict[str, str] = {}
        lister = self.web.conversations_list
        async for conv in _paged(lister, "channels", types="public_channel,private_channel"):
            known[conv["id"]] = conv["id"]
            known["#" + conv["name"]] = conv["id"]
            known[conv["name"]] = conv["id"]
        for ref, area in wanted.items():
            channel_id = known.get(ref) or known.get(ref.lstrip("#"))
            if channel_id is not None:
                names = {name for name, cid in known.items() if cid == channel_id}
                self.channel_refs[channel_id] = {
                    n if n.startswith(("#", "C", "G")) else "#" + n for n in names
                }
            if channel_id is None:
                raise ValueError(
                    f"the channel {ref} does not exist in this Slack workspace; create it "
                    "or fix the channel in the federation file"
                )
            self.channel_areas[channel_id] = area

    async def _resolve_users(self) -> None:
        """Turn the '@name's of the access section (and of allowed bots) into user ids."""
        for warning in self.access.warnings():
            log.warning("%s", warning)
        wanted = self.access.names() | {b for b in self.allowed_bots if b.startswith("@")}
        if not wanted:
            return
        ids: dict[str, str] = {}
        async for member in _paged(self.web.users_list, "members"):
            if member.get("name") and not member.get("deleted"):
                ids["@" + member["name"].lower()] = member["id"]
        missing = sorted(wanted - ids.keys())
        if missing:
            raise ValueError(
                f"no user named {', '.join(missing)} in this Slack workspace; fix the access "
                "section of the federation file (user ids like U012ABC always work)"
            )
        self.access = self.access.with_ids(ids)
        self.allowed_bots = {ids.get(b, b) for b in self.allowed_bots}

    def _driven(self) -> list[DeviceSpec]:
        return [d for d in self.devices.values() if d.owner in (None, self.name)]

    async def _start_drivers(self) -> None:
        by_driver: dict[str, dict[str, Mapping[str, Any]]] = {}
        for device in self._driven():
            by_driver.setdefault(device.driver, {})[device.name] = device.options
        for name, devices in by_driver.items():
            cls = self.plugins.drivers.get(name)
            if cls is None:
                raise ValueError(
                    f"no plugin provides the driver {name!r} (devices: {', '.join(devices)}); "
                    f"known drivers: {', '.join(sorted(self.plugins.drivers))}"
                )
            driver = cls(
                self.name,
                self.driver_options.get(name, {}),
                notify=self.announce,
                recall=self.journal.last_state,
                changed=self._changed,
            )
            await driver.start(devices)
            self.drivers[name] = driver

    # routing ------------------------------------------------------------------------

    @property
    def routes(self) -> dict[str, Route]:
        everyone = frozenset(self.roster)
        return {
            d.name: Route(d.owner, frozenset({d.owner}) if d.owner else everyone)
            for d in self.devices.values()
        }

    # the pipeline ---------------------------------------------------------------------

    async def handle(self, event: Event, ack: Ack) -> None:
        """Everything an event can cause, in order."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._handle(event, ack)
        finally:
            await ack()
            if task is not None:
                self._inflight.discard(task)

    async def _handle(self, event: Event, ack: Ack, relayed: str | None = None) -> None:
        coordinator = self.coordinator
        if coordinator is None:
            return
        if event.kind == "pin_added":
            coordinator.seen_pin(event.channel, event.ts)
            return
        if event.kind == "reaction_added":
            if event.reaction == DONE:
                coordinator.seen_done(event.channel, event.ts)
            elif event.reaction == TAKEOVER:
                coordinator.seen_ballot(event.channel, event.ts)
            return
        if event.kind != "message" or not self._may_command(event):
            return
        if not self.journal.begin(event.channel, event.ts, event.text, event.user):
            return  # a redelivery, a replay or a relay of a message this bot has handled
        try:
            await self._dispatch(event, ack, relayed)
        except Exception as err:
            log.exception("command %r failed", event.text)
            self.journal.finish(event.channel, event.ts, "failed", str(err))
            raise
        else:
            if self.journal.status(event.channel, event.ts) == "begun":
                self.journal.finish(event.channel, event.ts, "done")

    def _may_command(self, event: Event) -> bool:
        """Ignore self, other bots (unless allowed) and channels not in the federation file.
        (People who may not command are answered, once, by _dispatch.)"""
        if event.user == self.user_id or (self.bot_id and event.bot_id == self.bot_id):
            return False
        if event.from_bot and not ({event.user, event.bot_id} & self.allowed_bots):
            return False
        if event.from_bot and event.thread_ts:
            return False  # bots answer in threads: an answer never becomes a command
        if event.subtype not in (None, "thread_broadcast"):
            return False
        return event.channel in self.channel_areas or _is_direct(event.channel)

    async def _dispatch(self, event: Event, ack: Ack, relayed: str | None) -> None:
        coordinator = self.coordinator
        assert coordinator is not None
        if coordinator.is_stale(event.ts):
            if relayed:
                self.journal.finish(event.channel, event.ts, "skipped", "relay arrived stale")
            else:
                await self._answer_stale(event)
            return
        person = await self.people.person(event)
        refusal = self._gatekeep(event, person)
        if refusal:
            if not relayed:
                await self._refuse(event, ack, refusal, event.text[:60])
            return
        text = _strip_mention(event.text, self.user_id)
        found = self.plugins.match(text)
        if found is not None:
            if not await self._allowed(event, {found[0].name}, ack, relayed):
                return
            await self._run_plugin(event, ack, *found, relayed=relayed)
            return
        if STATUS.fullmatch(text.strip().rstrip("?!.")):
            command: Command | None = Command("HassGetState", tuple(sorted(self.devices)), text)
        else:
            area = self.channel_areas.get(event.channel)
            # In a thread: matching takes milliseconds, but the loop must never wait on it.
            command = await asyncio.to_thread(self.recognizer.recognize, text, area=area)
        if relayed == "each":
            return
        if command is None or command.unknown or command.problem:
            if relayed:
                return
            await self._once(event, ack, lambda _t: self.reply(event, _explain(command)))
            return
        if command.duration_s and command.duration_s > self.max_duration_s:
            if not relayed:
                limit = _span(self.max_duration_s)
                await self._refuse(event, ack, f"timed commands may last {limit} at most", text)
            return
        if not await self._allowed(event, self._subjects(command), ack, relayed):
            return
        await self._run_devices(event, ack, command, relayed=relayed)

    # access ---------------------------------------------------------------------------

    def _gatekeep(self, event: Event, person: Person | None) -> str | None:
        """Why this message may not be a command at all, or None."""
        if _is_direct(event.channel) and not self.access.may_message_directly(person):
            return "I only take direct messages from the people the federation file lists"
        if not self.access.may_command(person):
            return self.access.refusal(person)
        if len(event.text) > self.max_text:
            return f"a command may be {self.max_text:,} characters at most"
        return None

    def _subjects(self, command: Command) -> set[str]:
        """What a device command touches, as access rules name things."""
        subjects = set(command.devices)
        subjects |= {self.devices[d].area for d in command.devices if self.devices[d].area}
        if command.scene:
            subjects |= {command.scene, *self.scenes.get(command.scene, {})}
        return {s for s in subjects if s}

    async def _allowed(self, event: Event, what: set[str], ack: Ack, relayed: str | None) -> bool:
        """Apply the access rules; a refusal is answered once (by one bot) and logged."""
        where = {event.channel, *self.channel_refs.get(event.channel, ())}
        decision = self.access.decide(event.user, where, what)
        if decision.allowed:
            return True
        if not relayed:
            await self._refuse(event, ack, decision.reason, ", ".join(sorted(what)))
        return False

    async def _refuse(self, event: Event, ack: Ack, reason: str, what: str) -> None:
        log.warning("refused %s in %s: %r (%s)", event.user, event.channel, what, reason)
        self.journal.finish(event.channel, event.ts, "skipped", f"refused: {reason}")

        async def answer(_takeover: bool) -> None:
            await self.reply(event, f"Sorry, {reason}.")

        await self._once(event, ack, answer)

    async def _once(self, event: Event, ack: Ack, work: Callable[[bool], Awaitable[Any]]) -> Any:
        """Exactly one bot of the roster does `work` for this message."""
        assert self.coordinator is not None
        candidates = self._claimants(self.roster, event.channel)
        result = await self.coordinator.coordinate(event.channel, event.ts, candidates, work)
        await ack()
        return result

    def _claimants(self, candidates: Sequence[str], channel: str) -> Sequence[str]:
        """Who may claim: the candidates; in shared-app mode, where Slack hands each event
        to one bot only, the bot that received it, at once (no stagger to wait out)."""
        sole = self.info.mode == "shared-app" or _is_direct(channel)
        return [self.name] if sole else candidates

    async def _answer_stale(self, event: Event) -> None:
        assert self.coordinator is not None
        lock = self.coordinator.lock
        if await lock.is_done(event.channel, event.ts):
            self.journal.finish(event.channel, event.ts, "skipped", "stale, done before")
            return
        if rank(event.ts, self._claimants(self.roster, event.channel))[0] != self.name:
            self.journal.finish(event.channel, event.ts, "skipped", "stale")
            return
        if await lock.claim(event.channel, event.ts):
            age = time.time() - float(event.ts)
            await self.reply(event, STALE.format(age=age, limit=self.settings.stale_s))
            await lock.mark_done(event.channel, event.ts)
            self.coordinator.schedule_release(event.channel, event.ts)
        self.journal.finish(event.channel, event.ts, "skipped", "stale")

    # plugin commands -------------------------------------------------------------------

    async def _run_plugin(
        self,
        event: Event,
        ack: Ack,
        spec: CommandSpec,
        match: re.Match[str],
        *,
        relayed: str | None = None,
    ) -> None:
        if relayed and not spec.each:
            return
        if spec.admin and not self.access.is_admin(event.user):
            log.warning("refused %s to %s: admins only", spec.name, event.user)

            async def refuse(_takeover: bool) -> None:
                await self.reply(event, f"Sorry, `{spec.name}` is for admins only.")

            await self._once(event, ack, refuse)
            return

        async def run(_takeover: bool) -> None:
            if spec.style == "troupe":
                await spec.func(Context(self, event, match))
            else:
                from troupe.slackbot_compat import call_slackbot_plugin

                await call_slackbot_plugin(self, spec, event, match)

        if spec.each:
            await ack()
            if relayed is None:
                await self._relay_to(list(self.roster), event, "each")
            with holding(event.channel, event.ts):
                await run(False)
            return
        with holding(event.channel, event.ts):
            await self._once(event, ack, run)

    # device commands ---------------------------------------------------------------------

    def actions_for(self, command: Command) -> list[Action]:
        """The device actions a recognised command asks for."""
        if command.intent == "Scene" and command.scene:
            return [_scene_action(dev, want) for dev, want in self.scenes[command.scene].items()]
        op = {
            "HassTurnOn": "on",
            "HassTurnOff": "off",
            "HassToggle": "toggle",
            "HassLightSet": "set",
            "HassGetState": "query",
        }[command.intent]
        args: dict[str, Any] = {}
        for key in ("brightness", "color", "temperature", "duration_s"):
            value = getattr(command, key)
            if value is not None:
                args[key] = value
        return [Action(d, op, tuple(sorted(args.items()))) for d in command.devices]

    async def _run_devices(
        self, event: Event, ack: Ack, command: Command, *, relayed: str | None = None
    ) -> None:
        actions = self.actions_for(command)
        for action in actions:
            if action.op != "query":
                self._cancel_timer(action.device)
        p: Plan = plan(self.name, actions, self.routes)
        lines: list[str] = []
        if relayed is None:
            await self._relay_to(list(p.others), event, "owned")
        if p.mine:
            lines += await self._act(event, p.mine, takeover=False)
        if p.shared and relayed is None:
            assert self.coordinator is not None

            async def work(takeover: bool) -> list[str]:
                return await self._act(event, p.shared, takeover=takeover)

            candidates = self._claimants(p.candidates, event.channel)
            result = await self.coordinator.coordinate(event.channel, event.ts, candidates, work)
            if result.outcome in (Outcome.ACTED, Outcome.TOOK_OVER) and result.value:
                if result.outcome is Outcome.TOOK_OVER:
                    lines.insert(0, "The bot that claimed this went silent, so I took over:")
                lines += result.value
        await ack()
        if lines:
            await self.reply(event, "\n".join(lines))

    async def _relay_to(self, bots: Sequence[str], event: Event, kind: str) -> None:
        """shared-app mode: pass the event to other bots over the bus (no-op otherwise)."""
        if self.bus is None:
            return
        for bot in bots:
            if bot != self.name:
                await self.bus.relay(bot, {"kind": kind, "event": dict(event.raw)})

    async def _on_relay(self, message: dict[str, Any]) -> None:
        """A relayed event from the bus: run only this bot's part of it."""
        kind = message.get("kind")
        event = Event.from_slack(message.get("event") or {})
        if kind not in ("owned", "each") or event is None:
            log.warning("bus: ignoring a relay this bot cannot read")
            return
        await self._handle(event, _no_ack, relayed=kind)

    async def _act(self, event: Event, actions: Sequence[Action], *, takeover: bool) -> list[str]:
        """Carry out actions on this bot's drivers, each recorded in the journal first."""
        lines = []
        for action in actions:
            device = self.devices[action.device]
            if takeover and not action.idempotent:
                lines.append(
                    f"I did not {action.op} the {device.name}: the claiming bot may have done "
                    "it already, and doing it twice would undo it. Check it and ask again."
                )
                continue
            if action.op == "query":
                state = await self.device_state(device.name)
                lines.append(f"The {device.name} is {state.describe()}.")
                continue
            kwargs = action.kwargs
            duration = kwargs.pop("duration_s", None)
            plain = Action(device.name, action.op, tuple(sorted(kwargs.items())))
            done = await self._drive(event.channel, event.ts, plain, event.user)
            if done is None:
                continue
            if done.ok and duration and action.op != "toggle":
                self._start_timer(event, plain, float(duration))
                done.text += f" for {_span(float(duration))}"
            lines.append(_sentence(done.text))
        return lines

    async def _drive(self, channel: str, ts: str, action: Action, user: str | None) -> _Done | None:
        """One device action through its driver, journaled before and after; None when
        this bot's journal shows it already did (or began) this very action."""
        if not self.journal.action_begin(
            channel, ts, action.device, action.op, action.kwargs, user
        ):
            return None
        faults.point("die-mid-action")
        driver = self.drivers[self.devices[action.device].driver]
        origin = command_origin.set((channel, ts))
        try:
            text = await driver.act(action.device, action)
        except DriverError as err:
            self.journal.action_end(channel, ts, action.device, action.op, False, str(err))
            return _Done(False, str(err))
        finally:
            command_origin.reset(origin)
        self.journal.action_end(channel, ts, action.device, action.op, True, text)
        await self._changed(action.device)
        return _Done(True, text)

    async def _changed(self, device: str) -> None:
        """Tell the state listeners a device's new state."""
        if self.state_listeners:
            state = await self.device_state(device)
            for listener in self.state_listeners:
                await listener(device, state)

    async def drive(self, action: Action, *, origin: tuple[str, str]) -> str:
        """Carry out an action on a device this bot drives, from outside chat (Home
        Assistant, a schedule). `origin` = (source, unique id) is the journal's key, so a
        redelivered request acts once. Returns the sentence; raises DriverError."""
        device = self.devices.get(action.device)
        if device is None or device.owner not in (None, self.name):
            raise DriverError(f"{self.name} does not drive a device called {action.device}")
        self._cancel_timer(action.device)
        done = await self._drive(origin[0], origin[1], action, None)
        if done is None:
            return "already done"
        if not done.ok:
            raise DriverError(done.text)
        return done.text

    # timed actions ("for 10 minutes") ------------------------------------------------------

    def _start_timer(self, event: Event, action: Action, duration_s: float) -> None:
        undo = "on" if action.op == "off" else "off"
        timer = Timer(action.device, undo, {}, time.time() + duration_s, event.channel, event.ts)
        self.journal.set_timer(timer)
        self._schedule(timer)

    def _schedule(self, timer: Timer) -> None:
        delay = max(0.0, timer.due - time.time()) / faults.timer_scale()
        handle = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(self._fire(timer))
        )
        self._timers[timer.device] = handle

    def _cancel_timer(self, device: str) -> None:
        """A later command for a device cancels its pending timer."""
        handle = self._timers.pop(device, None)
        if handle is not None:
            handle.cancel()
        self.journal.cancel_timer(device)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _fire(self, timer: Timer) -> None:
        self._timers.pop(timer.device, None)
        if not self.journal.cancel_timer(timer.device):
            return  # cancelled meanwhile
        action = Action(timer.device, timer.action)
        done = await self._drive(timer.channel, f"{timer.ts}/timer", action, None)
        if done is not None:
            text = f"{done.text} (its time was up)" if done.ok else done.text
            event = Event("message", timer.channel, timer.ts)
            await self.reply(event, _sentence(text))

    async def device_state(self, name: str) -> DeviceState:
        device = self.devices[name]
        driver = self.drivers.get(device.driver)
        if driver is None or device.owner not in (None, self.name):
            return DeviceState(online=False, detail=f"driven by {device.owner}")
        try:
            return await driver.state(name)
        except DriverError as err:
            return DeviceState(online=False, detail=str(err))

    # Slack output ------------------------------------------------------------------------

    async def announce(self, text: str) -> None:
        """Post in the bot's main channel (the first configured one)."""
        channel = next(iter(self.channel_areas), None)
        if channel is None:
            return
        try:
            await self.web.chat_postMessage(channel=channel, text=text)
        except SlackApiError as err:
            log.error("could not post in %s: %s", channel, err.response.get("error"))

    async def reply(self, event: Event, text: str) -> None:
        """Answer in the command's thread; a failure to post is logged, never fatal."""
        try:
            await self.web.chat_postMessage(
                channel=event.channel, text=text, thread_ts=event.thread_ts or event.ts
            )
        except SlackApiError as err:
            log.error("could not answer in %s: %s", event.channel, err.response.get("error"))


@dataclass
class _Done:
    ok: bool
    text: str


async def _paged(
    method: Callable[..., Awaitable[Any]], key: str, **args: Any
) -> AsyncIterator[Any]:
    """Every item of a cursor-paginated Web API list method, page after page."""
    cursor = None
    while True:
        resp = await method(limit=200, cursor=cursor, **args)
        for item in resp.get(key, []):
            yield item
        cursor = (resp.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        n = int(seconds // 3600)
        return f"{n} hour{'s' if n != 1 else ''}"
    if seconds % 60 == 0:
        n = int(seconds // 60)
        return f"{n} minute{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"


def _is_direct(channel: str | None) -> bool:
    """A direct message channel (only the bot it is addressed to receives it)."""
    return bool(channel) and channel.startswith("D")


async def _no_ack() -> None:
    return None


def _strip_mention(text: str, user_id: str) -> str:
    return re.sub(rf"^\s*<@{re.escape(user_id)}>:?\s*", "", text) if user_id else text


def _explain(command: Command | None) -> str:
    if command is None:
        return UNKNOWN
    if command.problem:
        return f"I can't do that: {command.problem}."
    return f"I don't know a device or area called “{command.unknown}” — try `devices`."


def _scene_action(device: str, want: Any) -> Action:
    if isinstance(want, (bool, str)):
        on = want is True or str(want).lower() == "on"
        return Action(device, "on" if on else "off")
    values = dict(want)
    on = values.pop("on", True)
    if not on:
        return Action(device, "off")
    return Action(device, "set" if values else "on", tuple(sorted(values.items())))


def device_infos(devices: Sequence[DeviceSpec]) -> list[DeviceInfo]:
    """What the recognizer needs to know of the devices."""
    return [DeviceInfo(d.name, d.kind, d.area, tuple(d.aliases)) for d in devices]
