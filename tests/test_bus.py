"""The MQTT bus between bots: only sealed, fresh, first-seen relays reach a bot, against a
real mosquitto; refusals are logged once per sender; the bot's confirm has the last word."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import mqttkit
import paho.mqtt.client as mqtt
import pytest
from mqttkit import mosquitto_broker
from paho.mqtt.enums import CallbackAPIVersion

from troupe.bus import Bus, BusError, seal

pytest_plugins = ("mqttkit",)

KEY = "the-federation-bus-key"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bus key and the bots' broker passwords, where the federation file points."""
    monkeypatch.setenv("TEST_BUS_KEY", KEY)
    monkeypatch.setenv("TEST_KITCHEN_PASSWORD", PASSWORDS["kitchen-pi"])


def _event(text: str = "turn on the garage light", age_s: float = 0.0) -> dict[str, Any]:
    ts = f"{time.time() - age_s:.6f}"
    return {"type": "message", "channel": "C0HOME", "ts": ts, "user": "U0ALICE", "text": text}


def _bus(broker, name: str, key: str | None = "env:TEST_BUS_KEY") -> Bus:
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": broker.port}
    if key is not None:
        settings["bus_key"] = key
    return Bus("test", name, settings, connect_timeout=5)


def _intruder(broker) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _started(bus: Bus, got: list, confirm: Callable[..., Awaitable[bool]] | None = None):
    async def deliver(message: dict[str, Any]) -> None:
        got.append(message)

    await bus.start(deliver, confirm)


async def test_a_sealed_relay_passes_and_forged_stale_or_replayed_ones_are_refused(broker, caplog):
    kitchen, hall = _bus(broker, "kitchen-pi"), _bus(broker, "hall-pi")
    got: list[dict[str, Any]] = []
    await _started(kitchen, got)
    await _started(hall, [])
    intruder = _intruder(broker)
    try:
        await hall.relay("kitchen-pi", {"kind": "owned", "event": _event()})
        await _until(lambda: len(got) == 1, "the sealed relay")
        assert got[0]["kind"] == "owned" and got[0]["event"]["user"] == "U0ALICE"

        inbox = kitchen.inbox("kitchen-pi", "mallory")
        now = time.time()
        body = {"kind": "owned", "event": _event()}
        good = seal(KEY.encode(), "mallory", "kitchen-pi", body, now)
        forged = [
            {"kind": "owned", "event": _event()},  # the old, unsealed format
            seal(b"a guessed key", "mallory", "kitchen-pi", body, now),
            seal(KEY.encode(), "mallory", "kitchen-pi", body, now - 120),  # sent long ago
            seal(
                KEY.encode(),
                "mallory",
                "kitchen-pi",
                {"kind": "owned", "event": _event(age_s=120)},
                now,
            ),  # about an old message
            seal(KEY.encode(), "hall-pi", "kitchen-pi", body, now),  # not who the topic says
            seal(KEY.encode(), "mallory", "garage-pi", body, now),  # for another bot
            {**good, "mac": "é" * 64},  # not even hex
            good,
            good,  # a replay
        ]
        with caplog.at_level(logging.WARNING, logger="troupe.bus"):
            for envelope in forged:
                intruder.publish(inbox, json.dumps(envelope), qos=1).wait_for_publish(5)
            intruder.publish(inbox, b"not json", qos=1).wait_for_publish(5)
            await _until(lambda: kitchen.refused["mallory"] == 9, "nine refusals")
        assert len(got) == 2 and got[1] == body  # the one good relay, once
        logged = [r.getMessage() for r in caplog.records if "refused a relay" in r.getMessage()]
        assert len(logged) == 1 and "'mallory'" in logged[0]
        assert "not sealed with the bus key" in logged[0]
        assert KEY not in caplog.text
    finally:
        intruder.loop_stop()
        intruder.disconnect()
        await kitchen.stop()
        await hall.stop()


async def test_a_relay_slack_does_not_confirm_is_not_acted_on(broker):
    asked: list[dict[str, Any]] = []

    async def confirm(body: dict[str, Any]) -> bool:
        asked.append(body)
        return body["event"]["text"] == "real"

    kitchen, hall = _bus(broker, "kitchen-pi"), _bus(broker, "hall-pi")
    got: list[dict[str, Any]] = []
    await _started(kitchen, got, confirm)
    await _started(hall, [])
    try:
        await hall.relay("kitchen-pi", {"kind": "owned", "event": _event("made up")})
        await hall.relay("kitchen-pi", {"kind": "owned", "event": _event("real")})
        await _until(lambda: len(asked) == 2, "two confirmations")
        await _until(lambda: len(got) == 1, "the confirmed relay")
        assert got[0]["event"]["text"] == "real"
        assert hall.refused == {} and kitchen.refused == {"hall-pi": 1}
    finally:
        await kitchen.stop()
        await hall.stop()


async def test_a_sealed_notice_reaches_its_handler_unconfirmed_and_a_forged_one_does_not(broker):
    """A notice (a peer's late action under way) only makes a bot wait: it is taken on its
    seal, about a command older than the relay window too, with no Slack read; a relay
    is still confirmed, and an unsealed notice is refused like an unsealed relay."""
    asked: list[dict[str, Any]] = []

    async def confirm(body: dict[str, Any]) -> bool:
        asked.append(body)
        return True

    noticed: list[dict[str, Any]] = []

    async def on_notice(notice: dict[str, Any]) -> None:
        noticed.append(notice)

    kitchen, hall = _bus(broker, "kitchen-pi"), _bus(broker, "hall-pi")
    await kitchen.start(lambda _body: asyncio.sleep(0), confirm, on_notice)
    await _started(hall, [])
    intruder = _intruder(broker)
    try:
        old = f"{time.time() - 120:.6f}"  # a command older than the relay window
        notice = {"late": "start", "channel": "C0HOME", "ts": old, "devices": ["plug"]}
        await hall.notify("kitchen-pi", notice)
        await _until(lambda: len(noticed) == 1, "the notice")
        assert noticed == [notice] and asked == []
        inbox = kitchen.inbox("kitchen-pi", "mallory")
        unsealed = {"from": "mallory", "to": "kitchen-pi", "body": {"notice": notice}}
        intruder.publish(inbox, json.dumps(unsealed), qos=1).wait_for_publish(5)
        await _until(lambda: kitchen.refused["mallory"] == 1, "the refusal")
        await hall.relay("kitchen-pi", {"kind": "owned", "event": _event()})
        await _until(lambda: len(asked) == 1, "the relay's confirmation")
        assert len(noticed) == 1
    finally:
        intruder.loop_stop()
        intruder.disconnect()
        await kitchen.stop()
        await hall.stop()


async def test_a_bus_without_a_key_does_not_start(broker):
    bus = _bus(broker, "kitchen-pi", key=None)
    with pytest.raises(BusError, match=r"set mqtt\.bus_key to env:NAME or file:PATH"):
        await _started(bus, [])


ACL = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.acl"
PASSWORDS = {"kitchen-pi": "k-pass", "hall-pi": "h-pass"}


def _client(broker, user: str | None, got: list | None = None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{user}")
    if user is not None:
        client.username_pw_set(user, PASSWORDS[user])
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    if got is not None:
        client.on_message = lambda _c, _u, msg: got.append(msg.topic)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    assert connected.wait(5)
    return client


async def test_the_shipped_broker_acl_lets_a_bot_write_the_bus_only_as_itself():
    broker = mosquitto_broker(users=PASSWORDS, acl=ACL)
    settings = {"host": "127.0.0.1", "port": broker.port, "bus_key": "env:TEST_BUS_KEY"}
    settings["username"] = "{bot}"
    kitchen = Bus("test", "kitchen-pi", {**settings, "password": "env:TEST_KITCHEN_PASSWORD"})
    got: list[dict[str, Any]] = []
    spied: list[str] = []
    hall = spy = None
    try:
        with pytest.raises(BusError):  # no password, no bus
            await Bus("test", "hall-pi", settings, connect_timeout=1).start(_no_deliver)
        await _started(kitchen, got)
        # hall-pi, with the bus key (say it leaked), tries to speak as garage-pi and to
        # read kitchen-pi's inbox: the broker drops both.
        hall = _client(broker, "hall-pi")
        spy = _client(broker, "hall-pi", spied)
        spy.subscribe(kitchen.inbox("kitchen-pi"), qos=1)
        body = {"kind": "owned", "event": _event()}
        as_garage = seal(KEY.encode(), "garage-pi", "kitchen-pi", body, time.time())
        hall.publish(kitchen.inbox("kitchen-pi", "garage-pi"), json.dumps(as_garage), qos=1)
        as_hall = seal(KEY.encode(), "hall-pi", "kitchen-pi", body, time.time())
        hall.publish(kitchen.inbox("kitchen-pi", "hall-pi"), json.dumps(as_hall), qos=1)
        await _until(lambda: len(got) == 1, "hall-pi's relay under its own name")
        await asyncio.sleep(0.3)
        assert got == [body] and kitchen.refused == {} and spied == []
    finally:
        for client in (hall, spy):
            if client is not None:
                client.loop_stop()
                client.disconnect()
        await kitchen.stop()
        broker.stop()


async def _no_deliver(_message: dict[str, Any]) -> None:
    raise AssertionError("nothing may be delivered")


def _sealed(bus: Bus, sender: str, to: str, body: Any, sent: float, **change: Any) -> bytes:
    envelope = seal(KEY.encode(), sender, to, body, sent)
    envelope.update(change)
    return json.dumps(envelope).encode()


def test_unseal_takes_only_a_sealed_fresh_first_seen_relay_and_says_why_not() -> None:
    """No broker: the envelope rules, one refusal reason each."""
    settings = {"host": "127.0.0.1", "bus_key": "env:TEST_BUS_KEY"}
    hall = Bus("test", "hall-pi", settings, window_s=30)
    hall._key = KEY.encode()  # what start() reads from bus_key
    now = time.time()
    topic = hall.inbox("hall-pi", "kitchen-pi")
    body = {"kind": "owned", "event": {**_event(), "ts": f"{now:.6f}"}}
    good = _sealed(hall, "kitchen-pi", "hall-pi", body, now)
    assert hall.unseal(topic, good, now + 1) == (body, "")
    assert hall.unseal(topic, good, now + 2) == (None, "a replay of a relay already taken")
    forged = json.dumps({**json.loads(good), "body": {"kind": "each"}}).encode()
    old_event = {**body, "event": {**body["event"], "ts": f"{now - 60:.6f}"}}
    cases = {
        b"not json": "not JSON",
        b"[1, 2]": "not sealed with the bus key",
        forged: "its seal does not match the bus key",
        _sealed(hall, "garage-pi", "hall-pi", body, now): (
            "sealed for another sender or recipient than its topic names"
        ),
        _sealed(hall, "kitchen-pi", "garage-pi", body, now): (
            "sealed for another sender or recipient than its topic names"
        ),
        _sealed(hall, "kitchen-pi", "hall-pi", body, now - 31): "sent outside the 30 s window",
        _sealed(hall, "kitchen-pi", "hall-pi", old_event, now): (
            "about a Slack message outside the 30 s window"
        ),
        _sealed(hall, "kitchen-pi", "hall-pi", {"kind": "owned"}, now): (
            "about a Slack message outside the 30 s window"
        ),
    }
    for payload, why in cases.items():
        assert hall.unseal(topic, payload, now) == (None, why), payload
    # A relay as old as the window allows is taken; the window is read on Slack's clock.
    hall.clock = lambda: now + 29
    later = _sealed(hall, "kitchen-pi", "hall-pi", body, now + 0.5)
    assert hall.unseal(topic, later) == (body, "")


async def test_a_broker_nobody_listens_on_is_one_sentence() -> None:
    import socket

    with socket.socket() as probe:  # a free loopback port, closed again: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {"host": "127.0.0.1", "port": port, "bus_key": "env:TEST_BUS_KEY"}
    bus = Bus("test", "hall-pi", settings, connect_timeout=1)
    with pytest.raises(BusError) as err:
        await bus.start(_no_deliver)
    assert str(err.value) == (
        f"the MQTT bus at 127.0.0.1:{port} did not accept the connection; "
        "start the broker or fix mqtt: in the federation file"
    )


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_the_bus_honours_tls_its_ca_file_and_the_protocol(tmp_path: Path, protocol: str):
    files = await asyncio.to_thread(mqttkit.make_tls_files, tmp_path)
    server = mqttkit.TlsFiles(files.certfile, files.keyfile)
    broker = await asyncio.to_thread(mosquitto_broker, tls=server)
    settings = {"host": "127.0.0.1", "port": broker.port, "bus_key": "env:TEST_BUS_KEY"}
    settings |= {"tls": True, "ca_file": str(files.cafile), "protocol": protocol}
    kitchen = Bus("test", "kitchen-pi", settings, connect_timeout=5)
    hall = Bus("test", "hall-pi", settings, connect_timeout=5)
    got: list[dict[str, Any]] = []
    try:
        await _started(kitchen, got)  # the test CA signed the broker's certificate
        await _started(hall, [])
        expected = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        assert kitchen._client._paho.protocol == expected
        await hall.relay("kitchen-pi", {"kind": "owned", "event": _event()})
        await _until(lambda: len(got) == 1, "the relay over TLS")
        # the system's CAs do not know the test CA: no bus, one sentence
        untrusted = Bus("test", "garage-pi", settings | {"ca_file": None}, connect_timeout=1)
        with pytest.raises(BusError, match="did not accept the connection"):
            await _started(untrusted, [])
    finally:
        await kitchen.stop()
        await hall.stop()
        broker.stop()
