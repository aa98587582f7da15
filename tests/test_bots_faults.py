"""Faults only bot processes show, which must neither duplicate nor lose a command: dropped
sockets (Socket Mode redelivery and reconnects), restarts, SIGTERM, a power cut, RTM's
reconnects. (Late events and 429s are tested in-process: tests/test_pipeline.py and
tests/test_exactly_once_home.py.)"""

from __future__ import annotations

import signal
import time

import pytest
from fleetkit import BOTS, house

SHARED = {"turn on the hall light": {"hall light"}, "turn off the porch switch": {"porch switch"}}
MIXED = {**SHARED, "lights off": {"kitchen lamp", "hall light", "garage light"}}


def _send(h, workload: dict[str, set[str]], n: int, between=None) -> dict[str, set[str]]:
    texts = list(workload)
    sent = {}
    for i in range(n):
        sent[h.say(texts[i % len(texts)])] = workload[texts[i % len(texts)]]
        if between:
            between(i)
        time.sleep(0.1)
    return sent


def _settle_and_check(h, sent: dict[str, set[str]], timeout: float = 90) -> None:
    expected = sum(len(d) for d in sent.values())
    h.wait_for(lambda: len(h.actions()) >= expected, timeout, f"{expected} actions")
    time.sleep(1.5)
    per = h.per_command()
    assert [k for k, c in per.items() if c > 1] == []
    for ts, devices in sent.items():
        assert {d for (t, d) in per if t == ts} == devices, ts
    assert len(h.actions()) == expected


@pytest.mark.timeout(240)
def test_dropped_sockets_redeliver_and_reconnect_without_duplicates(tmp_path):
    with house(tmp_path) as h:

        def drop(i: int) -> None:
            if i % 3 == 1:
                h.ws.control("drop", app=["kitchen-pi", "hall-pi", "garage-pi"][i % 3])

        sent = _send(h, MIXED, 12, between=drop)
        _settle_and_check(h, sent)


@pytest.mark.timeout(240)
def test_restart_mid_stream_neither_loses_nor_repeats(tmp_path):
    with house(tmp_path) as h:
        first = _send(h, MIXED, 6)
        h.fleet.kill("hall-pi", signal.SIGTERM)
        assert h.fleet.bots["hall-pi"].proc.returncode == 0
        during = _send(h, SHARED, 6)
        h.fleet.start("hall-pi")
        after = _send(h, MIXED, 6)
        _settle_and_check(h, {**first, **during, **after})


def _died(h, name: str) -> bool:
    return not h.fleet.bots[name].alive


@pytest.mark.timeout(240)
def test_power_cut_mid_action_is_finished_while_fresh_and_reported_when_stale(tmp_path):
    """A bot killed after journaling a device action, before the driver ran it: started
    again within the stale limit it finishes the command (once); past it, it says so."""
    cut = {"TROUPE_FAULTS": "die-mid-action"}
    timings = "{stale_s: 6, lease_s: 2, stagger_s: 0.3, linger_s: 20}"
    with house(tmp_path, start=("hall-pi",), bot_env={"hall-pi": cut}, slackmq=timings) as h:
        fresh = h.say("turn on the hall light")
        h.wait_for(lambda: _died(h, "hall-pi"), 30, "hall-pi to die mid-action")
        assert h.actions() == []
        h.fleet.start("hall-pi", env={"TROUPE_FAULTS": ""})
        h.wait_for(lambda: len(h.actions()) >= 1, 30, "the resumed command to act")
        assert [(a["ts"], a["device"]) for a in h.actions()] == [(fresh, "hall light")]
        h.wait_for(lambda: h.replies(fresh), 15, "an answer to the resumed command")
        status = "SELECT status FROM commands WHERE ts = '%s'"
        h.wait_for(lambda: h.journal("hall-pi", status % fresh) == [("done",)], 15, "done")

        h.fleet.kill("hall-pi", signal.SIGTERM)
        h.fleet.start("hall-pi", env=cut)
        stale = h.say("turn off the hall light")
        h.wait_for(lambda: _died(h, "hall-pi"), 30, "hall-pi to die mid-action again")
        h.wait_for(lambda: time.time() - float(stale) > 7, 10, "the command to go stale")
        h.fleet.start("hall-pi", env={"TROUPE_FAULTS": ""})
        h.wait_for(lambda: h.replies(stale), 30, "a report on the stale command")
        (reply,) = h.replies(stale)
        assert "I was stopped while I was going to turn off the hall light" in reply["text"]
        assert h.journal("hall-pi", status % stale) == [("failed",)]
        assert len(h.actions()) == 1


@pytest.mark.timeout(240)
def test_rtm_catches_up_on_what_was_said_while_every_connection_was_down(tmp_path):
    """RTM replays nothing after a reconnect: the bots read back the channel instead."""
    with house(tmp_path, "rtm") as h:
        h.ws.control("fail", method="rtm.connect", status=503, count=100_000, app="troupe-classic")
        assert h.ws.control("drop", app="troupe-classic")["dropped"] == len(BOTS)
        ts = h.say("turn on the hall light")
        missed = h.say("turn off the porch switch")

        def rtm_connections() -> int:
            return h.ws.control("connections")["apps"]["A0CLASSIC"]["rtm"]

        def starts() -> int:
            return h.ws.control("counters")["calls"]["A0CLASSIC"].get("rtm.connect", 0)

        before = starts()
        h.wait_for(lambda: starts() > before + 6, 30, "the bots to retry")
        assert rtm_connections() == 0 and h.actions() == []
        h.ws.workspace.faults.fail.clear()
        h.wait_for(lambda: rtm_connections() == len(BOTS), 60, "the bots to reconnect")
        _settle_and_check(h, {ts: {"hall light"}, missed: {"porch switch"}})
