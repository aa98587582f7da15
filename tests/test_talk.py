"""Lists, "everything", dimming, thread follow-ups and confirmation through the real
pipeline (bots in this loop, a real workspace): each command acts once, with one answer."""

from __future__ import annotations

import asyncio
from collections import Counter

from pipekit import USER_OF, fleet
from slack_sdk.web.async_client import AsyncWebClient

from troupe import confirm

FAST = "{stale_s: 30, lease_s: 3, stagger_s: 0.3, linger_s: 45}"
HOUSE = """\
devices:
  hall light: {kind: light, area: hall, driver: counter}
  porch switch: {kind: switch, area: porch, driver: counter}
  garden pump: {kind: switch, area: garden, driver: counter}
  garage door: {kind: cover, area: garage, driver: counter}
areas: {hall: [], porch: [], garden: [], garage: [], kitchen: []}
"""


def acted(f, ts: str) -> Counter[str]:
    return Counter(a["device"] for a in f.actions() if a.get("ts") == ts)


async def settle(f, ts: str, answers: int = 1) -> list[str]:
    await f.answered(ts, answers)
    await asyncio.sleep(1.0)  # time for a second answer or action, if there were one
    return [m["text"] for m in await f.replies(ts)]


async def test_a_list_acts_on_each_device_once_with_one_answer(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        ts = await f.say("turn on the hall light, the porch switch and the garden pump")
        await f.until(lambda: len(f.actions()) >= 3, 20, "3 actions")
        texts = await settle(f, ts)
        assert acted(f, ts) == {"hall light": 1, "porch switch": 1, "garden pump": 1}
        assert len(texts) == 1 and "hall light" in texts[0] and "garden pump" in texts[0]


async def test_everything_leaves_the_garage_door_alone(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        ts = await f.say("turn off everything")
        await f.until(lambda: len(f.actions()) >= 3, 20, "3 actions")
        texts = await settle(f, ts)
        assert acted(f, ts) == {"hall light": 1, "porch switch": 1, "garden pump": 1}
        assert len(texts) == 1


async def test_dimming_steps_from_the_current_brightness(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        first = await f.say("set the hall light to 60%")
        await settle(f, first)
        dim = await f.say("dim the hall light")
        texts = await settle(f, dim)
        to = await f.say("dim the hall light to 10 percent")
        await settle(f, to)
        sets = [(a["ts"], a["op"], a["args"].get("brightness")) for a in f.actions()]
        assert sets == [(first, "set", 60), (dim, "set", 35), (to, "set", 10)]
        assert len(texts) == 1 and "35%" in texts[0]


async def test_a_follow_up_in_the_thread_acts_on_the_threads_devices(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        ts = await f.say("turn on the hall light and the porch switch")
        await settle(f, ts)
        f.ws.control("counters/reset")
        resp = await f.alice.chat_postMessage(channel=f.home, text="turn them off", thread_ts=ts)
        follow = str(resp["ts"])
        await f.until(lambda: len(acted(f, follow)) >= 2, 20, "the follow-up's actions")
        too = await f.alice.chat_postMessage(
            channel=f.home, text="and the garden pump too", thread_ts=ts
        )
        await f.until(lambda: acted(f, str(too["ts"])), 20, "the garden pump")
        await asyncio.sleep(1.0)
        assert acted(f, follow) == {"hall light": 1, "porch switch": 1}
        assert [a["op"] for a in f.actions() if a["ts"] == follow] == ["off", "off"]
        assert acted(f, str(too["ts"])) == {"garden pump": 1}
        assert [a["op"] for a in f.actions() if a["ts"] == too["ts"]] == ["on"]
        replies = [m for m in await f.replies(ts) if m.get("bot_id")]
        assert len(replies) == 3  # the command's answer and one per follow-up
        calls = f.calls()
        assert (
            sum(
                calls.get(app, {}).get("conversations.replies", 0)
                for app in calls
                if app.startswith("A0")
            )
            == 0
        )


async def test_a_follow_up_after_a_restart_reads_the_thread_from_slack_once_per_bot(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        ts = await f.say("turn on the porch switch")
        await settle(f, ts)
        for bot in f.bots.values():
            bot.threads._known.clear()  # as after a restart
        f.ws.control("counters/reset")
        chatter = await f.alice.chat_postMessage(channel=f.home, text="lol ok", thread_ts=ts)
        resp = await f.alice.chat_postMessage(channel=f.home, text="turn it off", thread_ts=ts)
        await f.until(lambda: acted(f, str(resp["ts"])), 20, "the follow-up")
        await asyncio.sleep(1.0)
        assert acted(f, str(resp["ts"])) == {"porch switch": 1}
        assert acted(f, str(chatter["ts"])) == Counter()
        calls = f.calls()
        reads = [
            calls[app].get("conversations.replies", 0)
            for app in ("A0KITCHEN", "A0HALL", "A0GARAGE")
        ]
        assert all(n <= 1 for n in reads), reads  # the chatter cost none


async def _ask(f, text: str = "open the garage door") -> tuple[str, str]:
    ts = await f.say(text)
    texts = await settle(f, ts)
    assert texts == ["Open the garage door? React 👍 within 30 s."]
    question = next(m["ts"] for m in await f.replies(ts))
    assert f.actions() == []
    return ts, question


async def test_a_risky_device_acts_once_on_the_askers_thumbs_up(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        ts, question = await _ask(f)
        await f.alice.reactions_add(channel=f.home, timestamp=question, name="thumbsup")
        await f.until(lambda: f.actions(), 20, "the garage door")
        await f.answered(ts, 2)
        await asyncio.sleep(1.5)
        assert [(a["device"], a["op"]) for a in f.actions()] == [("garage door", "on")]
        assert len(await f.replies(ts)) == 2  # the question and one answer


async def test_a_thumbs_up_from_someone_else_does_nothing(tmp_path):
    async with fleet(
        tmp_path, devices=HOUSE, slackmq=FAST, access='{admins: [], users: ["*"]}'
    ) as f:
        ts, question = await _ask(f)
        bob = AsyncWebClient("xoxp-bob", base_url=f.ws.api_url)
        await bob.reactions_add(channel=f.home, timestamp=question, name="+1")
        await bob.reactions_add(channel=f.home, timestamp=ts, name="+1")
        await asyncio.sleep(2.0)
        assert f.actions() == []
        assert len(await f.replies(ts)) == 1
        await f.alice.reactions_add(channel=f.home, timestamp=question, name="+1")
        await f.until(lambda: f.actions(), 20, "the asker's 👍 to act")
        await asyncio.sleep(1.0)
        assert len(f.actions()) == 1


async def test_an_admins_thumbs_up_confirms_and_a_second_changes_nothing(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        bob = AsyncWebClient("xoxp-bob", base_url=f.ws.api_url)
        resp = await bob.chat_postMessage(channel=f.home, text="close the garage door")
        ts = str(resp["ts"])
        await settle(f, ts)
        question = next(m["ts"] for m in await f.replies(ts))
        await f.alice.reactions_add(channel=f.home, timestamp=question, name="+1")  # an admin
        await bob.reactions_add(channel=f.home, timestamp=question, name="+1")
        await f.until(lambda: f.actions(), 20, "the garage door")
        await asyncio.sleep(1.5)
        assert [(a["device"], a["op"]) for a in f.actions()] == [("garage door", "off")]
        assert len(await f.replies(ts)) == 2


async def test_a_thumbs_up_after_the_window_does_nothing(tmp_path, monkeypatch):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        ts, question = await _ask(f)
        # A bot that saw the question before it held the command reads both back from
        # Slack at the 👍 (confirm.recall), with the window from WINDOW_S: closed too.
        monkeypatch.setattr(confirm, "WINDOW_S", -1.0)
        for bot in f.bots.values():  # the window as Slack's clock sees it, 31 s on
            for key, pending in list(bot.confirmations._pending.items()):
                bot.confirmations._pending[key] = pending.__class__(
                    **{**pending.__dict__, "deadline": float(ts) - 1}
                )
        await f.alice.reactions_add(channel=f.home, timestamp=question, name="+1")
        await asyncio.sleep(2.0)
        assert f.actions() == []
        assert len(await f.replies(ts)) == 1


async def test_the_confirmed_action_happens_even_if_the_asking_bot_died(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        ts, question = await _ask(f)
        asked_by = next(m["user"] for m in await f.replies(ts))
        asker = next(name for name, user in USER_OF.items() if user == asked_by)
        await f.bots[asker].stop()
        await f.alice.reactions_add(channel=f.home, timestamp=question, name="+1")
        await f.until(lambda: f.actions(), 20, "the garage door")
        await asyncio.sleep(1.5)
        assert len(f.actions()) == 1


async def test_history_shows_what_the_whole_fleet_did_newest_first(tmp_path):
    async with fleet(tmp_path, devices=HOUSE, slackmq=FAST) as f:
        bob = AsyncWebClient("xoxp-bob", base_url=f.ws.api_url)
        sent = []
        for who, text in [
            (f.alice, "turn on the porch switch"),
            (bob, "turn off the porch switch"),
            (f.alice, "turn on the hall light"),
            (bob, "flip the porch switch"),
        ]:
            ts = str((await who.chat_postMessage(channel=f.home, text=text))["ts"])
            await settle(f, ts)
            sent.append(ts)
        assert len({a["bot"] for a in f.actions()}) >= 1
        f.ws.control("counters/reset")
        ask = await f.say("history of the porch switch")
        texts = await settle(f, ask)
        assert len(texts) == 1
        lines = texts[0].splitlines()
        assert lines[0] == "What the fleet did to the porch switch, newest first:"
        assert [line.split("“")[1].split("”")[0] for line in lines[1:]] == [
            "flip the porch switch",
            "turn off the porch switch",
            "turn on the porch switch",
        ]
        assert lines[1].endswith("<@U0BOB>") and lines[3].endswith("<@U0ALICE>")
        calls = f.calls()
        reads = sum(calls.get(a, {}).get("conversations.history", 0) for a in USER_APPS)
        assert reads == 2  # one bot answers: one read of each of its two channels


def test_help_has_no_garbled_pattern_lines():
    import importlib

    from troupe.plugin import describe

    system = importlib.import_module("troupe.plugins.system")
    specs = [getattr(system, n).__troupe_command__ for n in ("help_", "devices", "history")]
    lines = describe(specs)
    assert "• `history [[of/for] <device>]` — What the federation did" in lines[2]
    for line in lines:
        assert not any(junk in line for junk in ("(?", "  ", " / /", "/ for", "?`"))


USER_APPS = ("A0KITCHEN", "A0HALL", "A0GARAGE")


async def test_a_list_and_a_confirmation_in_shared_app_mode(tmp_path):
    """One app for every bot: Slack hands each event, the 👍 too, to one bot only."""
    async with fleet(tmp_path, "shared-app", devices=HOUSE, slackmq=FAST) as f:
        ts, question = await _ask(f)
        await f.alice.reactions_add(channel=f.home, timestamp=question, name="thumbsup")
        await f.until(lambda: f.actions(), 20, "the garage door")
        await f.answered(ts, 2)
        await asyncio.sleep(1.5)
        assert [(a["device"], a["op"]) for a in f.actions()] == [("garage door", "on")]
        assert len(await f.replies(ts)) == 2  # the question and one answer
        ts = await f.say("turn on the hall light and the porch switch")
        replies = await settle(f, ts)
        assert len(replies) == 1
        assert acted(f, ts) == Counter({"hall light": 1, "porch switch": 1})
