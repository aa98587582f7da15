"""The corpora of how people talk to a house: the share understood meets the goal, every
near miss is answered, no chatter is taken (the numbers bench/reports/corpus.md shows)."""

from __future__ import annotations

import pytest

from bench.corpus import GOAL, cases, house, render, score


@pytest.fixture(scope="module", params=["en", "de"])
def scored(request: pytest.FixtureRequest):
    return score(request.param)


def test_the_corpora_are_big_enough() -> None:
    en = house("en")
    assert len(cases("en", list(en.devices.values()))) >= 300
    assert len(cases("de", list(house("de").devices.values()))) >= 100


def test_the_share_understood_meets_the_goal(scored) -> None:
    assert scored.share >= GOAL, render([scored])


def test_every_near_miss_is_answered_and_no_chatter_is_taken(scored) -> None:
    assert scored.unanswered == []
    assert scored.chatter_taken == []
