"""The gpio_relay driver on gpiozero's MockFactory, and the simulated GPIO board."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from drivekit import act
from gpiozero import OutputDevice
from gpiozero.exc import BadPinFactory
from gpiozero.pins.mock import MockFactory

from troupe.announcer import words
from troupe.federation import Action
from troupe.hardware import gpio
from troupe.hardware.gpio import BoardError, GpioBoard, Wire
from troupe.journal import ActionRecord, Journal
from troupe.plugin import DeviceState, DriverError, load_plugins
from troupe.plugins.gpio_relay import GpioRelayDriver

WAIT_S = 5.0


class Notes:
    """Collects what the driver says: its messages, and its device events as the runtime
    words them (troupe.announcer.words); `next()` waits for one (bounded)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, text: str) -> None:
        self.texts.append(text)
        self._queue.put_nowait(text)

    async def next(self) -> str:
        return await asyncio.wait_for(self._queue.get(), WAIT_S)

    async def event(self, device: str, kind: str, detail: str = "") -> None:
        await self(words(device, kind, detail))


def record(action: str, status: str = "done", state: dict | None = None) -> ActionRecord:
    return ActionRecord(
        "C1", "1.0", "kitchen lamp", action, {}, "kitchen-pi", "U1", status, "", 0.0, state
    )


def make(
    board: GpioBoard,
    *,
    notes: Notes | None = None,
    recall: Callable[[str], ActionRecord | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    **kwargs: Any,
) -> GpioRelayDriver:
    return GpioRelayDriver(
        "kitchen-pi",
        notify=notes,
        emit=notes and notes.event,
        recall=recall,
        pin_factory=board,
        clock=clock,
        **kwargs,
    )


@pytest.fixture
async def board() -> AsyncIterator[GpioBoard]:
    yield GpioBoard()


async def started(driver: GpioRelayDriver, devices: Mapping[str, Mapping[str, Any]]) -> None:
    await driver.start(devices)


def op(device: str, name: str, **args: Any) -> Action:
    return Action(device, name, tuple(sorted(args.items())))


# switching ----------------------------------------------------------------------------------


@pytest.mark.compat
async def test_active_high_relay_drives_the_pin_high_when_on(board: GpioBoard) -> None:
    driver = make(board)
    await driver.start({"kitchen fan": {"pin": 27}})
    try:
        assert board.level(27) is False
        assert await act(driver, op("kitchen fan", "on")) == "turned on the kitchen fan"
        assert board.level(27) is True
        assert (await driver.state("kitchen fan")).on is True
        assert await act(driver, op("kitchen fan", "off")) == "turned off the kitchen fan"
        assert board.level(27) is False
        assert await act(driver, op("kitchen fan", "toggle")) == "toggled the kitchen fan (now on)"
        toggled = await driver.act("kitchen fan", op("kitchen fan", "toggle"))
        assert toggled == DeviceState(on=False), "act() returns the relay's new state"
        assert (await driver.state("kitchen fan")).on is False
        board.assert_states(27, [False, True, False, True, False])
    finally:
        await driver.stop()


async def test_active_low_relay_is_on_when_the_pin_is_low(board: GpioBoard) -> None:
    driver = make(board)
    await driver.start({"kitchen lamp": {"pin": 17, "active_high": False}})
    try:
        assert board.level(17) is True, "an active-low relay starts off: pin high"
        await act(driver, op("kitchen lamp", "on"))
        assert board.level(17) is False
        assert (await driver.state("kitchen lamp")).on is True
        await act(driver, op("kitchen lamp", "toggle"))
        assert board.level(17) is True
        assert (await driver.state("kitchen lamp")).on is False
        await act(driver, op("kitchen lamp", "on"))
        await act(driver, op("kitchen lamp", "off"))
        assert board.level(17) is True
        assert board.states()["kitchen lamp"]["relay"] == {
            "pin": 17,
            "level": True,
            "active": False,
        }
    finally:
        await driver.stop()


async def test_set_is_refused_with_a_sentence(board: GpioBoard) -> None:
    driver = make(board)
    await driver.start({"kitchen fan": {"pin": 27}})
    try:
        with pytest.raises(DriverError) as err:
            await act(driver, op("kitchen fan", "set", brightness=50))
        assert str(err.value) == "the kitchen fan can only be switched on and off"
        assert board.history(27) == [False], "a refused set never touches the pin"
    finally:
        await driver.stop()


async def test_the_gpio_relay_driver_is_found_by_the_plugin_loader() -> None:
    plugins = load_plugins(["troupe.plugins.gpio_relay"], entry_points_too=False)
    assert plugins.drivers["gpio_relay"] is GpioRelayDriver


# restoring at start -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "initial", "expected"),
    [
        (record("on"), "restore", True),
        (record("off"), "restore", False),
        (record("toggle", state={"on": True}), "restore", True),
        (record("toggle", state={"on": False}), "restore", False),
        (record("toggle"), "restore", False),  # journaled before troupe kept the state
        (None, "restore", False),
        (record("on"), "off", False),
        (record("off"), "on", True),
        (None, "on", True),
    ],
)
async def test_start_restores_the_last_state_or_obeys_initial(
    board: GpioBoard, last: ActionRecord | None, initial: str, expected: bool
) -> None:
    asked: list[str] = []

    def recall(device: str) -> ActionRecord | None:
        asked.append(device)
        return last

    driver = make(board, recall=recall)
    await driver.start({"kitchen lamp": {"pin": 17, "active_high": False, "initial": initial}})
    try:
        assert (await driver.state("kitchen lamp")).on is expected
        assert board.level(17) is (not expected), "active-low: on is a low pin"
        assert asked == (["kitchen lamp"] if initial == "restore" else [])
    finally:
        await driver.stop()


async def test_a_toggle_is_restored_from_the_state_the_journal_kept(
    board: GpioBoard, tmp_path: Path
) -> None:
    """The relay's state after a toggle comes from the state act() returned, which the
    journal keeps; the answer's wording plays no part."""
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path, "kitchen-pi")
    for ts, on in (("1.0", True), ("2.0", False), ("3.0", True)):
        assert journal.action_begin("C1", ts, "kitchen lamp", "toggle", {}, "U1")
        journal.action_end("C1", ts, "kitchen lamp", "toggle", True, "whatever", {"on": on})
    journal.close()
    journal = Journal(path, "kitchen-pi")  # the bot restarted
    driver = make(board, recall=journal.last_state)
    await driver.start({"kitchen lamp": {"pin": 17, "initial": "restore"}})
    try:
        assert (await driver.state("kitchen lamp")).on is True
        assert journal.last_state("kitchen lamp").state == {"on": True}  # type: ignore[union-attr]
    finally:
        await driver.stop()
        journal.close()


async def test_restore_on_never_passes_through_off(board: GpioBoard) -> None:
    driver = make(board, recall=lambda _d: record("on"))
    await driver.start({"kitchen fan": {"pin": 27}})
    try:
        board.assert_states(27, [False, True])
        assert len(board.history(27)) == 2
    finally:
        await driver.stop()


# the wall switch ------------------------------------------------------------------------------


@pytest.mark.compat
async def test_wall_switch_press_toggles_the_relay_and_says_so(board: GpioBoard) -> None:
    notes = Notes()
    changes: list[str] = []

    async def changed(device: str) -> None:
        changes.append(device)

    driver = make(board, notes=notes, changed=changed)
    await driver.start({"kitchen lamp": {"pin": 17, "active_high": False, "button": 5}})
    try:
        assert board.level(5) is True, "the switch's pin is pulled up"
        board.press(5)
        assert await notes.next() == "kitchen lamp turned on at the wall switch"
        assert board.level(17) is False
        assert (await driver.state("kitchen lamp")).on is True

        board.press("kitchen lamp")
        assert await notes.next() == "kitchen lamp turned off at the wall switch"
        assert board.level(17) is True
        assert notes.texts == [
            "kitchen lamp turned on at the wall switch",
            "kitchen lamp turned off at the wall switch",
        ]
        board.assert_states(5, [False, True, False, True, False, True])  # floating, pulled up
        assert changes == ["kitchen lamp", "kitchen lamp"]  # watchers (HA, the page) hear it
    finally:
        await driver.stop()


async def test_wall_switch_pressed_from_another_thread_crosses_into_the_loop(
    board: GpioBoard,
) -> None:
    notes = Notes()
    driver = make(board, notes=notes)
    await driver.start({"kitchen lamp": {"pin": 17, "button": 5}})
    try:
        presser = threading.Thread(target=board.press, args=(5,))
        presser.start()
        assert await notes.next() == "kitchen lamp turned on at the wall switch"
        presser.join(WAIT_S)
        assert board.level(17) is True
    finally:
        await driver.stop()


async def test_a_stopped_driver_ignores_the_wall_switch(board: GpioBoard) -> None:
    notes = Notes()
    driver = make(board, notes=notes)
    await driver.start({"kitchen lamp": {"pin": 17, "button": 5}})
    await driver.stop()
    assert board.pin(5).when_changed is None, "nothing listens to the switch any more"
    board.press(5)
    assert notes.texts == []
    assert board.history(17) == [False]


# the motion sensor -------------------------------------------------------------------------------


class Clock:
    """Hands out the given times, one per motion the driver handles, and counts them."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.times[self.calls - 1]


async def walk_past(driver: GpioRelayDriver, board: GpioBoard, device: str) -> None:
    """Motion, then stillness, each seen by the sensor (it samples its pin in a thread)."""
    sensor = driver.gpio_device(device)
    board.motion(device)
    assert await asyncio.to_thread(sensor.wait_for_motion, WAIT_S) is True
    board.still(device)
    assert await asyncio.to_thread(sensor.wait_for_no_motion, WAIT_S) is True


async def test_motion_is_announced_at_most_once_per_interval(board: GpioBoard) -> None:
    notes = Notes()
    clock = Clock(0.0, 10.0, 59.9, 61.0, 100.0, 121.0)
    driver = make(board, notes=notes, clock=clock)
    await driver.start({"hall motion": {"motion": 22}})
    try:
        await walk_past(driver, board, "hall motion")
        assert await notes.next() == "motion in the hall"
        await walk_past(driver, board, "hall motion")  # t=10: too soon
        await walk_past(driver, board, "hall motion")  # t=59.9: still too soon
        await walk_past(driver, board, "hall motion")  # t=61: a minute after the last message
        assert await notes.next() == "motion in the hall"
        await walk_past(driver, board, "hall motion")  # t=100: 39 s after it
        await walk_past(driver, board, "hall motion")  # t=121
        assert await notes.next() == "motion in the hall"
        assert clock.calls == 6, "every motion was seen"
        assert notes.texts == ["motion in the hall"] * 3
        assert (await driver.state("hall motion")).detail == "quiet"
    finally:
        await driver.stop()


async def test_motion_interval_and_message_are_options(board: GpioBoard) -> None:
    notes = Notes()
    clock = Clock(0.0, 5.0, 11.0)
    driver = make(board, notes=notes, clock=clock)
    await driver.start(
        {"porch eye": {"motion": 23, "interval_s": 10, "message": "someone at the door"}}
    )
    try:
        for _ in range(3):
            await walk_past(driver, board, "porch eye")
        assert await notes.next() == "someone at the door"
        assert await notes.next() == "someone at the door"
        assert clock.calls == 3
        assert notes.texts == ["someone at the door"] * 2
    finally:
        await driver.stop()


async def test_a_motion_sensor_cannot_be_switched(board: GpioBoard) -> None:
    driver = make(board)
    await driver.start({"porch eye": {"motion": 23}})
    try:
        with pytest.raises(DriverError, match="the porch eye is a motion sensor"):
            await act(driver, op("porch eye", "on"))
        board.motion(23)
        sensor = driver.gpio_device("porch eye")
        assert await asyncio.to_thread(sensor.wait_for_motion, WAIT_S) is True
        assert (await driver.state("porch eye")).detail == "sensing motion"
    finally:
        await driver.stop()


# bad options and bad pins -------------------------------------------------------------------------


@pytest.mark.compat
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, ["kitchen lamp", "'pin'"]),
        ({"pin": 40}, ["kitchen lamp", "'pin'", "40", "0 to 27"]),
        ({"pin": "17"}, ["kitchen lamp", "'pin'"]),
        ({"pin": True}, ["kitchen lamp", "'pin'"]),
        ({"pin": 17, "active_high": "sometimes"}, ["kitchen lamp", "'active_high'"]),
        ({"pin": 17, "initial": "maybe"}, ["kitchen lamp", "'initial'", "restore, off or on"]),
        ({"pin": 17, "activ_high": False}, ["kitchen lamp", "unknown option 'activ_high'"]),
        ({"pin": 17, "button": -1}, ["kitchen lamp", "'button'"]),
        ({"motion": 22, "interval_s": 0}, ["kitchen lamp", "'interval_s'"]),
        ({"motion": 22, "pin": 17}, ["kitchen lamp", "pin", "motion"]),
    ],
)
async def test_bad_options_name_the_device_and_the_key(
    board: GpioBoard, options: dict[str, Any], words: list[str]
) -> None:
    driver = make(board)
    with pytest.raises(DriverError) as err:
        await driver.start({"kitchen lamp": options})
    for word in words:
        assert word in str(err.value)
    assert "\n" not in str(err.value)
    assert board.factory.pins == {}, "nothing was opened"


@pytest.mark.parametrize(
    ("devices", "words"),
    [
        (
            {"kitchen lamp": {"pin": 17}, "kitchen fan": {"pin": 17}},
            ["the kitchen lamp", "the kitchen fan", "GPIO 17"],
        ),
        (
            {"kitchen lamp": {"pin": 17, "button": 5}, "hall motion": {"motion": 5}},
            ["the wall switch of the kitchen lamp", "the hall motion", "GPIO 5"],
        ),
        ({"kitchen lamp": {"pin": 17, "button": 17}}, ["the kitchen lamp", "the wall switch"]),
    ],
)
async def test_two_devices_on_one_pin_are_refused_naming_both(
    board: GpioBoard, devices: dict[str, dict[str, Any]], words: list[str]
) -> None:
    driver = make(board)
    with pytest.raises(DriverError) as err:
        await driver.start(devices)
    for word in words:
        assert word in str(err.value)
    assert board.factory.pins == {}


async def test_a_pin_in_use_elsewhere_is_a_sentence_and_releases_the_rest(
    board: GpioBoard,
) -> None:
    squatter = OutputDevice(27, pin_factory=board.factory)
    driver = make(board)
    try:
        with pytest.raises(DriverError) as err:
            await driver.start(
                {"kitchen lamp": {"pin": 17, "button": 5}, "kitchen fan": {"pin": 27}}
            )
        assert str(err.value) == (
            "GPIO 27 (relay of the kitchen fan) is already in use by another device or program"
        )
        again = OutputDevice(17, pin_factory=board.factory)  # the lamp's pin was released
        again.close()
    finally:
        squatter.close()


class BrokenFactory(MockFactory):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            BadPinFactory("Unable to load any default pin factory!"),
            "GPIO 17 (relay of the kitchen lamp) cannot be opened: no GPIO library works here",
        ),
        (
            PermissionError(13, "Permission denied", "/dev/gpiochip0"),
            "GPIO 17 (relay of the kitchen lamp) cannot be opened: permission denied; "
            "add the user to the gpio group",
        ),
    ],
)
async def test_a_failing_pin_library_is_a_sentence(error: Exception, expected: str) -> None:
    driver = GpioRelayDriver("kitchen-pi", pin_factory=BrokenFactory(error))
    with pytest.raises(DriverError) as err:
        await driver.start({"kitchen lamp": {"pin": 17}})
    assert str(err.value) == expected


async def test_no_pin_library_at_all_is_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "nosuch")
    with pytest.raises(DriverError) as err:
        await GpioRelayDriver("kitchen-pi").start({"kitchen lamp": {"pin": 17}})
    assert str(err.value).startswith("no GPIO library works on this machine")
    assert "GPIOZERO_PIN_FACTORY=mock" in str(err.value)


class StuckFactory(MockFactory):
    """A pin library that hangs (until the test lets it go)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
        self.release.wait(WAIT_S)
        return super().pin(name, pin_class, **kwargs)


async def test_a_hung_pin_library_is_a_driver_error_not_a_hang() -> None:
    factory = StuckFactory()
    driver = GpioRelayDriver("kitchen-pi", pin_factory=factory, timeout_s=0.2)
    try:
        with pytest.raises(
            DriverError, match=r"GPIO 17 \(relay of the kitchen lamp\) did not open"
        ):
            await driver.start({"kitchen lamp": {"pin": 17}})
    finally:
        factory.release.set()


async def test_pin_factory_can_come_from_the_options(board: GpioBoard) -> None:
    driver = GpioRelayDriver("kitchen-pi", {"pin_factory": board.factory})
    await driver.start({"kitchen fan": {"pin": 27}})
    try:
        await act(driver, op("kitchen fan", "on"))
        assert board.level(27) is True
    finally:
        await driver.stop()
    with pytest.raises(DriverError, match="pin_factory must be"):
        await GpioRelayDriver("kitchen-pi", {"pin_factory": "lgpio"}).start({})
    with pytest.raises(DriverError, match="unknown key 'pins'"):
        await GpioRelayDriver("kitchen-pi", {"pins": 3}).start({})


# stop ---------------------------------------------------------------------------------------------


async def test_stop_closes_every_device_and_frees_the_pins(board: GpioBoard) -> None:
    driver = make(board)
    await driver.start({"kitchen lamp": {"pin": 17, "button": 5}, "hall motion": {"motion": 22}})
    lamp, sensor = driver.gpio_device("kitchen lamp"), driver.gpio_device("hall motion")
    await driver.stop()
    assert lamp.closed and sensor.closed
    assert board.states() == {}, "the board forgets the labels"
    for pin in (17, 5, 22):
        OutputDevice(pin, pin_factory=board.factory).close()
    with pytest.raises(KeyError):
        driver.gpio_device("kitchen lamp")


# the board and the mock registry ------------------------------------------------------------------


async def test_gpiozero_mock_env_uses_the_bots_board(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    notes = Notes()
    driver = GpioRelayDriver("test-gpio-pi", notify=notes, emit=notes.event)
    try:
        await driver.start(
            {"kitchen lamp": {"pin": 17, "button": 5}, "hall motion": {"motion": 22}}
        )
        board = gpio.board_for("test-gpio-pi", create=False)
        assert board is not None and driver.board is board
        await act(driver, op("kitchen lamp", "on"))
        assert board.states() == {
            "kitchen lamp": {
                "relay": {"pin": 17, "level": True, "active": True},
                "wall switch": {"pin": 5, "level": True, "active": False},
            },
            "hall motion": {"motion sensor": {"pin": 22, "level": False, "active": False}},
        }
        board.press("kitchen lamp")
        assert await notes.next() == "kitchen lamp turned off at the wall switch"
        assert board.level(17) is False
    finally:
        await driver.stop()
        gpio.forget("test-gpio-pi")


def test_board_refuses_to_press_an_output_or_an_unknown_device() -> None:
    board = GpioBoard()
    relay = OutputDevice(17, pin_factory=board.factory)
    board.wire(Wire("kitchen lamp", "relay", 17))
    try:
        with pytest.raises(BoardError, match="GPIO 17 \\(kitchen lamp's relay\\) is an output"):
            board.press(17)
        with pytest.raises(BoardError, match="no wall switch or sensor"):
            board.press("kitchen lamp")
        with pytest.raises(BoardError, match="not a BCM pin number"):
            board.press(True)  # type: ignore[arg-type]
        with pytest.raises(AssertionError, match="went through"):
            board.assert_states(17, [True])
        relay.on()
        board.assert_states(17, [False, True])
        board.clear_history(17)
        assert board.history(17) == [True]
    finally:
        relay.close()


def test_registered_boards_are_per_bot() -> None:
    mine = GpioBoard()
    gpio.register("test-reg-a", mine)
    try:
        assert gpio.board_for("test-reg-a") is mine
        assert gpio.board_for("test-reg-b", create=False) is None
    finally:
        gpio.forget("test-reg-a")
    assert gpio.board_for("test-reg-a", create=False) is None


# a real bot process ------------------------------------------------------------------------------

FLEET_DEVICES = """\
devices:
  kitchen lamp: {kind: light, area: kitchen, driver: gpio_relay, owner: kitchen-pi, pin: 17,
    active_high: false, button: 5}
  hall motion: {kind: sensor, area: hall, driver: gpio_relay, owner: kitchen-pi, motion: 22}
  hall light: {kind: light, area: hall, driver: counter, owner: kitchen-pi}
areas: {kitchen: [], garage: [], hall: [], porch: []}
"""


@pytest.mark.compat
@pytest.mark.timeout(180)
def test_a_bot_drives_relays_and_restores_them_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fleetkit

    monkeypatch.setattr(fleetkit, "DEVICES", FLEET_DEVICES)
    mock = {"kitchen-pi": {"GPIOZERO_PIN_FACTORY": "mock"}}
    with fleetkit.house(
        tmp_path, start=("kitchen-pi",), bot_env=mock, plugins="[troupe.plugins.gpio_relay]"
    ) as h:

        def answer(text: str) -> str:
            ts = h.say(text)
            h.wait_for(lambda: bool(h.replies(ts)), 30, f"an answer to {text!r}")
            return str(h.replies(ts)[0]["text"])

        assert answer("turn on the kitchen lamp") == "Turned on the kitchen lamp."
        assert answer("set the kitchen lamp to 50%") == (
            "The kitchen lamp can only be switched on and off."
        )
        h.fleet.kill("kitchen-pi", signal.SIGTERM)
        h.fleet.start("kitchen-pi", env=mock["kitchen-pi"])
        status = answer("status")
        assert "The kitchen lamp is on." in status.splitlines(), status
        assert "The hall motion is quiet." in status.splitlines(), status
