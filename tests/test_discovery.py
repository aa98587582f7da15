"""Home Assistant MQTT discovery on a real mosquitto: configs, availability, commands, state."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import fleetkit
import pytest
from mqttkit import Watcher, mosquitto_broker, until

from troupe.announcer import Announcer
from troupe.bot import Bot, DeviceSpec
from troupe.config import load
from troupe.discovery import (
    DiscoveryError,
    HomeAssistantDiscovery,
    attach,
    plan_entities,
    slug,
)
from troupe.federation import Action, Settings
from troupe.hardware.broker import Broker
from troupe.hardware.gpio import GpioBoard
from troupe.journal import Journal
from troupe.mqttclient import Message
from troupe.plugin import DriverError, load_plugins
from troupe.runner import build_bot
from troupe.scheduler import Scheduler
from troupe.secrets import Secret

pytest_plugins = ("mqttkit",)

PREFIX = "homeassistant"
BASE = "troupe/test/kitchen-pi"
FAN = "kitchen_fan"
CONFIG = {
    "kitchen fan": f"{PREFIX}/switch/troupe_test_kitchen_pi_kitchen_fan/config",
    "kitchen lamp": f"{PREFIX}/light/troupe_test_kitchen_pi_kitchen_lamp/config",
    "kitchen socket": f"{PREFIX}/switch/troupe_test_kitchen_pi_kitchen_socket/config",
}
PINS = {"kitchen fan": 17, "kitchen lamp": 27, "kitchen socket": 22}


def spec(name: str, kind: str, driver: str, owner: str | None, **options: Any) -> DeviceSpec:
    return DeviceSpec(name, kind, None, driver, owner, options=options)


DEVICES = [
    spec("kitchen fan", "fan", "gpio_relay", "kitchen-pi", pin=17),
    spec("kitchen lamp", "light", "gpio_relay", "kitchen-pi", pin=27),
    spec("kitchen socket", "outlet", "gpio_relay", "kitchen-pi", pin=22),
    spec("hall motion", "sensor", "gpio_relay", "kitchen-pi", motion=5),
    spec("hall heater", "switch", "gpio_relay", "hall-pi", pin=17),
    spec("hall light", "light", "counter", None),
]


def texts(watcher: Watcher, topic: str) -> list[str]:
    return [seen.text for seen in watcher.on(topic)]


def last(watcher: Watcher, topic: str) -> str | None:
    seen = texts(watcher, topic)
    return seen[-1] if seen else None


async def saw(watcher: Watcher, topic: str, payload: str, what: str = "") -> None:
    """Wait (bounded) until the last message on a topic is `payload`."""
    await until(lambda: last(watcher, topic) == payload, what=what or f"{payload} on {topic}")


async def publish(watcher: Watcher, topic: str, payload: str, *, retain: bool = False) -> None:
    await asyncio.to_thread(watcher.publish, topic, payload, retain=retain)


def ha_actions(bot: Bot, device: str) -> list[tuple[str, str, str]]:
    return [(r.channel, r.action, r.status) for r in reversed(bot.journal.history(device, 50))]


# an in-process bot with real relays --------------------------------------------------------------


@pytest.fixture
async def relay_bot(tmp_path: Path) -> AsyncIterator[tuple[Bot, GpioBoard]]:
    """A real Bot (no Slack: only its drivers, journal and drive()) on a simulated board."""
    board = GpioBoard()
    bot = Bot(
        name="kitchen-pi",
        roster=["kitchen-pi", "hall-pi"],
        devices=DEVICES,
        plugins=load_plugins(entry_points_too=False),
        web=None,  # type: ignore[arg-type]
        transport=None,  # type: ignore[arg-type]
        journal=Journal(tmp_path / "kitchen-pi.sqlite3", "kitchen-pi"),
        recognizer=None,  # type: ignore[arg-type]
        settings=Settings(),
        channels={},
        driver_options={"gpio_relay": {"pin_factory": board}},
    )
    await bot._start_drivers()
    try:
        yield bot, board
    finally:
        for driver in bot.drivers.values():
            await driver.stop()
        bot.journal.close()


def settings(broker: Broker, **more: Any) -> dict[str, Any]:
    return {"host": broker.host, "port": broker.port, **more}


@pytest.fixture
async def ha(
    relay_bot: tuple[Bot, GpioBoard], broker: Broker
) -> AsyncIterator[HomeAssistantDiscovery]:
    service = HomeAssistantDiscovery(settings(broker, discovery=True), "test")
    await service.start(relay_bot[0])
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
def home(broker: Broker) -> Iterator[Watcher]:
    """Home Assistant's side: a client that sees everything on the broker."""
    watcher = Watcher(broker)
    try:
        yield watcher
    finally:
        watcher.close()


async def test_owned_relays_are_announced_retained_with_what_ha_needs(
    relay_bot: tuple[Bot, GpioBoard], ha: HomeAssistantDiscovery, broker: Broker
) -> None:
    late = Watcher(broker)  # subscribes after the announcement: sees only retained messages
    try:
        await until(lambda: all(late.on(t) for t in CONFIG.values()), what="three configs")
        await until(lambda: bool(late.on(f"{BASE}/status")), what="the availability")
        configs = [s for s in late.seen if s.topic.endswith("/config")]
        relays = [s for s in configs if "/binary_sensor/" not in s.topic]
        assert sorted(s.topic for s in relays) == sorted(CONFIG.values())
        motion = [json.loads(s.payload) for s in configs if "/binary_sensor/" in s.topic]
        assert [(m["name"], m["device_class"], m["state_topic"]) for m in motion] == [
            ("hall motion", "motion", f"{BASE}/hall_motion/motion")
        ]
        assert motion[0]["availability_topic"] == f"{BASE}/status"
        assert "command_topic" not in motion[0]
        assert texts(late, f"{BASE}/hall_motion/motion") == ["OFF"]
        assert all(s.retain for s in late.seen)
        assert texts(late, f"{BASE}/status") == ["online"]
        for device in ("kitchen fan", "kitchen lamp", "kitchen socket"):
            assert texts(late, f"{BASE}/{slug(device)}/state") == ["OFF"]
    finally:
        late.close()

    fan = json.loads(texts(late, CONFIG["kitchen fan"])[0])
    assert fan == {
        "name": "kitchen fan",
        "unique_id": "troupe_test_kitchen_pi_kitchen_fan",
        "object_id": "troupe_test_kitchen_pi_kitchen_fan",
        "default_entity_id": "switch.troupe_test_kitchen_pi_kitchen_fan",
        "command_topic": f"{BASE}/{FAN}/set",
        "state_topic": f"{BASE}/{FAN}/state",
        "availability_topic": f"{BASE}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "payload_on": "ON",
        "payload_off": "OFF",
        "qos": 1,
        "optimistic": False,
        "device": {
            "identifiers": ["troupe_test_kitchen_pi"],
            "name": "kitchen-pi",
            "manufacturer": "troupe",
            "model": "troupe bot (GPIO relays)",
            "sw_version": fan["device"]["sw_version"],
        },
        "origin": {"name": "troupe", "sw_version": fan["device"]["sw_version"]},
    }
    lamp = json.loads(texts(late, CONFIG["kitchen lamp"])[0])
    assert lamp["default_entity_id"] == "light.troupe_test_kitchen_pi_kitchen_lamp"
    socket = json.loads(texts(late, CONFIG["kitchen socket"])[0])
    assert socket["device_class"] == "outlet"
    assert set(ha.entities) == {"kitchen fan", "kitchen lamp", "kitchen socket"}


async def test_an_ha_command_switches_the_relay_once_and_the_state_follows(
    relay_bot: tuple[Bot, GpioBoard], ha: HomeAssistantDiscovery, home: Watcher
) -> None:
    bot, board = relay_bot
    await saw(home, f"{BASE}/{FAN}/state", "OFF")
    await publish(home, f"{BASE}/{FAN}/set", "ON")
    await saw(home, f"{BASE}/{FAN}/state", "ON")
    board.assert_states(PINS["kitchen fan"], [False, True])
    assert ha_actions(bot, "kitchen fan") == [("ha", "on", "done")]

    await publish(home, f"{BASE}/{FAN}/set", "OFF")
    await saw(home, f"{BASE}/{FAN}/state", "OFF")
    board.assert_states(PINS["kitchen fan"], [False, True, False])
    assert ha_actions(bot, "kitchen fan") == [("ha", "on", "done"), ("ha", "off", "done")]
    assert ha_actions(bot, "kitchen lamp") == []
    assert board.history(PINS["kitchen lamp"]) == [False]


async def test_a_chat_action_updates_the_state_topic(
    relay_bot: tuple[Bot, GpioBoard], ha: HomeAssistantDiscovery, home: Watcher
) -> None:
    bot, board = relay_bot
    lamp = f"{BASE}/kitchen_lamp/state"
    await saw(home, lamp, "OFF")
    await bot._drive("C0HOME", "1700000000.000100", Action("kitchen lamp", "on"), "U0ALICE")
    await saw(home, lamp, "ON")
    assert home.on(lamp)[-1].retain is False  # a live message; the broker keeps it retained
    await bot._drive("C0HOME", "1700000000.000200", Action("kitchen lamp", "toggle"), "U0ALICE")
    await saw(home, lamp, "OFF")
    assert board.history(PINS["kitchen lamp"]) == [False, True, False]
    # a device that is not announced publishes nothing
    await bot._drive("C0HOME", "1700000000.000300", Action("hall light", "on"), "U0ALICE")
    assert not [s for s in home.seen if "hall_light" in s.topic]


async def test_a_redelivered_command_acts_once(
    relay_bot: tuple[Bot, GpioBoard], ha: HomeAssistantDiscovery
) -> None:
    bot, board = relay_bot
    topic = f"{BASE}/{FAN}/set"
    ha._on_message(Message(topic, b"ON", qos=1, mid=7))
    ha._on_message(Message(topic, b"ON", qos=1, dup=True, mid=7))
    await asyncio.wait_for(ha._queue.join(), 10)
    assert ha_actions(bot, "kitchen fan") == [("ha", "on", "done")]
    assert board.history(PINS["kitchen fan"]) == [False, True]
    # the packet id is free again: a new message with it is a new command
    ha._on_message(Message(topic, b"OFF", qos=1, mid=7))
    await until(lambda: len(ha_actions(bot, "kitchen fan")) == 2, what="the second action")
    assert board.history(PINS["kitchen fan"]) == [False, True, False]


async def test_malformed_commands_are_logged_and_ignored(
    relay_bot: tuple[Bot, GpioBoard],
    ha: HomeAssistantDiscovery,
    home: Watcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot, board = relay_bot
    caplog.set_level(logging.WARNING, logger="troupe.discovery")
    await saw(home, f"{BASE}/{FAN}/state", "OFF")
    for payload in ("BLAH", "", '{"state": "ON"}', "ON OFF", "\xff"):
        await publish(home, f"{BASE}/{FAN}/set", payload)
    await publish(home, f"{BASE}/kitchen_lamp/set", "on")  # after all of them, in order
    await saw(home, f"{BASE}/kitchen_lamp/state", "ON")
    assert ha_actions(bot, "kitchen fan") == []
    assert ha_actions(bot, "kitchen lamp") == [("ha", "on", "done")]
    assert board.history(PINS["kitchen fan"]) == [False]
    neither = [r.getMessage() for r in caplog.records if "is neither ON nor OFF" in r.getMessage()]
    assert len(neither) == 5, neither
    assert "'BLAH' is neither ON nor OFF" in neither[0]
    assert all("kitchen fan" in line for line in neither)


async def test_a_command_left_retained_at_the_broker_is_not_replayed(
    relay_bot: tuple[Bot, GpioBoard],
    broker: Broker,
    home: Watcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot, board = relay_bot
    socket = f"{BASE}/kitchen_socket"
    await publish(home, f"{socket}/set", "ON", retain=True)
    service = HomeAssistantDiscovery(settings(broker), "test")
    await service.start(bot)
    try:
        await saw(home, f"{socket}/state", "OFF")
        await publish(home, f"{socket}/set", "OFF")  # a live one after it, to wait for
        await until(lambda: len(ha_actions(bot, "kitchen socket")) == 1, what="the live command")
        await asyncio.wait_for(service._queue.join(), 10)
        assert ha_actions(bot, "kitchen socket") == [("ha", "off", "done")]
        assert board.history(PINS["kitchen socket"]) == [False]
        retained = [r.getMessage() for r in caplog.records if "retained command" in r.getMessage()]
        assert len(retained) == 1 and "kitchen socket" in retained[0], retained
    finally:
        await service.stop()
        await publish(home, f"{socket}/set", "", retain=True)


async def test_a_failed_action_is_logged_and_ha_gets_the_real_state(
    relay_bot: tuple[Bot, GpioBoard],
    ha: HomeAssistantDiscovery,
    home: Watcher,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot, _board = relay_bot

    async def broken(action: Action, *, origin: tuple[str, str]) -> str:
        raise DriverError(f"the {action.device} did not answer within 3 s")

    monkeypatch.setattr(bot, "drive", broken)
    state = f"{BASE}/{FAN}/state"
    await saw(home, state, "OFF")
    await publish(home, f"{BASE}/{FAN}/set", "ON")
    await until(lambda: texts(home, state).count("OFF") >= 2, what="the state again")
    assert "ON" not in texts(home, state)
    assert any(
        "Home Assistant asked to turn on the kitchen fan, but the kitchen fan did not answer"
        in r.getMessage()
        for r in caplog.records
    )


async def test_clean_stop_says_offline_and_stops_listening(
    relay_bot: tuple[Bot, GpioBoard], broker: Broker, home: Watcher
) -> None:
    bot, board = relay_bot
    service = HomeAssistantDiscovery(settings(broker), "test")
    await service.start(bot)
    assert service._on_state in bot.state_listeners
    await saw(home, f"{BASE}/status", "online")
    await service.stop()
    await saw(home, f"{BASE}/status", "offline")
    assert home.on(f"{BASE}/status")[-1].retain is False
    assert service._on_state not in bot.state_listeners
    await publish(home, f"{BASE}/{FAN}/set", "ON")
    late = Watcher(broker, f"{BASE}/status")
    try:
        await until(lambda: bool(late.on(f"{BASE}/status")), what="the retained status")
        assert texts(late, f"{BASE}/status") == ["offline"]
    finally:
        late.close()
    assert ha_actions(bot, "kitchen fan") == []
    assert board.history(PINS["kitchen fan"]) == [False]


async def test_ha_birth_makes_the_bot_announce_again(
    relay_bot: tuple[Bot, GpioBoard], ha: HomeAssistantDiscovery, home: Watcher
) -> None:
    topic = CONFIG["kitchen lamp"]
    await until(lambda: len(home.on(topic)) == 1, what="the first config")
    await publish(home, f"{PREFIX}/status", "online")
    await until(lambda: len(home.on(topic)) == 2, what="the config again")
    assert json.loads(texts(home, topic)[1])["unique_id"] == "troupe_test_kitchen_pi_kitchen_lamp"
    await publish(home, f"{PREFIX}/status", "offline")  # HA's last will: nothing to do
    await publish(home, f"{PREFIX}/status", "online")
    await until(lambda: len(home.on(topic)) == 3, what="the config a third time")


async def test_configs_this_bot_no_longer_has_are_removed_and_others_kept(
    relay_bot: tuple[Bot, GpioBoard], broker: Broker, home: Watcher
) -> None:
    bot, _board = relay_bot
    ghost = f"{PREFIX}/light/troupe_test_kitchen_pi_old_lamp/config"
    kind_changed = f"{PREFIX}/light/troupe_test_kitchen_pi_kitchen_fan/config"
    other = f"{PREFIX}/switch/troupe_test_kitchen_pi_2_porch/config"
    foreign = f"{PREFIX}/switch/tasmota_1234/config"
    mine = {"device": {"identifiers": ["troupe_test_kitchen_pi"]}, "name": "old lamp"}
    theirs = {"device": {"identifiers": ["troupe_test_kitchen_pi_2"]}, "name": "porch"}
    for topic, payload in [
        (ghost, mine),
        (kind_changed, mine),
        (other, theirs),
        (foreign, {"name": "plug"}),
    ]:
        await publish(home, topic, json.dumps(payload), retain=True)
    service = HomeAssistantDiscovery(settings(broker), "test")
    await service.start(bot)
    try:
        await saw(home, ghost, "", "the old lamp's config removed")
        await saw(home, kind_changed, "", "the fan's old light config removed")
        assert texts(home, other) == [json.dumps(theirs)]
        assert texts(home, foreign) == [json.dumps({"name": "plug"})]
        assert set(texts(home, CONFIG["kitchen fan"])) != {""}
    finally:
        await service.stop()
        for topic in (other, foreign):
            await publish(home, topic, "", retain=True)


async def test_a_broker_that_comes_late_still_gets_the_relays(
    relay_bot: tuple[Bot, GpioBoard], broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    bot, board = relay_bot
    broker.stop()
    service = HomeAssistantDiscovery(settings(broker), "test", connect_timeout=0.5)
    await service.start(bot)  # bounded: the bot goes on without the broker
    try:
        assert not service.connected
        assert any("not reachable yet" in r.getMessage() for r in caplog.records)
        await asyncio.to_thread(broker.start)
        await until(lambda: service.connected, what="the reconnect")
        watcher = Watcher(broker)
        try:
            await until(lambda: all(watcher.on(t) for t in CONFIG.values()), what="the configs")
            await saw(watcher, f"{BASE}/status", "online")
            await publish(watcher, f"{BASE}/{FAN}/set", "ON")
            await saw(watcher, f"{BASE}/{FAN}/state", "ON")
        finally:
            watcher.close()
        assert board.history(PINS["kitchen fan"]) == [False, True]
    finally:
        await service.stop()


async def test_mqtt5_and_a_custom_prefix(
    relay_bot: tuple[Bot, GpioBoard], broker: Broker, home: Watcher
) -> None:
    bot, _board = relay_bot
    service = HomeAssistantDiscovery(
        settings(broker, protocol="5", discovery_prefix="ha/discovery/"), "test"
    )
    await service.start(bot)
    try:
        topic = "ha/discovery/switch/troupe_test_kitchen_pi_kitchen_fan/config"
        await until(lambda: bool(home.on(topic)), what="the config under the custom prefix")
        await publish(home, f"{BASE}/{FAN}/set", "ON")
        await saw(home, f"{BASE}/{FAN}/state", "ON")
    finally:
        await service.stop()
    for topic in service._config_topics:
        await publish(home, topic, "", retain=True)


async def test_a_password_from_a_secret_and_never_in_the_log(
    relay_bot: tuple[Bot, GpioBoard],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot, _board = relay_bot
    caplog.set_level(logging.DEBUG)
    locked = mosquitto_broker(users={"troupe": "s3cret-pw"})
    try:
        monkeypatch.setenv("TROUPE_TEST_HA_PW", "s3cret-pw")
        password = Secret("env:TROUPE_TEST_HA_PW")
        service = HomeAssistantDiscovery(
            settings(locked, username="troupe", password=password), "test"
        )
        await service.start(bot)
        try:
            assert service.connected
        finally:
            await service.stop()
        wrong = HomeAssistantDiscovery(settings(locked), "test", connect_timeout=0.5)
        await wrong.start(bot)  # anonymous: refused, logged, the bot goes on
        try:
            assert not wrong.connected
            assert any("refused the connection" in r.getMessage() for r in caplog.records)
        finally:
            await wrong.stop()
    finally:
        locked.stop()
    assert "s3cret-pw" not in caplog.text


async def test_an_unreadable_password_stops_the_start_with_a_sentence(
    relay_bot: tuple[Bot, GpioBoard], broker: Broker
) -> None:
    bot, _board = relay_bot
    password = Secret("env:TROUPE_TEST_HA_NOT_SET")
    service = HomeAssistantDiscovery(settings(broker, username="troupe", password=password), "test")
    with pytest.raises(DiscoveryError, match="TROUPE_TEST_HA_NOT_SET"):
        await service.start(bot)
    assert bot.state_listeners == []
    await service.stop()


# pure parts ---------------------------------------------------------------------------------


def test_only_the_owners_relays_are_entities_and_slugs_stay_unique() -> None:
    devices = [
        *DEVICES,
        spec("a-b", "switch", "gpio_relay", "kitchen-pi", pin=5),
        spec("a b", "light", "gpio_relay", "kitchen-pi", pin=6),
    ]
    planned = plan_entities("my-home", "kitchen-pi", devices, PREFIX)
    found = [e for e in planned if e.command_topic]
    inputs = [(e.device, e.component) for e in planned if not e.command_topic]
    assert inputs == [("hall motion", "binary_sensor")]  # GPIO inputs: HA sees them too
    names = [e.device for e in found]
    assert names == ["a b", "a-b", "kitchen fan", "kitchen lamp", "kitchen socket"]
    ids = [e.object_id for e in found]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("troupe_my_home_kitchen_pi_a_b_") for i in ids[:2])
    assert len({e.command_topic for e in found}) == len(found)
    assert [e.device for e in plan_entities("my-home", "hall-pi", devices, PREFIX)] == [
        "hall heater"
    ]
    assert plan_entities("my-home", "garage-pi", devices, PREFIX) == []


@pytest.mark.parametrize(
    ("more", "expected"),
    [
        ({"discovery_prefix": "home/#"}, "discovery_prefix"),
        ({"discovery_prefix": " "}, "discovery_prefix"),
        ({"port": 0}, "mqtt port"),
        ({"password": "secret"}, "mqtt password"),
    ],
)
def test_bad_settings_are_one_sentence(more: dict[str, Any], expected: str) -> None:
    with pytest.raises(DiscoveryError) as err:
        HomeAssistantDiscovery({"host": "127.0.0.1", **more}, "test")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


async def test_attach_adds_the_service_once_when_the_file_asks(
    relay_bot: tuple[Bot, GpioBoard], tmp_path: Path
) -> None:
    bot, _board = relay_bot
    off = fleetkit.write_federation(tmp_path, "http://127.0.0.1:9/api/")
    assert attach(bot, load(off)) is None
    on = fleetkit.write_federation(
        tmp_path, "http://127.0.0.1:9/api/", mqtt="mqtt: {host: 127.0.0.1, discovery: true}\n"
    )
    first = attach(bot, load(on))
    assert isinstance(first, HomeAssistantDiscovery)
    assert attach(bot, load(on)) is first
    assert bot.services == [first]
    assert first.prefix == "homeassistant" and first.federation == "test"


def test_troupe_run_builds_the_bot_with_discovery(tmp_path: Path) -> None:
    path = fleetkit.write_federation(
        tmp_path, "http://127.0.0.1:9/api/", mqtt="mqtt: {host: 127.0.0.1, discovery: true}\n"
    )
    bot = build_bot(load(path), "kitchen-pi", journal_path=tmp_path / "j.sqlite3")
    bot.journal.close()
    assert [type(s) for s in bot.services if type(s) is not Scheduler] == [
        HomeAssistantDiscovery,
        Announcer,
    ]


# three bot processes end to end ------------------------------------------------------------------

E2E_DEVICES = """\
devices:
  kitchen fan: {kind: fan, area: kitchen, driver: gpio_relay, owner: kitchen-pi, pin: 17}
  kitchen lamp: {kind: light, area: kitchen, driver: gpio_relay, owner: kitchen-pi, pin: 27}
  hall heater: {kind: switch, area: hall, driver: gpio_relay, owner: hall-pi, pin: 17}
  garage light: {kind: light, area: garage, driver: gpio_relay, owner: garage-pi, pin: 17}
  hall light: {kind: light, area: hall, driver: counter}
areas: {kitchen: [], garage: [], hall: [], porch: []}
"""


@pytest.mark.timeout(240)
def test_three_bots_each_announce_and_drive_only_their_own_relays(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleetkit, "DEVICES", E2E_DEVICES)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    home = Watcher(broker)
    mqtt_line = f"mqtt: {{host: 127.0.0.1, port: {broker.port}, discovery: true}}\n"
    owners = {
        "kitchen-pi": {"kitchen fan": "switch", "kitchen lamp": "light"},
        "hall-pi": {"hall heater": "switch"},
        "garage-pi": {"garage light": "light"},
    }
    try:
        with fleetkit.house(tmp_path, mqtt=mqtt_line) as h:
            base = {bot: f"troupe/test/{bot}" for bot in owners}
            configs = {
                f"{PREFIX}/{component}/troupe_test_{slug(bot)}_{slug(device)}/config": bot
                for bot, devices in owners.items()
                for device, component in devices.items()
            }
            states = {
                f"{base[bot]}/{slug(device)}/state": bot
                for bot, devices in owners.items()
                for device in devices
            }
            home.wait_for(lambda _: all(home.on(t) for t in configs), 30)
            home.wait_for(lambda _: all(last(home, t) == "OFF" for t in states), 30)
            home.wait_for(
                lambda _: all(last(home, f"{b}/status") == "online" for b in base.values()), 30
            )
            announced = {s.topic for s in home.seen if s.topic.endswith("/config")}
            assert announced == set(configs)
            for topic, bot in configs.items():
                config = json.loads(texts(home, topic)[-1])
                assert config["device"]["name"] == bot
                assert config["command_topic"].startswith(base[bot] + "/")

            fan = f"{base['kitchen-pi']}/kitchen_fan"
            home.publish(f"{fan}/set", "ON")
            home.wait_for(lambda _: last(home, f"{fan}/state") == "ON", 30)
            query = "SELECT channel, device, action, status FROM actions ORDER BY id"
            h.wait_for(
                lambda: h.journal("kitchen-pi", query) == [("ha", "kitchen fan", "on", "done")],
                10,
                "one action in the owner's journal",
            )
            assert h.journal("hall-pi", query) == []
            assert h.journal("garage-pi", query) == []

            ts = h.say("turn off the kitchen fan")
            h.wait_for(lambda: bool(h.replies(ts)), 30, "the answer")
            assert [r["text"] for r in h.replies(ts)] == ["Turned off the kitchen fan."]
            home.wait_for(lambda _: last(home, f"{fan}/state") == "OFF", 30)

            home.publish(f"{fan}/set", "BLAH")
            lamp = f"{base['kitchen-pi']}/kitchen_lamp"
            home.publish(f"{lamp}/set", "ON")
            home.wait_for(lambda _: last(home, f"{lamp}/state") == "ON", 30)
            fan_rows = h.journal(
                "kitchen-pi", "SELECT channel, action FROM actions WHERE device = 'kitchen fan'"
            )
            assert len(fan_rows) == 2 and fan_rows[0] == ("ha", "on"), fan_rows
            h.wait_for(
                lambda: "'BLAH' is neither ON nor OFF" in h.fleet.bots["kitchen-pi"].output(),
                10,
                "the malformed command in the log",
            )
            assert texts(home, f"{fan}/state").count("ON") == 1

            h.fleet.kill("hall-pi", signal.SIGTERM)
            assert h.fleet.bots["hall-pi"].proc.returncode == 0
            home.wait_for(lambda _: last(home, f"{base['hall-pi']}/status") == "offline", 10)
            h.fleet.kill("garage-pi", signal.SIGKILL)
            home.wait_for(lambda _: last(home, f"{base['garage-pi']}/status") == "offline", 10)
            assert last(home, f"{base['kitchen-pi']}/status") == "online"
    finally:
        home.close()


async def test_motion_turns_the_binary_sensor_on(
    relay_bot: tuple[Bot, GpioBoard], ha: HomeAssistantDiscovery, home: Watcher
) -> None:
    bot, board = relay_bot
    topic = f"{BASE}/hall_motion/motion"
    await saw(home, topic, "OFF")
    now = time.time()
    bot.clock.saw_stamp(now, now, now)  # Slack's time, as its first answer teaches it
    board.motion(5)
    await saw(home, topic, "ON")
