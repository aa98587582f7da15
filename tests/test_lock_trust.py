"""Only the fleet's marks count, and a lost answer never makes a bot wait out its own pin:
SlackMQ against the workspace through the real slack_sdk."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient

from troupe.slackapi import async_client
from troupe.slackmq import DONE, TAKEOVER, WORKING, SlackMQ

FLEET = {"U0KITCHEN", "U0HALL"}


@pytest.fixture
def posted(workspace):
    alice = WebClient("xoxp-alice", base_url=workspace.api_url)
    msg = alice.chat_postMessage(channel="#home", text="lights on")
    return workspace, alice, msg["channel"], msg["ts"]


def lock(ws, short: str, user: str, **kw) -> SlackMQ:
    return SlackMQ(
        async_client(f"xoxb-{short}", ws.api_url), user, trusted=FLEET.__contains__, **kw
    )


async def test_a_claim_whose_answer_was_lost_is_known_as_this_bots_own(posted):
    ws, _, channel, ts = posted
    ws.control("fail", method="pins.add", status=503, count=1, after=True, app="A0KITCHEN")
    kitchen, hall = lock(ws, "kitchen", "U0KITCHEN"), lock(ws, "hall", "U0HALL")
    assert await kitchen.claim(channel, ts) is True
    assert await hall.claim(channel, ts) is False
    calls = ws.control("counters")["calls"]
    assert calls["A0KITCHEN"]["pins.add"] == 2  # the lost answer, then already_pinned
    assert calls["A0KITCHEN"]["pins.list"] == 1  # checked before believing a peer has it


async def test_a_lost_answer_in_a_shared_user_fleet_is_not_taken_for_a_win(posted):
    ws, _, channel, ts = posted
    ws.control("fail", method="reactions.add", status=503, count=1, after=True, app="A0KITCHEN")
    kitchen = lock(ws, "kitchen", "U0KITCHEN", shared_user=True)  # claims with 👀
    assert await kitchen.claim(channel, ts) is False


async def test_a_ballot_whose_answer_was_lost_still_counts(posted):
    ws, _, channel, ts = posted
    kitchen, hall = lock(ws, "kitchen", "U0KITCHEN"), lock(ws, "hall", "U0HALL")
    assert await kitchen.claim(channel, ts)
    ws.control("fail", method="reactions.add", status=503, count=1, after=True, app="A0HALL")
    assert await hall.elect(channel, ts) is True
    assert await kitchen.elect(channel, ts) is False


async def test_a_persons_pin_is_no_claim_and_is_never_removed(posted):
    ws, alice, channel, ts = posted
    alice.pins_add(channel=channel, timestamp=ts)
    kitchen, hall = lock(ws, "kitchen", "U0KITCHEN"), lock(ws, "hall", "U0HALL")
    assert await kitchen.claim(channel, ts) is True  # the fleet's ballot decides instead
    assert await hall.claim(channel, ts) is False
    await kitchen.release(channel, ts)
    await hall.release(channel, ts)
    pins = alice.pins_list(channel=channel)["items"]
    assert [p["created_by"] for p in pins] == ["U0ALICE"]


async def test_a_persons_done_mark_and_ballot_change_nothing(posted):
    ws, alice, channel, ts = posted
    alice.reactions_add(channel=channel, timestamp=ts, name=TAKEOVER)
    alice.reactions_add(channel=channel, timestamp=ts, name=DONE)
    kitchen, hall = lock(ws, "kitchen", "U0KITCHEN"), lock(ws, "hall", "U0HALL")
    assert await kitchen.claim(channel, ts)
    assert await hall.is_done(channel, ts) is False
    assert await hall.elect(channel, ts) is True  # the person's 🔄 listed first is no ballot
    await hall.mark_done(channel, ts)
    assert await kitchen.is_done(channel, ts) is True


async def test_renew_alternates_so_each_call_is_an_event(posted):
    ws, alice, channel, ts = posted
    kitchen = lock(ws, "kitchen", "U0KITCHEN")
    await kitchen.renew(channel, ts)
    names = [
        r["name"]
        for r in alice.reactions_get(channel=channel, timestamp=ts)["message"].get("reactions", [])
    ]
    assert names == ["hourglass_flowing_sand"]
    await kitchen.renew(channel, ts)
    reactions = alice.reactions_get(channel=channel, timestamp=ts)["message"].get("reactions", [])
    assert reactions == []


async def test_a_restarted_holders_first_renewal_is_still_a_change_its_peers_see(posted):
    """The ⏳ its last life put is still there, and the new process does not know it: an
    add meets already_reacted and changes nothing, so the renewal flips it back (the
    peers count a removal as a renewal too) instead of letting the lease run out."""
    ws, alice, channel, ts = posted
    before = lock(ws, "kitchen", "U0KITCHEN")
    await before.renew(channel, ts)  # the ⏳ is on; then the bot restarts

    def hourglass() -> bool:
        message = alice.reactions_get(channel=channel, timestamp=ts)["message"]
        return any(r["name"] == WORKING for r in message.get("reactions", []))

    after = lock(ws, "kitchen", "U0KITCHEN")
    await after.renew(channel, ts)
    assert not hourglass()  # removed: the event its peers see
    await after.renew(channel, ts)
    assert hourglass()
