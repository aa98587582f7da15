"""Who acts on a command: capability, ranking, stagger, claim, takeover, late release.

Pure coordination logic over a `Lock` port (troupe.slackmq): no sockets here, so the
exactly-once rules are tested and model-checked without Slack. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from troupe.errors import ClaimError
from troupe.operations import OPERATIONS
from troupe.slackmq import DONE, WORKING, Lock, message_age
from troupe.tasks import spawn

log = logging.getLogger(__name__)

T = TypeVar("T")

RENEWAL_READS = 6
"""At most this many reads of a holder's ⏳ before a vote (shared-app): three in a run tell
a live holder from a dead one; the rest make up for a read a rate limit held up."""


@dataclass(frozen=True)
class Settings:
    """Protocol timings, in seconds (the federation file's `slackmq:` section)."""

    stale_s: float = 30.0
    """A command older than this (by its Slack ts) is never run."""
    lease_s: float = 15.0
    """A pin with no done mark after this long means its holder died."""
    stagger_s: float = 0.4
    """Rank r waits r x stagger before claiming, so normally only rank 0 calls Slack."""
    linger_s: float = 45.0
    """Pins are released at ts + linger (> stale), so a late bot meets the pin."""


@dataclass(frozen=True)
class Action:
    """One thing to do to one device. `args` is frozen as sorted (key, value) pairs."""

    device: str
    op: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def idempotent(self) -> bool:
        """Safe to repeat: on, off and set are; toggle and a relative step are not (a taker
        reports it instead). The table of operations (troupe.operations) says."""
        found = OPERATIONS.get(self.op)
        return found is not None and found.idempotent

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


@dataclass(frozen=True)
class Route:
    """Which bots can drive a device: its owner only, or any of `bots`."""

    owner: str | None
    bots: frozenset[str]


@dataclass(frozen=True)
class Plan:
    """A command's actions split by who does them, from one bot's point of view."""

    mine: tuple[Action, ...]
    """Devices this bot owns: done with no Slack lock (only this bot can)."""
    shared: tuple[Action, ...]
    """Devices several bots can drive: claimed through SlackMQ."""
    candidates: tuple[str, ...]
    """The bots able to do the whole shared part, in no particular order."""
    others: dict[str, tuple[Action, ...]] = field(default_factory=dict)
    """Devices owned by other bots, by owner (relayed over the bus in shared-app mode)."""


def plan(me: str, actions: Sequence[Action], routes: Mapping[str, Route]) -> Plan:
    """Split actions into this bot's own, the shared part and the other owners' parts."""
    mine: list[Action] = []
    shared: list[Action] = []
    others: dict[str, list[Action]] = {}
    candidates: set[str] | None = None
    for action in actions:
        route = routes[action.device]
        if route.owner == me:
            mine.append(action)
        elif route.owner is not None:
            others.setdefault(route.owner, []).append(action)
        else:
            shared.append(action)
            candidates = set(route.bots) if candidates is None else candidates & route.bots
    return Plan(
        mine=tuple(mine),
        shared=tuple(shared),
        candidates=tuple(sorted(candidates or ())),
        others={owner: tuple(acts) for owner, acts in others.items()},
    )


def rank(ts: str, bots: Iterable[str]) -> list[str]:
    """Rendezvous-hash order of bots for one message: every bot computes the same order,
    and the load spreads evenly across bots from one message to the next."""
    return sorted(bots, key=lambda bot: hashlib.sha256(f"{ts}\0{bot}".encode()).digest())


class Outcome(enum.Enum):
    ACTED = "acted"
    """This bot claimed the message and did the work."""
    TOOK_OVER = "took_over"
    """The holder went silent past its lease; this bot won the ballot and did the work."""
    PEER = "peer"
    """Another bot holds or finished it."""
    NOT_MINE = "not_mine"
    """This bot cannot do this part."""
    STALE = "stale"
    """Older than the stale limit: never run (the work function is not called)."""


@dataclass
class Result(Generic[T]):
    outcome: Outcome
    value: T | None = None


@dataclass
class _Watch:
    """What this bot has seen of one message through events."""

    pinned: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ballot: asyncio.Event = field(default_factory=asyncio.Event)
    renewed: asyncio.Event = field(default_factory=asyncio.Event)
    pinned_at: float | None = None
    created: float = field(default_factory=time.monotonic)
    lease_until: float | None = None
    """While this bot holds the message: when its lease ends (monotonic)."""
    taker: bool = False
    """This bot holds the message as the taker its own ballot made it."""
    voted: bool = False
    """This bot cast its 🔄 ballot on the message (the ballot then seen may be its own)."""


async def first_set(events: Sequence[asyncio.Event], timeout: float) -> bool:
    """Wait until any event is set or the timeout passes; True if one was set."""
    if any(e.is_set() for e in events):
        return True
    if timeout <= 0:
        return False
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return bool(done)


class Coordinator:
    """Runs the claim protocol for the messages one bot takes part in.

    The bot feeds it what it sees (pin_added, the done mark, takeover ballots) and asks
    `coordinate()` to run a shared part. Releases are scheduled at ts + linger.
    """

    def __init__(
        self,
        me: str,
        lock: Lock,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float],
        listening_since: Callable[[], float | None] = lambda: None,
        one_user: bool = False,
        sole_receiver: bool = False,
        crowded: Callable[[], bool] = lambda: False,
    ) -> None:
        """`clock` reads Slack's time (a SlackClock's `now`), never a Pi's own clock.
        `listening_since` says when this bot's event connection last opened
        (time.monotonic; None before the first or where it never drops). `one_user`: the
        whole fleet is one Slack user (shared-app, rtm), so once a fleet ballot is cast
        another meets `already_reacted` and loses. `sole_receiver`: Slack hands each event
        to one of the fleet's connections (shared-app), so a holder's ⏳ may never reach
        this bot. `crowded` says whether Slack refused one of this bot's claim calls for a
        rate limit lately."""
        self.me = me
        self.one_user = one_user
        self.sole_receiver = sole_receiver
        self.crowded = crowded
        self.lock = lock
        self.settings = settings or Settings()
        self.clock = clock
        self.listening_since = listening_since
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._releases: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # what the bot has seen ------------------------------------------------------

    def watch(self, channel: str, ts: str) -> _Watch:
        """What this bot has seen of one message (its done mark, for a bot that waits)."""
        return self._watch(channel, ts)

    def _watch(self, channel: str, ts: str) -> _Watch:
        key = (channel, ts)
        if key not in self._watches:
            self._prune()
            self._watches[key] = _Watch()
        return self._watches[key]

    def _prune(self) -> None:
        horizon = time.monotonic() - 2 * self.settings.linger_s
        for key in [k for k, w in self._watches.items() if w.created < horizon]:
            del self._watches[key]

    def seen_pin(self, channel: str, ts: str) -> None:
        watch = self._watch(channel, ts)
        if watch.pinned_at is None:
            watch.pinned_at = time.monotonic()
        watch.pinned.set()

    def seen_done(self, channel: str, ts: str) -> None:
        self._watch(channel, ts).done.set()

    def seen_ballot(self, channel: str, ts: str) -> None:
        self._watch(channel, ts).ballot.set()

    def seen_renewal(self, channel: str, ts: str) -> None:
        """The holder showed it is still acting: its lease counts from now."""
        watch = self._watch(channel, ts)
        watch.pinned_at = time.monotonic()
        watch.renewed.set()

    def lease_alive(self, channel: str, ts: str) -> bool:
        """Whether this bot still holds the message safely (checked before each action):
        False once its lease has run out without a renewal, or once a peer's takeover
        ballot was seen: a taker may act."""
        watch = self._watch(channel, ts)
        if watch.ballot.is_set() and not watch.taker:
            return False  # peers voted to take it over: one of them acts, not this bot
        until = watch.lease_until
        return until is None or time.monotonic() < until - self.settings.lease_s * 0.1

    # the protocol ------------------------------------------------------------------

    def is_stale(self, ts: str) -> bool:
        """Older than stale_s on Slack's clock (`clock` reads Slack's time, not the Pi's)."""
        return message_age(ts, self.clock()) > self.settings.stale_s

    async def coordinate(
        self,
        channel: str,
        ts: str,
        candidates: Iterable[str],
        work: Callable[[bool], Awaitable[T]],
        *,
        held: bool = False,
        resumed: bool = False,
    ) -> Result[T]:
        """Make sure exactly one live candidate runs `work` for this message.

        work(takeover) is called at most once, by at most one bot; with takeover=True the
        holder died and work must carry out only idempotent actions and report the rest.
        `held`: this bot held the message before a restart (its journal shows it began
        acting), so it finishes under that claim, unless a peer voted first to take it
        over, rather than meet it as a peer's.
        `resumed`: this bot began it before a restart without acting: a claim it wins now
        may be its own pin of before, on which its peers have waited out the lease and
        may be voting, so the ballot decides, at once (first come in Slack's order).
        """
        order = rank(ts, candidates)
        if self.me not in order:
            return Result(Outcome.NOT_MINE)
        position = order.index(self.me)
        watch = self._watch(channel, ts)
        s = self.settings

        if held and not self.is_stale(ts):
            # Its peers may have waited out its old claim and be voting now: the 🔄 ballot,
            # first come in Slack's order, decides at once between it and a taker.
            if await self._vote(channel, ts):
                return await self._hold_again(channel, ts, work)
        else:
            await first_set([watch.pinned, watch.done], self._claim_delay(position))
            if not (watch.pinned.is_set() or watch.done.is_set()):
                if self.is_stale(ts):
                    return Result(Outcome.STALE)
                claimed_at = time.monotonic()
                if await self.lock.claim(channel, ts):
                    # Attempts Slack refused (429) made no mark: the claim counts from the
                    # one that did, as the peers' lease counts from the mark they saw.
                    claimed_at = max(claimed_at, self.lock.claim_sent(channel, ts) or 0.0)
                    watch.pinned.set()
                    late = time.monotonic() - claimed_at > s.lease_s * 0.8
                    if resumed:  # maybe its own pin of before the restart: the ballot decides
                        if await self._vote(channel, ts):
                            return await self._hold_again(channel, ts, work)
                    elif not late:
                        elected = self.lock.won_by_ballot(channel, ts)
                        value = await self._hold(
                            channel, ts, claimed_at, work, takeover=False, elected=elected
                        )
                        return Result(Outcome.ACTED, value)
                    else:  # a peer may be voting: like a peer, it waits out the lease
                        log.warning(
                            "claim of %s/%s came back too late; the ballot decides", channel, ts
                        )
                self.seen_pin(channel, ts)

        # A peer holds it: wait for its done mark, else take over once its lease ran out.
        if await self.wait_for_holder(channel, ts):
            return Result(Outcome.PEER)
        await first_set([watch.done, watch.ballot], position * s.stagger_s)
        if watch.done.is_set():
            return Result(Outcome.PEER)
        if self.one_user and watch.ballot.is_set() and not watch.voted:
            # A peer's ballot came first; this one would lose on `already_reacted`. Not
            # casting it spares the one budget: seven ballots on each lapsed lease ran
            # the fleet's reactions.add out, so more leases lapsed (rtm soak: a 429 storm).
            return Result(Outcome.PEER)
        voted_at = time.monotonic()
        watch.voted = True
        if not await self.ballot(channel, ts):
            return Result(Outcome.PEER)
        log.warning("%s takes over %s/%s: the holder went silent", self.me, channel, ts)
        value = await self._hold(channel, ts, voted_at, work, takeover=True)
        return Result(Outcome.TOOK_OVER, value)

    async def ballot(self, channel: str, ts: str) -> bool:
        """Cast the 🔄 ballot: whether this bot won it. Where Slack's answers cannot tell
        (`elect` None: one user for the fleet, an answer lost), a taker's signs decide
        (`_taker_silent`). Raises ClaimError as `elect` does."""
        won = await self.lock.elect(channel, ts)
        return await self._taker_silent(channel, ts) if won is None else won

    async def _taker_silent(self, channel: str, ts: str) -> bool:
        """After a ballot whose answers could not tell whether it won (one user for the
        fleet, an answer lost: `elect` None), the first ballot is this bot's or a peer's.
        A peer that won holds it as a taker, renewing its ⏳ every third of a lease from
        its vote: over 1.2 renewals from this bot's vote (read from Slack where events go
        to one bot) a live one shows a flip or its ✅, and is then waited for like any
        holder. Heard of none, this bot is the taker (past the stale limit it answers
        so and acts on nothing, like any taker). Before, nobody acted or answered: the
        ballot seen was this bot's own (the soak: a receiver killed, its command's
        redelivery voted, the answer lost). A whole lease more would have run past the
        stale limit. Two unsure voters on one ballot would both act: each needs its own
        lost answer."""
        log.warning("%s cannot tell whether its ballot on %s/%s won", self.me, channel, ts)
        watch = self._watch(channel, ts)
        watch.pinned_at = time.monotonic()  # a taker's lease counts from its ballot
        window = 1.2 * self.settings.lease_s / 3
        if self.sole_receiver:
            heard = await self._renewing(channel, ts)
            if heard == "alive":
                heard = "done" if await self.wait_for_holder(channel, ts) else "silent"
        else:
            heard = "done" if await self._silence(channel, ts, window) else "silent"
        return heard == "silent"  # past the stale limit, the taker's work says so

    def _claim_delay(self, position: int) -> float:
        """How long a bot waits for a better-ranked peer's claim before it claims itself:
        its rank's stagger, and a lease more while rate limits hold claims up. Then the
        first-ranked bot's claim comes late, and its peers all claiming meanwhile spent
        the budget it waited on (one user's reactions.add for the whole fleet: rtm soak,
        eight claims a command, and no command acted for minutes)."""
        if position == 0:
            return 0.0
        extra = self.settings.lease_s if self.crowded() else 0.0
        return position * self.settings.stagger_s + extra

    async def _vote(self, channel: str, ts: str) -> bool:
        """Cast the 🔄 ballot for a claim held before a restart; False when a peer voted
        first (it takes over) or Slack cannot say (then the ballot decides later)."""
        self._watch(channel, ts).voted = True
        try:
            return await self.lock.elect(channel, ts)
        except ClaimError as err:
            log.warning("cannot vote on %s/%s: %s", channel, ts, err)
            return False

    async def _hold_again(
        self, channel: str, ts: str, work: Callable[[bool], Awaitable[T]]
    ) -> Result[T]:
        """Finish what this bot held before a restart, its ballot won (no peer took over):
        a ⏳ now restarts its peers' lease. As a taker: its journal cannot tell whether an
        action it began was carried out, and its last life may have held the command as a
        taker itself, so only what is safe to repeat is, and an answer it gave stands."""
        self._watch(channel, ts).pinned.set()
        since = time.monotonic()
        try:
            await self.lock.renew(channel, ts)
        except ClaimError as err:  # its renewals go on trying
            log.warning("could not renew the lease on %s/%s: %s", channel, ts, err)
        value = await self._hold(channel, ts, since, work, takeover=True)
        return Result(Outcome.TOOK_OVER, value)

    async def taken_up(self, channel: str, ts: str, *, unknown: bool) -> bool:
        """Whether a peer voted to take the message over or finished it, read from Slack
        (one call); `unknown` when Slack cannot say."""
        try:
            return await self.lock.taken_up(channel, ts)
        except ClaimError as err:
            log.warning("cannot read the marks of %s/%s: %s", channel, ts, err)
            return unknown

    async def wait_for_holder(self, channel: str, ts: str) -> bool:
        """Wait while a peer holds the message: True once it is done, False when its
        lease ran out (each ⏳ renewal restarts the lease).

        Where Slack hands each event to one connection (`sole_receiver`), a lease of
        silence heard proves nothing: the ⏳ events went to other bots. There the last
        stretch of each lease is read from Slack instead (`_renewing`), and a holder
        whose ⏳ still flips is waited for another lease (the soak: a redelivery's
        receiver took over a live holder still acting on a slow device, and the device
        acted twice)."""
        probe = 1.2 * self.settings.lease_s / 3 if self.sole_receiver else 0.0
        while True:
            if await self._silence(channel, ts, self.settings.lease_s - probe):
                return True
            if not probe:
                return False
            heard = await self._renewing(channel, ts)
            if heard != "alive":
                return heard == "done"

    async def _silence(self, channel: str, ts: str, lease: float) -> bool:
        """Wait for the holder's done mark (True), or for `lease` without a renewal heard
        (False).

        Silence counts only while this bot could hear it: when its event connection
        (re)opens, the lease counts again from then. The renewals sent while it was away
        reach it later (Slack hands out again what a dropped connection missed) or never
        (RTM), and a vote on that silence had a taker act beside a live holder."""
        watch = self._watch(channel, ts)
        since = time.monotonic()
        while True:
            watch.renewed.clear()
            heard = max(watch.pinned_at or since, self.listening_since() or since)
            left = heard + lease - time.monotonic()
            if left <= 0:
                return False
            if await first_set([watch.done, watch.renewed], left) and watch.done.is_set():
                return True

    async def _renewing(self, channel: str, ts: str) -> Literal["alive", "done", "silent"]:
        """Read the message's marks from Slack, 0.6 of a renewal (lease / 3) apart, over
        1.2 renewals: a live holder flips its ⏳ once a renewal, so at least one flip
        falls between the reads, and no two cancel out between two reads less than a
        renewal apart (a read held up longer, by a 429, starts the run again). A read
        Slack refuses says nothing: the silence heard stands, as before reads existed."""
        watch = self._watch(channel, ts)
        renewal = self.settings.lease_s / 3
        run: tuple[float, bool] | None = None  # the run's first read: when, ⏳ shown
        last: tuple[float, bool] | None = None
        for _ in range(RENEWAL_READS):
            if last is not None:
                watch.renewed.clear()
                await first_set([watch.done, watch.renewed], 0.6 * renewal)
                if watch.done.is_set() or watch.renewed.is_set():
                    return "done" if watch.done.is_set() else "alive"
            try:
                marks = await self.lock.marks(channel, ts)
            except ClaimError as err:
                log.warning("cannot read the marks of %s/%s: %s", channel, ts, err)
                return "silent"
            read = (time.monotonic(), WORKING in marks)
            if DONE in marks:
                return "done"
            if last is None or read[0] - last[0] >= 0.9 * renewal:
                run = read  # two flips may hide between reads this far apart
            elif read[1] != last[1]:
                return "alive"
            last = read
            assert run is not None
            if read[0] - run[0] >= 1.2 * renewal:
                return "silent"
        return "silent"

    async def _hold(
        self,
        channel: str,
        ts: str,
        since: float,
        work: Callable[[bool], Awaitable[T]],
        *,
        takeover: bool,
        elected: bool = False,
    ) -> T:
        """Run the work while holding the message: the lease is renewed every third of
        it, so slow devices never make a peer take over while this bot still acts.
        `elected`: the claim itself was won by the ballot (a person's pin was in the
        way), so the peers' 🔄 are no takeover of it."""
        watch = self._watch(channel, ts)
        lease = self.settings.lease_s
        watch.lease_until = since + lease
        watch.taker = takeover or elected

        async def keep_alive() -> None:
            due = since + lease / 3  # counted from the claim: peers count from its pin
            while True:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                sent = time.monotonic()
                due = sent + lease / 3
                try:
                    await self.lock.renew(channel, ts)
                except Exception as err:  # the lease then runs out: lease_alive() says so
                    log.warning("could not renew the lease on %s/%s: %s", channel, ts, err)
                    continue
                if watch.lease_until is None or time.monotonic() >= watch.lease_until:
                    # It landed after the lease ran out (rate limits held it up): peers
                    # may be voting already, so the lease is not extended.
                    log.warning("the lease on %s/%s ran out before its renewal", channel, ts)
                    continue
                watch.lease_until = sent + lease

        renewer = spawn(keep_alive(), "renewing a claim's lease", logger=log)
        try:
            value = await work(takeover)
        finally:
            renewer.cancel()
            watch.lease_until = None
        try:
            await self._finish(channel, ts)
        except ClaimError as err:  # done and answered: a taker finds the answer, repeats nothing
            log.warning("could not mark %s/%s done: %s", channel, ts, err)
        return value

    async def _finish(self, channel: str, ts: str) -> None:
        await self.lock.mark_done(channel, ts)
        self._watch(channel, ts).done.set()
        self.schedule_release(channel, ts)

    def schedule_release(self, channel: str, ts: str) -> None:
        """Unpin at ts + linger: late enough that no bot can still run the command."""
        delay = max(0.0, float(ts) + self.settings.linger_s - self.clock())
        loop = asyncio.get_running_loop()
        key = (channel, ts)
        if key in self._releases:
            return
        self._releases[key] = loop.call_later(delay, self._spawn_release, channel, ts)

    def _spawn_release(self, channel: str, ts: str) -> None:
        self._releases.pop((channel, ts), None)
        spawn(self._release(channel, ts), "releasing a claim", self._tasks, logger=log)

    async def _release(self, channel: str, ts: str) -> None:
        try:
            await self.lock.release(channel, ts)
        except Exception as err:  # logged, and the janitor sweeps stuck pins at start
            log.warning("could not release %s/%s: %s", channel, ts, err)

    def pending_releases(self) -> list[tuple[str, str]]:
        """Pins this bot still has to release (kept in the journal over a shutdown)."""
        return sorted(self._releases)

    async def close(self, *, release_due: bool = True) -> list[tuple[str, str]]:
        """Stop timers; release pins already past linger; return the ones still pending."""
        pending = []
        for (channel, ts), handle in list(self._releases.items()):
            handle.cancel()
            if release_due and float(ts) + self.settings.linger_s <= self.clock():
                await self._release(channel, ts)
            else:
                pending.append((channel, ts))
        self._releases.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return pending
