"""Three bot processes against the local workspace: each device action exactly once."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack

import pytest
from fleetkit import USER_OF, bus_section, house
from mqttkit import mosquitto_broker

WORKLOAD = {
    "turn on the hall light": {"hall light"},
    "turn off the porch switch": {"porch switch"},
    "turn on the kitchen lamp": {"kitchen lamp"},
    "lights off": {"kitchen lamp", "hall light", "garage light"},
    "turn on the garage light": {"garage light"},
    "set the hall light to 40%": {"hall light"},
}


def _run_workload(h, n: int) -> dict[str, set[str]]:
    texts = list(WORKLOAD)
    sent = {}
    for i in range(n):
        text = texts[i % len(texts)]
        sent[h.say(text)] = WORKLOAD[text]
        time.sleep(0.05)
    expected = sum(len(d) for d in sent.values())
    h.wait_for(lambda: len(h.actions()) >= expected, 120, f"{expected} device actions")
    return sent


def _assert_exactly_once(h, sent: dict[str, set[str]], *, shared_user: bool = False) -> None:
    per = h.per_command()
    assert all(count == 1 for count in per.values()), [k for k, c in per.items() if c > 1]
    for ts, devices in sent.items():
        assert {d for (t, d) in per if t == ts} == devices, ts
    for ts in sent:
        acting = {a["bot"] for a in h.actions() if a.get("ts") == ts}
        h.wait_for(lambda ts=ts, acting=acting: len(h.replies(ts)) >= len(acting), 30, "replies")
        replies = h.replies(ts)
        assert len(replies) == len(acting), (ts, replies, acting)
        if not shared_user:
            assert {r["user"] for r in replies} == {USER_OF[b] for b in acting}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["app-per-bot", "rtm"])
def test_fifty_commands_each_device_action_once(tmp_path, mode):
    with house(tmp_path, mode) as h:
        sent = _run_workload(h, 50)
        time.sleep(1.5)  # settle: a duplicate would have to show up within the stagger
        _assert_exactly_once(h, sent, shared_user=mode != "app-per-bot")
        assert len(h.actions()) == sum(len(d) for d in sent.values())


@pytest.mark.timeout(180)
def test_claimer_killed_right_after_claim_is_taken_over_once(tmp_path):
    faults = {"TROUPE_FAULTS": "die-after-claim"}
    env = {bot: faults for bot in USER_OF}
    with house(tmp_path, bot_env=env) as h:
        ts = h.say("turn on the hall light")
        h.wait_for(lambda: len(h.actions()) >= 1, 30, "the takeover")
        time.sleep(1.0)
        dead = [b.name for b in h.fleet.bots.values() if not b.alive]
        assert len(dead) == 1
        assert Counter(a["device"] for a in h.actions()) == {"hall light": 1}
        taker = h.actions()[0]["bot"]
        assert taker not in dead
        h.wait_for(lambda: len(h.replies(ts)) >= 1, 30, "the takeover reply")
        assert "took over" in h.replies(ts)[0]["text"]


SEED_PLUGIN = """\
from troupe.slackmq import slackmq
from slackbot.bot import listen_to
import socket
API_TOKEN = 'SLACK-BOT-API-TOKEN'

@listen_to('hello')
def helloworld(message):
    post = slackmq(API_TOKEN, message.body['channel'], message.body['ts'])
    if post.ack():
        message.send('Hello from {}.'.format(socket.gethostname()))
        post.unack()
"""


@pytest.mark.compat
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["app-per-bot", "shared-app", "rtm"])
def test_seed_plugin_says_hello_once_per_hello(tmp_path, monkeypatch, mode):
    (tmp_path / "seedhello.py").write_text(SEED_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with ExitStack() as stack:
        mqtt = ""
        if mode == "shared-app":  # the owned devices of the test house need the bus
            broker = mosquitto_broker()
            stack.callback(broker.stop)
            mqtt = bus_section(tmp_path, broker.port)
        h = stack.enter_context(house(tmp_path, mode, plugins="[seedhello]", mqtt=mqtt))
        sent = [h.say("hello") for _ in range(5)]
        channel = h.channel_id()

        def hellos() -> list[dict]:
            history = h.alice.conversations_history(channel=channel, limit=200)["messages"]
            return [m for m in history if m.get("text", "").startswith("Hello from ")]

        h.wait_for(lambda: len(hellos()) >= len(sent), 60, "five hellos")
        time.sleep(1.0)
        assert len(hellos()) == len(sent)
