"""One MQTT connection per bot: its mqtt devices, Home Assistant discovery and the bus share
one paho client (one network thread), against a real mosquitto."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from mqttkit import Watcher, powered
from pipekit import fleet

from troupe.discovery import status_topic
from troupe.hardware.mqtt import TasmotaPlug

pytest_plugins = ("mqttkit",)

DEVICES = """\
devices:
  kitchen lamp: {kind: light, area: kitchen, driver: counter, owner: kitchen-pi}
  porch plug: {kind: outlet, area: porch, driver: mqtt, protocol: tasmota, topic: porch}
areas: {kitchen: [], porch: []}
"""


def paho_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-")}


def mqtt_section(tmp_path: Path, port: int) -> str:
    key = tmp_path / "bus.key"
    key.write_text("a-bus-key\n")
    key.chmod(0o600)
    return (
        f"mqtt: {{host: 127.0.0.1, port: {port}, bus: true, bus_key: 'file:{key}', "
        "discovery: true}\n"
    )


async def test_devices_discovery_and_the_bus_share_one_paho_thread_per_bot(
    tmp_path: Path, broker
) -> None:
    bots = ("kitchen-pi", "hall-pi")
    statuses = [status_topic("test", bot) for bot in bots]
    watcher = Watcher(broker, *statuses)
    plug = TasmotaPlug("porch", broker.host, broker.port)
    try:
        with powered(plug):
            before = paho_threads()
            async with fleet(
                tmp_path,
                "shared-app",
                start=bots,
                mqtt=mqtt_section(tmp_path, broker.port),
                devices=DEVICES,
            ) as f:
                mine = paho_threads() - before
                # each bot: its mqtt driver, discovery and the bus on one client, one thread
                assert sorted(mine) == [
                    f"paho-mqtt-client-troupe-test-{bot}" for bot in sorted(bots)
                ]
                for bot in f.bots.values():
                    client = bot.clients["mqtt"]
                    assert bot.drivers["mqtt"]._client is client
                    assert bot.bus is not None and bot.bus._client is client
                # discovery: each bot said "online" (retained) through the shared client
                online = lambda seen: {s.topic for s in seen if s.text == "online"} == set(statuses)  # noqa: E731
                await asyncio.to_thread(watcher.wait_for, online)
                # the bus: a roll call reaches the bot Slack did not hand the event to
                ts = await f.say("roll call")
                answers = await f.answered(ts, n=2)
                assert sorted(a.split(" on ")[0] for a in answers) == sorted(bots)
                # the devices: the plug is driven, exactly once
                ts = await f.say("turn on the porch plug")
                assert await f.answered(ts) == ["Turned on the porch plug."]
                await asyncio.sleep(0.2)
                assert plug.history == [False, True]
            assert paho_threads() - before == set()
    finally:
        watcher.close()
