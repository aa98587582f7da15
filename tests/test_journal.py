"""The journal: what a bot did, deduplicated, and intact after any number of kill -9s."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from troupe.journal import SCHEMA, Journal, Timer


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "state" / "kitchen-pi.sqlite3", "kitchen-pi")
    yield j
    j.close()


# --- semantics ----------------------------------------------------------------------


def test_begin_is_true_once_per_message(journal: Journal) -> None:
    assert journal.begin("C1", "1.000001", "lights on", "U1") is True
    assert journal.begin("C1", "1.000001", "lights on", "U1") is False
    assert journal.begin("C2", "1.000001", "lights on", "U1") is True
    assert journal.status("C1", "1.000001") == "begun"
    assert journal.status("C1", "9.000000") is None


def test_finish_and_unfinished(journal: Journal) -> None:
    for ts in ("3.000000", "1.000000", "2.000000", "4.000000"):
        journal.begin("C1", ts, f"cmd {ts}", None)
    journal.finish("C1", "2.000000")
    journal.finish("C1", "4.000000", "failed", "driver error")
    assert journal.status("C1", "2.000000") == "done"
    assert journal.status("C1", "4.000000") == "failed"
    assert journal.unfinished() == [
        ("C1", "1.000000", "cmd 1.000000"),
        ("C1", "3.000000", "cmd 3.000000"),
    ]
    assert journal.begin("C1", "2.000000", "cmd", None) is False


def test_interrupt_lets_a_restarted_bot_take_up_what_a_stop_cut_short(journal: Journal) -> None:
    journal.begin("C1", "1.0", "lamp on", "U1")
    journal.begin("C1", "2.0", "fan on", "U2")
    journal.finish("C1", "2.0")
    journal.action_begin("C1", "1.0", "lamp", "on", {}, "U1")
    journal.action_begin("C1", "2.0", "fan", "on", {}, "U2")
    journal.action_end("C1", "2.0", "fan", "on", True, "on")

    assert journal.interrupt() == [("C1", "1.0", "lamp on", "U1")]
    assert journal.status("C1", "1.0") == "interrupted"
    assert [(a.device, a.status) for a in journal.interrupted_actions("C1", "1.0")] == [
        ("lamp", "interrupted")
    ]
    assert journal.interrupted_actions("C1", "2.0") == []
    # Taken up once: the resume or a redelivery, never both; a finished one never again.
    assert journal.begin("C1", "1.0", "lamp on", "U1") is True
    assert journal.begin("C1", "1.0", "lamp on", "U1") is False
    assert journal.begin("C1", "2.0", "fan on", "U2") is False
    assert journal.action_begin("C1", "1.0", "lamp", "on", {}, "U1") is True
    assert journal.action_begin("C1", "1.0", "lamp", "on", {}, "U1") is False
    assert journal.action_begin("C1", "2.0", "fan", "on", {}, "U2") is False
    assert journal.interrupt() == [("C1", "1.0", "lamp on", "U1")]


def test_action_begin_dedupes_per_message_device_and_action(journal: Journal) -> None:
    assert journal.action_begin("C1", "1.0", "lamp", "on", {"brightness": 50}, "U1") is True
    assert journal.action_begin("C1", "1.0", "lamp", "on", {"brightness": 80}, "U1") is False
    assert journal.action_begin("C1", "1.0", "lamp", "off", {}, "U1") is True
    assert journal.action_begin("C1", "1.0", "fan", "on", {}, "U1") is True
    assert journal.action_begin("C1", "2.0", "lamp", "on", {}, "U1") is True


def test_history_is_newest_first_and_filtered(journal: Journal) -> None:
    for i, device in enumerate(["lamp", "fan", "lamp", "lamp"]):
        journal.action_begin("C1", f"{i}.0", device, "on", {"step": i}, "U1")
        journal.action_end("C1", f"{i}.0", device, "on", True, f"{device} is on")
    everything = journal.history()
    assert [(r.device, r.args["step"]) for r in everything] == [
        ("lamp", 3),
        ("lamp", 2),
        ("fan", 1),
        ("lamp", 0),
    ]
    assert [r.args["step"] for r in journal.history("lamp", limit=2)] == [3, 2]
    assert journal.history("toaster") == []
    record = everything[0]
    assert (record.bot, record.user, record.status, record.result) == (
        "kitchen-pi",
        "U1",
        "done",
        "lamp is on",
    )


def test_last_state_is_the_last_successful_action(journal: Journal) -> None:
    assert journal.last_state("lamp") is None
    journal.action_begin("C1", "1.0", "lamp", "set", {"brightness": 40}, None)
    journal.action_end("C1", "1.0", "lamp", "set", True, "ok")
    journal.action_begin("C1", "2.0", "lamp", "off", {}, None)
    journal.action_end("C1", "2.0", "lamp", "off", False, "relay stuck")
    journal.action_begin("C1", "3.0", "lamp", "on", {}, None)  # begun, never ended
    last = journal.last_state("lamp")
    assert last is not None
    assert (last.ts, last.action, last.args) == ("1.0", "set", {"brightness": 40})


def test_timers_replace_cancel_and_order(journal: Journal) -> None:
    journal.set_timer(Timer("fan", "off", {}, 200.0, "C1", "1.0"))
    journal.set_timer(Timer("lamp", "off", {"x": 1}, 100.0, "C1", "2.0"))
    journal.set_timer(Timer("fan", "off", {}, 50.0, "C1", "3.0"))
    assert [(t.device, t.due, t.ts) for t in journal.timers()] == [
        ("fan", 50.0, "3.0"),
        ("lamp", 100.0, "2.0"),
    ]
    assert journal.timers()[1].args == {"x": 1}
    assert journal.cancel_timer("fan") is True
    assert journal.cancel_timer("fan") is False
    assert [t.device for t in journal.timers()] == ["lamp"]


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    first = Journal(path, "hall-pi")
    first.begin("C1", "1.0", "lights on", "U1")
    first.action_begin("C1", "1.0", "lamp", "on", {}, "U1")
    first.action_end("C1", "1.0", "lamp", "on", True, "on")
    first.finish("C1", "1.0")
    first.begin("C1", "2.0", "fan on", "U1")
    first.set_timer(Timer("lamp", "off", {}, 99.0, "C1", "1.0"))
    first.close()
    again = Journal(path, "hall-pi")
    try:
        assert again.begin("C1", "1.0", "lights on", "U1") is False
        assert again.action_begin("C1", "1.0", "lamp", "on", {}, "U1") is False
        assert again.unfinished() == [("C1", "2.0", "fan on")]
        assert [t.device for t in again.timers()] == ["lamp"]
        assert again.last_state("lamp") is not None
    finally:
        again.close()


def test_wal_mode_is_on(journal: Journal) -> None:
    journal.begin("C1", "1.0", "x", None)
    other = sqlite3.connect(journal.path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()
    assert Path(journal.path + "-wal").exists()


def test_a_failed_transaction_leaves_nothing(journal: Journal) -> None:
    with pytest.raises(RuntimeError), journal._tx() as db:
        db.execute("INSERT INTO commands VALUES ('C1', '5.0', 'x', NULL, 'begun', '', 0)")
        raise RuntimeError("crash mid-transaction")
    assert journal.status("C1", "5.0") is None
    assert journal.begin("C1", "5.0", "x", None) is True


# --- durability ---------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from troupe.journal import Journal, Timer

    path, start = sys.argv[1], int(sys.argv[2])
    j = Journal(path, "kitchen-pi")
    i = start
    while True:
        ts = f"{1700000000 + i}.000000"
        j.begin("C1", ts, f"command {i}", "U1")
        j.action_begin("C1", ts, "lamp", "on", {"i": i, "pad": "x" * (i % 700)}, "U1")
        j.action_end("C1", ts, "lamp", "on", True, f"lamp on {i}")
        j.set_timer(Timer(f"dev{i % 5}", "off", {}, float(i), "C1", ts))
        j.finish("C1", ts)
        print(i, flush=True)
        i += 1
    """
)


def _kill_while_writing(path: Path, start: int, commits: int) -> int:
    """Run a writer until it reports `commits` finished commands, then SIGKILL it at once
    (it is mid-write: it never pauses). Returns the last index it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = start - 1
    try:
        assert proc.stdout is not None
        for _ in range(commits):
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"writer died on its own: {proc.stderr.read()}")  # type: ignore[union-attr]
            last = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    return last


def test_kill_9_during_writes_never_corrupts_or_loses_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    rng = random.Random(7)
    reported: set[int] = set()
    kept: set[int] = set()
    """Every command found done after an earlier kill (reported or run ahead)."""
    interrupted: set[int] = set()
    start, kills = 0, 25
    for _ in range(kills):
        last = _kill_while_writing(path, start, rng.randint(1, 40))
        reported |= set(range(start, last + 1))
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            rows = {
                int(text.split()[1]): status
                for text, status in db.execute("SELECT text, status FROM commands")
            }
        finally:
            db.close()
        done = {i for i, status in rows.items() if status == "done"}
        begun = {i for i, status in rows.items() if status == "begun"}
        # Every reported commit is there, done, and so is every one found after an earlier
        # kill. The writer may have gone on a little before the kill landed: anything
        # new comes after the last reported one, and only the newest row can be caught
        # mid-command.
        assert reported | kept <= done
        assert done - reported - kept <= set(range(last + 1, max(rows) + 1))
        kept |= done
        assert begun <= {max(rows)}
        assert {i for i, status in rows.items() if status == "failed"} == interrupted
        journal = Journal(path, "kitchen-pi")
        try:
            # A restart does not rerun a finished command, and sees the interrupted one.
            assert journal.begin("C1", f"{1700000000 + last}.000000", "x", None) is False
            assert [int(t.split()[1]) for _, _, t in journal.unfinished()] == sorted(begun)
            for index in begun:
                journal.finish("C1", f"{1700000000 + index}.000000", "failed", "interrupted")
            interrupted |= begun
            lamp = journal.history("lamp", limit=len(rows) + 1)
            assert {r.args["i"] for r in lamp if r.status == "done"} >= reported
        finally:
            journal.close()
        start = max(rows) + 1
    assert len(reported) >= kills
    print(f"{kills} kills, {len(reported)} commits kept, {len(interrupted)} caught mid-command")


def test_a_journal_from_before_the_state_column_opens_and_keeps_states(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace("    state TEXT,                     -- JSON", "    -- was"))
    db.execute(
        "INSERT INTO actions (channel, ts, device, action, args, bot, user, status, result, at)"
        " VALUES ('C1', '1.0', 'lamp', 'toggle', '{}', 'kitchen-pi', 'U1', 'done', 'toggled', 1)"
    )
    db.commit()
    assert "state" not in {row[1] for row in db.execute("PRAGMA table_info(actions)")}
    db.close()
    journal = Journal(path, "kitchen-pi")
    try:
        old = journal.last_state("lamp")
        assert old is not None and (old.action, old.state) == ("toggle", None)
        assert journal.action_begin("C1", "2.0", "lamp", "on", {}, "U1")
        journal.action_end("C1", "2.0", "lamp", "on", True, "turned on the lamp", {"on": True})
        assert journal.last_state("lamp").state == {"on": True}  # type: ignore[union-attr]
    finally:
        journal.close()


def test_a_held_claim_survives_a_stop_and_ends_with_the_command(journal: Journal) -> None:
    journal.begin("C1", "1.0", "lamp on", "U1")
    journal.begin("C1", "2.0", "fan on", "U1")
    assert not journal.held("C1", "1.0")
    journal.hold("C1", "1.0")
    journal.interrupt()
    assert journal.held("C1", "1.0") and not journal.held("C1", "2.0")
    assert journal.begin("C1", "1.0", "lamp on", "U1")  # taken up again: still held
    assert journal.held("C1", "1.0")
    journal.finish("C1", "1.0", "skipped", "stale")
    assert not journal.held("C1", "1.0")
    journal.hold("C1", "3.0")  # never begun: nothing to hold
    assert not journal.held("C1", "3.0")
