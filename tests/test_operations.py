"""The operations table and the one place a driver's returned state becomes an answer."""

from __future__ import annotations

import pytest

from troupe.federation import Action
from troupe.operations import OPERATIONS, describe_setting, operation
from troupe.outcomes import Acted, Queried, render
from troupe.plugin import DeviceState


def test_the_table_decides_what_a_taker_may_repeat() -> None:
    assert {name: op.idempotent for name, op in OPERATIONS.items()} == {
        "on": True,
        "off": True,
        "toggle": False,
        "set": True,
        "query": True,
    }
    assert [Action("lamp", name).idempotent for name in ("on", "toggle", "dance")] == [
        True,
        False,
        False,  # an operation nobody defined is never repeated
    ]
    assert [a.name for a in operation("set").arguments] == [
        "brightness",
        "color",
        "temperature",
        "duration_s",
    ]
    assert operation("query").changes is False
    with pytest.raises(ValueError, match="there is no operation 'dance'; there are on, off"):
        operation("dance")


@pytest.mark.parametrize(
    ("action", "state", "answer"),
    [
        (Action("lamp", "on"), DeviceState(on=True), "turned on the lamp"),
        (Action("lamp", "off"), DeviceState(on=False), "turned off the lamp"),
        (Action("lamp", "toggle"), DeviceState(on=True), "toggled the lamp (now on)"),
        (Action("lamp", "toggle"), DeviceState(), "toggled the lamp"),
        (
            Action("lamp", "set", (("brightness", 30), ("color", "Red"))),
            DeviceState(on=True, brightness=30, color="red"),
            "set the lamp to 30%, red",
        ),
        (
            Action("lamp", "set", (("temperature", 2700),)),
            DeviceState(on=True),
            "set the lamp to 2700 K",
        ),
        (Action("lamp", "set", (("brightness", 0),)), DeviceState(on=False), "turned off the lamp"),
        (Action("lamp", "set"), DeviceState(on=True), "turned on the lamp"),
    ],
)
def test_the_runtime_words_the_answer_from_the_state(
    action: Action, state: DeviceState, answer: str
) -> None:
    assert render(Acted(action, state)) == answer


def test_a_question_is_answered_from_the_state() -> None:
    state = DeviceState(on=True, brightness=40, color="red")
    assert render(Queried("lamp", state)) == "The lamp is on, 40%, red."
    assert render(Queried("lamp", DeviceState(online=False))) == "The lamp is offline."


def test_describe_setting_names_what_was_asked_in_the_tables_order() -> None:
    assert describe_setting({"temperature": 3000, "brightness": 5}) == "5%, 3000 K"
    assert describe_setting({"duration_s": 60}) == ""
