"""The benchmark harness as CI's smoke test: behaviour only (exactly once), never timing."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
from mqttkit import require_mosquitto

from bench import report
from bench.chaos import KINDS, Chaos, Fault, schedule
from bench.harness import QUICK, _killed_claimer_s, run_trial
from bench.mqttrig import MqttRig
from bench.systems import LEGACY, LEGACY_MODE, TROUPE, System
from bench.workload import ALREADY, Command, nth_text, tally
from troupe.devkit.fleet import Fleet

SMOKE = replace(QUICK, clean_commands=3, chaos_commands=7, failover=False)


@pytest.mark.timeout(300)
def test_troupe_acts_exactly_once_when_one_bots_events_come_late(tmp_path: Path) -> None:
    """SlackMQ 0.1.2's hole: a bot that hears of a command seconds late must not run it."""
    require_mosquitto()  # troupe's trials drive the porch light over MQTT
    row = run_trial(System(TROUPE, "app-per-bot"), 3, SMOKE, tmp_path, fault_schedule="delay-one")
    applied = [f["fault"] for f in row["chaos"]["faults"] if f["applied"]]
    assert applied == ["delay-one"]
    assert row["commands"] == 10
    assert (row["duplicates"], row["losses"]) == (0, 0), row["chaos"]
    assert row["calls_by_method"]["pins.add"] >= 1
    assert row["http_429"] == 0
    # The chaos phase's commands are kept beside the logs, each with its one answer (read
    # back through the workspace's control/threads), in the order the indices count.
    (kept,) = tmp_path.glob("*/commands.jsonl")
    lines = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [line["at"] for line in lines] == list(range(7))
    assert [len(line["answers"]) for line in lines] == [1] * 7, lines
    assert all(line["answers"][0].startswith("Turned") for line in lines), lines
    # and the workspace's deliveries: each command handed to one connection, and acked
    (log,) = tmp_path.glob("*/workspace.log")
    trace = log.read_text()
    for line in lines:
        assert re.search(rf"\(message {re.escape(line['ts'])}\) attempt 0 to connection", trace)
    assert " acked on connection " in trace


@pytest.mark.timeout(300)
def test_one_socket_dropped_in_a_fleet_sharing_one_app_is_one_pis(tmp_path: Path) -> None:
    """shared-app: drop-one cuts one of the app's connections (one Pi's Wi-Fi), not every
    bot's, and loses nothing."""
    require_mosquitto()
    row = run_trial(System(TROUPE, "shared-app"), 2, SMOKE, tmp_path, fault_schedule="drop-one")
    (fault,) = row["chaos"]["faults"]
    assert fault["applied"], fault
    assert fault["note"] == "dropped one of the shared app's WebSockets (1)"
    assert (row["duplicates"], row["losses"], row["unanswered"]) == (0, 0, 0), row["chaos"]


@pytest.mark.timeout(300)
def test_a_bot_restarted_with_its_clock_ahead_still_takes_what_slack_hands_it(
    tmp_path: Path,
) -> None:
    """shared-app: Slack hands each command to one connection, so a clock-off bot that
    could not read (libfaketime hung its threads) lost every command handed to it. Now
    it acts on its share, timed on Slack's clock, and nothing is lost."""
    require_mosquitto()
    row = run_trial(System(TROUPE, "shared-app"), 2, SMOKE, tmp_path, fault_schedule="clock-off")
    (fault,) = row["chaos"]["faults"]
    assert fault["applied"], fault
    assert (row["duplicates"], row["losses"], row["unanswered"]) == (0, 0, 0), row["chaos"]
    bot = fault["note"].split()[0]
    kept = [json.loads(line) for line in next(tmp_path.glob("*/commands.jsonl")).open()]
    after = {c["ts"] for c in kept if c["at"] > fault["at"]}
    (actions,) = tmp_path.glob("*/actions.jsonl")
    acted = [a for a in map(json.loads, actions.open()) if a["ts"] in after]
    assert any(a["bot"] == bot for a in acted), acted


@pytest.mark.timeout(300)
def test_a_broker_restart_with_a_command_in_flight_loses_nothing(tmp_path: Path) -> None:
    """troupe's bots drive the porch light over the trial's mosquitto: the mqtt-restart
    fault kills it while a command to that light is in flight and starts it again; the
    command still acts once, counted like the counter devices' actions."""
    require_mosquitto()
    row = run_trial(
        System(TROUPE, "app-per-bot"), 2, SMOKE, tmp_path, fault_schedule="mqtt-restart"
    )
    faults = row["chaos"]["faults"]
    assert [f["fault"] for f in faults if f["applied"]] == ["mqtt-restart"], faults
    assert (row["duplicates"], row["losses"], row["unanswered"]) == (0, 0, 0), row["chaos"]
    mqtt = row["mqtt"]
    assert mqtt["broker_restarts"] and mqtt["broker_restarts"][0].startswith("mosquitto back")
    assert mqtt["commands"] >= 2  # the fault's command and the stream's own
    assert mqtt["counted"] == mqtt["received"] == mqtt["commands"], mqtt


def test_the_broker_rig_restarts_on_the_same_port_and_close_stops_everything() -> None:
    require_mosquitto()
    rig = MqttRig.start()
    try:
        port, before = rig.port, rig.broker.running
        assert rig.crash_and_restart(0.2).startswith("SIGKILL mosquitto")
        assert not rig.broker.running
        assert rig.wait_up(10) and rig.port == port and before
        assert rig.restarts[0].startswith("mosquitto back")
        assert rig.crash_and_restart(5).startswith("SIGKILL")  # closed before it is back
    finally:
        rig.close()
    assert not rig.broker.running and not rig.plug.connection.connected
    assert rig.crash_and_restart() == "skipped: the trial is over"
    time.sleep(0.3)
    assert not rig.broker.running


def test_slackmq_0_1_2_has_no_broker_to_restart() -> None:
    chaos = Chaos(System(LEGACY, LEGACY_MODE), Fleet("", "."), ["bot-1"], dict, {})
    chaos.after_post(3, Fault(3, "mqtt-restart"), "1.0")
    assert chaos.log == [
        {
            "at": 3,
            "fault": "mqtt-restart",
            "applied": False,
            "note": "skipped: SlackMQ 0.1.2's bots drive no MQTT device",
        }
    ]
    assert chaos.device_for([Fault(3, "mqtt-restart")]) is None


def test_tally_counts_duplicates_losses_and_keys_by_ts_and_device() -> None:
    sent = [Command(f"100.{i:06d}", "t", "hall light", "on") for i in range(3)]
    actions = [
        {"ts": "100.000000", "device": "hall light", "bot": "bot-1", "at": 100.2},
        {"ts": "100.000000", "device": "hall light", "bot": "bot-2", "at": 100.5},
        {"ts": "100.000001", "device": "porch light", "bot": "bot-1", "at": 100.3},
        {"ts": "100.000002", "device": "hall light", "bot": "bot-2", "at": 100.1},
    ]
    score = tally(sent, actions)
    assert (score.commands, score.duplicates, score.losses) == (3, 1, 1)
    assert score.lost == ["100.000001"]
    assert score.acted_by == ["bot-1", "bot-2"]


def test_an_already_answer_after_a_restart_counts_only_where_the_device_was_so() -> None:
    """A bot killed between its journal's record and its action, back, finds the device
    already as asked and says so: not lost where the newest older command on the device
    that acted set the same, lost where it did not (the answer would be untrue)."""
    ops = ("off", "on", "off", "off", "on")
    sent = [Command(f"100.{i:06d}", "t", "hall light", op) for i, op in enumerate(ops)]
    actions = [
        {"ts": c.ts, "device": "hall light", "bot": "bot-1", "at": 101.0 + i}
        for i, c in enumerate(sent)
        if i in (0, 1, 2)
    ]
    said = f"The hall light is off {ALREADY}, so I did not send it again."
    answers = {c.ts: ["Turned it."] for c in sent[:3]} | {c.ts: [said] for c in sent[3:]}
    score = tally(sent, actions, answers)
    assert (score.already, score.losses, score.lost) == (1, 1, [sent[4].ts])


def test_an_already_answer_counts_where_the_device_itself_heard_it_uncounted() -> None:
    """The MQTT plug's actions are counted once it confirms them: a bot killed after the
    plug switched and before the confirmation came leaves no line, and back, it finds the
    plug already on. What the plug itself heard shows the action; an "on" it heard for an
    older command counted in the same span does not."""
    ops = ("off", "on", "off")
    sent = [Command(f"100.{i:06d}", "t", "porch light", op) for i, op in enumerate(ops)]
    actions = [
        {"ts": sent[0].ts, "device": "porch light", "bot": "bot-1", "at": 100.2},
        {"ts": sent[2].ts, "device": "porch light", "bot": "bot-2", "at": 103.0},
    ]
    said = f"The porch light is on {ALREADY}, so I did not send it again."
    answers = {c.ts: ["Turned it."] for c in sent} | {sent[1].ts: [said]}
    assert tally(sent, actions, answers).lost == [sent[1].ts]
    heard = {"porch light": [(100.1, "off"), (101.5, "on"), (103.0, "off")]}
    score = tally(sent, actions, answers, heard=heard)
    assert (score.already, score.losses) == (1, 0)
    late = {"porch light": [(100.1, "off"), (103.5, "on")]}  # after the newer one acted
    assert tally(sent, actions, answers, heard=late).lost == [sent[1].ts]


def test_a_killed_claimers_takeover_by_a_bot_with_its_clock_ahead_is_timed_on_slacks_clock() -> (
    None
):
    sent = [Command(f"100.{i:06d}", "t", "hall light", "on") for i in range(2)]
    actions = [  # bot-3's clock is 600 s ahead: its line says 705.1 for 105.1
        {"ts": "100.000000", "device": "hall light", "bot": "bot-3", "at": 705.1},
        {"ts": "100.000001", "device": "hall light", "bot": "bot-1", "at": 100.4},
    ]
    log = [{"at": i, "fault": "kill", "applied": True} for i in range(2)]
    assert _killed_claimer_s(log, sent, actions, {"bot-3": 600.0}) == [5.1, 0.4]
    assert _killed_claimer_s(log, sent, actions, {}) == [605.1, 0.4]


def test_the_command_stream_cycles_devices_and_on_off() -> None:
    texts = [nth_text(i)[0] for i in range(12)]
    assert len(set(texts)) == 12
    assert texts[0] == "turn on the hall light"
    assert texts[6] == "turn off the hall light"


def test_fault_schedules() -> None:
    assert schedule("none", 10) == []
    assert [f.kind for f in schedule("kill", 10)] == ["kill"]
    quick = schedule("quick", 12)
    assert [f.kind for f in quick] == [
        "drop-one",
        "burst-429",
        "kill",
        "delay-one",
        "clock-off",
        "lost-answers",
        "person-reacts",
        "slow-device",
    ]
    assert len({f.at for f in quick}) == 8 and all(0 <= f.at < 12 for f in quick)
    full = schedule("full", 60)
    assert {f.kind for f in full} == set(KINDS)
    with pytest.raises(ValueError, match="unknown fault schedule"):
        schedule("earthquake", 10)


def test_report_has_every_field_and_a_markdown_table(tmp_path: Path) -> None:
    rows = [
        {"system": "troupe", "mode": "rtm", "bots": 2, "commands": 4, "duplicates": 0,
         "losses": 0, "out_of_order": 0, "unanswered": 0, "api_calls_per_command": 4.0,
         "calls_by_method": {"pins.add": 1.0}},
        {"system": "slackmq-0.1.2", "mode": "slackbot-rtm", "bots": 2, "error": "no\nready"},
    ]  # fmt: skip
    written = report.write(rows, tmp_path, "smoke", command="python -m bench", context={})
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert [list(r)[: len(report.FIELDS)] for r in data] == [list(report.FIELDS)] * 2
    md = (tmp_path / "smoke.md").read_text()
    assert "| troupe | rtm | 2 | 4 | 0 | 0 | 0 | 0 | 4.00 |" in md
    assert "| slackmq-0.1.2 | slackbot-rtm | 2 | error: no |" in md
    assert (tmp_path / "latest.json").read_text() == (tmp_path / "smoke.json").read_text()
    assert tmp_path / "latest.md" in written


def test_the_clock_off_bot_has_a_wrong_wall_clock_and_waits_normally() -> None:
    """A Pi with a wrong time has a wrong wall clock, not a wrong monotonic one, and its
    program is the process started (a `faketime` wrapper that forked the bot once left it
    running after the wrapper was killed). Under libfaketime a thread's timed wait hung
    (or time.sleep failed): the clock-off bot was deaf, and shared-app soaks lost the
    commands Slack handed to it."""
    import subprocess
    import sys
    import time as clock

    from bench.chaos import clock_ahead

    code = (
        "import os, queue, threading, time\n"
        "start = time.monotonic()\n"
        "time.sleep(0.1)\n"
        "try:\n"
        "    queue.Queue().get(timeout=0.1)\n"
        "except queue.Empty:\n"
        "    pass\n"
        "threading.Event().wait(0.1)\n"
        "print(os.getpid(), time.time(), time.time_ns() / 1e9, time.monotonic() - start)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **clock_ahead(600, os.environ.get("PYTHONPATH"))},
        stdout=-1,
        text=True,
    )
    out, _ = child.communicate(timeout=30)
    pid, wall, wall_ns, waited = out.split()
    assert int(pid) == child.pid
    assert abs(float(wall) - clock.time() - 600) < 30
    assert abs(float(wall_ns) - clock.time() - 600) < 30
    assert 0.3 <= float(waited) < 5


def test_shared_app_rows_stop_at_slacks_ten_socket_mode_connections() -> None:
    from bench.harness import FULL

    assert FULL.bots_for("app-per-bot") == (2, 8, 16)
    assert FULL.bots_for("shared-app") == (2, 8, 10)
    assert [f.at for f in schedule("full", 60, every=20)] == [2, 22, 42]


def test_the_soak_compresses_time_and_says_so(tmp_path: Path) -> None:
    from bench.soak import Soak, markdown, summary

    soak = Soak(commands=300, bots=8, rate_per_min=400, scale=20)
    p = soak.profile()
    assert (p.clean_commands, p.chaos_commands, p.slack_window_s) == (100, 200, 3.0)
    assert soak.slack_rate_per_min == 20
    # floors: the quick profile's, and stale over Slack's 3 s redelivery + a lease + 3 s
    assert (p.timings.stale_s, p.timings.lease_s, p.timings.linger_s) == (10, 4, 11)
    assert Soak(scale=2).timings.lease_s == 7.5  # the default lease, halved
    row = {
        "mode": "rtm",
        "bots": 8,
        "commands": 300,
        "duplicates": 0,
        "losses": 1,
        "out_of_order": 0,
        "unanswered": 0,
        "killed_claimer_s": [1.5, None, 4.5],
        "chaos": {
            "faults": [{"fault": "kill", "applied": True}],
            "lost_at": [7],
            "superseded": 4,
            "already": 1,
        },
    }
    result = summary(row, soak)
    assert result["killed_claimer_s"] == {"count": 3, "acted": 2, "median": 4.5, "max": 4.5}
    text = markdown(
        [result], soak, {"command": "c", "finished": "f", "duration_s": 1, "machine": "m"}
    )
    assert "count over 3 s" in text and "20 commands per Slack minute" in text
    assert "| rtm | 8 | 300 | 0 | 1 |" in text and "lost_at: [7]" in text
    assert "4 left to a newer command, 1 already as asked after a restart" in text
    assert p.devices == 12 and "over 12 devices (each one a command every 1.8 s)" in text


def test_the_stream_can_spread_over_more_devices_each_in_the_federation_file(
    tmp_path: Path,
) -> None:
    import yaml

    from bench.files import Timings, devices, write_federation
    from bench.workload import nth_text

    twelve = list(devices(12))
    assert twelve[:6] == list(devices()) and len(set(twelve)) == 12
    assert [nth_text(i, twelve)[1] for i in range(13)] == [*twelve, twelve[0]]
    assert nth_text(12, twelve)[2] == "off"  # the second round turns them off
    path = write_federation(
        tmp_path, "http://127.0.0.1:9/api/", "rtm", ["bot-1"], Timings(), device_count=12
    )
    declared = yaml.safe_load(path.read_text())["devices"]
    assert set(twelve) < set(declared) and len(declared) == 13  # and the slow cellar light
    with pytest.raises(ValueError, match="1 to 12 devices"):
        devices(13)


def test_the_soak_stops_posting_at_its_deadline_and_reaps_what_it_started() -> None:
    import subprocess
    import sys

    from bench.soak import Progress, Soak, _reap_children, children

    progress = Progress(Soak(commands=10), every=5, deadline=0.0)  # already past
    assert progress.on_post(0, 10) is False and progress.stopped_early
    before = children()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert _reap_children(before) == [child.pid]
    assert child.wait(timeout=10) == -9
