"""The runtime of one bot: transport -> ignore self -> match -> plan -> claim -> act ->
mark done -> reply -> release. The pipeline reads top to bottom in `Bot.handle`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError

from troupe import __version__, confirm, devents, outcomes, relative
from troupe.access import Access, Person
from troupe.bus import Bus
from troupe.errors import ClaimError
from troupe.federation import (
    Action,
    Coordinator,
    Outcome,
    Plan,
    Result,
    Route,
    Settings,
    first_set,
    plan,
    rank,
)
from troupe.followup import Threads
from troupe.intents import Command, DeviceInfo, Recognizer
from troupe.journal import Journal, Timer
from troupe.operations import OPERATIONS
from troupe.people import People
from troupe.phrases import understood
from troupe.pinwatch import PinWatch
from troupe.plugin import (
    CommandSpec,
    DeviceState,
    Driver,
    DriverError,
    PluginSet,
    command_origin,
    resend_check,
)
from troupe.plugincontext import context_for
from troupe.relaycheck import in_slack
from troupe.roster import FleetUsers, fleet_user_ids
from troupe.schedulestore import is_record
from troupe.slackapi import ClockedWebClient, lock_client
from troupe.slackapi import paged as _paged
from troupe.slackclock import ClockUnknown, SlackClock
from troupe.slackmq import (
    CLAIM,
    DONE,
    REDELIVERY_S,
    TAKEOVER,
    WORKING,
    Lock,
    SlackMQ,
    holding,
)
from troupe.tasks import spawn
from troupe.transports.base import Ack, Event, Transport

log = logging.getLogger(__name__)

_ARGUMENTS = tuple(dict.fromkeys(a.name for op in OPERATIONS.values() for a in op.arguments))
"""Every argument an operation takes (troupe.operations), as a Command's field names."""

MAX_TEXT = 4000
"""Longer messages are not read as commands (Slack itself allows 40,000 characters)."""
CLOCK_MARGIN_S = 0.5
"""How far two bots' readings of Slack's clock may differ (each is within a round trip):
a wait for an older command to go stale lasts this much longer than its takers' check."""
CATCH_UP_AFTER_S = REDELIVERY_S + 1.0
"""Socket Mode: how long after a reconnect the bot reads back what no connection got.
Slack retries an envelope 3 s after it went unacknowledged, then only after a minute:
by now the commands posted just before the reconnect were handed out again and claimed,
and the ones left are those whose retry also found no connection."""
STATUS = re.compile(r"status|what(?:'s| is) on", re.IGNORECASE)
"""Every device's state: owners answer for theirs, one claimed bot for the shared ones."""
TOOK_OVER = "The bot that claimed this went silent, so I took over:"
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
    confirm: bool | None = None
    """Ask for a 👍 before acting (None: troupe.confirm's default for the kind)."""


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
        web: ClockedWebClient,
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
        clock: SlackClock | None = None,
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
        self.clock: SlackClock = clock or getattr(web, "clock", None) or SlackClock()
        """Slack's time: the web client teaches it from every answer."""
        self.fleet_user_ids: frozenset[str] = frozenset()
        """The roster's bot users: only their pins and reactions count."""
        self.fleet = FleetUsers(self)
        self._touches: dict[tuple[str, str], tuple[str, ...]] = {}
        """The devices each recent command acts on (to learn per-device order from ✅)."""
        self._newest: dict[str, str] = {}
        """Per device, the Slack ts of the newest command known to have acted on it."""
        self._finished: dict[tuple[str, str], asyncio.Event] = {}
        """Set when this bot is through with a command (its ✅ may reach another bot)."""
        self._told: dict[tuple[str, str], tuple[str, ...]] = {}
        """Peers' late actions under way on this bot's devices, from their notices."""
        self._sweeper: asyncio.Task[Any] | None = None
        self.pins = PinWatch()
        """The fleet's lock pins this bot saw go up and not yet come down (the sweep's cue)."""
        self._resumed: set[tuple[str, str]] = set()
        self._held: set[tuple[str, str]] = set()
        """Interrupted commands whose claim this bot held before the stop (`interrupted`)."""
        self._learned: set[tuple[str, str]] = set()
        self._notified: set[tuple[str, str]] = set()
        """Commands whose late action this bot told its peers of and has not yet ended."""
        self._looked_back: set[tuple[str, str]] = set()
        self._catching_up = False
        self._caught_up = asyncio.Event()
        """rtm: clear while the read of what this bot missed when away is under way
        (`_note_missed`, a catch-up's): its commands' waits in line look after it."""
        self._caught_up.set()
        self._checked_votes: set[tuple[str, str]] = set()
        """Late commands for which the channel's newer commands were read already."""
        self._waited_in_line: dict[tuple[str, str], float] = {}
        """Per command, how long it waited for its turn, hearing every mark (`_late`)."""
        self.user_id = ""
        self.bot_id = ""
        self.coordinator: Coordinator | None = None
        self.ready = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.services: list[Service] = []
        """Long-running companions started after the drivers (Home Assistant discovery)."""
        self.fleet_messages: list[Callable[[Event], None]] = []
        """Called with every message a fleet bot posts (the schedules' firings)."""
        self.state_listeners: list[Callable[[str, DeviceState], Awaitable[None]]] = []
        """Called after every successful action with the device's new state."""
        self.event_listeners: list[devents.Listener] = []
        """Called (each in its own task) with every DeviceEvent a driver of this bot emits."""
        self.threads = Threads(recognizer, self._thread_text)
        """The command of each recent thread, for follow-ups ("turn it off")."""
        self.confirmations = confirm.Confirmations()
        """Commands on risky devices waiting for the asker's 👍."""
        self.clients: dict[str, Any] = {}
        """Connections the bot's parts share, by section: "mqtt" -> its one MQTT client."""

    # lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        # Warming the recognizer takes the better part of a second: do it meanwhile.
        warm = asyncio.ensure_future(asyncio.to_thread(self.recognizer.warm))
        auth = await self.web.auth_test()
        self.user_id = auth["user_id"]
        self.bot_id = auth.get("bot_id") or ""
        self.access = self.access.for_team(auth.get("team_id"))
        self.fleet_user_ids = await fleet_user_ids(
            self.web, self.roster, self.user_id, self.info.mode
        )
        await self._resolve_channels()
        await self._resolve_users()
        await self._start_drivers()
        lease = self.settings.lease_s
        if isinstance(self.web, ClockedWebClient):
            client = lock_client(self.web, lease)
            crowded = functools.partial(client.limited_within, lease)
        else:
            client, crowded = self.web, lambda: False
        self.slackmq = SlackMQ(
            client,
            self.user_id,
            trusted=self.is_fleet_user,
            shared_user=self._one_user,
            sole_receiver=self.info.mode == "shared-app",
            now=self.clock.now,
        )
        """The Slack lock, for plugins that coordinate more than commands (devops)."""
        self.coordinator = Coordinator(
            self.name,
            self._claim_lock(self.slackmq),
            self.settings,
            clock=self.clock.now,
            listening_since=lambda: getattr(self.transport, "connected_since", None),
            one_user=self._one_user,
            sole_receiver=self.slackmq.sole_receiver,
            crowded=crowded,
        )
        for timer in self.journal.timers():
            if timer.device in self.devices and self.devices[timer.device].owner in (
                None,
                self.name,
            ):
                self._schedule(timer)
        interrupted = self.interrupted()
        for service in self.services:
            await service.start(self)
        if self.bus is not None:
            self.bus.clock = self.clock.now
            await self.bus.start(self._on_relay, in_slack(self.web), self._on_notice)
        await warm
        self.transport.on_reconnect = self._catch_up
        await self.transport.start(self.handle)
        if self._replays_nothing():
            self._caught_up.clear()
            self._spawn(self._note_missed())
        await self._sweep_pins()
        self._sweeper = spawn(self._sweep_forever(), "sweeping stale pins", logger=log)
        for command in interrupted:
            self._spawn(self._resume(*command))
        self.ready.set()
        self.on_ready(f"{self.name} ready ({self.info.mode}, {len(self._driven())} devices)")

    async def stop(self) -> None:
        """SIGTERM: finish what is in hand, keep pins that must linger, then stop."""
        await self.transport.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
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

    def interrupted(self) -> list[tuple[str, str, str, str | None]]:
        """At start: the commands the last run began and never finished, to resume. Those
        whose claim it held (it began acting on a shared device) it finishes under that
        claim, whichever copy comes first, its resume or Slack's redelivery: met as a
        peer's, the claim would have a taker repeat what this bot did."""
        interrupted = self.journal.interrupt()
        for channel, ts, *_ in interrupted:
            acted = self.journal.acted_on(channel, ts)
            if any(d in self.devices and self.devices[d].owner is None for d in acted):
                self._held.add((channel, ts))  # a shared device: only under the claim
        return interrupted

    async def _resume(self, channel: str, ts: str, text: str, user: str | None) -> None:
        """A command the last run began and never finished (a crash, a power cut).

        While it is fresh it goes through the pipeline again, so the claim decides who
        finishes it and a peer that already took over is not repeated; the journal lets
        only the interrupted actions run again. Past the stale limit it is reported in
        its thread, once: by the bot whose device actions were cut short, or, when none
        had begun, through the pipeline, which finds it stale and has one bot say so (in
        shared-app mode this bot may be the only one that ever received it: Slack does
        not hand out again an event it saw acknowledged).
        """
        event = Event.from_slack(
            {"type": "message", "channel": channel, "ts": ts, "text": text, "user": user}
        )
        assert event is not None and self.coordinator is not None
        lock = self.coordinator.lock
        if self.coordinator.is_stale(ts):
            cut = self.journal.interrupted_actions(channel, ts)
            if not cut:
                await self.handle(event)
                return
            # Finished in the journal before any await, so a redelivery meanwhile is seen.
            self.journal.finish(channel, ts, "failed", "interrupted by a stop; too old to finish")
            log.warning(
                "%s/%s %r was interrupted by the last stop, too old to finish", channel, ts, text
            )
            for action in cut:
                self.journal.action_end(
                    channel, ts, action.device, action.action, False, "interrupted"
                )
            # A newer command on a device, acted or still to act, has it: say so instead.
            still = await self._learn_newer(event, waited=True)
            # Then, right before answering: a taker answers before its ✅, so either one
            # says the command is finished, and a peer's ballot that a taker is at it.
            if await self._finished_elsewhere(event):
                return
            lines, left = [], []
            for action in cut:
                newer = self._superseded(action.device, ts) or still.get(action.device)
                if newer is None:
                    left.append(action)
                else:
                    at = self._local_time(newer)
                    lines.append(outcomes.render(outcomes.Superseded(action.device, at)))
            if left:
                verbs = {"on": "turn on", "off": "turn off"}
                what = ", ".join(f"{verbs.get(a.action, a.action)} the {a.device}" for a in left)
                lines.append(INTERRUPTED.format(what=what, limit=self.settings.stale_s))
            await self.reply(event, "\n".join(lines))
            return
        if await lock.is_done(channel, ts):  # a peer finished it while this bot was down
            self.journal.finish(channel, ts, "skipped", "finished by a peer while stopped")
            return
        log.warning("resuming %s/%s %r, interrupted by the last stop", channel, ts, text)
        self._resumed.add((channel, ts))
        mq = getattr(self, "slackmq", None)
        if mq is not None and mq.sole_receiver and (channel, ts) not in self._held:
            # shared-app: the bot Slack handed it to first may hold it at no call, with
            # nothing in Slack to show it: taken up like a redelivery (a lease, a ballot)
            mq.delivered(channel, ts, retry_attempt=1)
        await self.handle(event)

    async def _catch_up(self) -> None:
        """After a reconnect, the channels' messages of the last stale_s that may never
        come go through the pipeline. RTM replays nothing. Socket Mode's Slack retries an
        envelope 3 s after it went unacknowledged and then a minute later: a command posted
        while every connection of an app was down (a router restarting, Wi-Fi gone) comes
        back stale, so after CATCH_UP_AFTER_S the bot reads back too. The journal skips
        what this bot saw, a done mark what a peer finished; the rest is taken up as a
        redelivery: the claim keeps it to one bot, and a claimed one (its holder may live,
        or have died after its envelope was acknowledged) waits out the lease and the
        ballot, so a dead holder's command is finished too. Where the fleet is one app or
        user (shared-app, rtm) only the first-ranked bot takes each message up: after
        every socket dropped, eight bots voting on every unfinished command spent the
        one budget (a 5,000-command soak: 2,152 answers of 429 in shared-app)."""
        assert self.coordinator is not None
        self.pins.reconnected()
        if self._catching_up:
            return  # a reconnect storm: the catch-up under way reads the same window
        self._catching_up = True
        self._caught_up.clear()
        try:
            await self._read_back()
        finally:
            self._catching_up = False
            self._caught_up.set()

    async def _read_back(self) -> None:
        if self.transport.mode == "socket":
            await asyncio.sleep(CATCH_UP_AFTER_S)
        async for channel, messages in self._recent("catch up on"):
            if self._replays_nothing():
                await self._note_unseen(channel, messages)
            for message in reversed(messages):
                # Taken up like a redelivery (retry_attempt 1): late, so a newer command
                # wins its devices; and in shared-app, where the first receiver holds a
                # command at no call, never held at once: a live receiver may have it.
                fields = {**message, "type": "message", "channel": channel}
                event = Event.from_slack(fields, retry_attempt=1)
                if event is None or self.journal.status(channel, event.ts) is not None:
                    continue
                if DONE in self._fleet_marks(message):
                    continue
                if self._one_user and rank(event.ts, self.roster)[0] != self.name:
                    continue  # the fleet's one app or user: one bot takes each up, not all
                self._spawn(self.handle(event, _no_ack))

    def _replays_nothing(self) -> bool:
        """rtm: every bot hears every mark, but a message posted while its connection was
        down (a restart, a reconnect) never reaches it, and the fleet's one app cannot
        afford a read per command (`_look_back`): one read per connection instead."""
        return self.info.mode == "rtm"

    async def _note_missed(self) -> None:
        """rtm, at start: read the last stale_s of each channel once (one call each) and
        note the device commands this bot never received and the fleet has not finished,
        so this bot's newer commands on their devices wait for them in turn (the soak:
        a bot restarted just as an older command was posted acted a newer one on the
        same plug first)."""
        try:
            async for channel, messages in self._recent("read back"):
                await self._note_unseen(channel, messages)
        finally:
            self._caught_up.set()

    async def _recent(self, why: str) -> AsyncIterator[tuple[str, list[Mapping[str, Any]]]]:
        """Each channel's messages of the last stale_s (one conversations.history each); a
        channel Slack refuses is skipped with a warning."""
        oldest = f"{self.clock.now() - self.settings.stale_s:.6f}"
        for channel in self.channel_areas:
            try:
                resp = await self.web.conversations_history(channel=channel, oldest=oldest)
            except SlackApiError as err:
                log.warning("cannot %s %s: %s", why, channel, err.response.get("error"))
                continue
            yield channel, resp.get("messages", [])

    async def _note_unseen(self, channel: str, messages: Sequence[Mapping[str, Any]]) -> None:
        """Note the device commands among a channel read's messages that this bot never
        received and the fleet has not finished (no ✅): waited for in turn (`_in_turn`)."""

        def unseen(older: Event, message: Mapping[str, Any]) -> bool:
            return (
                (channel, older.ts) not in self._touches
                and self._may_command(older)
                and DONE not in self._fleet_marks(message)
            )

        for ts, touched in await self._commands_in(channel, messages, unseen):
            self._touches[(channel, ts)] = touched

    def _fleet_marks(self, message: Mapping[str, Any]) -> set[str]:
        """The reactions on a message that the fleet's own bot users made."""
        return {
            r.get("name", "")
            for r in message.get("reactions", [])
            if any(self.is_fleet_user(u) for u in r.get("users", []))
        }

    async def _sweep_forever(self) -> None:
        """After the sweep at start, release the fleet's own leftover pins every linger_s,
        so leaked pins never fill the channel's 100 (Slack's limit). One bot sweeps each
        window (ranked like a command), so the fleet's cost does not grow with N, and it
        lists pins only when its PinWatch says one may be left behind. Where the fleet is
        one Slack user (shared-app, rtm) no claim is a pin, so there is nothing to leak:
        the sweep at start (pins left by an earlier app-per-bot fleet) is enough."""
        if self._one_user:
            return
        while True:
            await asyncio.sleep(self.settings.linger_s)
            now = self.clock.now()
            window = int(now // self.settings.linger_s)
            if rank(f"sweep {window}", self.roster)[0] != self.name:
                continue
            # A holder releases at ts + linger: a lease's grace before a pin counts as left.
            late = now - self.settings.linger_s - self.settings.lease_s
            if not self.pins.needs_sweep(late):
                continue
            try:
                await self._sweep_pins()
            except Exception:  # a sweep is retried next round; never fatal
                log.exception("pin sweep failed")

    async def _sweep_pins(self) -> None:
        """Release pins troupe left behind: a bot that stopped before its pins' linger
        ended, or a command whose holder and takers all died. Only pins the fleet's own bot
        users made, past linger, are touched: a person's pin is never removed."""
        horizon = self.clock.now() - self.settings.linger_s
        listed = True
        for channel in self.channel_areas:
            try:
                resp = await self.web.pins_list(channel=channel)
            except SlackApiError as err:
                log.warning("cannot list pins in %s: %s", channel, err.response.get("error"))
                listed = False
                continue
            for item in resp.get("items", []):
                message = item.get("message") or {}
                ts = message.get("ts")
                if not ts or float(ts) > horizon or not self.is_fleet_user(item.get("created_by")):
                    continue
                if is_record(message):  # a schedule kept in Slack, not a lock
                    continue
                try:
                    await self.web.pins_remove(channel=channel, timestamp=ts)
                except SlackApiError as err:
                    if err.response.get("error") not in ("no_pin", "message_not_found"):
                        log.warning("cannot release %s/%s: %s", channel, ts, err)
        if listed:
            self.pins.swept(horizon)

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
                emit=self.emit_event,
                **({"client": self.clients[name]} if name in self.clients else {}),
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

    async def handle(self, event: Event, ack: Ack | None = None) -> None:
        """Everything an event can cause, in order: marks -> ignore self and strangers ->
        journal -> the command (_command) -> journal. The envelope is acknowledged once the
        bot has done its part (the transport also does at its deadline); events from the
        catch-up and the bus come without one."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        lock = getattr(self, "slackmq", None)  # set at start
        # Handed out by Slack (a transport's delivery, which comes with an ack), not read
        # back by the catch-up or a resume, nor relayed over the bus.
        handed = (
            ack is not None
            and event.kind == "message"
            and event.relay is None
            and not event.from_bot
        )
        if handed and lock is not None and lock.sole_receiver:  # Slack's hand-out claims
            lock.delivered(event.channel, event.ts, event.retry_attempt)
        try:
            if self.coordinator is None:
                return
            if event.kind != "message":
                await self._observe_mark(event)
                await confirm.on_reaction(self, event)
                return
            if event.from_bot and self.is_fleet_user(event.user):  # a 👍 question, maybe
                self.confirmations.saw_question(event.channel, event.thread_ts, event.ts)
                for listener in self.fleet_messages:
                    listener(event)
            if not self._may_command(event):
                return
            self.clock.saw_event(float(event.ts), self.clock.local())
            if not self.journal.begin(event.channel, event.ts, event.text, event.user):
                return  # a redelivery, a replay or a relay of a message this bot has handled
            try:
                note = await self._command(event)
            except Exception as err:
                log.exception("command %r failed", event.text)
                self.journal.finish(event.channel, event.ts, "failed", str(err))
                raise
            if self.journal.status(event.channel, event.ts) == "begun":
                self.journal.finish(event.channel, event.ts, *note)
        finally:
            if ack is not None:
                await ack()
            if task is not None:
                self._inflight.discard(task)

    async def _command(self, event: Event) -> tuple[str, str]:
        """One message, start to end: returns the journal's (status, note). A relayed event
        (shared-app) is the receiver's to answer: this bot only runs its own part."""
        assert self.coordinator is not None
        text = _strip_mention(event.text, self.user_id)
        addressed = _is_direct(event.channel) or text != event.text
        if len(event.text) > self.max_text:
            # Too long to read for a command, and too rare to be everyday chatter: one bot
            # says the limit, so a command that grew too long is not silently dropped.
            if not event.relay:
                limit = f"a command may be {self.max_text:,} characters at most"
                await self._refuse(event, limit, event.text[:60])
            return "skipped", "too long to read"
        found = self.plugins.match(text, addressed=addressed)
        command = None if found else await self._understand(event, text)
        if found is None and command is None:
            if addressed and not event.relay:
                await self._answer(event, outcomes.NotUnderstood())  # this bot alone
            return "skipped", "chatter"
        if not self.clock.known:
            log.warning("%s: not claiming %r: %s", self.name, event.text[:60], ClockUnknown())
            return "skipped", "Slack's time not known yet"
        if self.coordinator.is_stale(event.ts):
            if event.relay:
                return "skipped", "relay arrived stale"
            await self._answer_stale(event)
            return "skipped", "stale"
        refusal = self._gatekeep(event, await self.people.person(event))
        if refusal:
            if not event.relay:
                await self._refuse(event, refusal, event.text[:60])
            return "skipped", f"refused: {refusal}"
        if found is not None:
            if await self._allowed(event, {found[0].name}):
                await self._run_plugin(event, *found)
            return "done", ""
        assert command is not None
        if event.relay == "each":
            return "skipped", "not for this bot"
        if command.unknown or command.problem:
            if not event.relay:
                await self._once(event, outcomes.NearMiss(command))
            return "skipped", "near miss"
        if command.duration_s and command.duration_s > self.max_duration_s:
            if not event.relay:
                limit = _span(self.max_duration_s)
                await self._refuse(event, f"timed commands may last {limit} at most", text)
            return "skipped", "too long a duration"
        if not await self._allowed(event, self._subjects(command)):
            return "skipped", "refused"
        if any(
            confirm.needed(self.devices[d].kind, self.devices[d].confirm) for d in command.devices
        ):
            return await confirm.ask(self, event, command)
        await self._run_devices(event, command)
        return "done", ""

    async def _understand(self, event: Event, text: str) -> Command | None:
        """The home command a message asks for; None for chatter."""
        if STATUS.fullmatch(text.strip().rstrip("?!.")):
            return Command("HassGetState", tuple(sorted(self.devices)), text)
        area = self.channel_areas.get(event.channel)
        # In a thread: matching takes milliseconds, but the loop must never wait on it.
        command = await asyncio.to_thread(self.recognizer.recognize, text, area=area)
        if event.thread_ts and event.thread_ts != event.ts and not understood(command):
            follow = await self.threads.follow_up(event.channel, event.thread_ts, text, area)
            command = follow or command
        self.threads.remember(event.channel, event.ts, command)
        return command

    async def _thread_text(self, channel: str, ts: str) -> str | None:
        """The text of the message that started a thread (one Slack call)."""
        resp = await self.web.conversations_replies(channel=channel, ts=ts, limit=1)
        messages = resp.get("messages") or []
        return _strip_mention(messages[0].get("text", ""), self.user_id) if messages else None

    def _may_command(self, event: Event) -> bool:
        """Ignore self, other bots (unless allowed) and channels not in the federation file.
        (People who may not command are answered, once, by _command.)"""
        if event.user == self.user_id or (self.bot_id and event.bot_id == self.bot_id):
            return False
        if event.from_bot and not ({event.user, event.bot_id} & self.allowed_bots):
            return False
        if event.from_bot and event.thread_ts:
            return False  # bots answer in threads: an answer never becomes a command
        if event.subtype not in (None, "thread_broadcast"):
            return False
        return event.channel in self.channel_areas or _is_direct(event.channel)

    # the fleet's marks ------------------------------------------------------------------

    @property
    def _one_user(self) -> bool:
        """Whether the whole fleet posts as one Slack user (shared-app, rtm): one budget
        for every bot, and a mark by that user cannot tell one bot from another."""
        return self.info.mode != "app-per-bot"

    def is_fleet_user(self, user: str | None) -> bool:
        """Whether a Slack user is one of the roster's own bot users."""
        return bool(user) and user in self.fleet_user_ids

    async def _recheck(self, user: str | None) -> bool:
        """Whether a mark's maker is one of the fleet's bot users; an unknown one makes the
        fleet be looked up again (rarely): a bot whose app was installed after this one."""
        if user and not self.is_fleet_user(user):
            await self.fleet.recheck({user})
        return self.is_fleet_user(user)

    async def _observe_mark(self, event: Event) -> None:
        """Pins and reactions feed the claim protocol, but only the fleet's own."""
        assert self.coordinator is not None
        if event.kind == "pin_removed":
            self.pins.removed(event.channel, event.ts)
            return
        mark = event.kind == "pin_added" or event.reaction in (CLAIM, DONE, TAKEOVER, WORKING)
        if not mark or not await self._recheck(event.user):
            return
        coordinator = self.coordinator
        pinned = (event.raw.get("item") or {}).get("message") or {}
        if event.kind == "pin_added" and not is_record(pinned):
            self.pins.added(event.channel, event.ts)
        if event.kind == "pin_added" or (event.kind, event.reaction) == ("reaction_added", CLAIM):
            coordinator.seen_pin(event.channel, event.ts)
        elif event.reaction == WORKING and event.kind in ("reaction_added", "reaction_removed"):
            coordinator.seen_renewal(event.channel, event.ts)
        elif event.kind == "reaction_added" and event.reaction == DONE:
            coordinator.seen_done(event.channel, event.ts)
            for device in self._touches.get((event.channel, event.ts), ()):
                self._acted(device, event.ts)
        elif event.kind == "reaction_added" and event.reaction == TAKEOVER:
            coordinator.seen_ballot(event.channel, event.ts)

    def _acted(self, device: str, ts: str) -> None:
        """A command stamped `ts` has acted on `device` (the newest such wins the device)."""
        if float(ts) > float(self._newest.get(device, "0")):
            self._newest[device] = ts

    async def _look_back(self, event: Event) -> None:
        """app-per-bot: before acting on a command from this bot's first stale_s on a
        connection (after a start or a reconnect), read the channel before it (one call),
        so the older commands this bot never received, posted while it was away (Slack
        hands them out again only 3 s later), are waited for in turn like the ones it saw.
        Not where the fleet shares one app or user (shared-app, rtm): eight bots reading
        back at once on its one Tier 3 budget tipped soaks into 429 storms."""
        since = getattr(self.transport, "connected_since", None)
        key = (event.channel, event.ts)
        if since is None or event.from_bot or key in self._looked_back:
            return  # (the fleet's own messages, a schedule's firing, come in its order)
        if self._one_user:
            # one app's Tier 3 budget for the whole fleet: a catch-up's read, not this
            if self._replays_nothing():  # its read noted what this bot missed: wait for it
                await first_set([self._caught_up], self.settings.lease_s / 3)
            return
        # by Slack's clock (`since` is on the loop's clock: time.monotonic)
        connected_at = self.clock.now() - (asyncio.get_running_loop().time() - since)
        oldest = float(event.ts) - self.settings.stale_s
        if connected_at <= oldest:
            return  # connected for the whole window: every older command reached this bot
        self._looked_back.add(key)

        def unseen(older: Event, message: Mapping[str, Any]) -> bool:
            return (
                float(older.ts) < float(event.ts)
                and (event.channel, older.ts) not in self._touches
                and self._may_command(older)
                and DONE not in self._fleet_marks(message)
            )

        window = {"oldest": f"{oldest:.6f}", "latest": event.ts}
        for ts, touched in await self._device_commands(event.channel, unseen, **window):
            self._touches[(event.channel, ts)] = touched

    async def _in_turn(self, event: Event, device: str) -> None:
        """Per-device order across the fleet: before acting, wait for the older commands on
        the same device that this bot has seen to be marked done, so one whose holder died
        (taken over after a lease) or whose claim answer came back slowly still acts
        before this one. Each wait ends once the older command is past the stale limit
        (a taker or a resumed command never acts after it: see `_act`), and before this
        one is."""
        assert self.coordinator is not None
        limit = self.settings.stale_s
        own_end = float(event.ts) + limit - CLOCK_MARGIN_S
        for (channel, ts), devices in sorted(self._touches.items(), key=lambda kv: kv[0][1]):
            if float(ts) >= float(event.ts) or device not in devices:
                continue
            done = self.coordinator.watch(channel, ts).done
            finished = self._finished.get((channel, ts))  # None: read back, never received
            if done.is_set() or (finished is not None and finished.is_set()):
                continue
            until = min(float(ts) + limit + CLOCK_MARGIN_S, own_end) - self.clock.now()
            await first_set([e for e in (done, finished) if e is not None], until)

    async def _taken_up(self, event: Event) -> bool:
        """shared-app: whether peers voted to take this held command over, or finished it,
        read from Slack (one call) by a holder acting late. Slack hands each reaction event
        to one connection, so the ballot's event may never reach the holder, and the ⏳ of
        its renewals may never reach the redelivery receiver that voted."""
        if self.info.mode != "shared-app" or self.coordinator is None:
            return False
        key = (event.channel, event.ts)
        if key in self._checked_votes:
            return False
        self._checked_votes.add(key)
        # unreadable: it acts (its lease still holds), as before the check existed
        return await self.coordinator.taken_up(event.channel, event.ts, unknown=False)

    async def _notify_late(
        self, event: Event, devices: Sequence[str], *, end: bool = False
    ) -> None:
        """shared-app with a bus: tell every peer, before the read a late action makes
        (`_learn_newer`), that this older command is about to act on its devices, and
        when it is through. Slack hands a newer command posted after that read to one
        bot, which acts on it at once knowing nothing of this one: the soak's
        out-of-order actions. With the notice that bot waits for this one in turn
        (`_in_turn`, `_on_notice`)."""
        key = (event.channel, event.ts)
        told = key in self._notified
        if self.bus is None or self.info.mode != "shared-app" or told != end:
            return  # a start once per command; an end (the devices it acted on) after one
        if end:
            self._notified.discard(key)
        else:
            self._notified.add(key)
        notice = {"late": "end" if end else "start", "channel": key[0], "ts": key[1]}
        for bot in self.roster:
            if bot != self.name:
                await self.bus.notify(bot, {**notice, "devices": list(devices)})

    async def _on_notice(self, notice: Mapping[str, Any]) -> None:
        """A peer's late action under way (`_notify_late`): its devices count as touched
        by that command, so this bot's newer commands on them wait for it in turn
        (`_in_turn`) until its end notice, its ✅ or its stale limit, and this bot's
        older late ones leave the devices to it (`_told_newer`). Its end notice names
        the devices it acted on, which count as acted (`_superseded`)."""
        channel, ts, devices = notice.get("channel"), notice.get("ts"), notice.get("devices")
        if not isinstance(channel, str) or not _is_ts(ts) or not isinstance(devices, list):
            log.warning("bus: ignoring a notice this bot cannot read")
            return
        assert self.coordinator is not None and isinstance(ts, str)
        key = (channel, ts)
        mine = tuple(d for d in devices if isinstance(d, str) and d in self.devices)
        if notice.get("late") == "end":
            self._told.pop(key, None)
            for device in mine:
                self._acted(device, ts)
            if (finished := self._finished.get(key)) is not None:
                finished.set()
            return
        if mine and not self.coordinator.is_stale(ts):
            self._told[key] = mine
            if key not in self._touches:
                self._touches[key] = mine
                self._finished[key] = asyncio.Event()

    def _told_newer(self, event: Event, device: str) -> str | None:
        """The newest command newer than this one whose late action a peer told this bot
        it has under way on the device (`_on_notice`), if any. Two late actions on one
        device, each sending its notice before its read, each look at the other's after
        that read: the older one, when the newer one's notice came first, leaves the
        device to it; else the newer one waits for the older one's end (`_in_turn`)."""
        assert self.coordinator is not None
        told = [
            ts
            for (channel, ts), devices in self._told.items()
            if channel == event.channel
            and float(ts) > float(event.ts)
            and device in devices
            and not self.coordinator.is_stale(ts)
        ]
        return max(told, key=float, default=None)

    def _hearing(self) -> float | None:
        """Since when this bot has heard every mark the fleet makes: its connection's
        opening while connected, where each bot receives every event (app-per-bot, rtm);
        None where it may not (disconnected; shared-app, where Slack hands each event to
        one of the app's connections)."""
        if self.info.mode == "shared-app" or not self.transport.connected:
            return None
        return getattr(self.transport, "connected_since", None) or 0.0

    def _late(self, event: Event, takeover: bool) -> bool:
        """Whether an action is carried out late (a takeover, a redelivery: Slack hands out
        again what a dropped connection did not acknowledge, after newer commands; a resume
        after a restart; a claim held up by rate limits): then a newer command wins. Its
        waits for its turn, heard through, do not count (`_wait_in_line`)."""
        key = (event.channel, event.ts)
        if takeover or event.retry_attempt or key in self._resumed:
            return True
        age = self.clock.now() - float(event.ts) - self._waited_in_line.get(key, 0.0)
        return age > self.settings.lease_s / 3

    async def _turn_before_claim(self, event: Event, actions: Sequence[Action]) -> None:
        """Where every bot hears every mark (app-per-bot, rtm), wait for the command's turn
        on its devices (`_in_turn`) before claiming it, not while holding it: a holder in
        line renews its lease every third of one all the while, and a busy device's line
        of holders spent the fleet's reactions.add (the rtm soak: 21.8 a command, 183,009
        answers of 429). Each bot waits on what it heard, so a bot that knew of no older
        command claims at once and waits in `_act`, renewing, as before: a holder always
        renews while it holds."""
        if self.info.mode == "shared-app" or event.relay is not None:
            return  # Slack hands each event to one connection: the hand-out is the claim
        await self._wait_in_line(event, [a.device for a in actions if a.op != "query"])

    async def _wait_in_line(self, event: Event, devices: Sequence[str]) -> None:
        """Wait for the command's turn on its devices (`_in_turn`). A wait this bot heard
        through, where it hears every ✅ (`_hearing`), does not make the command late: a
        newer command that acted meanwhile was heard, and one that knew of this one waited
        for it, so the read a late action makes would find nothing new. Counted late, a
        busy device's line made a read of nearly every command (the soak: 0.96
        conversations.history each), which slowed every link of the line further."""
        heard, started = self._hearing(), time.monotonic()
        for device in devices:
            await self._in_turn(event, device)
        if heard is not None and heard == self._hearing():
            key = (event.channel, event.ts)
            waited = time.monotonic() - started
            self._waited_in_line[key] = self._waited_in_line.get(key, 0.0) + waited

    async def _learn_newer(self, event: Event, *, waited: bool = False) -> dict[str, str]:
        """Before a late action: read what the channel did after this command (one call),
        so a newer command this bot never saw act (it was down, its events came late after
        a reconnect, or in shared-app mode another bot received it) still wins its devices.

        The same read also returns, per device, the newest newer command still to be
        carried out (no ✅ and no fleet answer yet), to leave the device to, where that
        one acts anyway:
        - `waited`: the action waited for its device to come back (its broker
          restarting), so did every command on it, and all come back at once: the oldest
          could land last. Any newer command not stale counts.
        - shared-app: a command posted within the last third of a lease. Its receiver
          acts on it at once without knowing of this one (Slack handed this one to
          another bot) and puts its ✅ after its action and answer: read in between, it
          looked still to act, and this one acted after it (the soak's out-of-order
          actions). Not where every bot hears every command (app-per-bot, rtm): there
          the newer one's holder waits in line for this one, and leaving the device to
          it only lost this one's action (a lost claim answer under load).
        Only these: a command late for any reason deferring to any newer one still to act
        starved a busy device (a 10,000-command soak: once the fleet fell behind, every
        command left its device to the next)."""
        key = (event.channel, event.ts)
        if key in self._learned and not waited:
            return {}
        self._learned.add(key)
        assert self.coordinator is not None
        coordinator = self.coordinator
        done: set[str] = set()
        fresh_from = self.clock.now() - self.settings.lease_s / 3
        unseen = self.info.mode == "shared-app"

        def newer(later: Event, message: Mapping[str, Any]) -> bool:
            if float(later.ts) <= float(event.ts):
                return False
            # answered: through with its action, its ✅ to follow (`_hold` answers first)
            answered = any(self.is_fleet_user(u) for u in message.get("reply_users") or ())
            if DONE in self._fleet_marks(message) or answered:
                done.add(later.ts)
                return True
            if not self._may_command(later):
                return False
            if waited:
                return not coordinator.is_stale(later.ts)
            return unseen and float(later.ts) > fresh_from

        still: dict[str, str] = {}
        for ts, touched in await self._device_commands(event.channel, newer, oldest=event.ts):
            for device in touched:
                if ts in done:
                    self._acted(device, ts)
                elif float(ts) > float(still.get(device, "0")):
                    still[device] = ts
        return still

    async def _device_commands(
        self,
        channel: str,
        want: Callable[[Event, Mapping[str, Any]], bool],
        **window: str,
    ) -> list[tuple[str, tuple[str, ...]]]:
        """The messages of a stretch of a channel (one conversations.history) that `want`
        keeps and that are device commands the access rules allow: each one's ts and the
        devices it changes. `want` is asked first, so only those messages are parsed."""
        try:
            resp = await self.web.conversations_history(channel=channel, limit=100, **window)
        except SlackApiError as err:
            log.warning("cannot read %s (%s): %s", channel, window, err)
            return []
        return await self._commands_in(channel, resp.get("messages", []), want)

    async def _commands_in(
        self,
        channel: str,
        messages: Sequence[Mapping[str, Any]],
        want: Callable[[Event, Mapping[str, Any]], bool],
    ) -> list[tuple[str, tuple[str, ...]]]:
        """`_device_commands` over messages already read."""
        found = []
        for message in messages:
            event = Event.from_slack({**message, "type": "message", "channel": channel})
            if event is None or not want(event, message):
                continue
            command = await self._understand(event, _strip_mention(event.text, self.user_id))
            if command is None or command.unknown or command.problem:
                continue
            where = {channel, *self.channel_refs.get(channel, ())}
            if not self.access.decide(event.user, where, self._subjects(command)).allowed:
                continue  # refused: it never acts
            touched = tuple(a.device for a in self.actions_for(command) if a.op != "query")
            if touched:
                found.append((event.ts, touched))
        return found

    def _superseded(self, device: str, ts: str) -> str | None:
        """The ts of a newer command that already acted on the device, if any."""
        newest = self._newest.get(device)
        return newest if newest is not None and float(newest) > float(ts) else None

    # answers ----------------------------------------------------------------------------

    async def _answer(self, event: Event, outcome: outcomes.Outcome) -> None:
        """The one place an outcome becomes words in the command's thread."""
        await self.reply(event, outcomes.render(outcome))

    def _local_time(self, ts: str) -> str:
        """A Slack ts as the federation's people read the time (the bot's time zone)."""
        return time.strftime("%H:%M:%S", time.localtime(float(ts)))

    async def _once(self, event: Event, outcome: outcomes.Outcome) -> None:
        """Exactly one bot of the roster answers this message with `outcome`."""
        await self._claimed(event, self.roster, lambda _t: self._answer(event, outcome))

    async def _claimed(
        self,
        event: Event,
        candidates: Sequence[str],
        work: Callable[[bool], Awaitable[Any]],
    ) -> Result[Any] | None:
        """Run work under the claim; a claim Slack refused is answered by one bot."""
        assert self.coordinator is not None
        claimants = self._claimants(candidates, event.channel)
        try:
            result = await self.coordinator.coordinate(
                event.channel,
                event.ts,
                claimants,
                work,
                **self._restarted_claim(event),
            )
        except ClaimError as err:
            log.error("claim of %s/%s failed: %s", event.channel, event.ts, err)
            # The fleet's first ballot answers (a full pin list leaves reactions free),
            # whichever bots received the message; its ✅ stops a later claim.
            try:
                first = await self.coordinator.ballot(event.channel, event.ts)
            except ClaimError:  # Slack refused the ballot too (still rate-limited): by rank
                first = rank(event.ts, claimants)[0] == self.name
            if first:
                await self._answer(event, outcomes.ClaimFailed(err.code, "this channel"))
                with contextlib.suppress(ClaimError):
                    await self.coordinator.lock.mark_done(event.channel, event.ts)
            self.journal.finish(event.channel, event.ts, "failed", str(err))
            return None
        if result.outcome is Outcome.STALE:  # it went stale while this bot waited
            await self._answer_stale(event)
        return result

    def _restarted_claim(self, event: Event) -> dict[str, bool]:
        """How a restart left this bot's claim on `event`: held (it began acting; once: the
        claim it makes or meets now is the one that counts after) or only resumed."""
        key = (event.channel, event.ts)
        held = key in self._held
        self._held.discard(key)
        return {"held": held, "resumed": not held and key in self._resumed}

    def _claimants(self, candidates: Sequence[str], channel: str) -> Sequence[str]:
        """Who may claim: the candidates; in shared-app mode, where Slack hands each event
        to one bot only, the bot that received it, at once (no stagger to wait out)."""
        sole = self.info.mode == "shared-app" or _is_direct(channel)
        return [self.name] if sole else candidates

    async def _answer_stale(self, event: Event) -> None:
        assert self.coordinator is not None
        lock = self.coordinator.lock
        # The first-ranked bot alone answers, so the others spend no call: after a restart
        # every bot goes through its interrupted commands, most of them stale, and eight
        # bots reading each one's marks on a shared user's budget ran it out (bench rtm).
        # But for the bot that held the claim when a stop cut it short, before any action
        # began: its peers saw the claim held and left the command to it, so it answers
        # unless, a lease on, the command has its ✅ or an answer (the soak: a taker killed
        # after its takeover came back to a stale command, not ranked first, and said
        # nothing).
        first = rank(event.ts, self._claimants(self.roster, event.channel))[0] == self.name
        if not first and not self.journal.held(event.channel, event.ts):
            return
        if await lock.is_done(event.channel, event.ts):
            return
        if not first:
            await asyncio.sleep(self.settings.lease_s)
            if await self._finished_elsewhere(event):
                return
            await self._say_stale(event)
            return
        # A pin left by a holder that died (shared-app: the receiver that never acked) is
        # no reason for silence: the fleet's first ballot then says it. A holder still
        # at work (its ⏳ renewed within the lease) answers for itself.
        try:
            ours = await lock.claim(event.channel, event.ts)
        except ClaimError:  # a full pin list: the fleet's first ballot decides instead
            ours = False
        if not ours:  # a peer's pin: wait out its holder's lease, as a taker does
            self.coordinator.seen_pin(event.channel, event.ts)
            if await self.coordinator.wait_for_holder(event.channel, event.ts):
                return
        if ours or await self.coordinator.ballot(event.channel, event.ts):
            await self._say_stale(event)

    async def _finished_elsewhere(self, event: Event) -> bool:
        """Whether another bot finished, answered or is taking over (its 🔄) a command this
        bot held before a stop: then that one answers it (fuzz: both did, the taker a few
        seconds after this bot's look). Under one shared user a 🔄 could be this bot's
        own from before the stop, so only the ✅ and an answer count there."""
        assert self.coordinator is not None
        lock, key = self.coordinator.lock, (event.channel, event.ts)
        marked = await (lock.is_done(*key) if self._one_user else lock.taken_up(*key))
        return marked or await self._answered(event)

    async def _say_stale(self, event: Event) -> None:
        """Answer that the command is too old to run, mark it done, release its claim."""
        assert self.coordinator is not None
        age = self.clock.now() - float(event.ts)
        await self._answer(event, outcomes.Stale(age, self.settings.stale_s))
        await self.coordinator.lock.mark_done(event.channel, event.ts)
        self.coordinator.schedule_release(event.channel, event.ts)

    # access ---------------------------------------------------------------------------

    def _gatekeep(self, event: Event, person: Person | None) -> str | None:
        """Why this message may not be a command at all, or None."""
        if _is_direct(event.channel) and not self.access.may_message_directly(person):
            return "I only take direct messages from the people the federation file lists"
        if not self.access.may_command(person):
            return self.access.refusal(person)
        return None

    def _subjects(self, command: Command) -> set[str]:
        """What a device command touches, as access rules name things."""
        subjects = set(command.devices)
        subjects |= {self.devices[d].area for d in command.devices if self.devices[d].area}
        if command.scene:
            subjects |= {command.scene, *self.scenes.get(command.scene, {})}
        return {s for s in subjects if s}

    async def _allowed(self, event: Event, what: set[str]) -> bool:
        """Apply the access rules; a refusal is answered once (by one bot) and logged."""
        where = {event.channel, *self.channel_refs.get(event.channel, ())}
        decision = self.access.decide(event.user, where, what)
        if decision.allowed:
            return True
        if not event.relay:
            await self._refuse(event, decision.reason, ", ".join(sorted(what)))
        return False

    async def _refuse(self, event: Event, reason: str, what: str) -> None:
        log.warning("refused %s in %s: %r (%s)", event.user, event.channel, what, reason)
        self.journal.finish(event.channel, event.ts, "skipped", f"refused: {reason}")
        await self._once(event, outcomes.Refused(reason))

    # plugin commands -------------------------------------------------------------------

    async def _run_plugin(
        self,
        event: Event,
        spec: CommandSpec,
        match: re.Match[str],
    ) -> None:
        if event.relay and not spec.each:
            return
        if spec.admin and not self.access.is_admin(event.user):
            log.warning("refused %s to %s: admins only", spec.name, event.user)
            await self._once(event, outcomes.Refused(f"`{spec.name}` is for admins only"))
            return

        async def run(_takeover: bool) -> None:
            if spec.style == "troupe":
                await spec.func(context_for(self, spec, event, match))
            else:
                from troupe.slackbot_compat import call_slackbot_plugin

                await call_slackbot_plugin(self, spec, event, match)

        if spec.each:
            if event.relay is None:
                await self._relay_to(list(self.roster), event, "each")
            with holding(event.channel, event.ts):
                await run(False)
            return
        with holding(event.channel, event.ts):
            await self._claimed(event, self.roster, run)

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
        if command.brightness_step or command.temperature_step:
            op = relative.STEP
        args: dict[str, Any] = {}
        for key in (*_ARGUMENTS, *relative.STEP_KEYS):
            value = getattr(command, key)
            if value is not None:
                args[key] = value
        return [Action(d, op, tuple(sorted(args.items()))) for d in command.devices]

    async def _run_devices(self, event: Event, command: Command) -> None:
        """A device command: note what it touches (per-device order), plan whose devices
        they are, relay the owners' parts, claim the shared part, act, answer once."""
        actions = self.actions_for(command)
        key = (event.channel, event.ts)
        horizon = self.clock.now() - 2 * self.settings.linger_s
        for old in [k for k in self._touches if float(k[1]) < horizon]:
            del self._touches[old]
            self._finished.pop(old, None)
            self._told.pop(old, None)
            self._learned.discard(old)
            self._looked_back.discard(old)
            self._checked_votes.discard(old)
            self._waited_in_line.pop(old, None)
        self._touches[key] = tuple(a.device for a in actions if a.op != "query")
        if self.coordinator is not None and self.coordinator.watch(*key).done.is_set():
            for device in self._touches[key]:  # its ✅ came before this bot read it
                self._acted(device, event.ts)
        self._finished[key] = finished = asyncio.Event()
        peer_acts = False  # a peer won the ballot: its ✅, not this bot's end, says it acted
        try:
            for action in actions:
                if action.op != "query":
                    self._cancel_timer(action.device)
            p: Plan = plan(self.name, actions, self.routes)
            if event.relay is None:
                await self._relay_to(list(p.others), event, "owned")
            lines: list[str] = []
            if p.mine:
                lines += await self._act(event, p.mine, takeover=False)
            answered = False
            if p.shared and event.relay is None:

                async def work(takeover: bool) -> bool:
                    """Act, then answer before the ✅ (which `_hold` puts after): a holder
                    that dies between the two leaves no silence, and its taker, finding
                    the answer, repeats nothing."""
                    self.journal.hold(event.channel, event.ts)
                    if takeover and await self._answered(event):
                        return True  # it acted and answered, and stopped before its ✅
                    shared = await self._act(event, p.shared, takeover=takeover)
                    if not shared and not lines:
                        return False
                    head = [TOOK_OVER] if takeover and shared else []
                    await self.reply(event, "\n".join([*head, *lines, *shared]))
                    return True

                await self._turn_before_claim(event, p.shared)
                result = await self._claimed(event, p.candidates, work)
                peer_acts = result is not None and result.outcome is Outcome.PEER
                answered = result is not None and bool(result.value)
            if lines and not answered:
                await self.reply(event, "\n".join(lines))
                if not p.shared and self.coordinator is not None:
                    await self.coordinator.lock.mark_done(event.channel, event.ts)
            elif p.others and not p.shared and not p.mine and event.relay is None:
                await self._await_owners(event, p)
        finally:
            if not peer_acts:
                finished.set()

    async def _answered(self, event: Event) -> bool:
        """Whether the fleet already answered in the command's thread (one call)."""
        try:
            resp = await self.web.conversations_replies(channel=event.channel, ts=event.ts)
        except SlackApiError as err:
            log.warning("cannot read the thread of %s: %s", event.ts, err.response.get("error"))
            return False
        return any(
            m.get("ts") != event.ts and self.is_fleet_user(m.get("user"))
            for m in resp.get("messages", [])
        )

    async def _await_owners(self, event: Event, p: Plan) -> None:
        """Devices only their owners drive: each owner answers and marks ✅. If none does
        within the lease (its Pi is down), one live bot says so: silence is a bug."""
        assert self.coordinator is not None
        watch = self.coordinator.watch(event.channel, event.ts)
        if await first_set((watch.done,), self.settings.lease_s):
            return
        if await self.coordinator.lock.is_done(event.channel, event.ts):
            return  # the owner's ✅ is there; its event has not reached this bot yet
        owners = sorted(p.others)
        devices = [a.device for owner in owners for a in p.others[owner]]
        outcome = outcomes.OwnerOffline(tuple(devices), tuple(owners))
        others = [b for b in self.roster if b not in p.others]
        await self._claimed(event, others or self.roster, lambda _t: self._answer(event, outcome))

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
        await self.handle(replace(event, relay=kind))

    async def _act(self, event: Event, actions: Sequence[Action], *, takeover: bool) -> list[str]:
        """Carry out actions on this bot's drivers, each recorded in the journal first;
        one line each: what was done, or why not."""
        acted: list[str] = []
        try:
            return await self._act_each(event, actions, takeover, acted)
        finally:
            await self._notify_late(event, acted, end=True)

    async def _act_each(
        self, event: Event, actions: Sequence[Action], takeover: bool, acted: list[str]
    ) -> list[str]:
        """`_act`, without the end of its late notice (`_notify_late`); the devices it
        acted on are added to `acted`."""
        assert self.coordinator is not None
        lines: list[str] = []
        for action in actions:
            device = self.devices[action.device]
            if takeover and not action.idempotent:
                lines.append(outcomes.render(outcomes.NotRepeated(device.name, action.op)))
                continue
            if action.op == "query":
                state = await self.device_state(device.name)
                lines.append(outcomes.render(outcomes.Queried(device.name, state)))
                continue
            # A device coming back (its broker restarting) is waited for before the order
            # checks: whichever bot reaches it first, a newer command still wins.
            came_back = await self.drivers[device.driver].ready(device.name)
            await self._look_back(event)
            await self._wait_in_line(event, [device.name])
            resumed = (event.channel, event.ts) in self._resumed
            expired = (takeover or resumed) and self.coordinator.is_stale(event.ts)
            late, still, told = self._late(event, takeover), {}, None
            if late and not takeover and await self._taken_up(event):
                lines.append(outcomes.render(outcomes.LeaseLost(device.name)))
                continue
            if late or came_back:
                # Read last, right before the action: a newer command whose receiver acts
                # on it meanwhile, unaware of this one (shared-app), lands after it; the
                # notice, sent before the read, has that receiver wait for this one.
                # Not run when expired, whatever comes next: the device is then left to a
                # newer command still to act, which waited for this one to be marked done
                # (no device is starved: this one would not act anyway).
                await self._notify_late(event, [a.device for a in actions if a.op != "query"])
                still = await self._learn_newer(event, waited=came_back or expired)
                # The notices of peers' late actions begun at the same moment are in by
                # the time the read returns (each is sent before its own read, and the
                # bus is faster than Slack): wait for the older ones in turn, and leave
                # the device to a newer one. Of two such actions, whichever told first
                # is heard by the other.
                await self._wait_in_line(event, [device.name])
                told = self._told_newer(event, device.name)
            newer = self._superseded(device.name, event.ts) or still.get(device.name) or told
            if newer is not None:
                at = self._local_time(newer)
                lines.append(outcomes.render(outcomes.Superseded(device.name, at)))
                continue
            if not self.coordinator.lease_alive(event.channel, event.ts):
                lines.append(outcomes.render(outcomes.LeaseLost(device.name)))
                continue
            if (takeover or resumed) and self.coordinator.is_stale(event.ts):
                lines.append(outcomes.render(outcomes.TooLate(device.name, self.settings.stale_s)))
                continue
            if action.op == relative.STEP:  # from the state now, as late as can be
                action = relative.absolute(action, await self.device_state(device.name))
            kwargs = action.kwargs
            duration = kwargs.pop("duration_s", None)
            plain = Action(device.name, action.op, tuple(sorted(kwargs.items())))
            recheck = functools.partial(self._resend_check, event, actions, device.name)
            done = await self._drive(event.channel, event.ts, plain, event.user, recheck)
            if done is None:  # its journal has it: done before a restart, now answered
                lines.append(outcomes.render(outcomes.AlreadyDone(device.name)))
                continue
            if done.ok:
                self._acted(device.name, event.ts)
                acted.append(device.name)
            if done.ok and duration and action.op != "toggle":
                self._start_timer(event, plain, float(duration))
                done.text += f" for {_span(float(duration))}"
            lines.append(_sentence(done.text))
        return lines

    async def _resend_check(
        self, event: Event, actions: Sequence[Action], device: str
    ) -> str | None:
        """Before a driver sends an action once more that its dropped connection cut short
        (`resend_check`): the device was away, as after `ready` waited, so the same order
        checks run again (one channel read), and a newer command that reached the device
        meanwhile keeps it. Without them the resend landed after it (the soak: a broker
        killed with a command in flight, sent again 3.8 s later over a newer one). Not
        waited in line: the driver holds the device meanwhile."""
        await self._notify_late(event, [a.device for a in actions if a.op != "query"])
        still = await self._learn_newer(event, waited=True)
        newer = self._superseded(device, event.ts) or still.get(device)
        newer = newer or self._told_newer(event, device)
        if newer is None:
            return None
        return outcomes.render(outcomes.Superseded(device, self._local_time(newer)))

    async def _drive(
        self,
        channel: str,
        ts: str,
        action: Action,
        user: str | None,
        recheck: Callable[[], Awaitable[str | None]] | None = None,
    ) -> _Done | None:
        """One device action through its driver, journaled before and after; None when
        this bot's journal shows it already did (or began) this very action. `recheck`
        is the driver's `resend_check` for this action.

        An action a stop cut short (begun before it, never known done) is begun again,
        unless the device already shows what it sets: it got it before the stop (the
        soak: a bot killed between its action and the journal's record of it came back,
        took its own claim over and did it twice), or it was so already (a kill between
        the record and the action), which the journal cannot tell apart. The answer
        says what is true either way (`AlreadyShown`)."""
        cut = any(
            (a.device, a.action) == (action.device, action.op)
            for a in self.journal.interrupted_actions(channel, ts)
        )
        if not self.journal.action_begin(
            channel, ts, action.device, action.op, action.kwargs, user
        ):
            return None
        driver = self.drivers[self.devices[action.device].driver]
        origin = command_origin.set((channel, ts))
        again = resend_check.set(recheck) if recheck is not None else None
        try:
            shown = await self._shown(action) if cut else None
            state = shown if shown is not None else await driver.act(action.device, action)
        except DriverError as err:
            self.journal.action_end(channel, ts, action.device, action.op, False, str(err))
            return _Done(False, str(err))
        finally:
            command_origin.reset(origin)
            if again is not None:
                resend_check.reset(again)
        if shown is not None:
            text = outcomes.render(outcomes.AlreadyShown(action.device, shown))
        else:
            text = outcomes.render(outcomes.Acted(action, state))
        self.journal.action_end(channel, ts, action.device, action.op, True, text, asdict(state))
        await self._changed(action.device, state)
        return _Done(True, text)

    async def _shown(self, action: Action) -> DeviceState | None:
        """The device's state if it already shows what an idempotent action sets, else
        None (also when its state cannot be read, offline: then the action is carried out)."""
        if not action.idempotent:
            return None
        state = await self.device_state(action.device)
        return state if state.shows(action.op, action.kwargs) else None

    # Seams: plain pass-throughs here; the development kit's chaos bot overrides them
    # (troupe.devkit.faults), so the runtime itself has no fault code path.

    def _claim_lock(self, slackmq: SlackMQ) -> Lock:
        """The lock the coordinator claims commands with."""
        return slackmq

    def _timer_delay(self, seconds: float) -> float:
        """How long to wait, in seconds, for a timed action due that far ahead."""
        return seconds

    async def _changed(self, device: str, state: DeviceState | None = None) -> None:
        """Tell the state listeners a device's new state (read from its driver if not given)."""
        if self.state_listeners:
            state = state or await self.device_state(device)
            for listener in self.state_listeners:
                await listener(device, state)

    async def emit_event(self, device: str, kind: devents.Kind, detail: str = "") -> None:
        """A driver saw a device do something by itself: stamp it with Slack's time and
        hand it to the event listeners."""
        if not self.clock.known:
            log.warning("%s: the %s of the %s came before Slack's time", self.name, kind, device)
            return
        event = devents.DeviceEvent(device, kind, self.clock.now(), detail, self.name)
        devents.dispatch(self.event_listeners, event)

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
        due = self.clock.now() + duration_s
        timer = Timer(action.device, undo, {}, due, event.channel, event.ts)
        self.journal.set_timer(timer)
        self._schedule(timer)

    def _schedule(self, timer: Timer) -> None:
        delay = self._timer_delay(max(0.0, timer.due - self.clock.now()))
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
        spawn(coro, "a command run in the background", self._inflight, logger=log)

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


def _is_ts(value: Any) -> bool:
    """Whether `value` is a Slack message ts ("1700000000.000100")."""
    return isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value) is not None


def _is_direct(channel: str | None) -> bool:
    """A direct message channel (only the bot it is addressed to receives it)."""
    return bool(channel) and channel.startswith("D")


async def _no_ack() -> None:
    return None


def _strip_mention(text: str, user_id: str) -> str:
    return re.sub(rf"^\s*<@{re.escape(user_id)}>:?\s*", "", text) if user_id else text


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
