"""Exactly once in a real home where Slack's own rules matter: wrong Pi clocks learnt from
Slack's answers, lost claim answers, 429s, people's marks, a full pin list, through the real
pipeline (bots in this loop, a real workspace, real slack_sdk and SlackMQ). What the
pipeline decides by itself is tested in-process (tests/test_pipeline.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from pipekit import USER_OF, fleet

from troupe.bot import Bot
from troupe.federation import rank
from troupe.slackmq import DONE, TAKEOVER

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


async def test_429_on_the_claim_waits_and_retries(tmp_path):
    async with fleet(tmp_path) as f:
        f.ws.control("fail", method="pins.add", status=429, count=3, retry_after=1)
        sent = []
        for i in range(4):
            text = ("turn on the hall light", "turn off the porch switch")[i % 2]
            sent.append(await f.say(text))
            await asyncio.sleep(0.1)
        await f.until(lambda: len(f.actions()) >= 4, 60, "4 actions")
        await asyncio.sleep(1.5)
        assert Counter(a["ts"] for a in f.actions()) == dict.fromkeys(sent, 1)
        limited = f.ws.control("counters")["http_429"]
        assert sum(v.get("pins.add", 0) for v in limited.values()) == 3


async def test_a_claim_and_a_ballot_both_refused_still_get_one_answer(tmp_path):
    """Slack keeps failing the claim and the ballot (its 5xx, past every retry): the
    first-ranked bot (no Slack call decides it) answers once, and nothing acts."""
    async with fleet(tmp_path) as f:
        for method in ("pins.add", "reactions.add"):
            f.ws.control("fail", method=method, status=503, count=1000)
        ts = await f.say("turn on the hall light")
        await f.answered(ts, timeout=30)
        await asyncio.sleep(2.0)
        texts = [m["text"] for m in await f.replies(ts)]
        assert len(texts) == 1 and "I could not take this command" in texts[0], texts
        assert f.actions() == []
