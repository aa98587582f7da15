"""The claim protocol without sockets: ranking, planning, claim, takeover, stale, release."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace

import pytest
from virtualtime import run as run_virtual

from troupe.devkit.memorylock import MemoryBoard, MemoryLock
from troupe.federation import (
    Action,
    Coordinator,
    Outcome,
    Result,
    Route,
    Settings,
    plan,
    rank,
)

FAST = Settings(stale_s=30, lease_s=0.5, stagger_s=0.05, linger_s=45)
BOTS = ["kitchen-pi", "hall-pi", "garage-pi"]


def now_ts() -> str:
    return f"{time.time():.6f}"


def test_rank_is_the_same_for_every_bot_and_spreads_load():
    assert rank("1.000001", BOTS) == rank("1.000001", list(reversed(BOTS)))
    firsts = Counter(rank(f"{1700000000 + i}.000100", BOTS)[0] for i in range(300))
    assert set(firsts) == set(BOTS)
    assert min(firsts.values()) > 60


def test_plan_splits_owned_shared_and_others():
    routes = {
        "kitchen lamp": Route("kitchen-pi", frozenset({"kitchen-pi"})),
        "hall light": Route(None, frozenset(BOTS)),
        "porch switch": Route(None, frozenset({"hall-pi", "garage-pi"})),
        "garage door": Route("garage-pi", frozenset({"garage-pi"})),
    }
    actions = [Action(d, "on") for d in routes]
    p = plan("kitchen-pi", actions, routes)
    assert [a.device for a in p.mine] == ["kitchen lamp"]
    assert [a.device for a in p.shared] == ["hall light", "porch switch"]
    assert p.candidates == ("garage-pi", "hall-pi")
    assert list(p.others) == ["garage-pi"]


def _federation(board: MemoryBoard, settings: Settings = FAST) -> dict[str, Coordinator]:
    bots = {}
    for bot in BOTS:
        bots[bot] = Coordinator(bot, MemoryLock(board, bot), settings, clock=time.time)
        board.subscribe(bot, bots[bot])
    return bots


async def _run_all(bots, ts, work_log, *, skip=()):
    async def work_for(bot):
        async def work(takeover: bool) -> str:
            work_log.append((bot, takeover))
            return bot

        return work

    return await asyncio.gather(
        *[bots[b].coordinate("C1", ts, BOTS, await work_for(b)) for b in BOTS if b not in skip]
    )


async def test_exactly_one_bot_acts_and_only_it_calls_slack():
    board = MemoryBoard()
    bots = _federation(board)
    log: list = []
    for _ in range(20):
        ts = now_ts()
        results = await _run_all(bots, ts, log)
        assert sorted(r.outcome.value for r in results) == ["acted", "peer", "peer"]
        await asyncio.sleep(0.001)
    assert len(log) == 20
    assert Counter(method for _, method in board.calls) == {"pins.add": 20, "reactions.add": 20}
    for c in bots.values():
        await c.close(release_due=False)


async def test_a_bot_whose_events_are_late_meets_already_pinned():
    board = MemoryBoard(delays={b: 1.0 for b in BOTS})
    bots = _federation(board)
    log: list = []
    ts = now_ts()
    results = await _run_all(bots, ts, log)
    assert len(log) == 1
    assert sorted(r.outcome.value for r in results) == ["acted", "peer", "peer"]
    assert Counter(m for _, m in board.calls)["pins.add"] == 3


async def test_dead_holder_is_taken_over_once_after_the_lease():
    board = MemoryBoard()
    bots = _federation(board)
    ts = now_ts()
    holder = rank(ts, BOTS)[0]
    board.pins.add(("C1", ts))  # the holder claimed and then died before acting
    log: list = []
    results = await _run_all(bots, ts, log, skip=(holder,))
    assert [takeover for _, takeover in log] == [True]
    assert sorted(r.outcome.value for r in results) == ["peer", "took_over"]


async def test_a_holder_that_sees_a_peers_ballot_stops_and_a_late_renewal_keeps_no_lease():
    """Two ways a holder learns a taker may act (so it must not): a peer's 🔄 ballot, and
    a renewal that only landed after the lease ran out (Slack's rate limits held it up)."""
    board = MemoryBoard()
    bots = _federation(board)
    ts, seen = now_ts(), []

    class SlowRenewals(MemoryLock):
        async def renew(self, channel: str, ts: str) -> None:
            await asyncio.sleep(FAST.lease_s)  # held up past the lease, then applied
            await super().renew(channel, ts)

    holder = bots[rank(ts, BOTS)[0]]
    holder.lock = SlowRenewals(board, holder.me)

    async def work(takeover: bool) -> None:
        seen.append(holder.lease_alive("C1", ts))
        await asyncio.sleep(FAST.lease_s * 1.2)
        seen.append(holder.lease_alive("C1", ts))  # the renewal came after the lease ended

    await holder.coordinate("C1", ts, [holder.me], work)
    assert seen == [True, False]

    other = now_ts()
    await asyncio.sleep(0.001)
    verdicts = []

    async def voted_on(takeover: bool) -> None:
        verdicts.append(holder.lease_alive("C1", other))
        holder.seen_ballot("C1", other)  # a peer's 🔄, as its event reaches the holder
        verdicts.append(holder.lease_alive("C1", other))

    holder.lock = MemoryLock(board, holder.me)
    await holder.coordinate("C1", other, [holder.me], voted_on)
    assert verdicts == [True, False]
    for c in bots.values():
        await c.close(release_due=False)


async def test_done_mark_stops_the_takeover():
    board = MemoryBoard()
    bots = _federation(board)
    ts = now_ts()
    board.pins.add(("C1", ts))
    board.reactions[("C1", ts)]["white_check_mark"].append("someone")
    log: list = []
    results = await _run_all(bots, ts, log)
    assert log == []
    assert {r.outcome for r in results} == {Outcome.PEER}


async def test_stale_command_is_never_run():
    board = MemoryBoard()
    bots = _federation(board)
    log: list = []
    results = await _run_all(bots, f"{time.time() - 31:.6f}", log)
    assert log == []
    assert {r.outcome for r in results} == {Outcome.STALE}
    assert board.calls == []


async def test_not_a_candidate_does_nothing():
    board = MemoryBoard()
    c = Coordinator("attic-pi", MemoryLock(board, "attic-pi"), FAST, clock=time.time)

    async def work(takeover: bool) -> None:
        raise AssertionError("must not run")

    result = await c.coordinate("C1", now_ts(), BOTS, work)
    assert result.outcome is Outcome.NOT_MINE


async def test_release_happens_at_ts_plus_linger():
    board = MemoryBoard()
    settings = Settings(stale_s=0.2, lease_s=0.5, stagger_s=0.01, linger_s=0.3)
    c = Coordinator("kitchen-pi", MemoryLock(board, "kitchen-pi"), settings, clock=time.time)

    async def work(takeover: bool) -> str:
        return "ok"

    ts = now_ts()
    await c.coordinate("C1", ts, ["kitchen-pi"], work)
    assert ("C1", ts) in board.pins
    assert c.pending_releases() == [("C1", ts)]
    deadline = time.monotonic() + 5
    while ("C1", ts) in board.pins and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert ("C1", ts) not in board.pins


@pytest.mark.parametrize("op,idempotent", [("on", True), ("set", True), ("toggle", False)])
def test_idempotence_of_actions(op, idempotent):
    assert Action("lamp", op).idempotent is idempotent


# --- the shared user's 👀 claim (shared-app, rtm) through SlackMQ on the workspace -------


def _shared_fleet(
    workspace, mode: str, settings: Settings = FAST
) -> tuple[dict[str, Coordinator], str, str]:
    """Three bots of one shared app (one Slack user) on the workspace, and a command."""
    from slack_sdk import WebClient

    from troupe.slackapi import async_client
    from troupe.slackmq import SlackMQ

    alice = WebClient("xoxp-alice", base_url=workspace.api_url)
    msg = alice.chat_postMessage(channel="#home", text="turn on the hall light")
    bots = {
        bot: Coordinator(
            bot,
            SlackMQ(
                async_client("xoxb-troupe", workspace.api_url),
                "U0TROUPE",
                trusted={"U0TROUPE"}.__contains__,
                shared_user=True,
                sole_receiver=mode == "shared-app",
                now=time.time,
            ),
            settings,
            clock=time.time,
            sole_receiver=mode == "shared-app",
        )
        for bot in BOTS
    }
    workspace.control("counters/reset")
    return bots, msg["channel"], msg["ts"]


def _work_log(bots, channel, ts, log, candidates=BOTS):
    async def run(bot: str):
        async def work(takeover: bool) -> None:
            log.append((bot, takeover))

        return await bots[bot].coordinate(channel, ts, candidates, work)

    return run


def _calls(workspace) -> dict[str, int]:
    return dict(workspace.control("counters")["calls"].get("A0TROUPE", {}))


async def test_rtm_command_costs_two_reactions_and_acts_once(workspace):
    bots, channel, ts = _shared_fleet(workspace, "rtm")
    log: list[tuple[str, bool]] = []
    run = _work_log(bots, channel, ts, log)
    first, *later = rank(ts, BOTS)
    assert (await run(first)).outcome is Outcome.ACTED
    assert _calls(workspace) == {"reactions.add": 2}  # 👀 and ✅: no pin to add or remove
    late = later[0]  # its events came late: no stagger saw the 👀, so it meets it
    bots[late].seen_done(channel, ts)
    assert (await run(late)).outcome is Outcome.PEER
    for c in bots.values():
        await c.close(release_due=False)
    assert log == [(first, False)]
    assert _calls(workspace) == {"reactions.add": 2}


async def test_rtm_holder_that_dies_is_taken_over_once(workspace):
    bots, channel, ts = _shared_fleet(workspace, "rtm")
    holder, *peers = rank(ts, BOTS)
    assert await bots[holder].lock.claim(channel, ts) is True  # then it dies: no ✅, no ⏳
    log: list[tuple[str, bool]] = []
    results = await asyncio.gather(*(_work_log(bots, channel, ts, log)(b) for b in peers))
    assert [takeover for _, takeover in log] == [True]
    assert sorted(r.outcome.value for r in results) == ["peer", "took_over"]


async def test_shared_app_command_costs_one_reaction_and_acts_once(workspace):
    bots, channel, ts = _shared_fleet(workspace, "shared-app")
    receiver = BOTS[1]
    bots[receiver].lock.delivered(channel, ts, 0)  # Slack handed it to this bot
    log: list[tuple[str, bool]] = []
    result = await _work_log(bots, channel, ts, log, [receiver])(receiver)
    await bots[receiver].close(release_due=False)
    assert result.outcome is Outcome.ACTED and log == [(receiver, False)]
    assert _calls(workspace) == {"reactions.add": 1}  # the ✅ alone: Slack's hand-out claims


async def test_shared_app_receiver_that_dies_is_taken_over_once_by_a_redelivery(workspace):
    bots, channel, ts = _shared_fleet(workspace, "shared-app")
    receiver, other = BOTS[0], BOTS[2]
    bots[receiver].lock.delivered(channel, ts, 0)
    assert await bots[receiver].lock.claim(channel, ts) is True  # then it dies unacked
    bots[other].lock.delivered(channel, ts, 1)
    log: list[tuple[str, bool]] = []
    # Slack redelivers to another connection: that bot waits out a lease, then votes
    result = await _work_log(bots, channel, ts, log, [other])(other)
    assert result.outcome is Outcome.TOOK_OVER and log == [(other, True)]
    # three reads of the ⏳ that never flips, the 🔄 and its check, the ✅
    assert _calls(workspace) == {"reactions.get": 4, "reactions.add": 2}


async def test_a_shared_app_redelivery_leaves_a_live_holder_on_a_slow_device_alone(workspace):
    """Slack redelivers a command whose ack came late to another connection, and hands the
    holder's ⏳ events to other bots than that one: a lease of silence heard there proves
    nothing. It reads the ⏳ before it votes, sees it flip, and waits: the holder acts
    once, the redelivery's receiver not at all (the soak: the slow device acted twice)."""
    slow = replace(FAST, lease_s=1.5)  # a renewal every 0.5 s: reads 0.3 s apart
    bots, channel, ts = _shared_fleet(workspace, "shared-app", slow)
    receiver, other = BOTS[0], BOTS[2]
    bots[receiver].lock.delivered(channel, ts, 0)
    bots[other].lock.delivered(channel, ts, 1)
    log: list[tuple[str, bool]] = []

    async def holder() -> Result:
        async def work(takeover: bool) -> None:
            log.append((receiver, takeover))
            await asyncio.sleep(2.5 * slow.lease_s)  # a slow device: renewals keep its lease

        return await bots[receiver].coordinate(channel, ts, [receiver], work)

    async def redelivery() -> Result:
        await asyncio.sleep(0.2)  # Slack's redelivery comes after the first hand-out
        return await _work_log(bots, channel, ts, log, [other])(other)

    held, again = await asyncio.gather(holder(), redelivery())
    for c in bots.values():
        await c.close(release_due=False)
    assert (held.outcome, again.outcome) == (Outcome.ACTED, Outcome.PEER)
    assert log == [(receiver, False)]
    assert "reactions.get" in _calls(workspace)  # it read, as it heard no ⏳


def test_a_peer_counts_a_holders_silence_only_while_it_could_hear() -> None:
    """A peer whose event connection was down missed the holder's ⏳ renewals. The lease
    counts again from its reconnect, so it hears the next renewal and never votes on a
    silence it could not hear (a taker would act beside a live holder)."""
    s = Settings()  # production timings, on virtual time: a renewal every 5 s

    async def main(loop: asyncio.AbstractEventLoop) -> list[tuple[str, bool]]:
        board = MemoryBoard()
        bots = _federation(board, s)
        ts = now_ts()
        holder, peer = rank(ts, BOTS)[:2]
        heard: list[float] = []
        bots[peer].listening_since = lambda: heard[-1] if heard else None
        del board.subscribers[peer]  # its connection is down: the pin and each ⏳ go unheard
        log: list[tuple[str, bool]] = []

        def work(bot: str, seconds: float):
            async def run(takeover: bool) -> None:
                log.append((bot, takeover))
                await asyncio.sleep(seconds)

            return run

        async def reconnect() -> None:
            await asyncio.sleep(s.lease_s + 0.2)  # after the renewal at 15 s, unheard
            heard.append(loop.time())  # the runtime's monotonic clock, virtual here
            board.subscribe(peer, bots[peer])

        await asyncio.gather(
            bots[holder].coordinate("C1", ts, [holder, peer], work(holder, 2 * s.lease_s)),
            bots[peer].coordinate("C1", ts, [holder, peer], work(peer, 0)),
            reconnect(),
        )
        for c in bots.values():
            await c.close(release_due=False)
        return log

    log = run_virtual(main)
    assert [takeover for _, takeover in log] == [False]  # the holder alone: no taker


# --- one budget for the whole fleet: what keeps a rate limit from becoming a storm ------


def _one_user_federation(board: MemoryBoard, bots: list[str], **kw) -> dict[str, Coordinator]:
    fleet = {}
    for bot in bots:
        fleet[bot] = Coordinator(bot, MemoryLock(board, bot), FAST, clock=time.time, **kw)
        board.subscribe(bot, fleet[bot])
    return fleet


@pytest.mark.parametrize("one_user, ballots", [(True, 1), (False, 4)])
async def test_where_the_fleet_is_one_user_a_peer_that_saw_a_ballot_casts_none(one_user, ballots):
    """A silent holder's lease runs out before four peers: the first-ranked votes, and the
    others see its 🔄 before their stagger ends. One user for the fleet: theirs would meet
    `already_reacted` and lose, so they spend no reactions.add on it (each one of the one
    budget; seven ballots on every lapsed lease fed an rtm 429 storm). Bots of their own
    users still vote, as Slack's reaction order decides there."""
    names = ["a-pi", "b-pi", "c-pi", "d-pi", "e-pi"]
    board = MemoryBoard()
    fleet = _one_user_federation(board, names, one_user=one_user)
    ts = now_ts()
    holder, *peers = rank(ts, names)
    assert await fleet[holder].lock.claim("C1", ts)  # then it goes silent: no ⏳, no ✅
    board.calls.clear()
    log: list[str] = []

    async def run(bot: str):
        async def work(takeover: bool) -> None:
            log.append(bot)
            await asyncio.sleep(FAST.lease_s / 2)  # its ✅ comes after every peer's stagger

        return await fleet[bot].coordinate("C1", ts, names, work)

    results = await asyncio.gather(*(run(b) for b in peers))
    assert log == [peers[0]]
    assert sorted(r.outcome.value for r in results) == ["peer"] * 3 + ["took_over"]
    assert len(board.reactions[("C1", ts)]["arrows_counterclockwise"]) == ballots
    for c in fleet.values():
        await c.close(release_due=False)


class UnsureBallot(MemoryLock):
    """One user for the fleet, the ballot's answer lost: Slack cannot say whose 🔄 it met."""

    async def elect(self, channel: str, ts: str) -> bool | None:
        await super().elect(channel, ts)
        return None


@pytest.mark.parametrize(("stale_s", "taker"), [(30.0, False), (0.8, False), (30.0, True)])
async def test_a_ballot_that_cannot_tell_whether_it_won_looks_for_a_takers_signs(stale_s, taker):
    """A silent holder's lease runs out; the peer votes and cannot tell whether the 🔄 it
    met is its own (`elect` None). A taker renews its ⏳ within a third of a lease and
    puts its ✅: seen within 1.2 renewals, the peer leaves it. Seen nothing, the peer
    takes over, also when its look ends past the stale limit: its work then says so and
    acts on nothing (before, nobody answered the soak's command 3505)."""
    board = MemoryBoard()
    settings = replace(FAST, stale_s=stale_s)
    me = Coordinator("hall-pi", UnsureBallot(board, "hall-pi"), settings, clock=time.time)
    board.subscribe("hall-pi", me)
    me.one_user = True
    ts = f"{time.time() - 0.2:.6f}"
    assert await MemoryLock(board, "kitchen-pi").claim("C1", ts)  # then silent
    log: list[bool] = []

    async def work(takeover: bool) -> None:
        log.append(takeover)

    async def live_taker() -> None:
        await asyncio.sleep(FAST.lease_s * 1.1)  # it voted as the lease ran out, first
        other = MemoryLock(board, "garage-pi")
        await other.renew("C1", ts)
        await asyncio.sleep(FAST.lease_s / 3)
        await other.mark_done("C1", ts)

    helper = asyncio.ensure_future(live_taker() if taker else asyncio.sleep(0))
    result = await me.coordinate("C1", ts, ["hall-pi"], work)
    await helper
    assert (result.outcome, log) == ((Outcome.PEER, []) if taker else (Outcome.TOOK_OVER, [True]))
    await me.close(release_due=False)


class SlowClaims(MemoryLock):
    """A claim that Slack's rate limits hold up for a while before it lands."""

    async def claim(self, channel: str, ts: str) -> bool:
        await asyncio.sleep(FAST.lease_s / 2)
        return await super().claim(channel, ts)


@pytest.mark.parametrize("crowded, claims", [(True, 1), (False, 3)])
async def test_while_rate_limits_hold_claims_up_only_the_first_ranked_bot_claims(crowded, claims):
    """Slack answered this bot's claim calls 429 lately: the first-ranked bot's claim comes
    late, and peers that claimed after their usual stagger spent the budget it waited on
    (rtm: eight claims a command, and no command acted for minutes). They wait a lease
    more for its mark instead."""
    board = MemoryBoard()
    fleet = {}
    for bot in BOTS:
        lock = SlowClaims(board, bot)
        fleet[bot] = Coordinator(bot, lock, FAST, clock=time.time, crowded=lambda: crowded)
        board.subscribe(bot, fleet[bot])
    ts = now_ts()
    log: list = []
    results = await _run_all(fleet, ts, log)
    assert [takeover for _, takeover in log] == [False]
    assert sorted(r.outcome.value for r in results) == ["acted", "peer", "peer"]
    assert Counter(method for _, method in board.calls)["pins.add"] == claims
    for c in fleet.values():
        await c.close(release_due=False)


async def test_a_claim_held_up_by_rate_limits_counts_from_the_attempt_slack_carried_out(
    workspace,
):
    """Slack answers the 👀 twice with 429 (Retry-After 1 s): the claim lands after two
    seconds and more, past the late threshold of a 2 s lease counted from the first try.
    Slack carried out no refused attempt, and the peers count the lease from the 👀 they
    saw, so the claim is not late: its bot acts at once, and nobody votes. Counted from
    the first try, a rate-limited claim went to the ballot, and its peers' ballots fed the
    storm (rtm soak)."""
    bots, channel, ts = _shared_fleet(workspace, "rtm", replace(FAST, lease_s=2.0))
    workspace.control("fail", method="reactions.add", status=429, count=2, retry_after=1)

    log: list[tuple[str, bool]] = []
    first = rank(ts, BOTS)[0]
    started = time.monotonic()
    result = await _work_log(bots, channel, ts, log)(first)
    assert time.monotonic() - started > 2.0  # it did wait out both 429s
    assert result.outcome is Outcome.ACTED and log == [(first, False)]
    assert "reactions.get" not in _calls(workspace)  # no ballot was read
    for c in bots.values():
        await c.close(release_due=False)
