"""shared-app mode: one Socket Mode app for three bots, owned parts relayed over MQTT."""

from __future__ import annotations

import time

import pytest
from fleetkit import BOTS, bus_section, house
from mqttkit import mosquitto_broker
from test_bots import _assert_exactly_once, _run_workload
from test_bots_faults import _settle_and_check

from troupe.bot import TOOK_OVER


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


def _socket_mode_connections(h) -> int:
    return h.ws.control("connections")["apps"]["A0TROUPE"]["socket_mode"]


@pytest.mark.timeout(240)
def test_shared_app_catches_up_on_a_command_slack_could_not_hand_to_any_connection(tmp_path):
    """Every connection of the shared app is down (the home's router restarting) when a
    command is posted: Slack's retry 3 s later finds none either, and its next comes a
    minute later, stale. The bots read back once they are connected again, and the
    command acts once, within the stale limit: like a redelivery, after a lease (the
    message's first receiver may live and hold it unseen) and the ballot."""
    broker = mosquitto_broker()
    timings = "{stale_s: 30, lease_s: 6, stagger_s: 0.3, linger_s: 45}"
    try:
        mqtt = bus_section(tmp_path, broker.port)
        with house(tmp_path, "shared-app", mqtt=mqtt, slackmq=timings) as h:
            h.ws.control("fail", method="apps.connections.open", status=503, count=100_000)
            assert h.ws.control("drop", app="troupe")["dropped"] == len(BOTS)
            ts = h.say("turn on the hall light")
            time.sleep(7)  # past the post and its first retry: both found no connection
            assert _socket_mode_connections(h) == 0 and h.actions() == []
            h.ws.workspace.faults.fail.clear()
            h.wait_for(lambda: _socket_mode_connections(h) == len(BOTS), 60, "reconnects")
            h.wait_for(lambda: h.actions(), 20, "the command to act (Slack retries at 66 s)")
            _settle_and_check(h, {ts: {"hall light"}})
            # One answer; the taker cannot tell a receiver that died from none at all.
            answer = f"{TOOK_OVER}\nTurned on the hall light."
            assert [r["text"] for r in h.replies(ts)] == [answer]
    finally:
        broker.stop()
