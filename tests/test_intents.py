"""Natural-language commands: chat text -> resolved Command, via hassil."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from troupe import intents
from troupe.intents import Command, DeviceInfo, Recognizer, available_languages

DEVICES = (
    DeviceInfo("kitchen lamp", "light", "kitchen", ("kitchen light", "lamp")),
    DeviceInfo("bedroom lamp", "light", "bedroom", ("lamp",)),
    DeviceInfo("hall light", "light", "hall"),
    DeviceInfo("kitchen fan", "fan", "kitchen"),
    DeviceInfo("bedroom fan", "fan", "bedroom"),
    DeviceInfo("porch switch", "switch", "porch"),
    DeviceInfo("desk outlet", "outlet", "office"),
    DeviceInfo("garage door", "cover", "garage"),
    DeviceInfo("porch sensor", "sensor", "porch"),
)
AREAS = {
    "kitchen": ["cookhouse"],
    "bedroom": [],
    "hall": ["hallway"],
    "porch": [],
    "office": [],
    "garage": [],
}
ALIASES = {
    "goodnight": "turn off all lights",
    "Bright hall": "set the hall light to 100%",
    "nighty": "goodnight",
}
SCENES = ("movie mode", "dinner")
ALL_LIGHTS = ("bedroom lamp", "hall light", "kitchen lamp")


@pytest.fixture(scope="module")
def en() -> Recognizer:
    recognizer = Recognizer(DEVICES, AREAS, aliases=ALIASES, scenes=SCENES)
    recognizer.warm()
    return recognizer


@pytest.fixture(scope="module")
def de() -> Recognizer:
    recognizer = Recognizer(
        [
            DeviceInfo("stehlampe", "light", "wohnzimmer"),
            DeviceInfo("ventilator", "fan", "küche"),
        ],
        {"wohnzimmer": [], "küche": []},
        language="de",
    )
    recognizer.warm()
    return recognizer


def command(recognizer: Recognizer, text: str, area: str | None = None) -> Command:
    result = recognizer.recognize(text, area=area)
    assert result is not None, text
    return result


@pytest.mark.parametrize(
    ("text", "area", "intent", "devices"),
    [
        ("lights on", "kitchen", "HassTurnOn", ("kitchen lamp",)),
        ("lights on", None, "HassTurnOn", ALL_LIGHTS),
        ("turn on the lights", "bedroom", "HassTurnOn", ("bedroom lamp",)),
        ("turn on the lights", None, "HassTurnOn", ALL_LIGHTS),
        ("Lights on!", "hall", "HassTurnOn", ("hall light",)),
        ("LIGHTS OFF.", "hall", "HassTurnOff", ("hall light",)),
        ("turn off the kitchen fan", None, "HassTurnOff", ("kitchen fan",)),
        ("Turn off the kitchen fan, please", "bedroom", "HassTurnOff", ("kitchen fan",)),
        ("turn on the kitchen lights", None, "HassTurnOn", ("kitchen lamp",)),
        ("turn off all lights", "kitchen", "HassTurnOff", ALL_LIGHTS),
        ("turn on all lights", "kitchen", "HassTurnOn", ALL_LIGHTS),
        ("toggle the kitchen lamp", None, "HassToggle", ("kitchen lamp",)),
        ("toggle the lights", "hall", "HassToggle", ("hall light",)),
        ("turn on the fans", "kitchen", "HassTurnOn", ("kitchen fan",)),
        ("turn on the fans", None, "HassTurnOn", ("bedroom fan", "kitchen fan")),
        ("turn off all fans", "kitchen", "HassTurnOff", ("bedroom fan", "kitchen fan")),
        ("turn on the outlets", "office", "HassTurnOn", ("desk outlet",)),
        ("turn off the switches", "porch", "HassTurnOff", ("porch switch",)),
        ("open the garage door", None, "HassTurnOn", ("garage door",)),
        ("close the garage door", None, "HassTurnOff", ("garage door",)),
        ("turn on the kitchen light", None, "HassTurnOn", ("kitchen lamp",)),
        ("turn on the cookhouse lights", None, "HassTurnOn", ("kitchen lamp",)),
        ("turn off the lights in the hallway", "kitchen", "HassTurnOff", ("hall light",)),
        ("turn on the lamp", "bedroom", "HassTurnOn", ("bedroom lamp",)),
        ("turn on the lamp", None, "HassTurnOn", ("bedroom lamp", "kitchen lamp")),
        ("turn on the lamp in the kitchen", "bedroom", "HassTurnOn", ("kitchen lamp",)),
        ("what is the porch sensor", None, "HassGetState", ("porch sensor",)),
        ("are any lights on", "kitchen", "HassGetState", ALL_LIGHTS),
    ],
)
def test_switching_and_targets(
    en: Recognizer, text: str, area: str | None, intent: str, devices: tuple[str, ...]
) -> None:
    result = command(en, text, area)
    assert (result.intent, result.devices) == (intent, devices)
    assert result.text == text
    assert result.unknown is None and result.problem is None


@pytest.mark.parametrize(
    "text",
    ["set the hall light to 30%", "set the hall light brightness to 30 percent"],
)
def test_brightness(en: Recognizer, text: str) -> None:
    result = command(en, text)
    assert (result.intent, result.devices, result.brightness) == (
        "HassLightSet",
        ("hall light",),
        30,
    )
    assert result.problem is None


def test_brightness_in_the_channel_area(en: Recognizer) -> None:
    result = command(en, "set the brightness to 50%", "kitchen")
    assert (result.intent, result.devices, result.brightness) == (
        "HassLightSet",
        ("kitchen lamp",),
        50,
    )


@pytest.mark.parametrize(
    "text", ["set the hall light to 150%", "set the hall light to 101 percent"]
)
def test_brightness_out_of_range_is_kept_with_a_problem(en: Recognizer, text: str) -> None:
    result = command(en, text)
    assert result.intent == "HassLightSet"
    assert result.devices == ("hall light",)
    assert result.brightness in (150, 101)
    assert result.problem == "brightness must be between 0 and 100"


def test_colour(en: Recognizer) -> None:
    result = command(en, "turn the hall light red")
    assert (result.intent, result.devices, result.color) == (
        "HassLightSet",
        ("hall light",),
        "red",
    )
    assert result.temperature is None


@pytest.mark.parametrize(
    ("text", "kelvin"),
    [
        ("turn the hall light warm white", 2700),
        ("turn the hall light cool white", 5000),
        ("set the hall light to daylight", 6500),
        ("set the hall light color temperature to 3000 kelvin", 3000),
    ],
)
def test_colour_temperature(en: Recognizer, text: str, kelvin: int) -> None:
    result = command(en, text)
    assert (result.intent, result.devices, result.temperature) == (
        "HassLightSet",
        ("hall light",),
        kelvin,
    )
    assert result.color is None


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("is the porch switch on", "on"),
        ("Is the porch switch off?", "off"),
        ("what is the status of the porch switch", None),
        ("what's the state of the porch switch", None),
    ],
)
def test_state_questions(en: Recognizer, text: str, query: str | None) -> None:
    result = command(en, text)
    assert (result.intent, result.devices, result.query) == (
        "HassGetState",
        ("porch switch",),
        query,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("turn on the kitchen fan for 10 minutes", 600.0),
        ("turn on the kitchen fan for 30 seconds", 30.0),
        ("turn on the kitchen fan for an hour", 3600.0),
        ("turn on the kitchen fan for thirty seconds", 30.0),
        ("turn on the kitchen fan for half an hour", 1800.0),
        ("turn on the kitchen fan for 1.5 hours!", 5400.0),
        ("for 2 minutes turn on the kitchen fan", 120.0),
    ],
)
def test_duration_is_stripped_and_kept(en: Recognizer, text: str, seconds: float) -> None:
    result = command(en, text)
    assert (result.intent, result.devices, result.duration_s) == (
        "HassTurnOn",
        ("kitchen fan",),
        seconds,
    )
    assert result.text == text


@pytest.mark.parametrize(
    "text",
    [
        "turn on the kitchen lamp :bulb:",
        "turn on the kitchen lamp 💡",
        ":bulb: turn on the kitchen lamp",
        "turn on the kitchen lamp, thanks!",
        "turn on the kitchen lamp pls :pray:",
    ],
)
def test_emoji_and_courtesy_around_a_command_are_not_part_of_it(en: Recognizer, text: str) -> None:
    result = command(en, text)
    assert (result.intent, result.devices, result.text) == ("HassTurnOn", ("kitchen lamp",), text)


def test_emoji_is_not_part_of_an_unknown_name(en: Recognizer) -> None:
    assert command(en, "turn on the tv 📺").unknown == "tv"
    assert en.recognize("thanks :pray:") is None


def test_no_duration_is_none(en: Recognizer) -> None:
    assert command(en, "turn on the kitchen fan").duration_s is None


@pytest.mark.parametrize(
    ("text", "scene"),
    [
        ("movie mode", "movie mode"),
        ("Movie Mode!", "movie mode"),
        ("activate movie mode", "movie mode"),
        ("start dinner", "dinner"),
        ("run the dinner scene", "dinner"),
    ],
)
def test_scenes(en: Recognizer, text: str, scene: str) -> None:
    result = command(en, text)
    assert (result.intent, result.scene, result.devices) == ("Scene", scene, ())


def test_scene_needs_its_whole_name(en: Recognizer) -> None:
    assert en.recognize("movie") is None
    assert en.recognize("activate movie mode now and then") is None


@pytest.mark.parametrize("text", ["goodnight", "Goodnight!", "GOODNIGHT"])
def test_alias_expands_to_its_command(en: Recognizer, text: str) -> None:
    result = command(en, text, "kitchen")
    assert (result.intent, result.devices) == ("HassTurnOff", ALL_LIGHTS)
    assert result.text == text


def test_alias_keys_are_case_insensitive(en: Recognizer) -> None:
    result = command(en, "bright hall")
    assert (result.intent, result.devices, result.brightness) == (
        "HassLightSet",
        ("hall light",),
        100,
    )


def test_alias_expands_only_once(en: Recognizer) -> None:
    assert en.recognize("nighty") is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "!!!",
        "hello there",
        "what's the weather like",
        "what time is it",
        "set a timer for 5 minutes",
        "the kitchen lamp",
        "kitchen lamp",
        "I left the porch switch alone",
        "lights",
        "hi mom, dinner at 7",
        "thanks!",
        "turn left at the light",
        "turn your phone on, I've been calling you",
        "the porch light was on all night",
        "I'm in the kitchen",
        "7pm",
        "game on",
        "is the game on?",
        "what's the plan",
        "what's the status of the project",
        "set the table to 6",
        "turn on the news",
        "start the car",
        "flip the pancakes",
        "is grandma's light on",
        "fan of the new lamp",
    ],
)
def test_not_a_command(en: Recognizer, text: str) -> None:
    assert en.recognize(text) is None


@pytest.mark.parametrize(
    ("text", "unknown", "suggestion"),
    [
        ("switch off the kitchn fan", "kitchn", "kitchen fan"),
        ("turn off the porch swich", "porch swich", "porch switch"),
        ("open the garage dor", "garage dor", "garage door"),
        ("turn on the lights in the bedrom", "bedrom", "bedroom lamp"),
        ("turn on the desk outlett", "desk outlett", "desk outlet"),
        ("kitchn fan off", "kitchn", "kitchen fan"),
        ("open the garage", "garage", "garage door"),
        ("turn on the tv", "tv", None),
        ("turn on the garage heater", "garage heater", None),
    ],
)
def test_a_near_miss_suggests_the_closest_known_name(
    en: Recognizer, text: str, unknown: str, suggestion: str | None
) -> None:
    result = command(en, text)
    assert (result.devices, result.unknown, result.suggestion) == ((), unknown, suggestion)


def test_a_verbless_near_miss_needs_a_known_spelling_or_a_device_word(en: Recognizer) -> None:
    assert command(en, "is the heater on").unknown == "heater"
    assert en.recognize("is the party on") is None


@pytest.mark.parametrize(
    ("text", "intent", "unknown"),
    [
        ("turn on the tv", "HassTurnOn", "tv"),
        ("turn on the garage heater", "HassTurnOn", "garage heater"),
        ("turn off the TV in the kitchen", "HassTurnOff", "TV in the kitchen"),
        ("turn on the hall light in the kitchen", "HassTurnOn", "hall light in the kitchen"),
        ("turn on the garage lights", "HassTurnOn", "garage light"),
        ("turn on the attic lights", "HassTurnOn", "attic"),
        ("toggle the heater", "HassToggle", "heater"),
        ("is the sprinkler on", "HassGetState", "sprinkler"),
    ],
)
def test_unknown_device_is_named(en: Recognizer, text: str, intent: str, unknown: str) -> None:
    result = command(en, text)
    assert (result.intent, result.devices, result.unknown) == (intent, (), unknown)


def test_a_fan_is_not_turned_on_when_the_area_has_none(en: Recognizer) -> None:
    result = command(en, "turn on the fans", "hall")
    assert (result.devices, result.unknown) == ((), "hall fan")


def test_command_is_frozen(en: Recognizer) -> None:
    result = command(en, "lights on")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.devices = ()  # type: ignore[misc]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(alphabet=st.sampled_from(list("abcdefghilmnoprstuw %!?'.0123456789")), max_size=40)
    | st.lists(
        st.sampled_from(
            [
                "turn",
                "on",
                "off",
                "the",
                "kitchen",
                "lamp",
                "fan",
                "lights",
                "set",
                "to",
                "50%",
                "for",
                "10",
                "minutes",
                "red",
                "toggle",
                "is",
                "all",
                "in",
                "hall",
            ]
        ),
        max_size=8,
    ).map(" ".join),
    area=st.sampled_from([None, "kitchen", "hall", "nowhere"]),
)
def test_any_text_gives_a_command_on_known_devices_or_none(
    en: Recognizer, text: str, area: str | None
) -> None:
    result = en.recognize(text, area=area)
    if result is not None:
        assert set(result.devices) <= {d.name for d in DEVICES}
        assert result.devices or result.unknown or result.scene
        assert result.text == text


def test_unknown_language_names_the_available_ones() -> None:
    with pytest.raises(ValueError, match="available languages") as raised:
        Recognizer(DEVICES, AREAS, language="xx")
    assert "en" in str(raised.value) and "de" in str(raised.value)
    assert "de" in available_languages()


def test_unknown_device_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="toaster"):
        Recognizer([DeviceInfo("bread", "toaster", "kitchen")], AREAS)


def test_warm_is_done_once_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    recognizer = Recognizer(DEVICES[:1], {"kitchen": []})
    assert recognizer.warm_seconds is None
    with caplog.at_level(logging.INFO, logger="troupe.intents"):
        seconds = recognizer.warm()
        assert recognizer.warm() == seconds
    warmed = [r for r in caplog.records if "warmed in" in r.getMessage()]
    assert len(warmed) == 1
    assert seconds > 0
    assert command(recognizer, "turn on the kitchen lamp").devices == ("kitchen lamp",)


def test_recognize_warms_on_first_use() -> None:
    recognizer = Recognizer(DEVICES[:1], {"kitchen": []})
    assert command(recognizer, "lights on", "kitchen").devices == ("kitchen lamp",)
    assert recognizer.warm_seconds is not None


@pytest.mark.parametrize(
    ("text", "area", "intent", "devices"),
    [
        ("Licht an", "wohnzimmer", "HassTurnOn", ("stehlampe",)),
        ("Schalte die Stehlampe an", None, "HassTurnOn", ("stehlampe",)),
        ("Schalte die Stehlampe aus", None, "HassTurnOff", ("stehlampe",)),
        ("Schalte das Licht im Wohnzimmer an", None, "HassTurnOn", ("stehlampe",)),
        ("Ist die Stehlampe an", None, "HassGetState", ("stehlampe",)),
    ],
)
def test_german(
    de: Recognizer, text: str, area: str | None, intent: str, devices: tuple[str, ...]
) -> None:
    result = command(de, text, area)
    assert (result.intent, result.devices) == (intent, devices)


def test_german_duration(de: Recognizer) -> None:
    result = command(de, "Schalte den Ventilator für zehn Minuten an")
    assert (result.intent, result.devices, result.duration_s) == (
        "HassTurnOn",
        ("ventilator",),
        600.0,
    )


def test_german_negative(de: Recognizer) -> None:
    assert de.recognize("Wie spät ist es") is None
    assert de.recognize("turn on the lights") is None


def test_text_longer_than_a_spoken_command_is_not_parsed(
    en: Recognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "turn on the kitchen light"
    assert en.recognize(text) is not None
    assert en.recognize(text + " and" * 100) is None
    monkeypatch.setattr(intents, "MAX_SPOKEN", len(text) - 1)
    assert en.recognize(text) is None


def test_a_language_without_troupes_words_keeps_unknown_names_silent() -> None:
    """French has HA's sentences but no intents_data file: commands work, misses stay quiet."""
    recognizer = Recognizer([DeviceInfo("lampe", "light", "salon")], {"salon": []}, language="fr")
    assert command(recognizer, "allume la lampe").devices == ("lampe",)
    assert recognizer.recognize("allume la télé") is None
    assert recognizer.recognize("salut tout le monde") is None


@pytest.mark.parametrize(
    ("language", "text", "intent"),
    [
        ("en", "all lights off", "HassTurnOff"),
        ("en", "please, all the lights off", "HassTurnOff"),
        ("en", "are all lights off", "HassGetState"),
        ("en", "all lights off?", "HassGetState"),
        ("de", "alle lichter aus", "HassTurnOff"),
        ("de", "sind alle lichter aus", "HassGetState"),
    ],
)
def test_a_state_without_a_question_is_an_order(language, text, intent):
    """Home Assistant's sentences read "all lights off" as "are all lights off?"."""
    from bench.corpus import house

    command = house(language).recognize(text)
    assert command is not None and command.intent == intent
