"""Property tests on chat text: the intent parser returns None or a Command naming only
known devices, never an unexpected exception. A short budget; it runs in CI."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from troupe.intents import BRIGHTNESS_RANGE, Command, DeviceInfo, Recognizer

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

DEVICES = (
    DeviceInfo("kitchen lamp", "light", "kitchen", ("kitchen light", "lamp")),
    DeviceInfo("hall light", "light", "hall"),
    DeviceInfo("kitchen fan", "fan", "kitchen"),
    DeviceInfo("porch switch", "switch", "porch"),
    DeviceInfo("desk outlet", "outlet", "office"),
    DeviceInfo("garage door", "cover", "garage"),
    DeviceInfo("porch sensor", "sensor", "porch"),
)
AREAS = {"kitchen": ["cookhouse"], "hall": [], "porch": [], "office": [], "garage": []}
SCENES = ("movie mode", "dinner")
ALIASES = {"goodnight": "turn off all lights", "loop": "loop"}
INTENTS = {"HassTurnOn", "HassTurnOff", "HassToggle", "HassLightSet", "HassGetState", "Scene"}
WORDS = [
    "turn", "on", "off", "the", "a", "kitchen", "lamp", "light", "lights", "fan", "fans",
    "hall", "porch", "switch", "outlet", "garage", "door", "set", "to", "brightness", "%",
    "50%", "150%", "-3", "0", "100", "for", "10", "minutes", "seconds", "hours", "an",
    "hour", "red", "blue", "warm", "white", "toggle", "flip", "is", "all", "in", "every",
    "where", "everywhere", "what", "status", "of", "movie", "mode", "dinner", "activate",
    "scene", "goodnight", "loop", "cookhouse", "please", "and", "then", "!", "?", ",",
    "<@U0KITCHEN>", "xoxb-123", "🙂", "ﬁ", "İ", "\u200b", "\n",
]  # fmt: skip


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    r = Recognizer(DEVICES, AREAS, aliases=ALIASES, scenes=SCENES)
    r.warm()
    return r


def _valid(command: Command | None, text: str) -> None:
    if command is None:
        return
    assert command.intent in INTENTS
    assert set(command.devices) <= {d.name for d in DEVICES}
    assert command.text == text
    if command.scene is not None:
        assert command.scene in SCENES
    if command.brightness is not None and command.problem is None:
        assert BRIGHTNESS_RANGE[0] <= command.brightness <= BRIGHTNESS_RANGE[1]
    if command.duration_s is not None:
        assert command.duration_s >= 0


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    text=st.text(max_size=120)
    | st.lists(st.sampled_from(WORDS), max_size=14).map(" ".join)
    | st.lists(st.sampled_from(WORDS), min_size=15, max_size=40).map(" ".join),
    area=st.sampled_from([None, "kitchen", "hall", "cookhouse", "nowhere", "", "KITCHEN"]),
)
def test_any_text_gives_none_or_a_command_on_known_devices(
    recognizer: Recognizer, text: str, area: str | None
) -> None:
    _valid(recognizer.recognize(text, area=area), text)
