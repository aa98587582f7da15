"""The built-in commands and timed actions, through three bot processes."""

from __future__ import annotations

import time

import pytest
from fleetkit import BOTS, house

SCALE = {"TROUPE_TIMER_SCALE": "60"}  # "for 1 minute" lasts one second


def _texts(h, ts: str) -> list[str]:
    return [r["text"] for r in h.replies(ts)]


@pytest.mark.timeout(240)
def test_help_devices_status_history_and_roll_call(tmp_path):
    with house(tmp_path) as h:
        on = h.say("turn on the hall light")
        h.wait_for(lambda: len(h.actions()) >= 1, 30, "the hall light")
        asks = {text: h.say(text) for text in ("help", "devices", "status", "history hall light")}
        roll = h.say("roll call")
        h.wait_for(lambda: all(h.replies(ts) for ts in asks.values()), 30, "answers")
        h.wait_for(lambda: len(h.replies(roll)) >= 3, 30, "three roll-call answers")
        time.sleep(1.0)
        assert len(h.replies(asks["help"])) == 1
        assert "hall light" in _texts(h, asks["help"])[0]
        assert "*Devices:*" in _texts(h, asks["help"])[0]
        assert len(h.replies(asks["devices"])) == 1
        listing = _texts(h, asks["devices"])[0]
        assert "kitchen lamp (light, kitchen) — counter, kitchen-pi" in listing
        status = "\n".join(_texts(h, asks["status"]))
        for device in ("kitchen lamp", "garage light", "hall light", "porch switch"):
            assert f"The {device} is" in status
        assert "The hall light is on." in status
        history = _texts(h, asks["history hall light"])
        assert len(history) == 1  # one bot answers for the whole fleet
        assert history[0].startswith("What the fleet did to the hall light, newest first:")
        assert "“turn on the hall light” — asked by <@U0ALICE>" in history[0]
        assert sorted(t.split(" on ")[0] for t in _texts(h, roll)) == sorted(BOTS)
        assert h.replies(on)


@pytest.mark.timeout(180)
def test_timed_action_undoes_itself_and_a_later_command_cancels_it(tmp_path):
    env = {bot: SCALE for bot in BOTS}
    with house(tmp_path, bot_env=env) as h:
        ts = h.say("turn on the hall light for 1 minute")
        h.wait_for(lambda: len(h.actions()) >= 2, 30, "on, then off when the minute is up")
        ops = [(a["device"], a["op"]) for a in h.actions()]
        assert ops == [("hall light", "on"), ("hall light", "off")]
        h.wait_for(lambda: len(h.replies(ts)) >= 2, 30, "the timer's answer")
        texts = _texts(h, ts)
        assert texts[0] == "Turned on the hall light for 1 minute."
        assert texts[1] == "Turned off the hall light (its time was up)."

        cancel = h.say("turn on the porch switch for 2 minutes")
        h.wait_for(lambda: len(h.actions()) >= 3, 30, "the porch switch on")
        h.say("turn on the porch switch")
        h.wait_for(lambda: len(h.actions()) >= 4, 30, "the second command")
        time.sleep(3.0)  # two scaled minutes: a timer left running would have fired
        porch = [a["op"] for a in h.actions() if a["device"] == "porch switch"]
        assert porch == ["on", "on"]
        assert len(h.replies(cancel)) == 1
