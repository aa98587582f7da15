"""End to end on the demo house: three bot processes, the Hue bridge simulator, MQTT
devices on a real broker and GPIO relays on gpiozero's MockFactory."""

from __future__ import annotations

import sqlite3
import time

import pytest
from slack_sdk import WebClient

from troupe.devkit.demo import BOTS, demo_house
from troupe.devkit.workspace.config import demo_config


class Chat:
    def __init__(self, house) -> None:
        self.house = house
        self.alice = WebClient("xoxp-alice", base_url=house.workspace.api_url)

    def ask(self, text: str, answers: int = 1, settle: float = 0.0) -> list[str]:
        """Post as alice; wait for at least `answers` replies (then `settle` s for more)."""
        ts = self.alice.chat_postMessage(channel="#home", text=text)["ts"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(self.replies(ts)) >= answers:
                time.sleep(settle)
                return self.replies(ts)
            time.sleep(0.1)
        raise AssertionError(f"no answer to {text!r}: {self.replies(ts)}")

    def replies(self, ts: str) -> list[str]:
        msgs = self.alice.conversations_replies(channel="C0HOME", ts=ts)["messages"]
        return [m["text"] for m in msgs if m["ts"] != ts]

    def gpio_actions(self, device: str) -> list[str]:
        ops = []
        for bot in BOTS:
            path = self.house.workdir / f"{bot}.journal.sqlite3"
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            rows = db.execute(
                "SELECT action FROM actions WHERE device = ? AND status = 'done' ORDER BY at",
                (device,),
            ).fetchall()
            db.close()
            ops += [r[0] for r in rows]
        return ops


def _power_commands(device) -> list[str]:
    return [c.text for c in device.commands if c.text.upper() in ("ON", "OFF", "TOGGLE")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_the_house_does_each_thing_once_and_answers_in_the_thread(tmp_path, monkeypatch, broker):
    if broker == "amqtt":  # the embedded broker `make demo` uses without mosquitto
        monkeypatch.setenv("TROUPE_MOSQUITTO", str(tmp_path / "no-mosquitto-here"))
    config = demo_config().model_copy(update={"rate_limits": 10.0})
    # Without the demo's dusk automation: timers run 60 times faster here, so within the
    # hour before dusk in Paris it turned the porch switch on during the test.
    scaled = {"TROUPE_TIMER_SCALE": "60"}
    with demo_house(tmp_path, config=config, bot_env=scaled, automations=False) as house:
        assert house.broker.kind == broker
        chat = Chat(house)
        hue = house.bridge.model

        assert chat.ask("turn on the kitchen lights") == ["Turned on the kitchen lamp."]
        assert chat.gpio_actions("kitchen lamp") == ["on"]

        assert chat.ask("set the hall light to 30%") == ["Set the hall light to 30%."]
        assert [c["change"].get("bri") for c in hue.changes("1")] == [76]

        assert chat.ask("turn the hall light warm white") == ["Set the hall light to 2700 K."]
        assert hue.changes("1")[-1]["change"].get("ct") == 370
        assert len(hue.changes("1")) == 2

        # kitchen-pi answers for its own lamp, unless it claimed the rest too: two answers
        # or one, so the ask waits a little for a second one.
        movie = "\n".join(chat.ask("movie mode", settle=1.5))
        assert "Set the hall light to 20%." in movie
        assert "Turned off the living room lamp." in movie
        assert "Turned off the kitchen lamp." in movie
        assert len(hue.changes("1")) == 3 and len(hue.changes("2")) == 1
        assert chat.gpio_actions("kitchen lamp") == ["on", "off"]

        assert chat.ask("is the porch switch on") == ["The porch switch is off."]
        assert _power_commands(house.tasmota) == []
        assert chat.ask("turn on the porch switch") == ["Turned on the porch switch."]
        assert _power_commands(house.tasmota) == ["ON"]
        assert chat.ask("is the porch switch on") == ["The porch switch is on."]

        fan = chat.ask("turn on the kitchen fan for 1 minute", answers=2)
        assert fan == [
            "Turned on the kitchen fan for 1 minute.",
            "Turned off the kitchen fan (its time was up).",
        ]
        assert chat.gpio_actions("kitchen fan") == ["on", "off"]

        # kitchen-pi and garage-pi answer for their own relays; one claimer for the rest
        status = "\n".join(chat.ask("status", answers=2, settle=1.0))
        assert "The hall light is on, 20%" in status
        assert "The porch switch is on." in status
        assert "The kitchen fan is off." in status
        assert "The kitchen lamp is off." in status

        time.sleep(1.0)  # a duplicate would show up within the stagger
        assert len(hue.changes("1")) == 3 and len(hue.changes("2")) == 1
        assert _power_commands(house.tasmota) == ["ON"]
        assert chat.gpio_actions("kitchen lamp") == ["on", "off"]
