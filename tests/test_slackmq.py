"""troupe.slackmq: the Slack Lock (SlackMQ) and the seed's slackmq API, against the workspace."""

from __future__ import annotations

import asyncio
import time

import pytest
from slack_sdk import WebClient

from troupe.errors import ClaimError
from troupe.slackapi import async_client
from troupe.slackmq import CLAIM, DONE, REDELIVERY_S, TAKEOVER, SlackMQ, holding, slackmq


@pytest.fixture
def posted(workspace):
    alice = WebClient("xoxp-alice", base_url=workspace.api_url)
    msg = alice.chat_postMessage(channel="#home", text="lights on")
    return workspace, msg["channel"], msg["ts"]


def test_seed_api_acks_once_refuses_the_second_and_releases_late(posted, monkeypatch):
    ws, channel, ts = posted
    monkeypatch.setattr(slackmq, "base_url", ws.api_url)
    monkeypatch.setattr(slackmq, "linger_s", 0.5)
    first = slackmq("xoxb-kitchen", channel, ts)
    assert first.ack() is True
    assert slackmq("xoxb-hall", channel, ts).ack() is False
    assert first.unack() is True
    reader = WebClient("xoxb-garage", base_url=ws.api_url)
    reactions = reader.reactions_get(channel=channel, timestamp=ts)["message"]["reactions"]
    assert [r["name"] for r in reactions] == [DONE]
    deadline = time.monotonic() + 10
    while reader.pins_list(channel=channel)["items"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.pins_list(channel=channel)["items"] == []


def test_seed_api_refuses_stale_messages_and_reports_real_errors(posted, monkeypatch):
    ws, channel, ts = posted
    monkeypatch.setattr(slackmq, "base_url", ws.api_url)
    monkeypatch.setattr(slackmq, "stale_s", 0.0)
    assert slackmq("xoxb-kitchen", channel, ts).ack() is False
    monkeypatch.setattr(slackmq, "stale_s", 30.0)
    with pytest.raises(ClaimError, match="message_not_found"):
        slackmq("xoxb-kitchen", channel, f"{time.time():.6f}").ack()
    with pytest.raises(ClaimError, match="invalid_auth"):
        slackmq("xoxb-nobody", channel, ts).ack()


def test_seed_api_inside_a_held_command_needs_no_slack_call(posted, monkeypatch):
    _, channel, ts = posted
    monkeypatch.setattr(slackmq, "base_url", "http://127.0.0.1:9/api/")  # nothing listens
    with holding(channel, ts):
        post = slackmq("SLACK-BOT-API-TOKEN", channel, ts)
        assert post.ack() is True
        assert post.unack() is True


def _kitchen_and_hall(ws, *, shared_user: bool = False) -> tuple[SlackMQ, SlackMQ]:
    """Two bots' locks on the workspace, each trusting both bot users."""
    fleet = {"U0KITCHEN", "U0HALL"}.__contains__

    def lock(token: str, user: str) -> SlackMQ:
        client = async_client(token, ws.api_url)
        return SlackMQ(client, user, trusted=fleet, shared_user=shared_user)

    return lock("xoxb-kitchen", "U0KITCHEN"), lock("xoxb-hall", "U0HALL")


async def test_lock_claim_done_elect_release(posted):
    ws, channel, ts = posted
    kitchen, hall = _kitchen_and_hall(ws)
    assert await kitchen.claim(channel, ts) is True
    assert await hall.claim(channel, ts) is False
    assert await hall.is_done(channel, ts) is False
    assert await hall.elect(channel, ts) is True
    assert await kitchen.elect(channel, ts) is False
    await hall.mark_done(channel, ts)
    assert await kitchen.is_done(channel, ts) is True
    await kitchen.release(channel, ts)
    await hall.release(channel, ts)  # no_pin is not an error
    reactions = await kitchen.client.reactions_get(channel=channel, timestamp=ts)
    names = {r["name"]: r["users"] for r in reactions["message"]["reactions"]}
    assert names[TAKEOVER] == ["U0HALL", "U0KITCHEN"]


async def test_taken_up_counts_a_peers_ballot_not_its_own_unless_the_fleet_shares_a_user(posted):
    """A bot's own 🔄 (a takeover it began before a stop) is not a peer at work on the
    message; under one shared user nobody can tell whose it is, so it counts."""
    ws, channel, ts = posted
    kitchen, hall = _kitchen_and_hall(ws)
    assert await kitchen.elect(channel, ts) is True
    assert await kitchen.taken_up(channel, ts) is False
    assert await hall.taken_up(channel, ts) is True
    shared, _ = _kitchen_and_hall(ws, shared_user=True)
    assert await shared.taken_up(channel, ts) is True
    await hall.mark_done(channel, ts)
    assert await kitchen.taken_up(channel, ts) is True


async def test_any_other_claim_error_is_an_error_not_a_peer(posted):
    ws, _, ts = posted
    lock = SlackMQ(
        async_client("xoxb-kitchen", ws.api_url), "U0KITCHEN", trusted={"U0KITCHEN"}.__contains__
    )
    with pytest.raises(ClaimError, match="channel_not_found"):
        await lock.claim("C0NOWHERE", ts)


# --- the shared user's claim: a 👀 reaction (shared-app, rtm) ------------------------

SHARED = {"U0TROUPE"}.__contains__


def shared_bot(ws, *, sole: bool = False, now=None) -> SlackMQ:
    """One bot of the shared app: every bot of it is the same Slack user, U0TROUPE;
    `sole` as in shared-app mode, where Slack hands each event to one connection."""
    client = async_client("xoxb-troupe", ws.api_url)
    return SlackMQ(
        client,
        "U0TROUPE",
        trusted=SHARED,
        shared_user=True,
        sole_receiver=sole,
        now=now or time.time,
    )


def app_calls(ws, app: str = "A0TROUPE") -> dict[str, int]:
    return dict(ws.control("counters")["calls"].get(app, {}))


async def test_a_shared_user_claims_with_one_reaction_and_never_pins(posted):
    ws, channel, ts = posted
    ws.control("counters/reset")
    first, second = shared_bot(ws), shared_bot(ws)
    assert await first.claim(channel, ts) is True
    assert await second.claim(channel, ts) is False  # already_reacted: a peer holds it
    await first.mark_done(channel, ts)
    await first.release(channel, ts)  # the 👀 stays: nothing to release
    assert app_calls(ws) == {"reactions.add": 3}  # two claims and the ✅: no pins call
    msg = (await first.client.reactions_get(channel=channel, timestamp=ts))["message"]
    assert [r["name"] for r in msg["reactions"]] == [CLAIM, DONE]
    assert (await first.client.pins_list(channel=channel))["items"] == []


async def test_two_shared_receivers_racing_one_holds_it(posted):
    ws, channel, ts = posted
    ws.control("counters/reset")
    bots = [shared_bot(ws) for _ in range(6)]
    won = await asyncio.gather(*(b.claim(channel, ts) for b in bots))
    assert sorted(won) == [False] * 5 + [True]
    assert app_calls(ws) == {"reactions.add": 6}  # one call each, Tier 3, no pins


async def test_a_shared_app_first_delivery_holds_the_command_at_no_call(posted):
    ws, channel, ts = posted
    ws.control("counters/reset")
    receiver, redelivered = shared_bot(ws, sole=True), shared_bot(ws, sole=True)
    receiver.delivered(channel, ts, 0)  # Slack handed it the first delivery
    assert await receiver.claim(channel, ts) is True
    # A redelivery cannot see whether the first receiver lives: it defers to the lease
    redelivered.delivered(channel, ts, 1)
    assert await redelivered.claim(channel, ts) is False
    assert app_calls(ws) == {}  # no pin, no reaction
    late = shared_bot(ws, sole=True, now=lambda: float(ts) + REDELIVERY_S)
    late.delivered(channel, ts, 0)  # its first delivery came after Slack may redeliver
    assert await late.claim(channel, ts) is True  # so it claims with 👀 (no one had)
    assert app_calls(ws) == {"reactions.add": 1}


async def test_a_shared_app_claim_of_a_message_not_delivered_is_the_eyes(posted):
    """A resume after a restart, a rollout's baton (devops): one bot wins, visibly."""
    ws, channel, ts = posted
    first, second = shared_bot(ws, sole=True), shared_bot(ws, sole=True)
    assert await first.claim(channel, ts) is True
    assert await second.claim(channel, ts) is False
    assert app_calls(ws) == {"reactions.add": 2}


async def test_a_lost_claim_answer_of_a_shared_user_is_not_taken_for_a_win(posted):
    ws, channel, ts = posted
    ws.control("fail", method="reactions.add", status=503, count=1, after=True, app="A0TROUPE")
    # rtm: every bot has the message, and one user cannot say whose 👀 it met
    assert await shared_bot(ws).claim(channel, ts) is False
    assert app_calls(ws)["reactions.add"] == 2  # the lost answer, then already_reacted


async def test_a_shared_users_ballot_says_when_it_cannot_tell_whether_it_won(posted):
    """One user for the fleet: the first ballot's `ok` wins and a peer's later one meets
    `already_reacted` and loses; a ballot whose answer was lost (its retry meets
    `already_reacted`) may be its own vote or a peer's: None, not a loss (the soak's
    unanswered command 3505), and so is the same bot's second ballot."""
    ws, channel, ts = posted
    first, second = shared_bot(ws), shared_bot(ws)
    assert await first.elect(channel, ts) is True
    assert await second.elect(channel, ts) is False
    assert await first.elect(channel, ts) is None  # its own vote, or a peer's
    alice = WebClient("xoxp-alice", base_url=ws.api_url)
    later = alice.chat_postMessage(channel=channel, text="hall light on")["ts"]
    ws.control("counters/reset")
    ws.control("fail", method="reactions.add", status=503, count=1, after=True, app="A0TROUPE")
    assert await shared_bot(ws).elect(channel, later) is None
    assert app_calls(ws)["reactions.add"] == 2  # the lost answer, then already_reacted


async def test_a_persons_eyes_are_no_claim(posted):
    ws, channel, ts = posted
    alice = WebClient("xoxp-alice", base_url=ws.api_url)
    alice.reactions_add(channel=channel, timestamp=ts, name=CLAIM)  # a person says "on it"
    first, second = shared_bot(ws), shared_bot(ws)
    assert await first.claim(channel, ts) is True
    assert await second.claim(channel, ts) is False
    msg = (await first.client.reactions_get(channel=channel, timestamp=ts, full=True))["message"]
    assert {r["name"]: r["users"] for r in msg["reactions"]}[CLAIM] == ["U0ALICE", "U0TROUPE"]


def test_no_answer_from_slack_is_a_claim_error_never_a_crash():
    """A call that times out after the client's own retries (a loaded Pi, lost Wi-Fi) is
    a ClaimError like any refusal, so the command is answered once instead of failing."""

    class Silent:
        async def reactions_add(self, **_):
            raise TimeoutError

        async def reactions_get(self, **_):
            raise TimeoutError

        async def pins_add(self, **_):
            raise OSError("Network is unreachable")

    async def main():
        lock = SlackMQ(Silent(), "U0KITCHEN", trusted=lambda u: True)  # type: ignore[arg-type]
        with pytest.raises(ClaimError, match="timeout"):
            await lock.claim("C0HOME", "1.000001")
        with pytest.raises(ClaimError, match="timeout"):
            await lock.mark_done("C0HOME", "1.000001")
        with pytest.raises(ClaimError, match="timeout"):
            await lock.is_done("C0HOME", "1.000001")

    asyncio.run(main())
