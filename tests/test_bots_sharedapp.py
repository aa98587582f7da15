"""shared-app mode: one Socket Mode app for three bots, owned parts relayed over MQTT."""

from __future__ import annotations

import time

import pytest
from fleetkit import bus_section, house
from mqttkit import mosquitto_broker
from test_bots import _assert_exactly_once, _run_workload


@pytest.mark.timeout(300)
def test_shared_app_with_a_real_mosquitto_bus_acts_once_per_device(tmp_path):
    broker = mosquitto_broker()
    try:
        mqtt = bus_section(tmp_path, broker.port)
        with house(tmp_path, "shared-app", mqtt=mqtt) as h:
            sent = _run_workload(h, 50)
            time.sleep(1.5)
            _assert_exactly_once(h, sent, shared_user=True)
            # Slack handed each event to one connection: the owned parts came by relay.
            relayed = {a["bot"] for a in h.actions() if a["device"] == "garage light"}
            assert relayed == {"garage-pi"}
    finally:
        broker.stop()


@pytest.mark.timeout(180)
def test_roll_call_reaches_every_bot_through_the_bus(tmp_path):
    broker = mosquitto_broker()
    try:
        mqtt = bus_section(tmp_path, broker.port)
        with house(tmp_path, "shared-app", mqtt=mqtt) as h:
            ts = h.say("roll call")
            h.wait_for(lambda: len(h.replies(ts)) >= 3, 30, "three roll-call answers")
            time.sleep(1.0)
            names = sorted(r["text"].split(" on ")[0] for r in h.replies(ts))
            assert names == ["garage-pi", "hall-pi", "kitchen-pi"]
    finally:
        broker.stop()
