"""Exactly once in a real home: wrong Pi clocks, lost answers, people's marks, chatter, a
dead owner, a full pin list and slow devices, through the real pipeline (bots in this
loop, a real workspace, real slack_sdk)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from fleetkit import DEVICES
from pipekit import USER_OF, fleet
from test_chatter import DE_AREAS, DE_DEVICES, EN_AREAS, EN_DEVICES, corpus

from troupe.bot import Bot
from troupe.federation import Action, rank
from troupe.slackmq import DONE, TAKEOVER
from troupe.transports.base import Event

FAST = "{stale_s: 30, lease_s: 3, stagger_s: 0.3, linger_s: 45}"


def skew(bot_name: str, seconds: float):
    """Set one bot's Pi clock `seconds` off (Slack's clock stays right)."""

    def prepare(bot: Bot) -> None:
        if bot.name == bot_name:
            bot.clock.local = lambda: time.time() + seconds

    return prepare


@pytest.mark.parametrize("offset", [-600.0, 45.0, 600.0])
async def test_a_pi_clock_off_by_minutes_changes_nothing(tmp_path, offset):
    async with fleet(tmp_path, prepare=skew("hall-pi", offset)) as f:
        hall = f.bots["hall-pi"]
        assert hall.clock.offset == pytest.approx(-offset, abs=1.5)
        sent = []
        for i in range(8):
            device = ("hall light", "porch switch")[i % 2]
            sent.append(await f.say(f"turn {'on' if i % 4 < 2 else 'off'} the {device}"))
        await f.until(lambda: len(f.actions()) >= 8, 30, "8 actions")
        for ts in sent:
            texts = await f.answered(ts)
            assert not any("old" in t for t in texts), texts
        await asyncio.sleep(1.0)
        assert Counter(a["ts"] for a in f.actions()) == dict.fromkeys(sent, 1)


class _SkewedTime:
    """The `time` module as a Pi whose clock is off sees it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __getattr__(self, name: str):
        return getattr(time, name)

    def time(self) -> float:
        return time.time() + self.seconds


async def test_every_pi_clock_ten_minutes_ahead_changes_nothing(tmp_path, monkeypatch):
    import troupe.bot
    import troupe.federation
    import troupe.slackmq

    for module in (troupe.bot, troupe.federation, troupe.slackmq):
        monkeypatch.setattr(module, "time", _SkewedTime(600.0))

    def prepare(bot: Bot) -> None:
        bot.clock.local = lambda: time.time() + 600.0

    async with fleet(tmp_path, prepare=prepare, slackmq=FAST) as f:
        sent = [await f.say(f"turn {op} the hall light") for op in ("on", "off", "on")]
        await f.until(lambda: len(f.actions()) >= 3, 20, "3 actions")
        for ts in sent:
            assert not any("old" in t for t in await f.answered(ts))
        assert [a["ts"] for a in f.actions()] == sent


async def test_lost_claim_answers_still_act_once_in_order_without_a_takeover(tmp_path):
    async with fleet(tmp_path, slackmq=FAST) as f:
        f.ws.control("fail", method="pins.add", status=503, count=100, after=True, app="A0HALL")
        sent = []
        for i in range(6):
            sent.append(await f.say(f"turn {'on' if i % 2 == 0 else 'off'} the porch switch"))
            await asyncio.sleep(0.3)
        await f.until(lambda: len(f.actions()) >= 6, 20, "6 actions")
        await asyncio.sleep(1.0)
        acted = [a["ts"] for a in f.actions()]
        assert acted == sent  # once each, in the order sent
        assert [a["op"] for a in f.actions()] == ["on", "off"] * 3
        for ts in sent:
            assert TAKEOVER not in await f.reactions(ts)  # nobody waited out a lease
            assert DONE in await f.reactions(ts)


class _Frozen:
    """A lock that wins its claim and then never comes back: a holder that hung."""

    def __init__(self, lock) -> None:
        self._lock = lock
        self._thaw = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._lock, name)

    async def claim(self, channel: str, ts: str) -> bool:
        won = await self._lock.claim(channel, ts)
        if won:
            await self._thaw.wait()
            raise RuntimeError("this holder hung and is now gone")
        return won

    def thaw(self) -> None:
        """End the hang (the holder dies without acting), so the fleet can stop."""
        self._thaw.set()


async def test_a_persons_done_mark_and_ballot_do_not_stop_a_takeover(tmp_path):
    async with fleet(tmp_path, slackmq=FAST) as f:
        frozen = "kitchen-pi"
        lock = f.bots[frozen].coordinator.lock = _Frozen(f.bots[frozen].coordinator.lock)
        while True:  # a message whose first-ranked bot is the frozen one
            ts = await f.say("turn on the hall light")
            if rank(ts, list(USER_OF))[0] == frozen:
                break
            await f.until(lambda ts=ts: any(a["ts"] == ts for a in f.actions()), 10, "act")
        await f.alice.reactions_add(channel=f.home, timestamp=ts, name=TAKEOVER)
        await f.alice.reactions_add(channel=f.home, timestamp=ts, name=DONE)
        await f.until(lambda: any(a["ts"] == ts for a in f.actions()), 20, "the takeover")
        await asyncio.sleep(1.0)
        assert [a["bot"] for a in f.actions() if a["ts"] == ts] != [frozen]
        assert len([a for a in f.actions() if a["ts"] == ts]) == 1
        texts = await f.answered(ts)
        assert "took over" in texts[0]
        lock.thaw()


HOUSES = {"en": (EN_DEVICES, EN_AREAS), "de": (DE_DEVICES, DE_AREAS)}


def house_of(language: str) -> str:
    """The corpora's test house (tests/test_chatter.py) as the federation file's devices."""
    devices, areas = HOUSES[language]
    lines = ["devices:"]
    for d in devices:
        aliases = f", aliases: [{', '.join(d.aliases)}]" if d.aliases else ""
        lines.append(f"  {d.name}: {{kind: {d.kind}, area: {d.area}, driver: counter{aliases}}}")
    lines.append("areas:")
    lines += [f"  {area}: [{', '.join(names)}]" for area, names in areas.items()]
    if "kitchen" not in areas:
        lines.append("  kitchen: []")  # fleetkit's #kitchen channel names it
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("language", ["en", "de"])
async def test_chatter_costs_no_call_and_gets_no_answer(tmp_path, language):
    lines = corpus(f"chatter_{language}.txt")
    assert len(lines) >= 150
    house = house_of(language)
    async with fleet(tmp_path, devices=house, extra=f"language: {language}\n") as f:
        f.ws.control("counters/reset")
        sent = [await f.say(line) for line in lines]
        marker = await f.say("<@U0HALL> hello there")  # unknown text to a bot: its answer
        await f.answered(marker)
        await asyncio.sleep(1.0)
        for bot in f.bots.values():  # every line was read (journaled) and let be
            statuses = {lines[i]: bot.journal.status(f.home, ts) for i, ts in enumerate(sent)}
            assert {line: st for line, st in statuses.items() if st != "skipped"} == {}
        bots = {"A0KITCHEN", "A0HALL", "A0GARAGE"}
        calls = {key: dict(methods) for key, methods in f.calls().items() if key in bots}
        assert calls == {"A0HALL": {"chat.postMessage": 1}}
        answered = [ts for ts in sent if await f.replies(ts)]
        assert answered == []


async def test_each_near_miss_gets_one_helpful_answer(tmp_path):
    lines = corpus("nearmiss_en.txt")[::6]  # a sample: tests/test_chatter.py reads them all
    async with fleet(tmp_path, devices=house_of("en")) as f:
        sent = {await f.say(line): line for line in lines}
        for ts in sent:
            await f.answered(ts)
        await asyncio.sleep(1.0)
        for ts, line in sent.items():
            texts = [m["text"] for m in await f.replies(ts)]
            assert len(texts) == 1, (line, texts)
            assert texts[0].startswith(("I don't know a device or area", "I can't do that")), line
        assert f.actions() == []


async def test_a_device_whose_owner_is_down_is_answered_by_a_live_bot(tmp_path):
    async with fleet(tmp_path, start=("kitchen-pi", "hall-pi"), slackmq=FAST) as f:
        ts = await f.say("turn on the garage light")
        texts = await f.answered(ts, timeout=20)
        await asyncio.sleep(1.0)
        texts = [m["text"] for m in await f.replies(ts)]
        assert texts == [
            "The garage light belongs to garage-pi, which has not answered; nothing was done:"
            " check that Pi and ask again."
        ]
        assert f.actions() == []


async def test_an_owned_device_command_gets_its_done_mark(tmp_path):
    async with fleet(tmp_path) as f:
        ts = await f.say("turn on the kitchen lamp")
        await f.answered(ts)
        await f.until(lambda: f.reactions(ts), 10, "a reaction")
        assert (await f.reactions(ts)).get(DONE) == ["U0KITCHEN"]


async def test_a_full_pin_list_is_answered_with_what_to_do(tmp_path):
    async with fleet(tmp_path) as f:
        for i in range(100):
            note = await f.alice.chat_postMessage(channel=f.home, text=f"note {i}")
            await f.alice.pins_add(channel=f.home, timestamp=note["ts"])
        ts = await f.say("turn on the hall light")
        texts = await f.answered(ts)
        await asyncio.sleep(1.0)
        texts = [m["text"] for m in await f.replies(ts)]
        assert len(texts) == 1 and "100 pinned messages" in texts[0]
        assert f.actions() == []


async def test_slow_devices_keep_the_lease_and_nobody_takes_over(tmp_path):
    slow = (
        "  slow one: {kind: switch, driver: counter, delay_s: 1.5}\n"
        "  slow two: {kind: switch, driver: counter, delay_s: 1.5}\n"
        "  slow three: {kind: switch, driver: counter, delay_s: 1.5}\n"
    )
    scene = "scenes:\n  slow start: {slow one: on, slow two: on, slow three: on}\n"
    async with fleet(
        tmp_path, slackmq=FAST, devices=DEVICES.replace("areas:", slow + "areas:"), extra=scene
    ) as f:
        ts = await f.say("slow start")
        await f.until(lambda: len(f.actions()) >= 3, 20, "3 slow actions")
        await asyncio.sleep(2.0)
        assert Counter(a["device"] for a in f.actions()) == {
            "slow one": 1,
            "slow two": 1,
            "slow three": 1,
        }
        assert TAKEOVER not in await f.reactions(ts)


async def test_a_late_action_never_overrides_a_newer_command_on_the_same_device(tmp_path):
    async with fleet(tmp_path, slackmq=FAST) as f:
        older = await f.say("good morning")  # its ts stands for a command held up (a takeover)
        newer = await f.say("turn off the porch switch")
        await f.answered(newer)
        await f.until(lambda: f.reactions(newer), 10, "the newer command's done mark")
        bot = f.bots["garage-pi"]
        bot._newest.clear()  # as if it had been down while the newer command acted
        held = Event("message", f.home, older, user="U0ALICE", text="turn on the porch switch")
        lines = await bot._act(held, [Action("porch switch", "on")], takeover=True)
        at = bot._local_time(newer)
        assert lines == [
            f"I did not change the porch switch: the newer command at {at} already did."
        ]
        assert [a["op"] for a in f.actions() if a["device"] == "porch switch"] == ["off"]
        # A device no newer command touched is still acted on, late or not.
        lines = await bot._act(held, [Action("hall light", "on")], takeover=True)
        assert lines == ["Turned on the hall light."]
