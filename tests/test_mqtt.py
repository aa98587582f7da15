"""MQTT on a real mosquitto: the broker helper, the simulated devices, the mqtt driver."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import mqttkit
import paho.mqtt.client as mqtt
import pytest
from drivekit import act
from fleetkit import House, write_federation
from mqttkit import Watcher, mosquitto_broker, mqtt_driver, powered, until
from slack_sdk import WebClient

import troupe.plugins.mqtt.driver as mqtt_plugin
from troupe.devkit.fleet import Fleet
from troupe.devkit.workspace.config import demo_config
from troupe.devkit.workspace.testing import running_workspace
from troupe.federation import Action
from troupe.hardware.broker import Broker, BrokerError, TlsFiles, free_port, start_broker
from troupe.hardware.mqtt import ShellyPlus1, TasmotaPlug, Zigbee2Mqtt
from troupe.plugin import DeviceState, DriverError, resend_check
from troupe.plugins.mqtt import MqttDriver
from troupe.secrets import Secret

pytest_plugins = ("mqttkit",)

PLUG = {"protocol": "tasmota", "topic": "porch", "confirm_s": 1}
BULB = {"protocol": "zigbee2mqtt", "topic": "hall bulb", "confirm_s": 1}
RELAY = {"protocol": "shelly", "topic": "shellyplus1-garage", "confirm_s": 1}


def do(device: str, op: str, **args: Any) -> Action:
    return Action(device, op, tuple(sorted(args.items())))


def tasmota(broker: Broker, topic: str = "porch", **kwargs: Any) -> TasmotaPlug:
    return TasmotaPlug(topic, broker.host, broker.port, **kwargs)


def zigbee(broker: Broker, *names: str) -> Zigbee2Mqtt:
    return Zigbee2Mqtt(broker.host, broker.port, names or ("hall bulb",))


def shelly(broker: Broker, prefix: str = "shellyplus1-garage") -> ShellyPlus1:
    return ShellyPlus1(prefix, broker.host, broker.port)


def _texts(watcher: Watcher, topic: str) -> list[str]:
    return [seen.text for seen in watcher.on(topic)]


# the broker ---------------------------------------------------------------------------------


def test_broker_serves_and_restarts_on_the_same_port(broker: Broker) -> None:
    assert (broker.kind, broker.mqtt5, broker.running) == ("mosquitto", True, True)
    port = broker.port
    first = Watcher(broker, "t/#")
    first.publish("t/kept", "1", retain=True)
    first.wait_for(lambda seen: any(s.topic == "t/kept" for s in seen))
    first.close()

    broker.restart()
    assert (broker.port, broker.running) == (port, True)
    second = Watcher(broker, "t/#")
    second.publish("t/after", "2")
    second.wait_for(lambda seen: any(s.topic == "t/after" for s in seen))
    assert second.on("t/kept") == []  # no persistence: a restart forgets retained messages
    second.close()

    broker.stop()
    assert not broker.running
    with pytest.raises(OSError):
        socket.create_connection((broker.host, port), timeout=2).close()


def test_start_broker_says_when_mosquitto_is_required_but_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TROUPE_MOSQUITTO", "/nonexistent/mosquitto")
    with pytest.raises(BrokerError, match="mosquitto is not installed"):
        start_broker(embedded=False)


def test_missing_mosquitto_fails_on_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqttkit, "find_mosquitto", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="mosquitto is not installed"):
        mosquitto_broker()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        mosquitto_broker()


def test_broker_reports_a_process_that_will_not_start(tmp_path: Any) -> None:
    bogus = TlsFiles(certfile=tmp_path / "missing.crt", keyfile=tmp_path / "missing.key")
    with pytest.raises(BrokerError, match="exited with code"):
        mosquitto_broker(tls=bogus)


@pytest.mark.compat
async def test_embedded_broker_serves_the_driver_over_mqtt_3_1_1() -> None:
    mqttkit.require_amqtt()
    broker = await asyncio.to_thread(start_broker, embedded=True)
    try:
        assert (broker.kind, broker.mqtt5) == ("amqtt", False)
        port = broker.port
        with powered(tasmota(broker)) as plug:
            async with mqtt_driver(broker, {"porch switch": PLUG}, protocol="3.1.1") as driver:
                assert await act(driver, do("porch switch", "on")) == ("turned on the porch switch")
                await asyncio.to_thread(broker.restart)
                assert broker.port == port
                await until(lambda: driver.connected and plug.connection.connected, 20)
                await until(lambda: driver.devices["porch switch"].available is True, 10)
                assert await act(driver, do("porch switch", "off")) == (
                    "turned off the porch switch"
                )
            assert plug.history == [False, True, False]
    finally:
        broker.stop()


# the simulated devices --------------------------------------------------------------------


def test_tasmota_plug_answers_as_tasmota_does(broker: Broker, watcher: Watcher) -> None:
    with powered(tasmota(broker)) as plug:
        watcher.wait_for(lambda _: _texts(watcher, "tele/porch/LWT") == ["Online"])
        for payload in ("ON", "", "toggle", "2", "bogus"):
            watcher.publish("cmnd/porch/POWER", payload)
        watcher.wait_for(lambda _: len(watcher.on("stat/porch/RESULT")) == 5)
        results = [json.loads(s.payload) for s in watcher.on("stat/porch/RESULT")]
        assert results == [
            {"POWER": "ON"},
            {"POWER": "ON"},
            {"POWER": "OFF"},
            {"POWER": "ON"},
            {"Command": "Error"},
        ]
        watcher.wait_for(lambda _: len(watcher.on("stat/porch/POWER")) == 4)
        assert _texts(watcher, "stat/porch/POWER") == ["ON", "ON", "OFF", "ON"]
        assert [c.text for c in plug.commands] == ["ON", "", "toggle", "2", "bogus"]
        assert plug.count == 5
        assert plug.history == [False, True, False, True]

        plug.crash()
        watcher.wait_for(lambda _: _texts(watcher, "tele/porch/LWT")[-1:] == ["Offline"])
    late = Watcher(broker, "tele/porch/LWT")
    late.wait_for(lambda seen: [(s.text, s.retain) for s in seen] == [("Offline", True)])
    late.close()


def test_zigbee2mqtt_bridge_answers_as_zigbee2mqtt_does(broker: Broker, watcher: Watcher) -> None:
    with powered(zigbee(broker, "hall bulb", "desk lamp")) as bridge:
        bulb = bridge["hall bulb"]
        base = "zigbee2mqtt/hall bulb"
        watcher.wait_for(lambda _: len(watcher.on("zigbee2mqtt/bridge/devices")) == 1)
        devices = json.loads(watcher.on("zigbee2mqtt/bridge/devices")[0].payload)
        assert [d["friendly_name"] for d in devices] == ["Coordinator", "hall bulb", "desk lamp"]
        late = Watcher(broker, "zigbee2mqtt/bridge/+", f"{base}/availability")
        late.wait_for(lambda seen: len(seen) == 3)  # all three are retained
        assert all(s.retain for s in late.seen)
        assert json.loads(late.on("zigbee2mqtt/bridge/state")[0].payload) == {"state": "online"}
        assert json.loads(late.on(f"{base}/availability")[0].payload) == {"state": "online"}
        late.close()
        watcher.wait_for(lambda _: len(watcher.on(base)) == 1)  # the state at start

        watcher.publish(f"{base}/set", '{"state": "ON", "brightness": 100, "color_temp": 250}')
        watcher.wait_for(lambda _: len(watcher.on(base)) == 2)
        state = json.loads(watcher.on(base)[-1].payload)
        assert (state["state"], state["brightness"], state["color_temp"]) == ("ON", 100, 250)
        assert state["color_mode"] == "color_temp"
        watcher.publish(f"{base}/set", '{"color": {"x": 0.7, "y": 0.3}, "color_temp": 900}')
        watcher.wait_for(lambda _: len(watcher.on(base)) == 3)
        state = json.loads(watcher.on(base)[-1].payload)
        assert state["color"] == {"x": 0.7, "y": 0.3} and state["color_temp"] == 500
        watcher.publish(f"{base}/set", "OFF")  # a plain word is read as {"state": ...}
        watcher.wait_for(lambda _: len(watcher.on(base)) == 4)
        assert json.loads(watcher.on(base)[-1].payload)["state"] == "OFF"
        assert bridge["desk lamp"].count == 0

        bridge.set_available("hall bulb", False)
        watcher.wait_for(lambda _: _texts(watcher, f"{base}/availability")[-1:] == [
            '{"state": "offline"}'])  # fmt: skip
        watcher.publish(f"{base}/set", '{"state": "ON"}')
        assert bulb.wait_for_count(4)
        assert not bulb.on and len(watcher.on(base)) == 4  # an unreachable bulb does nothing

        bridge.crash()
        watcher.wait_for(
            lambda _: _texts(watcher, "zigbee2mqtt/bridge/state")[-1:] == ['{"state":"offline"}']
        )
    assert [s["state"] for s in bulb.history] == ["OFF", "ON", "ON", "OFF"]


def test_shelly_plus_1_answers_gen2_rpc(broker: Broker, watcher: Watcher) -> None:
    def rpc(rpc_id: int, method: str, **params: Any) -> str:
        return json.dumps({"id": rpc_id, "src": "tester", "method": method, "params": params})

    with powered(shelly(broker)) as relay:
        prefix = "shellyplus1-garage"
        watcher.wait_for(lambda _: _texts(watcher, f"{prefix}/online") == ["true"])
        watcher.publish(f"{prefix}/rpc", rpc(1, "Switch.Set", id=0, on=True))
        watcher.publish(f"{prefix}/rpc", rpc(2, "Switch.Toggle", id=0))
        watcher.publish(f"{prefix}/rpc", rpc(3, "Foo.Bar"))
        watcher.publish(f"{prefix}/rpc", rpc(4, "Switch.Set", id=1, on=True))
        watcher.publish(f"{prefix}/rpc", json.dumps({"id": 5, "method": "Switch.Set"}))
        watcher.wait_for(lambda _: len(watcher.on("tester/rpc")) == 4)
        answers = [json.loads(s.payload) for s in watcher.on("tester/rpc")]
        assert answers[0] == {
            "id": 1,
            "src": prefix,
            "dst": "tester",
            "result": {"was_on": False},
        }
        assert answers[1]["result"] == {"was_on": True}
        assert answers[2]["error"] == {"code": 404, "message": "No handler for Foo.Bar"}
        assert answers[3]["error"]["code"] == -105
        assert relay.wait_for_count(5)
        assert relay.history == [False, True, False]

        watcher.wait_for(lambda _: len(watcher.on(f"{prefix}/events/rpc")) == 2)
        notes = [json.loads(s.payload) for s in watcher.on(f"{prefix}/events/rpc")]
        assert [n["method"] for n in notes] == ["NotifyStatus", "NotifyStatus"]
        assert [n["params"]["switch:0"]["output"] for n in notes] == [True, False]

        relay.crash()
        watcher.wait_for(lambda _: _texts(watcher, f"{prefix}/online")[-1:] == ["false"])


# the driver: Tasmota ------------------------------------------------------------------------


@pytest.mark.compat
async def test_tasmota_plug_on_off_toggle(broker: Broker) -> None:
    with powered(tasmota(broker)) as plug:
        async with mqtt_driver(broker, {"porch switch": PLUG}) as driver:
            assert await driver.state("porch switch") == DeviceState(on=False)
            assert plug.wait_for_count(1)  # the state query at connect may still be on its way
            assert [c.text for c in plug.commands] == [""]  # the state query at connect
            assert await act(driver, do("porch switch", "on")) == ("turned on the porch switch")
            assert await act(driver, do("porch switch", "toggle")) == (
                "toggled the porch switch (now off)"
            )
            assert await act(driver, do("porch switch", "toggle")) == (
                "toggled the porch switch (now on)"
            )
            assert await act(driver, do("porch switch", "off")) == ("turned off the porch switch")
            with pytest.raises(DriverError, match=r"^the porch switch is a switch: it cannot dim"):
                await act(driver, do("porch switch", "set", brightness=50))
            assert [c.text for c in plug.commands] == ["", "ON", "TOGGLE", "TOGGLE", "OFF"]
            assert plug.history == [False, True, False, True, False]

            plug.press()  # by hand, not through troupe: the state follows the device
            await until(lambda: driver.devices["porch switch"].on is True)
            assert await driver.state("porch switch") == DeviceState(on=True)


async def test_offline_tasmota_plug_fails_at_once_and_comes_back(broker: Broker) -> None:
    plug = tasmota(broker).start()
    try:
        async with mqtt_driver(broker, {"porch switch": PLUG}) as driver:
            plug.crash()
            await until(lambda: driver.devices["porch switch"].available is False)
            sent = plug.count
            with pytest.raises(DriverError) as err:
                await act(driver, do("porch switch", "on"))
            assert str(err.value) == "the porch switch is offline"
            assert plug.count == sent
            assert await driver.state("porch switch") == DeviceState(online=False, detail="offline")

            plug.start()  # power is back: it says Online again
            await until(lambda: driver.devices["porch switch"].available is True)
            assert await act(driver, do("porch switch", "on")) == ("turned on the porch switch")
            assert plug.on
    finally:
        plug.stop()


async def test_device_that_never_confirms(broker: Broker) -> None:
    options = {**PLUG, "confirm_s": 0.5}
    with powered(tasmota(broker)) as plug:
        async with mqtt_driver(broker, {"porch switch": options}) as driver:
            plug.mute = True
            sent = plug.count
            with pytest.raises(DriverError) as err:
                await act(driver, do("porch switch", "on"))
            assert str(err.value) == "the porch switch did not confirm within 0.5 s"
            assert plug.count == sent + 1  # it got the command and said nothing


async def test_device_going_offline_ends_the_wait_for_its_confirmation(broker: Broker) -> None:
    options = {**PLUG, "confirm_s": 30}
    plug = tasmota(broker).start()
    try:
        async with mqtt_driver(broker, {"porch switch": options}) as driver:
            plug.mute = True
            waiting = asyncio.ensure_future(driver.act("porch switch", do("porch switch", "on")))
            # Published and waiting: the waiter is registered in the same step as the publish.
            await until(lambda: bool(driver.devices["porch switch"].waiters), what="the waiter")
            plug.crash()
            with pytest.raises(DriverError, match=r"^the porch switch is offline$"):
                await asyncio.wait_for(waiting, 10)
    finally:
        plug.stop()


# the driver: Zigbee2MQTT -------------------------------------------------------------------


@pytest.mark.compat
async def test_zigbee2mqtt_light_brightness_colour_and_temperature(broker: Broker) -> None:
    with powered(zigbee(broker)) as bridge:
        bulb = bridge["hall bulb"]
        async with mqtt_driver(broker, {"hall light": BULB}) as driver:
            done = await act(driver, do("hall light", "set", brightness=50, color="red"))
            assert done == "set the hall light to 50%, red"
            assert (bulb.state["state"], bulb.state["brightness"]) == ("ON", 127)
            assert bulb.state["color_mode"] == "xy"
            assert bulb.state["color"] == pytest.approx({"x": 0.6401, "y": 0.33}, abs=0.001)
            assert await driver.state("hall light") == DeviceState(
                on=True, brightness=50, color="red"
            )

            await act(driver, do("hall light", "set", temperature=2700))
            assert (bulb.state["color_temp"], bulb.state["color_mode"]) == (370, "color_temp")
            assert (await driver.state("hall light")).temperature == 2700
            await act(driver, do("hall light", "set", temperature=12000))
            assert bulb.state["color_temp"] == 153  # the bulb's coolest, from bridge/devices

            assert await act(driver, do("hall light", "set", brightness=0)) == (
                "turned off the hall light"
            )
            assert not bulb.on
            assert await act(driver, do("hall light", "toggle")) == (
                "toggled the hall light (now on)"
            )
            sent = [c.json() for c in bulb.commands]
            assert sent[0] == {"state": ""}  # the /get at connect
            assert sent[1] == {
                "state": "ON",
                "brightness": 127,
                "color": {"x": 0.6401, "y": 0.33},
            }
            assert sent[2:] == [
                {"state": "ON", "color_temp": 370},
                {"state": "ON", "color_temp": 153},
                {"state": "OFF"},
                {"state": "TOGGLE"},
            ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"brightness": 150}, "brightness must be between 0 and 100 percent, not 150"),
        ({"brightness": -1}, "brightness must be between 0 and 100 percent, not -1"),
        ({"color": "blurple"}, "I don't know the colour “blurple”; I know red, orange"),
        ({"color": "black"}, "a light cannot shine black; turn it off instead"),
        ({"color": "red", "temperature": 3000}, "a light takes a colour or a colour tempera"),
    ],
)
async def test_zigbee2mqtt_refuses_impossible_settings_without_sending(
    broker: Broker, args: dict[str, Any], message: str
) -> None:
    with powered(zigbee(broker)) as bridge:
        async with mqtt_driver(broker, {"hall light": BULB}) as driver:
            sent = bridge["hall bulb"].count
            with pytest.raises(DriverError) as err:
                await act(driver, do("hall light", "set", **args))
            assert str(err.value).startswith(message)
            assert bridge["hall bulb"].count == sent


async def test_zigbee2mqtt_bulb_and_bridge_offline(broker: Broker) -> None:
    bridge = zigbee(broker).start()
    try:
        async with mqtt_driver(broker, {"hall light": BULB}) as driver:
            light = driver.devices["hall light"]
            bridge.set_available("hall bulb", False)
            await until(lambda: light.available is False)
            with pytest.raises(DriverError, match=r"^the hall light is offline$"):
                await act(driver, do("hall light", "on"))
            assert not (await driver.state("hall light")).online

            bridge.set_available("hall bulb", True)
            await until(lambda: light.available is True)
            assert await act(driver, do("hall light", "on")) == ("turned on the hall light")

            bridge.crash()
            await until(lambda: getattr(light, "bridge_online", None) is False)
            with pytest.raises(DriverError) as err:
                await act(driver, do("hall light", "off"))
            assert str(err.value) == "Zigbee2MQTT, which drives the hall light, is offline"
            assert await driver.state("hall light") == DeviceState(
                online=False, detail="Zigbee2MQTT is offline"
            )
    finally:
        bridge.stop()


async def test_zigbee2mqtt_knows_what_a_device_can_do(broker: Broker, watcher: Watcher) -> None:
    plug_only = [
        {"friendly_name": "Coordinator", "type": "Coordinator"},
        {
            "friendly_name": "hall plug",
            "definition": {
                "exposes": [
                    {"type": "switch", "features": [{"name": "state", "property": "state"}]}
                ]
            },
        },
    ]
    watcher.publish("zigbee2mqtt/bridge/devices", json.dumps(plug_only), retain=True)
    devices = {"hall plug": {**BULB, "topic": "hall plug"}, "ghost": {**BULB, "topic": "ghost"}}
    async with mqtt_driver(broker, devices, ready=False) as driver:
        await until(lambda: driver.devices["ghost"].paired is False)  # type: ignore[attr-defined]
        with pytest.raises(DriverError, match=r"^the hall plug cannot dim$"):
            await act(driver, do("hall plug", "set", brightness=10))
        with pytest.raises(DriverError, match=r"^the hall plug cannot change colour$"):
            await act(driver, do("hall plug", "set", color="red"))
        with pytest.raises(DriverError, match=r"^Zigbee2MQTT has no device called 'ghost'$"):
            await act(driver, do("ghost", "on"))
    assert watcher.on("zigbee2mqtt/hall plug/set") == []


# the driver: Shelly ------------------------------------------------------------------------


@pytest.mark.compat
async def test_shelly_relay_over_rpc(broker: Broker) -> None:
    with powered(shelly(broker)) as relay:
        async with mqtt_driver(broker, {"garage switch": RELAY}) as driver:
            assert await act(driver, do("garage switch", "on")) == ("turned on the garage switch")
            assert relay.on
            assert await act(driver, do("garage switch", "toggle")) == (
                "toggled the garage switch (now off)"
            )
            assert await act(driver, do("garage switch", "off")) == ("turned off the garage switch")
            with pytest.raises(DriverError, match="cannot dim"):
                await act(driver, do("garage switch", "set", brightness=20))
            requests = [c.json() for c in relay.commands]
            assert [r["method"] for r in requests] == [
                "Switch.GetStatus",
                "Switch.Set",
                "Switch.Toggle",
                "Switch.Set",
            ]
            assert requests[1]["params"] == {"id": 0, "on": True}
            assert len({r["id"] for r in requests}) == 4
            assert {r["src"] for r in requests} == {driver._src}
            assert relay.history == [False, True, False]

            relay.press()
            await until(lambda: driver.devices["garage switch"].on is True)

            relay.crash()
            await until(lambda: driver.devices["garage switch"].available is False)
            with pytest.raises(DriverError, match=r"^the garage switch is offline$"):
                await act(driver, do("garage switch", "on"))


async def test_shelly_error_answer_is_the_drivers_answer(broker: Broker) -> None:
    with powered(shelly(broker)) as relay:
        options = {**RELAY, "switch": 1}
        async with mqtt_driver(broker, {"garage switch": options}, ready=False) as driver:
            await until(lambda: relay.count == 1)  # Switch.GetStatus, answered with an error
            with pytest.raises(DriverError) as err:
                await act(driver, do("garage switch", "on"))
            assert str(err.value) == (
                "the garage switch refused: Argument 'id', value 1 not found!"
            )
            assert not relay.on


# the driver: generic topics -----------------------------------------------------------------


@pytest.mark.compat
async def test_generic_device_through_topics_and_templates(broker: Broker) -> None:
    plug_by_hand = {
        "protocol": "generic",
        "command_topic": "cmnd/porch/POWER",
        "payload_toggle": "TOGGLE",
        "state_topic": "stat/porch/RESULT",
        "value_template": "{{ value_json.POWER }}",
        "availability_topic": "tele/porch/LWT",
        "payload_available": "Online",
        "payload_not_available": "Offline",
        "confirm_s": 1,
    }
    dimmer = {
        "protocol": "generic",
        "command_topic": "zigbee2mqtt/hall bulb/set",
        "payload_on": '{"state": "{state}", "brightness": {brightness}}',
        "payload_off": '{"state": "{state}"}',
        "brightness_scale": 254,
        "state_topic": "zigbee2mqtt/hall bulb",
        "value_template": "value_json['state']",
        "brightness_template": 'value_json["brightness"]',
        "confirm_s": 1,
    }
    with powered(tasmota(broker), zigbee(broker)) as (plug, bridge):
        devices = {"porch switch": plug_by_hand, "hall light": dimmer}
        async with mqtt_driver(broker, devices, ready=False) as driver:
            await until(lambda: driver.devices["porch switch"].available is True)
            assert await act(driver, do("porch switch", "on")) == ("turned on the porch switch")
            assert await act(driver, do("porch switch", "toggle")) == (
                "toggled the porch switch (now off)"
            )
            assert [c.text for c in plug.commands] == ["ON", "TOGGLE"]

            done = await act(driver, do("hall light", "set", brightness=40))
            assert done == "set the hall light to 40%"
            assert bridge["hall bulb"].state["brightness"] == 102
            assert bridge["hall bulb"].commands[-1].json() == {"state": "ON", "brightness": 102}
            await act(driver, do("hall light", "off"))
            assert bridge["hall bulb"].commands[-1].json() == {"state": "OFF"}
            with pytest.raises(DriverError, match=r"^the hall light cannot change colour$"):
                await act(driver, do("hall light", "set", color="red"))
            with pytest.raises(DriverError, match=r"^the porch switch cannot dim$"):
                await act(driver, do("porch switch", "set", brightness=5))


async def test_generic_device_without_state_topic_is_taken_at_its_word(
    broker: Broker, watcher: Watcher
) -> None:
    pump = {"protocol": "generic", "command_topic": "garden/pump/set"}
    pump |= {"payload_on": "1", "payload_off": "0"}
    devices = {"pump": pump, "fan": {**pump, "command_topic": "f"}}
    async with mqtt_driver(broker, devices, ready=False) as d:
        with pytest.raises(DriverError, match="has not reported its state"):
            await act(d, do("fan", "toggle"))
        assert await act(d, do("pump", "on")) == "turned on the pump"
        assert (await d.state("pump")).on is True
        assert await act(d, do("pump", "toggle")) == "toggled the pump (now off)"
        watcher.wait_for(lambda _: _texts(watcher, "garden/pump/set") == ["1", "0"])
    assert watcher.on("f") == []


# options -----------------------------------------------------------------------------------


@pytest.mark.compat
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"topic": "porch"},
            "the mqtt device 'porch switch' needs protocol: one of tasmota, zigbee2mqtt, "
            "shelly, generic",
        ),
        (
            {"protocol": "zwave", "topic": "porch"},
            "the mqtt device 'porch switch' needs protocol: one of tasmota, zigbee2mqtt, "
            "shelly, generic",
        ),
        ({"protocol": "tasmota"}, "the mqtt device 'porch switch' has a bad option topic: "),
        (
            {"protocol": "tasmota", "topic": "porch", "colour": "red"},
            "the mqtt device 'porch switch' has a bad option colour: is not an option of the "
            "tasmota protocol",
        ),
        (
            {"protocol": "shelly", "topic": "shellies/#"},
            "the mqtt device 'porch switch' has a bad option topic: is a topic, not a filter",
        ),
        (
            {"protocol": "tasmota", "topic": " "},
            "the mqtt device 'porch switch' has a bad option topic: cannot be empty",
        ),
        (
            {"protocol": "tasmota", "topic": "porch", "confirm_s": 0},
            "the mqtt device 'porch switch' has a bad option confirm_s: ",
        ),
        (
            {"protocol": "generic", "command_topic": "a", "state_topic": "b",
             "value_template": "value_json.state | upper"},
            "the mqtt device 'porch switch' has a bad option value_template: cannot read",
        ),
        (
            {"protocol": "generic", "command_topic": "a", "state_topic": "b",
             "value_template": "__import__('os')"},
            "the mqtt device 'porch switch' has a bad option value_template: must be value",
        ),
        (
            {"protocol": "generic", "command_topic": "a", "payload_on": '{"x": {colour}}'},
            "the mqtt device 'porch switch' has a bad option payload_on: {colour} is not a "
            "placeholder",
        ),
        (
            {"protocol": "generic", "command_topic": "a", "value_template": "value"},
            "the options of the mqtt device 'porch switch' clash: value_template needs a "
            "state_topic",
        ),
    ],
)  # fmt: skip
async def test_bad_device_options_name_the_device_and_key(
    options: dict[str, Any], message: str
) -> None:
    driver = MqttDriver("kitchen-pi", {"host": "127.0.0.1", "port": 1})
    with pytest.raises(DriverError) as err:
        await driver.start({"porch switch": options})
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "the mqtt devices (porch switch) need an mqtt section in the federation file"),
        ({"port": 1883}, "the mqtt section has a bad host: "),
        ({"host": "h", "protocol": "4.0"}, "the mqtt section has a bad protocol: "),
        ({"host": "h", "port": 0}, "the mqtt section has a bad port: "),
        (
            {"host": "h", "password": Secret("env:NOPE")},
            "the mqtt section does not hold together: password needs a username",
        ),
        (
            {"host": "h", "ca_file": "/etc/ca.pem"},
            "the mqtt section does not hold together: ca_file is only used with tls: true",
        ),
    ],
)
async def test_bad_mqtt_section(section: dict[str, Any], message: str) -> None:
    driver = MqttDriver("kitchen-pi", section)
    with pytest.raises(DriverError) as err:
        await driver.start({"porch switch": PLUG})
    assert str(err.value).startswith(message)


# what devices say ---------------------------------------------------------------------------


async def test_malformed_device_payloads_are_logged_and_ignored(
    broker: Broker, watcher: Watcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="troupe.plugins.mqtt")
    with powered(tasmota(broker), zigbee(broker), shelly(broker)) as (plug, bridge, relay):
        devices = {"porch switch": PLUG, "hall light": BULB, "garage switch": RELAY}
        async with mqtt_driver(broker, devices) as driver:
            before = {name: await driver.state(name) for name in devices}
            garbage = [
                ("stat/porch/POWER", "MAYBE"),
                ("stat/porch/RESULT", "{not json"),
                ("stat/porch/RESULT", "[1, 2]"),
                ("tele/porch/LWT", "Sleeping"),
                ("zigbee2mqtt/hall bulb", '{"state": "ON", "brightness": "lots"}'),
                ("zigbee2mqtt/hall bulb", '"just a string"'),
                ("zigbee2mqtt/hall bulb", '{"state": 1}'),
                ("zigbee2mqtt/hall bulb/availability", '{"state": "maybe"}'),
                ("zigbee2mqtt/bridge/devices", '{"not": "a list"}'),
                ("shellyplus1-garage/events/rpc", b"\xff\xfe"),
                ("shellyplus1-garage/status/switch:0", '{"output": "yes"}'),
                ("shellyplus1-garage/online", "perhaps"),
                (f"{driver._src}/rpc", '{"id": 999, "result": {}}'),  # someone else's answer
            ]
            for topic, payload in garbage:
                watcher.publish(topic, payload)
            await until(lambda: len(caplog.records) >= 12, what="a warning per bad message")
            assert all(r.levelno == logging.WARNING for r in caplog.records)
            assert "the hall light on zigbee2mqtt/hall bulb: brightness 'lots'" in caplog.text
            assert "the porch switch on stat/porch/RESULT: it is not JSON" in caplog.text
            assert {name: await driver.state(name) for name in devices} == before

            assert await act(driver, do("porch switch", "on"))
            assert await act(driver, do("hall light", "on"))
            assert await act(driver, do("garage switch", "on"))
            assert plug.on and bridge["hall bulb"].on and relay.on
    assert len(caplog.records) == 12


# the connection -----------------------------------------------------------------------------


async def test_broker_down_and_back_reconnects_and_resubscribes(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_plugin, "RECONNECT_WAIT_S", 0.3)  # away longer than that
    with powered(tasmota(broker)) as plug:
        async with mqtt_driver(broker, {"porch switch": PLUG}) as driver:
            await asyncio.to_thread(broker.stop)
            await until(lambda: not driver.connected)
            sent = plug.count
            with pytest.raises(DriverError) as err:
                await act(driver, do("porch switch", "on"))
            assert str(err.value) == f"the MQTT broker at {broker.address} is not reachable"
            state = await driver.state("porch switch")
            assert not state.online and "not reachable" in state.detail
            assert plug.count == sent

            await asyncio.to_thread(broker.start)
            await until(lambda: driver.connected and plug.connection.connected, 20)
            await until(lambda: driver.devices["porch switch"].available is True, 10)
            assert await act(driver, do("porch switch", "on")) == ("turned on the porch switch")
            plug.press()  # heard only through the renewed subscriptions
            await until(lambda: driver.devices["porch switch"].on is False)
            assert plug.history == [False, True, False]


async def test_a_command_during_a_broker_restart_waits_for_it_and_acts_once(
    broker: Broker,
) -> None:
    """mosquitto restarting (an upgrade, a crash) for a second: the command waits for the
    connection to come back instead of failing, and reaches the device once."""
    with powered(tasmota(broker)) as plug:
        async with mqtt_driver(broker, {"porch switch": PLUG}) as driver:
            await asyncio.to_thread(broker.kill)
            await until(lambda: not driver.connected)
            sent = plug.count
            acting = asyncio.ensure_future(act(driver, do("porch switch", "on")))
            await asyncio.sleep(1.0)
            assert not acting.done()  # waiting for the broker, not failed
            await asyncio.to_thread(broker.start)
            assert await asyncio.wait_for(acting, 20) == "turned on the porch switch"
            commands = [c.text for c in plug.commands[sent:] if c.payload.strip()]
            assert commands == ["ON"]
            assert plug.history == [False, True]


async def test_after_a_broker_restart_a_command_waits_for_its_device_to_be_back(
    broker: Broker,
) -> None:
    """The bot may reconnect before the plug: a command sent then would be lost (QoS 0, no
    one subscribed), so it waits for the plug to say it is online again. Driver.ready,
    which the bot awaits before its order checks, waits for the same."""
    with powered(tasmota(broker)) as plug:
        async with mqtt_driver(broker, {"porch switch": PLUG}) as driver:
            await asyncio.to_thread(broker.kill)
            plug.crash()  # the plug stays away after the broker is back
            await asyncio.to_thread(broker.start)
            await until(lambda: driver.connected, 20, "the driver to reconnect")
            ready = asyncio.ensure_future(driver.ready("porch switch"))
            acting = asyncio.ensure_future(act(driver, do("porch switch", "on")))
            await asyncio.sleep(1.5)  # longer than the plug's confirm_s
            assert not ready.done() and not acting.done()
            with powered(tasmota(broker)) as back:
                assert await asyncio.wait_for(ready, 20) is True  # it waited: the runtime's cue
                assert await asyncio.wait_for(acting, 20) == "turned on the porch switch"
                assert await driver.ready("porch switch") is False  # there: no wait
                assert [c.text for c in back.commands if c.payload.strip()] == ["ON"]


async def test_broker_going_away_ends_the_wait_for_a_confirmation(broker: Broker) -> None:
    """A toggle is not sent twice: the device may have had it."""
    with powered(tasmota(broker, "porch")) as plug:
        options = {**PLUG, "confirm_s": 30}
        async with mqtt_driver(broker, {"porch switch": options}) as driver:
            plug.mute = True
            toggle = do("porch switch", "toggle")
            waiting = asyncio.ensure_future(driver.act("porch switch", toggle))
            # Published and waiting: the waiter is registered in the same step as the publish.
            await until(lambda: bool(driver.devices["porch switch"].waiters), what="the waiter")
            await asyncio.to_thread(broker.kill)  # no wills: mosquitto's stop sends them
            with pytest.raises(DriverError) as err:
                await asyncio.wait_for(waiting, 10)
            assert (
                str(err.value) == f"the connection to the MQTT broker at {broker.address} dropped"
            )


NEWER = "I left the porch switch to the newer command at 07:00:01."


@pytest.mark.parametrize("newer", [None, NEWER])
async def test_a_broker_restart_with_a_command_in_flight_sends_it_again_once_back(
    broker: Broker, newer: str | None
) -> None:
    """mosquitto killed after the command went out and before the plug confirmed it: an
    "on" is safe to repeat, so it is sent again once the broker and the plug are back, and
    the command ends acted instead of failed (a soak's one lost command). Unless the
    runtime's `resend_check`, asked then, says a newer command reached the plug while the
    broker was away: then it is not sent again, and act() fails with that sentence."""
    with powered(tasmota(broker, "porch")) as plug:
        options = {**PLUG, "confirm_s": 30}
        async with mqtt_driver(broker, {"porch switch": options}) as driver:
            asked: list[bool] = []

            async def check() -> str | None:
                asked.append(driver.connected)
                return newer

            sent = plug.count
            plug.mute = True
            token = resend_check.set(check)
            try:
                acting = asyncio.ensure_future(act(driver, do("porch switch", "on")))
            finally:
                resend_check.reset(token)
            await until(lambda: bool(driver.devices["porch switch"].waiters), what="the waiter")
            await until(lambda: plug.count > sent, what="the plug to get the command")
            await asyncio.to_thread(broker.kill)
            await until(lambda: not driver.connected)
            plug.mute = False
            await asyncio.to_thread(broker.start)
            if newer is None:
                assert await asyncio.wait_for(acting, 20) == "turned on the porch switch"
                assert plug.on
            else:
                with pytest.raises(DriverError, match=r"^I left the porch switch to the newer"):
                    await asyncio.wait_for(acting, 20)
            commands = [c.text for c in plug.commands[sent:] if c.payload.strip()]
            assert commands == (["ON", "ON"] if newer is None else ["ON"])
            assert asked == [True]  # asked once, with the broker back


async def test_a_publish_that_fails_before_the_drop_is_heard_is_sent_again_once_back(
    broker: Broker,
) -> None:
    """mosquitto dies just as the command is published: paho's thread already knows (the
    publish fails), the loop not yet (its callback is on its way). The resend waits for
    the drop to be heard, then for the broker and the plug, instead of failing at once on
    a connection still marked up (a soak's lost command)."""
    with powered(tasmota(broker, "porch")) as plug:
        async with mqtt_driver(broker, {"porch switch": PLUG}) as driver:
            client, sent = driver._client, plug.count
            real = client.publish
            first: list[bool] = []

            def dying(topic: str, payload: str | bytes, **kw: Any) -> mqtt.MQTTMessageInfo:
                if first:
                    return real(topic, payload, **kw)
                first.append(True)
                broker.kill()  # paho hears it on its thread; the loop, a moment later
                info = mqtt.MQTTMessageInfo(0)
                info.rc = mqtt.MQTT_ERR_NO_CONN
                return info

            client.publish = dying  # type: ignore[method-assign]
            acting = asyncio.ensure_future(driver.act("porch switch", do("porch switch", "on")))
            await until(lambda: not driver.connected)
            await asyncio.sleep(0.5)
            assert not acting.done()  # waiting for the broker, not failed
            await asyncio.to_thread(broker.start)
            state = await asyncio.wait_for(acting, 20)
            assert state.on is True and plug.on
            assert [c.text for c in plug.commands[sent:] if c.payload.strip()] == ["ON"]


async def test_broker_not_there_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_plugin, "CONNECT_WAIT_S", 0.2)
    port = free_port()
    driver = MqttDriver("kitchen-pi", {"host": "127.0.0.1", "port": port})
    await driver.start({"porch switch": PLUG})
    broker = None
    try:
        with pytest.raises(DriverError, match="is not reachable"):
            await act(driver, do("porch switch", "on"))
        assert not (await driver.state("porch switch")).online
        broker = await asyncio.to_thread(mosquitto_broker, port=port)
        with powered(tasmota(broker)) as plug:
            await until(lambda: driver.devices["porch switch"].on is not None, 20)
            assert await act(driver, do("porch switch", "on"))
            assert plug.on
    finally:
        await driver.stop()
        if broker is not None:
            broker.stop()


@pytest.mark.parametrize(("protocol", "tag"), [("5", "p5"), (5, "p5"), ("3.1.1", "p2")])
async def test_speaks_mqtt_5_and_3_1_1(broker: Broker, protocol: Any, tag: str) -> None:
    with powered(tasmota(broker), shelly(broker), zigbee(broker)) as (plug, relay, bridge):
        devices = {"porch switch": PLUG, "garage switch": RELAY, "hall light": BULB}
        async with mqtt_driver(broker, devices, protocol=protocol) as driver:
            for name in devices:
                assert await act(driver, do(name, "on")) == f"turned on the {name}"
            assert plug.on and relay.on and bridge["hall bulb"].on
            # mosquitto logs the protocol level: p2 is MQTT 3.1.1, p5 is MQTT 5
            assert f"as {driver._src} ({tag}, " in broker.output()


async def test_username_and_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(mqtt_plugin, "CONNECT_WAIT_S", 0.5)
    monkeypatch.setenv("TROUPE_TEST_MQTT_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("TROUPE_TEST_MQTT_WRONG", "guess")
    broker = await asyncio.to_thread(mosquitto_broker, users={"troupe": "s3cret-pw"})
    caplog.set_level(logging.DEBUG, logger="troupe.plugins.mqtt")
    try:
        plug = tasmota(broker, username="troupe", password="s3cret-pw")
        with powered(plug):
            good = {"username": "troupe", "password": Secret("env:TROUPE_TEST_MQTT_PASSWORD")}
            async with mqtt_driver(broker, {"porch switch": PLUG}, **good) as driver:
                assert await act(driver, do("porch switch", "on"))
            bad = {"username": "troupe", "password": Secret("env:TROUPE_TEST_MQTT_WRONG")}
            async with mqtt_driver(broker, {"porch switch": PLUG}, ready=False, **bad) as driver:
                await until(lambda: driver.refused is not None)
                with pytest.raises(DriverError) as err:
                    await act(driver, do("porch switch", "off"))
                assert str(err.value) == (
                    f"the MQTT broker at {broker.address} refused troupe: Not authorized"
                )
                # the password is read again at each attempt: a fixed secret is picked up
                monkeypatch.setenv("TROUPE_TEST_MQTT_WRONG", "s3cret-pw")
                await until(lambda: driver.connected, 20, "a connection with the new password")
                assert driver.refused is None
                assert await act(driver, do("porch switch", "off"))
            assert plug.history == [False, True, False]
        missing = {"username": "troupe", "password": Secret("env:TROUPE_TEST_MQTT_UNSET")}
        with pytest.raises(DriverError, match="cannot read the MQTT password: environment"):
            async with mqtt_driver(broker, {"porch switch": PLUG}, **missing):
                pass
    finally:
        broker.stop()
    assert "s3cret-pw" not in caplog.text and "guess" not in caplog.text


async def test_tls(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_plugin, "CONNECT_WAIT_S", 0.5)
    files = await asyncio.to_thread(mqttkit.make_tls_files, tmp_path)
    server = TlsFiles(files.certfile, files.keyfile)
    broker = await asyncio.to_thread(mosquitto_broker, tls=server)
    try:
        with powered(tasmota(broker, tls_ca=str(files.cafile))) as plug:
            trusted = {"tls": True, "ca_file": str(files.cafile)}
            async with mqtt_driver(broker, {"porch switch": PLUG}, **trusted) as driver:
                assert await act(driver, do("porch switch", "on"))
                assert plug.on
            # the system's CAs do not know the test CA: no connection, a clear answer
            async with mqtt_driver(broker, {"porch switch": PLUG}, ready=False, tls=True) as d:
                with pytest.raises(DriverError, match="is not reachable"):
                    await act(d, do("porch switch", "off"))
            assert plug.history == [False, True]
    finally:
        broker.stop()


# a bot ---------------------------------------------------------------------------------------

MQTT_DEVICES = """\
  porch plug: {kind: outlet, area: porch, driver: mqtt, owner: garage-pi, protocol: tasmota,
               topic: porch}
  garage fan: {kind: fan, area: garage, driver: mqtt, owner: garage-pi, protocol: shelly,
               topic: shellyplus1-garage}
"""


@pytest.mark.compat
@pytest.mark.timeout(180)
def test_a_bot_drives_mqtt_devices_from_chat(tmp_path: Any, broker: Broker) -> None:
    config = demo_config().model_copy(update={"rate_limits": 10.0})
    with running_workspace(config) as ws, powered(tasmota(broker), shelly(broker)) as devices:
        plug, relay = devices
        mqtt = f"mqtt: {{host: '{broker.host}', port: {broker.port}}}\n"
        path = write_federation(tmp_path, ws.api_url, mqtt=mqtt, plugins="[troupe.plugins.mqtt]")
        path.write_text(path.read_text().replace("devices:\n", "devices:\n" + MQTT_DEVICES, 1))
        with Fleet(path, tmp_path) as fleet:
            fleet.start("garage-pi")
            alice = WebClient("xoxp-alice", base_url=ws.api_url)
            h = House(ws, fleet, tmp_path / "actions.jsonl", alice)

            ts = h.say("turn on the porch plug")
            h.wait_for(lambda: bool(h.replies(ts)), 30, "the answer")
            assert [r["text"] for r in h.replies(ts)] == ["Turned on the porch plug."]
            assert plug.history == [False, True]

            relay.crash()
            ts = h.say("turn on the garage fan")
            h.wait_for(lambda: bool(h.replies(ts)), 30, "the answer")
            (reply,) = [r["text"] for r in h.replies(ts)]
            assert "the garage fan is offline" in reply.lower()
            assert relay.history == [False]
            assert [c.json()["method"] for c in relay.commands] == ["Switch.GetStatus"]


def test_simulator_command_line(broker: Broker, watcher: Watcher) -> None:
    command = [sys.executable, "-m", "troupe.hardware.mqtt", "--broker", broker.address]
    command += ["--tasmota", "porch", "--z2m", "hall bulb", "--shelly", "shellyplus1-garage"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=20)
        assert first.startswith(f"devices ready on {broker.address}: porch, hall bulb, "), first
        watcher.publish("cmnd/porch/POWER", "ON")
        watcher.wait_for(lambda _: _texts(watcher, "stat/porch/POWER") == ["ON"])
        assert lines.get(timeout=10).strip() == "porch: cmnd/porch/POWER ON"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    for topic, gone in [
        ("tele/porch/LWT", "Offline"),
        ("zigbee2mqtt/bridge/state", '{"state":"offline"}'),
        ("shellyplus1-garage/online", "false"),
    ]:
        watcher.wait_for(lambda _, t=topic, g=gone: _texts(watcher, t)[-1:] == [g])
