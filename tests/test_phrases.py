"""Lists, "everything", relative changes, slang and short names (troupe.phrases)."""

from __future__ import annotations

import pytest

from bench.corpus import house
from troupe.intents import Recognizer
from troupe.phrases import BRIGHTNESS_STEP, SMALL_BRIGHTNESS_STEP, TEMPERATURE_STEP, stepped

SWITCHABLE = (
    "bedroom bulb",
    "garage light",
    "garden pump",
    "hall light",
    "kitchen fan",
    "kitchen lamp",
    "living room lamp",
    "porch switch",
)
LIGHTS = ("bedroom bulb", "garage light", "hall light", "kitchen lamp", "living room lamp")
HALL_AND_KITCHEN = ("hall light", "kitchen lamp")
PUMP_AND_PORCH = ("garden pump", "porch switch")


@pytest.fixture(scope="module")
def en() -> Recognizer:
    return house("en")


@pytest.fixture(scope="module")
def de() -> Recognizer:
    return house("de")


@pytest.mark.parametrize(
    ("text", "intent", "devices"),
    [
        (
            "turn on the kitchen lamp and the hall light",
            "HassTurnOn",
            ("hall light", "kitchen lamp"),
        ),
        (
            "turn off the porch switch, the garden pump and the kitchen fan",
            "HassTurnOff",
            ("garden pump", "kitchen fan", "porch switch"),
        ),
        ("hall light and porch switch off", "HassTurnOff", ("hall light", "porch switch")),
        (
            "are the porch switch and the garden pump on",
            "HassGetState",
            ("garden pump", "porch switch"),
        ),
    ],
)
def test_a_list_is_one_command_on_each_device(en, text, intent, devices) -> None:
    command = en.recognize(text)
    assert command is not None and command.unknown is None
    assert (command.intent, command.devices) == (intent, devices)


def test_a_list_keeps_its_value(en) -> None:
    command = en.recognize("set the hall light and the kitchen lamp to 40%")
    assert command is not None
    assert command.devices == ("hall light", "kitchen lamp") and command.brightness == 40


def test_a_list_naming_an_unknown_device_is_no_command_on_the_others(en) -> None:
    command = en.recognize("turn on the hall light and the gazebo lights")
    assert command is None or not command.devices


@pytest.mark.parametrize(
    "text", ["turn off everything", "everything off", "turn off all devices", "kill everything"]
)
def test_everything_is_every_switchable_device_but_not_the_garage_door(en, text) -> None:
    command = en.recognize(text)
    assert command is not None
    assert (command.intent, command.devices) == ("HassTurnOff", SWITCHABLE)


def test_everything_in_a_room(en, de) -> None:
    command = en.recognize("turn off everything in the kitchen")
    assert command is not None and command.devices == ("kitchen fan", "kitchen lamp")
    command = de.recognize("schalte alles in der küche aus")
    assert command is not None and command.devices == ("küchenlampe", "ventilator")


@pytest.mark.parametrize(
    ("text", "step"),
    [
        ("dim the hall light", -BRIGHTNESS_STEP),
        ("make the hall light a bit brighter", SMALL_BRIGHTNESS_STEP),
        ("turn the brightness up on the hall light", BRIGHTNESS_STEP),
        ("hall light a bit darker", -SMALL_BRIGHTNESS_STEP),
    ],
)
def test_relative_brightness(en, text, step) -> None:
    command = en.recognize(text)
    assert command is not None
    assert (command.intent, command.devices) == ("HassLightSet", ("hall light",))
    assert command.brightness_step == step and command.brightness is None


def test_dimming_to_a_value_is_absolute(en) -> None:
    command = en.recognize("dim the hall light to 10%")
    assert command is not None
    assert (command.devices, command.brightness, command.brightness_step) == (
        ("hall light",),
        10,
        None,
    )


def test_warmer_and_cooler(en, de) -> None:
    warmer = en.recognize("make the living room lamp warmer")
    cooler = de.recognize("mach die stehlampe kälter")
    assert warmer is not None and warmer.temperature_step == -TEMPERATURE_STEP
    assert cooler is not None and cooler.temperature_step == TEMPERATURE_STEP


@pytest.mark.parametrize(
    "text", ["turn it up", "turn it down!!", "it's getting darker", "a bit warmer today"]
)
def test_relative_words_without_a_device_are_chatter(en, text) -> None:
    assert en.recognize(text) is None


@pytest.mark.parametrize(
    ("text", "intent", "devices"),
    [
        (
            "kill the lights",
            "HassTurnOff",
            ("bedroom bulb", "garage light", "hall light", "kitchen lamp", "living room lamp"),
        ),
        ("shut off the garden pump", "HassTurnOff", ("garden pump",)),
        ("pump on", "HassTurnOn", ("garden pump",)),
        ("are the kitchen lights on", "HassGetState", ("kitchen lamp",)),
    ],
)
def test_slang_and_short_names(en, text, intent, devices) -> None:
    command = en.recognize(text)
    assert command is not None and command.unknown is None
    assert (command.intent, command.devices) == (intent, devices)


def test_a_short_name_never_opens_a_cover(en) -> None:
    command = en.recognize("open the garage")
    assert command is not None and command.devices == ()
    assert command.suggestion == "garage door"


def test_stepped_stays_in_range() -> None:
    assert stepped(90, 25, 1, 100, 0) == 100
    assert stepped(None, -25, 1, 100, 100) == 75
    assert stepped(5, -25, 1, 100, 0) == 1
