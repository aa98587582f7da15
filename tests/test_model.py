"""A model test of the claim protocol: random bots, deliveries, delays and crashes.

The real Coordinator runs on MemoryLocks over one MemoryBoard, with a model of the bot's
message handling (journal, stale answer, takeover rules) around it. Time is virtual: a
deterministic event loop jumps its clock to the next timer, so production timings (a 15 s
lease, a 45 s linger) cost nothing and every interleaving replays exactly from its
Scenario. Checked: idempotent actions run once, except in the documented window (a holder
that dies after acting, before its done mark, is repeated by one taker); toggles run at most
once; every command gets its done mark unless every candidate died or never had it fresh,
or the elected taker died too; no live bot hangs; live holders release their pins.

`bench/fuzz_long.py` runs the same check over many more scenarios.
"""

from __future__ import annotations

import asyncio
import random
import selectors
import types
import unittest.mock
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from troupe import federation
from troupe.federation import Coordinator, Outcome, Settings, rank
from troupe.journal import Journal
from troupe.memorylock import MemoryBoard, MemoryLock
from troupe.slackmq import DONE, TAKEOVER

BASE = 1_700_000_000.0
"""Slack's clock at virtual time 0."""
CHANNEL = "C0HOME"
USER = "U0ALICE"
SHARED_USER = "U0TROUPE"
SETTINGS = Settings()
"""Production timings: the clock is virtual, so they cost nothing."""
HORIZON_S = 240.0
"""Virtual seconds after the last command by which everything has settled."""
IDEMPOTENT = ("on", "off", "set")


# --- a deterministic event loop on a virtual clock ---------------------------------------


class Deadlock(RuntimeError):
    """The loop has nothing to run and no timer: something waits forever."""


class _VirtualSelector(selectors.BaseSelector):
    """A selector with no I/O: waiting for `timeout` moves the virtual clock instead."""

    def __init__(self, clock: list[float]) -> None:
        self._clock = clock
        self._keys: dict[int, selectors.SelectorKey] = {}

    @staticmethod
    def _fd(fileobj: Any) -> int:
        return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, self._fd(fileobj), events, data)
        self._keys[key.fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(self._fd(fileobj))

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[self._fd(fileobj)]

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise Deadlock("nothing is scheduled and nothing is ready")
        self._clock[0] += max(0.0, timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return types.MappingProxyType(self._keys)

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() is virtual and jumps to the next timer at once."""

    def __init__(self) -> None:
        self._virtual = [0.0]
        super().__init__(selector=_VirtualSelector(self._virtual))

    def time(self) -> float:
        return self._virtual[0]


# --- scenarios ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cmd:
    """A chat command posted `posted` s after the start, acting on shared devices."""

    posted: float
    candidates: tuple[str, ...]
    ops: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Delivery:
    """`bot` receives command `cmd` `after` s after it was posted (twice = a redelivery)."""

    bot: str
    cmd: int
    after: float


@dataclass(frozen=True)
class Crash:
    """How `bot` fails: it dies on entering its first work ("claimed": it holds the command
    and has done nothing), right after its actions and before the done mark ("acted"), or
    at virtual time `at`; or its work raises after acting and it lives on ("raises": a bug
    or a Slack error). A dead bot comes back `restart_after` s later with its journal."""

    bot: str
    when: Literal["claimed", "acted", "raises", "at"]
    at: float = 0.0
    restart_after: float | None = None


@dataclass(frozen=True)
class Scenario:
    """Everything one run does, so a failing run replays exactly from its repr.

    In app-per-bot mode every bot receives every message and sees every event. In
    shared-app mode the bots share one Slack user and Slack hands each message and each
    event to one connection; a message a dead bot did not acknowledge is handed again to
    another live bot.
    """

    bots: tuple[str, ...]
    commands: tuple[Cmd, ...]
    deliveries: tuple[Delivery, ...]
    event_delays: tuple[float, ...]
    """Per bot: how late Slack's events (pin_added, reactions) reach it."""
    skews: tuple[float, ...]
    """Per bot: how far its clock is from Slack's (NTP keeps it under a second)."""
    crashes: tuple[Crash, ...] = ()
    max_latency: float = 0.0
    """Each leg of a Slack call and each device action takes up to this long."""
    seed: int = 0
    mode: Literal["app-per-bot", "shared-app"] = "app-per-bot"

    def user(self, bot: str) -> str:
        """The Slack user a bot acts as."""
        return SHARED_USER if self.mode == "shared-app" else bot


def ts_of(scenario: Scenario, index: int) -> str:
    return f"{BASE + scenario.commands[index].posted:.6f}"


def _delay(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.7:
        return rng.uniform(0, 0.5)
    if roll < 0.9:
        return rng.uniform(0.5, 20)
    return rng.uniform(25, 45)


def draw_scenario(rng: random.Random) -> Scenario:
    """A random scenario: 3-5 bots, 1-4 commands, late and stale deliveries, redeliveries,
    late events, clock skew, crashes at the protocol's worst moments, and restarts."""
    bots = tuple(f"pi{k}" for k in range(rng.randint(3, 5)))
    mode: Literal["app-per-bot", "shared-app"] = (
        "shared-app" if rng.random() < 0.3 else "app-per-bot"
    )
    commands: list[Cmd] = []
    posted = 0.0
    for _ in range(rng.randint(1, 4)):
        posted = round(posted + rng.choice([0.000001, 0.01, rng.uniform(0, 5)]), 6)
        size = len(bots) if rng.random() < 0.5 else rng.randint(1, len(bots))
        candidates = tuple(sorted(rng.sample(bots, size)))
        devices = rng.sample(["lamp", "fan", "plug"], rng.randint(1, 2))
        ops = tuple((d, rng.choice(["on", "off", "set", "toggle"])) for d in devices)
        commands.append(Cmd(posted, candidates, ops))
    deliveries: list[Delivery] = []
    for index in range(len(commands)):
        if mode == "shared-app":
            after = _delay(rng)
            deliveries.append(Delivery(rng.choice(bots), index, after))
            if rng.random() < 0.3:  # not acknowledged in time: Slack retries elsewhere
                deliveries.append(Delivery(rng.choice(bots), index, after + rng.uniform(0, 5)))
            continue
        for bot in bots:
            if rng.random() < 0.05:
                continue
            after = _delay(rng)
            deliveries.append(Delivery(bot, index, after))
            if rng.random() < 0.15:
                deliveries.append(Delivery(bot, index, after + rng.uniform(0, 40)))
    crashes: list[Crash] = []
    for bot in bots:
        roll = rng.random()
        if roll < 0.5:
            continue
        restart = rng.uniform(0.5, 30) if rng.random() < 0.3 else None
        if roll < 0.62:
            crashes.append(Crash(bot, "claimed", restart_after=restart))
        elif roll < 0.74:
            crashes.append(Crash(bot, "acted", restart_after=restart))
        elif roll < 0.8:
            crashes.append(Crash(bot, "raises"))
        else:
            crashes.append(Crash(bot, "at", rng.uniform(0, 60), restart))
    event_delays = tuple(
        rng.uniform(0, 0.3) if (r := rng.random()) < 0.7 else rng.uniform(0.3, 25) for _ in bots
    )
    del r
    return Scenario(
        bots=bots,
        commands=tuple(commands),
        deliveries=tuple(deliveries),
        event_delays=event_delays,
        skews=tuple(rng.uniform(-0.5, 0.5) for _ in bots),
        crashes=tuple(crashes),
        max_latency=rng.choice([0.0, 0.05, 0.5, 2.0]),
        seed=rng.getrandbits(32),
        mode=mode,
    )


# --- the model ----------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """A device action carried out: the thing exactly-once is about."""

    cmd: int
    device: str
    op: str
    bot: str
    life: int
    takeover: bool
    at: float


@dataclass
class ModelBoard(MemoryBoard):
    """The MemoryBoard, except that in shared-app mode each event reaches one connection."""

    one_connection: bool = False
    pick: Callable[[list[str]], str] = random.choice

    def _emit(self, kind: str, key: tuple[str, str]) -> None:
        if not self.one_connection:
            super()._emit(kind, key)
            return
        if not self.subscribers:
            return
        chosen = self.pick(list(self.subscribers))
        everyone = self.subscribers
        self.subscribers = {chosen: everyone[chosen]}
        try:
            super()._emit(kind, key)
        finally:
            self.subscribers = everyone


@dataclass
class ModelLock(MemoryLock):
    """A MemoryLock whose calls take time (a request leg and an answer leg) and which a
    dead bot cannot use: its pending calls die with it, the server side stays as it was."""

    sim: Sim | None = None
    bot: str = ""
    life: int = 0

    async def _leg(self) -> None:
        assert self.sim is not None
        await asyncio.sleep(self.sim.latency())
        if not self.sim.is_live(self.bot, self.life):
            raise asyncio.CancelledError

    async def claim(self, channel: str, ts: str) -> bool:
        await self._leg()
        won = await super().claim(channel, ts)
        await self._leg()
        return won

    async def _react(self, channel: str, ts: str, name: str) -> bool:
        await self._leg()
        added = await super()._react(channel, ts, name)
        assert self.sim is not None
        if added and name == DONE:
            self.sim.done_marks[ts].append((self.bot, self.life))
            self.sim.done_at.setdefault((ts, self.bot, self.life), self.sim.loop.time())
        if added and name == TAKEOVER:
            self.sim.first_ballot.setdefault(ts, (self.bot, self.life))
        await self._leg()
        return added

    async def is_done(self, channel: str, ts: str) -> bool:
        await self._leg()
        done = await super().is_done(channel, ts)
        assert self.sim is not None
        self.sim.read_at[(ts, self.bot, self.life)] = self.sim.loop.time()
        await self._leg()
        return done

    async def elect(self, channel: str, ts: str) -> bool:
        won = await super().elect(channel, ts)
        assert self.sim is not None
        if won:  # decided when Slack answered its look for a done mark
            self.sim.elected_at[ts] = self.sim.read_at[(ts, self.bot, self.life)]
        return won

    async def release(self, channel: str, ts: str) -> None:
        await self._leg()
        await super().release(channel, ts)
        await self._leg()


class WorkFailed(RuntimeError):
    """A holder's work raised after acting (a bug, a Slack error): it lives on."""


class Sim:
    """The bots of one scenario on one board, driven by the scenario's schedule."""

    def __init__(self, scenario: Scenario, loop: VirtualLoop) -> None:
        self.sc = scenario
        self.shared_app = scenario.mode == "shared-app"
        self.loop = loop
        self.rng = random.Random(scenario.seed)
        self.board = ModelBoard(
            delays=dict(zip(scenario.bots, scenario.event_delays, strict=True)),
            one_connection=self.shared_app,
            pick=self.rng.choice,
        )
        self.skew = dict(zip(scenario.bots, scenario.skews, strict=True))
        self.crash = {c.bot: c for c in scenario.crashes}
        self.crashed: set[str] = set()
        self.journals = {b: Journal(":memory:", b) for b in scenario.bots}
        self.life = dict.fromkeys(scenario.bots, 0)
        self.alive = dict.fromkeys(scenario.bots, True)
        self.died: set[str] = set()
        self.coordinators: dict[str, Coordinator] = {}
        self.tasks: dict[str, dict[asyncio.Task[None], int]] = {b: {} for b in scenario.bots}
        self.executions: list[Execution] = []
        self.done_marks: dict[str, list[tuple[str, int]]] = defaultdict(list)
        self.done_at: dict[tuple[str, str, int], float] = {}
        self.read_at: dict[tuple[str, str, int], float] = {}
        self.elected_at: dict[str, float] = {}
        self.first_ballot: dict[str, tuple[str, int]] = {}
        self.failed: set[tuple[str, int, int]] = set()
        self.expired: set[int] = set()
        self.fresh: dict[int, set[str]] = defaultdict(set)
        self.went_stale: dict[int, set[str]] = defaultdict(set)
        self.stale_answers: Counter[int] = Counter()
        self.tally: Counter[str] = Counter()
        for bot in scenario.bots:
            self._boot(bot)

    # time and life ----------------------------------------------------------------------

    def latency(self) -> float:
        return self.rng.uniform(0, self.sc.max_latency) if self.sc.max_latency else 0.0

    def bot_clock(self, bot: str) -> Callable[[], float]:
        return lambda: BASE + self.loop.time() + self.skew[bot]

    def is_live(self, bot: str, life: int) -> bool:
        return self.alive[bot] and self.life[bot] == life

    def _boot(self, bot: str) -> None:
        life = self.life[bot]
        lock = ModelLock(self.board, self.sc.user(bot), sim=self, bot=bot, life=life)
        coordinator = Coordinator(bot, lock, SETTINGS, clock=self.bot_clock(bot))
        self.coordinators[bot] = coordinator
        self.board.subscribe(bot, coordinator)
        journal = self.journals[bot]
        # As Bot.start: what the last life began is marked interrupted, so a later delivery
        # of it takes it up again through the claim (the bot's resume takes the same path).
        self.tally["reported_unfinished"] += len(journal.interrupt())

    def kill(self, bot: str) -> None:
        if not self.alive[bot]:
            return
        self.alive[bot] = False
        self.died.add(bot)
        self.life[bot] += 1
        self.board.subscribers.pop(bot, None)
        for task, index in list(self.tasks[bot].items()):
            task.cancel()
            if self.shared_app:  # never acknowledged: Slack hands it to another connection
                self.loop.call_later(self.rng.uniform(1, 10), self.redeliver, index)
        crash = self.crash.get(bot)
        if crash is not None and crash.restart_after is not None:
            self.loop.call_later(crash.restart_after, self.restart, bot)

    def redeliver(self, index: int) -> None:
        live = [b for b in self.sc.bots if self.alive[b]]
        if live:
            self.tally["redelivered"] += 1
            self.deliver(self.rng.choice(live), index)

    def restart(self, bot: str) -> None:
        """Back after a power cut: same journal, new process; Socket Mode replays."""
        self.alive[bot] = True
        self.tally["restarts"] += 1
        self._boot(bot)
        if self.shared_app:
            return
        now = self.loop.time()
        for index, cmd in enumerate(self.sc.commands):
            if cmd.posted <= now:
                self.loop.call_later(self.latency(), self.deliver, bot, index)

    # the bot ------------------------------------------------------------------------------

    def deliver(self, bot: str, index: int) -> None:
        if not self.alive[bot]:
            return
        task = self.loop.create_task(self.handle(bot, self.life[bot], index))
        self.tasks[bot][task] = index
        task.add_done_callback(lambda t: self.tasks[bot].pop(t, None))

    def claimants(self, bot: str, candidates: tuple[str, ...]) -> tuple[str, ...]:
        """troupe.bot's _claimants: in shared-app mode the receiving bot, at once."""
        return (bot,) if self.shared_app else candidates

    async def handle(self, bot: str, life: int, index: int) -> None:
        """What troupe.bot does with a message: journal, stale answer, coordinate, act."""
        journal, coordinator = self.journals[bot], self.coordinators[bot]
        ts = ts_of(self.sc, index)
        if not journal.begin(CHANNEL, ts, f"command {index}", USER):
            self.tally["deduped"] += 1
            return
        if coordinator.is_stale(ts):
            await self.answer_stale(bot, coordinator, index)
            journal.finish(CHANNEL, ts, "skipped", "stale")
            return
        self.fresh[index].add(bot)

        async def work(takeover: bool) -> list[str]:
            return await self.act(bot, life, index, takeover)

        candidates = self.claimants(bot, self.sc.commands[index].candidates)
        try:
            result = await coordinator.coordinate(CHANNEL, ts, candidates, work)
        except WorkFailed as err:
            journal.finish(CHANNEL, ts, "failed", str(err))
            self.failed.add((bot, life, index))
            self.tally["work_failed"] += 1
            return
        self.tally[result.outcome.value] += 1
        if result.outcome is Outcome.STALE:
            self.went_stale[index].add(bot)
        if result.outcome is Outcome.EXPIRED:
            self.expired.add(index)
        if journal.status(CHANNEL, ts) == "begun":
            journal.finish(CHANNEL, ts, "done")

    async def answer_stale(self, bot: str, coordinator: Coordinator, index: int) -> None:
        """troupe.bot's stale answer: rank 0 of the claimants says so once, unless done."""
        ts = ts_of(self.sc, index)
        lock = coordinator.lock
        if await lock.is_done(CHANNEL, ts):
            return
        if rank(ts, self.claimants(bot, self.sc.bots))[0] != bot:
            return
        if await lock.claim(CHANNEL, ts):
            self.stale_answers[index] += 1
            await lock.mark_done(CHANNEL, ts)
            coordinator.schedule_release(CHANNEL, ts)

    async def act(self, bot: str, life: int, index: int, takeover: bool) -> list[str]:
        """troupe.bot's _act: journal each action; a taker repeats no toggle."""
        crash = self.crash.get(bot) if bot not in self.crashed else None
        if crash is not None and crash.when == "claimed":
            await self._die(bot)
        journal, ts, lines = self.journals[bot], ts_of(self.sc, index), []
        for device, op in self.sc.commands[index].ops:
            if takeover and op not in IDEMPOTENT:
                lines.append(f"did not {op} the {device}")
                self.tally["toggles_reported"] += 1
                continue
            if not journal.action_begin(CHANNEL, ts, device, op, {}, USER):
                continue
            await asyncio.sleep(self.latency())
            execution = Execution(index, device, op, bot, life, takeover, self.loop.time())
            self.executions.append(execution)
            journal.action_end(CHANNEL, ts, device, op, True, f"{device} {op}")
            lines.append(f"{device} {op}")
        if crash is not None and crash.when == "acted":
            await self._die(bot)
        if crash is not None and crash.when == "raises":
            self.crashed.add(bot)
            raise WorkFailed(f"{bot} failed after acting on command {index}")
        return lines

    async def _die(self, bot: str) -> None:
        self.crashed.add(bot)
        self.kill(bot)
        await asyncio.sleep(0)  # the kill cancelled this task: this raises CancelledError
        raise AssertionError("a dead bot went on running")

    # the run ------------------------------------------------------------------------------

    def schedule(self) -> float:
        for d in self.sc.deliveries:
            self.loop.call_at(self.sc.commands[d.cmd].posted + d.after, self.deliver, d.bot, d.cmd)
        for crash in self.sc.crashes:
            if crash.when == "at":
                self.loop.call_at(crash.at, self.kill, crash.bot)
        return max(c.posted for c in self.sc.commands) + HORIZON_S


def run(scenario: Scenario) -> Sim:
    """Play a scenario to the end on a fresh virtual loop."""
    loop = VirtualLoop()
    try:
        fake_time = types.SimpleNamespace(monotonic=loop.time, time=lambda: BASE + loop.time())
        with unittest.mock.patch.object(federation, "time", fake_time):
            sim = Sim(scenario, loop)
            loop.run_until_complete(asyncio.sleep(sim.schedule()))
            stuck = [t for tasks in sim.tasks.values() for t in tasks if not t.done()]
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
        sim.tally["stuck"] = len(stuck)
        return sim
    finally:
        loop.close()


@dataclass
class Verdict:
    """What a scenario showed: counts of notable cases, and broken promises by kind."""

    tally: Counter[str] = field(default_factory=Counter)
    broken: list[tuple[str, str]] = field(default_factory=list)

    def expect(self, ok: bool, kind: str, message: str) -> None:
        if not ok:
            self.broken.append((kind, message))

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.broken]


def judge(scenario: Scenario, sim: Sim) -> Verdict:
    """Check the protocol's promises on a finished run."""
    v = Verdict(tally=Counter(sim.tally))
    v.expect(sim.tally["stuck"] == 0, "hang", f"{sim.tally['stuck']} live handlers never ended")
    _judge_runs(scenario, sim, v)
    _judge_commands(scenario, sim, v)
    for channel, ts in sorted(sim.board.pins):
        v.expect(
            not any(sim.is_live(bot, life) for bot, life in sim.done_marks[ts]),
            "pin",
            f"{channel}/{ts} still pinned though its live finisher should have released it",
        )
    for bot in scenario.bots:
        if sim.alive[bot]:
            left = sim.journals[bot].unfinished()
            v.expect(not left, "journal", f"{bot} is alive with unfinished commands {left}")
        sim.journals[bot].close()
    return v


def _judge_runs(scenario: Scenario, sim: Sim, v: Verdict) -> None:
    """Exactly-once: each action once, or twice in the documented window."""
    by_action: dict[tuple[int, str], list[Execution]] = defaultdict(list)
    for e in sim.executions:
        by_action[(e.cmd, e.device)].append(e)
    v.tally["executions"] += len(sim.executions)
    v.tally["takeover_executions"] += sum(e.takeover for e in sim.executions)
    for (index, device), runs in sorted(by_action.items()):
        ts = ts_of(scenario, index)
        where = f"command {index} ({ts}) {device}"
        bots = [e.bot for e in runs]
        v.expect(len(set(bots)) == len(bots), "twice", f"{where}: one bot ran it twice: {runs}")
        v.expect(sim.fresh[index] != set(), "stale", f"{where}: ran though no bot had it fresh")
        if runs[0].op not in IDEMPOTENT:
            v.expect(len(runs) == 1, "toggle", f"{where}: a toggle ran {len(runs)} times: {runs}")
            v.expect(not any(e.takeover for e in runs), "toggle", f"{where}: a taker toggled")
            continue
        if len(runs) == 1:
            continue
        first, second = runs[0], runs[1]
        holder_gone = first.life < sim.life[first.bot] or (
            (first.bot, first.life, index) in sim.failed
        )
        marked = sim.done_at.get((ts, first.bot, first.life), float("inf"))
        unmarked = marked > sim.elected_at.get(ts, float("inf"))
        if len(runs) == 2 and second.takeover and unmarked and holder_gone:
            v.tally["window_repeats"] += 1
        elif len(runs) == 2 and second.takeover and unmarked:
            # The holder lived but took longer than its lease to put its done mark.
            v.expect(False, "overrun", f"{where}: a live holder was repeated: {runs}")
        else:
            v.expect(False, "duplicate", f"{where}: ran {len(runs)} times: {runs}")
    # Not a promise, counted: commands are posted in index order, so a device whose last
    # action came from an older command than the newest that reached it was left inverted.
    last: dict[str, Execution] = {}
    newest: dict[str, int] = defaultdict(int)
    for e in sorted(sim.executions, key=lambda e: e.at):
        last[e.device] = e
        newest[e.device] = max(newest[e.device], e.cmd)
    for device, e in last.items():
        if e.cmd != newest[device]:
            v.tally["order_inversions"] += 1
            v.tally["order_inversions_by_takers"] += e.takeover


def _judge_commands(scenario: Scenario, sim: Sim, v: Verdict) -> None:
    """Liveness: every command gets its done mark unless nobody was left to do it."""
    for index, cmd in enumerate(scenario.commands):
        ts = ts_of(scenario, index)
        v.tally["commands"] += 1
        v.tally["stale_answers"] += sim.stale_answers[index]
        if sim.shared_app and sim.stale_answers[index] > 1:
            # Each receiver answers for itself; two receivers racing around ts + linger
            # (the first one's pin already released) both say "too old". Counted.
            v.tally["stale_answered_twice"] += 1
        else:
            v.expect(sim.stale_answers[index] <= 1, "stale", f"command {index}: stale twice")
        if sim.board.reactions[(CHANNEL, ts)][DONE]:
            continue
        ballot = sim.first_ballot.get(ts)
        taker_gone = ballot is not None and (
            ballot[1] < sim.life[ballot[0]] or (*ballot, index) in sim.failed
        )
        relevant = scenario.bots if sim.shared_app else cmd.candidates
        nobody = all(
            c in sim.died
            or c not in sim.fresh[index] - sim.went_stale[index]
            or any((c, life, index) in sim.failed for life in range(sim.life[c] + 1))
            for c in relevant
        )
        if taker_gone:
            v.tally["undone_taker_gone"] += 1
        elif nobody:
            v.tally["undone_no_live_candidate"] += 1
        elif index in sim.expired:
            v.expect(False, "expired", f"command {index} ({ts}): its claim expired; undone")
        else:
            v.expect(
                False,
                "undone",
                f"command {index} ({ts}) never done though {sorted(set(relevant) - sim.died)}"
                f" lived and {sorted(sim.fresh[index])} had it fresh",
            )


def check(scenario: Scenario) -> Verdict:
    """Run and judge one scenario."""
    return judge(scenario, run(scenario))


def _assert_kept(scenario: Scenario) -> Verdict:
    verdict = check(scenario)
    assert not verdict.broken, f"{scenario}\n" + "\n".join(m for _, m in verdict.broken)
    return verdict


# --- the loop itself --------------------------------------------------------------------


def test_the_virtual_loop_jumps_time_and_keeps_order() -> None:
    loop = VirtualLoop()
    seen: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        seen.append((name, loop.time()))

    async def main() -> None:
        await asyncio.gather(sleeper("b", 3600), sleeper("a", 15), sleeper("c", 3600))

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert seen == [("a", 15.0), ("b", 3600.0), ("c", 3600.0)]


def test_the_virtual_loop_reports_a_deadlock() -> None:
    loop = VirtualLoop()
    try:
        with pytest.raises(Deadlock):
            loop.run_until_complete(loop.create_future())
    finally:
        loop.close()


# --- named scenarios ----------------------------------------------------------------

BOTS = ("pi0", "pi1", "pi2")
ONE = Cmd(1.0, BOTS, (("lamp", "on"), ("fan", "toggle")))


def _plain(*commands: Cmd, crashes: tuple[Crash, ...] = (), **kw: Any) -> Scenario:
    deliveries = tuple(Delivery(b, i, 0.05) for i in range(len(commands)) for b in BOTS)
    return Scenario(
        bots=BOTS,
        commands=commands,
        deliveries=kw.pop("deliveries", deliveries),
        event_delays=kw.pop("event_delays", (0.1, 0.1, 0.1)),
        skews=(0.0, 0.0, 0.0),
        crashes=crashes,
        max_latency=kw.pop("max_latency", 0.05),
        seed=1,
    )


def _holder(scenario: Scenario, index: int = 0) -> str:
    return rank(ts_of(scenario, index), scenario.commands[index].candidates)[0]


def _runs(sim: Sim) -> list[tuple[str, str, bool]]:
    return [(e.device, e.bot, e.takeover) for e in sim.executions]


def test_no_faults_means_one_bot_acts_once() -> None:
    scenario = _plain(ONE, Cmd(1.5, BOTS, (("plug", "set"),)))
    sim = run(scenario)
    verdict = judge(scenario, sim)
    assert verdict.broken == []
    assert sorted(_runs(sim)) == sorted(
        [
            ("lamp", _holder(scenario, 0), False),
            ("fan", _holder(scenario, 0), False),
            ("plug", _holder(scenario, 1), False),
        ]
    )
    assert (verdict.tally["acted"], verdict.tally["peer"]) == (2, 4)
    assert sim.board.pins == set()
    assert Counter(m for _, m in sim.board.calls) == {
        "pins.add": 2,
        "reactions.add": 2,
        "pins.remove": 2,
    }


def test_a_holder_dead_after_its_claim_is_taken_over_once() -> None:
    holder = _holder(_plain(ONE))
    scenario = _plain(ONE, crashes=(Crash(holder, "claimed"),))
    sim = run(scenario)
    verdict = judge(scenario, sim)
    assert verdict.broken == []
    runs = _runs(sim)
    assert [(d, takeover) for d, _, takeover in runs] == [("lamp", True)]
    assert runs[0][1] != holder
    assert verdict.tally["toggles_reported"] == 1
    assert sim.board.reactions[(CHANNEL, ts_of(scenario, 0))][DONE] == [runs[0][1]]


def test_a_holder_dead_after_acting_is_the_one_documented_repeat() -> None:
    holder = _holder(_plain(ONE))
    scenario = _plain(ONE, crashes=(Crash(holder, "acted"),))
    sim = run(scenario)
    verdict = judge(scenario, sim)
    assert verdict.broken == []
    runs = _runs(sim)
    assert runs[:2] == [("lamp", holder, False), ("fan", holder, False)]
    assert [(d, takeover) for d, _, takeover in runs[2:]] == [("lamp", True)]
    assert verdict.tally["window_repeats"] == 1
    assert verdict.tally["toggles_reported"] == 1


def test_late_events_cost_a_claim_call_not_a_duplicate() -> None:
    scenario = _plain(ONE, event_delays=(12.0, 12.0, 12.0))
    sim = run(scenario)
    verdict = judge(scenario, sim)
    assert verdict.broken == []
    assert [(d, takeover) for d, _, takeover in _runs(sim)] == [("lamp", False), ("fan", False)]
    assert Counter(m for _, m in sim.board.calls)["pins.add"] == 3


def test_slow_events_past_the_lease_still_meet_the_done_mark() -> None:
    scenario = _plain(ONE, event_delays=(20.0, 20.0, 20.0))
    sim = run(scenario)
    verdict = judge(scenario, sim)
    assert verdict.broken == []
    assert len(sim.executions) == 2
    assert verdict.tally["peer"] == 2
    assert sim.board.reactions[(CHANNEL, ts_of(scenario, 0))][TAKEOVER] != []


def test_a_command_every_bot_gets_stale_is_answered_once_and_never_run() -> None:
    late = tuple(Delivery(b, 0, 31.0 + k) for k, b in enumerate(BOTS))
    scenario = _plain(ONE, deliveries=late)
    sim = run(scenario)
    verdict = judge(scenario, sim)
    assert verdict.broken == []
    assert sim.executions == []
    assert sim.stale_answers[0] == 1
    assert sim.board.pins == set()


def test_a_restart_replays_but_never_repeats() -> None:
    holder = _holder(_plain(ONE))
    crash = Crash(holder, "at", at=1.0 + 0.05 + 5.0, restart_after=1.0)
    redelivered = tuple(Delivery(b, 0, t) for b in BOTS for t in (0.05, 3.0, 20.0))
    scenario = _plain(ONE, crashes=(crash,), deliveries=redelivered)
    sim = run(scenario)
    verdict = judge(scenario, sim)
    assert verdict.broken == []
    assert [(d, b) for d, b, _ in _runs(sim)] == [("lamp", holder), ("fan", holder)]
    assert verdict.tally["restarts"] == 1
    assert verdict.tally["deduped"] >= 6


def test_when_every_candidate_dies_the_command_is_left_undone() -> None:
    crashes = tuple(Crash(b, "claimed") for b in BOTS)
    scenario = _plain(ONE, crashes=crashes)
    sim = run(scenario)
    verdict = judge(scenario, sim)
    assert verdict.broken == []
    assert sim.executions == []
    assert verdict.tally["undone_taker_gone"] == 1


def test_the_judge_catches_a_duplicate() -> None:
    """The checker can fail: a forged second run outside the window is reported."""
    scenario = _plain(ONE)
    sim = run(scenario)
    first = sim.executions[0]
    sim.executions.append(replace(first, bot="pi9", at=first.at + 1))
    verdict = judge(scenario, sim)
    assert verdict.kinds == ["duplicate"]


# --- random interleavings -----------------------------------------------------------


def test_random_interleavings_keep_the_promises() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=200, deadline=None, database=None)
    @given(st.randoms(use_true_random=False))
    def one(rng: random.Random) -> None:
        seen.update(_assert_kept(draw_scenario(rng)).tally)

    one()
    assert seen["commands"] >= 200
    for case in (
        "acted",
        "peer",
        "took_over",
        "stale_answers",
        "window_repeats",
        "toggles_reported",
        "work_failed",
        "redelivered",
        "restarts",
    ):
        assert seen[case] > 0, f"the model never produced {case}: {dict(seen)}"
