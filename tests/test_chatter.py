"""Chatter stays silent, near-misses get one helpful answer: corpora through the recognizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.corpus import DE_AREAS, DE_DEVICES, EN_AREAS, EN_DEVICES
from troupe.intents import Recognizer

DATA = Path(__file__).parent / "data"

# The demo house plus its garage door, in English and in German: bench/corpus.py's.
# A channel without an area, and one whose commands default to the kitchen.
CHANNEL_AREAS = {"en": (None, "kitchen"), "de": (None, "küche")}


def corpus(name: str) -> list[str]:
    """One chat message a line; "# " lines are comments."""
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("# ")]


@pytest.fixture(scope="module", params=["en", "de"])
def house(request: pytest.FixtureRequest) -> Recognizer:
    if request.param == "en":
        recognizer = Recognizer(
            EN_DEVICES,
            EN_AREAS,
            scenes=("movie mode",),
            aliases={"goodnight": "turn off all lights"},
        )
    else:
        recognizer = Recognizer(DE_DEVICES, DE_AREAS, language="de", scenes=("filmabend",))
    recognizer.warm()
    return recognizer


def test_the_corpora_are_big_enough() -> None:
    assert len(corpus("chatter_en.txt")) >= 150
    assert len(corpus("nearmiss_en.txt")) >= 40
    assert len(corpus("chatter_de.txt")) >= 150
    assert len(corpus("nearmiss_de.txt")) >= 40


def test_chatter_is_never_taken_for_a_command(house: Recognizer) -> None:
    lines = corpus(f"chatter_{house.language}.txt")
    taken = []
    for area in CHANNEL_AREAS[house.language]:
        for line in lines:
            command = house.recognize(line, area=area)
            if command is not None:
                taken.append((line, area, command))
    assert taken == []


def test_every_near_miss_gets_an_answer_and_acts_on_nothing(house: Recognizer) -> None:
    lines = corpus(f"nearmiss_{house.language}.txt")
    wrong = []
    for area in CHANNEL_AREAS[house.language]:
        for line in lines:
            command = house.recognize(line, area=area)
            answered = command is not None and bool(command.unknown or command.problem)
            # The bot acts only on a command without a problem; a near miss has none.
            acts = command is not None and bool(command.devices) and not command.problem
            if not answered or acts:
                wrong.append((line, area, command))
    assert wrong == []
