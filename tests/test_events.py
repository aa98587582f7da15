"""Device events to chat, across three bots in one loop against the local workspace: a
motion sensor, a wall switch (the simulated GPIO board) and a plug going offline (real
mosquitto, the simulated Tasmota plug) each make exactly one message in the right channel,
also with the first-ranked bot stopped; flapping makes at most the configured number."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from mqttkit import mosquitto_broker
from pipekit import BOTS, Fleet, fleet

from troupe.announcer import quiet, words
from troupe.eventsettings import EventsSettings, rule_for
from troupe.federation import rank
from troupe.hardware import gpio
from troupe.hardware.hue import running_bridge
from troupe.hardware.mqtt import TasmotaPlug

APPS = {"kitchen-pi": "A0KITCHEN", "hall-pi": "A0HALL", "garage-pi": "A0GARAGE"}
FAST = "{stale_s: 30, lease_s: 4, stagger_s: 0.3, linger_s: 3600}"


def house(port: int) -> str:
    return (
        f"mqtt: {{host: 127.0.0.1, port: {port}}}\n"
        "devices:\n"
        "  hall motion: {kind: sensor, area: hall, driver: gpio_relay, owner: hall-pi,"
        " motion: 22, interval_s: 0.01}\n"
        "  hall lamp: {kind: light, area: hall, driver: gpio_relay, owner: hall-pi,"
        " pin: 17, button: 5}\n"
        "  desk plug: {kind: outlet, area: kitchen, driver: mqtt, protocol: tasmota,"
        " topic: desk}\n"
        "areas: {kitchen: [], hall: []}\n"
    )


async def channel_texts(f: Fleet, channel: str) -> list[str]:
    resp = await f.alice.conversations_history(channel=channel, limit=200)
    return [m["text"] for m in reversed(resp["messages"]) if m.get("bot_id")]


def fleet_calls(f: Fleet) -> dict[str, dict[str, int]]:
    return {key: dict(m) for key, m in f.calls().items() if key in APPS.values()}


async def settle(f: Fleet, seconds: float) -> None:
    """Long enough for every later-ranked bot's turn to pass."""
    await asyncio.sleep(seconds)


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> gpio.GpioBoard:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    fresh = gpio.GpioBoard()
    gpio.register("hall-pi", fresh)
    return fresh


async def test_motion_switch_and_offline_each_make_one_message_also_with_the_first_bot_down(
    tmp_path: Any, board: gpio.GpioBoard
) -> None:
    broker = mosquitto_broker()
    plug = TasmotaPlug("desk", broker.host, broker.port).start()
    try:
        extra = "events: {watch_s: 0.4}\n"
        async with fleet(tmp_path, devices=house(broker.port), extra=extra, slackmq=FAST) as f:
            kitchen = {c.name: c.id for c in f.ws.workspace.config.channels}["kitchen"]
            await asyncio.sleep(0.5)  # every bot has heard the plug's retained Online
            f.ws.control("counters/reset")

            board.motion(22)
            await f.until(lambda: _has(f, f.home, "motion in the hall"), 10, "motion")
            board.press(5)
            await f.until(
                lambda: _has(f, f.home, "hall lamp turned on at the wall switch"), 10, "press"
            )
            plug.crash()  # the broker sends its last will: Offline, to every bot
            await f.until(lambda: _has(f, kitchen, "the desk plug went offline"), 10, "offline")
            await settle(f, 3 * 0.4 + 0.5)
            assert await channel_texts(f, f.home) == [
                "motion in the hall",
                "hall lamp turned on at the wall switch",
            ]
            assert await channel_texts(f, kitchen) == ["the desk plug went offline"]
            # One post per event and nothing else: the others saw it come by.
            assert _merged(fleet_calls(f)) == {"chat.postMessage": 3}

            # The first-ranked bot for the plug's availability stops; it comes back online.
            first, second = rank("desk plug\0availability", BOTS)[:2]
            await f.bots[first].stop()
            f.bots[first].ready.clear()
            f.ws.control("counters/reset")
            plug = TasmotaPlug("desk", broker.host, broker.port).start()
            await f.until(lambda: _has(f, kitchen, "the desk plug is back online"), 10, "online")
            sensor = f.bots["hall-pi"].drivers["gpio_relay"].gpio_device("hall motion")
            board.still(22)
            assert await asyncio.to_thread(sensor.wait_for_no_motion, 5)
            board.motion(22)  # GPIO: the owner posts, whoever else is down
            await f.until(
                lambda: _count(f, f.home, "motion in the hall", 2), 10, "the second motion"
            )
            board.release(5)
            board.press(5)
            await f.until(
                lambda: _has(f, f.home, "hall lamp turned off at the wall switch"), 10, "press"
            )
            await settle(f, 3 * 0.4 + 0.5)
            assert await channel_texts(f, kitchen) == [
                "the desk plug went offline",
                "the desk plug is back online",
            ]
            assert await channel_texts(f, f.home) == [
                "motion in the hall",
                "hall lamp turned on at the wall switch",
                "motion in the hall",
                "hall lamp turned off at the wall switch",
            ]
            calls = fleet_calls(f)
            # The second-ranked bot (hall-pi, also the sensor's owner) read the channel once
            # and posted; the third saw the post come by and made no call.
            assert (first, second) == ("kitchen-pi", "hall-pi")
            assert calls == {"A0HALL": {"conversations.history": 1, "chat.postMessage": 3}}
    finally:
        plug.stop()
        broker.stop()


async def test_flapping_makes_at_most_the_configured_number_of_messages(
    tmp_path: Any, board: gpio.GpioBoard
) -> None:
    broker = mosquitto_broker()
    plug = TasmotaPlug("desk", broker.host, broker.port).start()
    try:
        extra = "events: {watch_s: 0.3, devices: {desk plug: {per_minute: 2}}}\n"
        async with fleet(tmp_path, devices=house(broker.port), extra=extra, slackmq=FAST) as f:
            kitchen = {c.name: c.id for c in f.ws.workspace.config.channels}["kitchen"]
            await asyncio.sleep(0.5)
            for _ in range(3):  # six changes in a couple of seconds
                plug.crash()
                await asyncio.sleep(0.3)
                plug = TasmotaPlug("desk", broker.host, broker.port).start()
                await asyncio.sleep(0.3)
            await settle(f, 3 * 0.3 + 0.7)
            assert await channel_texts(f, kitchen) == [
                "the desk plug went offline",
                "the desk plug is back online",
            ]
    finally:
        plug.stop()
        broker.stop()


async def test_debounce_swallows_offline_then_online_within_it(
    tmp_path: Any, board: gpio.GpioBoard
) -> None:
    broker = mosquitto_broker()
    plug = TasmotaPlug("desk", broker.host, broker.port).start()
    try:
        extra = "events: {watch_s: 0.3, debounce_s: 1.5}\n"
        async with fleet(tmp_path, devices=house(broker.port), extra=extra, slackmq=FAST) as f:
            kitchen = {c.name: c.id for c in f.ws.workspace.config.channels}["kitchen"]
            await asyncio.sleep(0.5)
            plug.crash()
            await asyncio.sleep(0.2)
            plug = TasmotaPlug("desk", broker.host, broker.port).start()
            await settle(f, 1.5 + 3 * 0.3 + 0.5)
            assert await channel_texts(f, kitchen) == []
            plug.crash()  # and one that lasts
            await f.until(lambda: _has(f, kitchen, "the desk plug went offline"), 10, "offline")
            await settle(f, 3 * 0.3 + 0.5)
            assert await channel_texts(f, kitchen) == ["the desk plug went offline"]
    finally:
        plug.stop()
        broker.stop()


async def test_a_plug_switched_at_its_own_button_is_one_message_a_command_is_none(
    tmp_path: Any, board: gpio.GpioBoard
) -> None:
    broker = mosquitto_broker()
    plug = TasmotaPlug("desk", broker.host, broker.port).start()
    try:
        extra = "events: {watch_s: 0.3}\n"
        async with fleet(tmp_path, devices=house(broker.port), extra=extra, slackmq=FAST) as f:
            kitchen = {c.name: c.id for c in f.ws.workspace.config.channels}["kitchen"]
            await asyncio.sleep(0.5)
            plug.press()
            changed = "the desk plug was turned on at the device"
            await f.until(lambda: _has(f, kitchen, changed), 10, "the change")
            ts = await f.say("turn off the desk plug")
            assert await f.answered(ts) == ["Turned off the desk plug."]
            await settle(f, 3 * 0.3 + 0.7)
            assert await channel_texts(f, kitchen) == [changed]
            assert plug.on is False
    finally:
        plug.stop()
        broker.stop()


async def test_quiet_hours_and_kinds_hold_back_what_they_name(
    tmp_path: Any, board: gpio.GpioBoard
) -> None:
    hour = time.gmtime().tm_hour
    span = f"{(hour - 1) % 24:02d}:00-{(hour + 2) % 24:02d}:00"  # now, in UTC
    extra = (
        "events: {watch_s: 0.3, devices: {hall motion: {quiet_hours: '" + span + "'},"
        " desk plug: {kinds: [online]}}}\n"
    )
    broker = mosquitto_broker()
    plug = TasmotaPlug("desk", broker.host, broker.port).start()
    try:
        async with fleet(tmp_path, devices=house(broker.port), extra=extra, slackmq=FAST) as f:
            await asyncio.sleep(0.5)
            board.motion(22)
            plug.crash()
            board.press(5)
            await f.until(
                lambda: _has(f, f.home, "hall lamp turned on at the wall switch"), 10, "press"
            )
            await settle(f, 3 * 0.3 + 0.7)
            kitchen = {c.name: c.id for c in f.ws.workspace.config.channels}["kitchen"]
            assert await channel_texts(f, f.home) == ["hall lamp turned on at the wall switch"]
            assert await channel_texts(f, kitchen) == []
    finally:
        plug.stop()
        broker.stop()


async def test_a_hue_light_unplugged_makes_one_message_also_with_the_first_bot_down(
    tmp_path: Any,
) -> None:
    key = tmp_path / "hue-user"
    key.write_text("troupe-test-user\n")
    key.chmod(0o600)
    with running_bridge(4, usernames=["troupe-test-user"]) as bridge:
        devices = (
            f"hue: {{bridge: '{bridge.address}', username: 'file:{key}', poll_s: 0.2}}\n"
            "devices:\n"
            "  sofa lamp: {kind: light, area: kitchen, driver: hue, light: 1}\n"
            "areas: {kitchen: []}\n"
        )
        extra = "events: {watch_s: 0.4}\n"
        async with fleet(tmp_path, devices=devices, extra=extra, slackmq=FAST) as f:
            kitchen = {c.name: c.id for c in f.ws.workspace.config.channels}["kitchen"]
            await asyncio.sleep(0.6)  # every bot has polled the bridge once: the baseline
            f.ws.control("counters/reset")
            bridge.model.set_reachable("1", False)
            await f.until(lambda: _has(f, kitchen, "the sofa lamp went offline"), 10, "offline")
            await settle(f, 3 * 0.4 + 0.5)
            assert await channel_texts(f, kitchen) == ["the sofa lamp went offline"]
            assert _merged(fleet_calls(f)) == {"chat.postMessage": 1}

            first = rank("sofa lamp\0availability", BOTS)[0]
            await f.bots[first].stop()
            f.bots[first].ready.clear()
            f.ws.control("counters/reset")
            bridge.model.set_reachable("1", True)
            await f.until(lambda: _has(f, kitchen, "the sofa lamp is back online"), 10, "online")
            await settle(f, 3 * 0.4 + 0.5)
            assert await channel_texts(f, kitchen) == [
                "the sofa lamp went offline",
                "the sofa lamp is back online",
            ]
            assert _merged(fleet_calls(f)) == {
                "chat.postMessage": 1,
                "conversations.history": 1,
            }


def test_rules_inherit_device_over_area_over_the_section() -> None:
    settings = EventsSettings.model_validate(
        {
            "per_minute": 4,
            "quiet_hours": "22:00-07:00",
            "areas": {"Hall": {"kinds": ["motion"], "channel": "#hall"}},
            "devices": {"hall motion": {"per_minute": 1}},
        }
    )
    rule = rule_for(settings, "hall motion", "hall")
    assert (rule.kinds, rule.channel, rule.per_minute, rule.quiet_hours) == (
        ("motion",),
        "#hall",
        1,
        "22:00-07:00",
    )
    assert rule_for(settings, "desk plug", "kitchen").per_minute == 4
    assert quiet("22:00-07:00", 1_700_000_000 - 1_700_000_000 % 86400 + 23 * 3600, "UTC")
    assert not quiet("22:00-07:00", 1_700_000_000 - 1_700_000_000 % 86400 + 12 * 3600, "UTC")
    with pytest.raises(ValueError, match="a span of the day like 22:00-07:00"):
        EventsSettings.model_validate({"quiet_hours": "late"})
    assert words("porch eye", "motion") == "motion at the porch eye"
    assert words("hall light", "offline") == "the hall light went offline"


async def _has(f: Fleet, channel: str, text: str) -> bool:
    return text in await channel_texts(f, channel)


async def _count(f: Fleet, channel: str, text: str, n: int) -> bool:
    return (await channel_texts(f, channel)).count(text) >= n


def _merged(calls: dict[str, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for methods in calls.values():
        for method, n in methods.items():
            total[method] = total.get(method, 0) + n
    return total


async def test_motion_fires_an_automation_once(tmp_path: Any, board: gpio.GpioBoard) -> None:
    """`automations:` with a motion trigger: the sensor's owner sees the motion, the fleet
    fires the automation once, and the lamp goes on once."""
    devices = (
        "devices:\n"
        "  hall motion: {kind: sensor, area: hall, driver: gpio_relay, owner: hall-pi,"
        " motion: 22, interval_s: 0.01}\n"
        "  hall lamp: {kind: light, area: hall, driver: gpio_relay, owner: hall-pi, pin: 17}\n"
        "areas: {kitchen: [], hall: []}\n"
    )
    extra = (
        "automations:\n"
        "  - alias: light on motion\n"
        "    trigger: {trigger: state, device: hall motion, to: 'on'}\n"
        "    action: {device: hall lamp, state: 'on'}\n"
    )
    async with fleet(tmp_path, devices=devices, extra=extra, slackmq=FAST) as f:
        assert board.level(17) is False
        board.clear_history(17)
        board.motion(22)
        await f.until(lambda: board.level(17), 15, "the hall lamp on")
        await asyncio.sleep(2.0)  # time for a second firing, if there were one
        assert board.history(17).count(True) == 1
        texts = await channel_texts(f, f.home)
        assert sum("light on motion" in t for t in texts) == 1, texts
