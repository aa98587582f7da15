"""Each bot's own record of what it did (SQLite, WAL): the last line of exactly-once.

A redelivered event, a replayed reconnect, a relayed duplicate or a restart after a power
cut all meet the journal before they meet a device: a command this bot already finished is
never run again, and one it began but did not finish is reported, not silently re-run.
It also answers `history` ("who turned that on, and when").
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    text TEXT NOT NULL,
    user TEXT,
    status TEXT NOT NULL,           -- begun | done | failed | skipped | interrupted
    note TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (channel, ts)
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL,
    device TEXT NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    bot TEXT NOT NULL,
    user TEXT,
    status TEXT NOT NULL,           -- begun | done | failed | interrupted
    result TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    state TEXT,                     -- JSON: the device's state the driver returned
    UNIQUE (channel, ts, device, action)
);
CREATE INDEX IF NOT EXISTS actions_device ON actions (device, at);
CREATE TABLE IF NOT EXISTS timers (
    device TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    due REAL NOT NULL,
    channel TEXT NOT NULL,
    ts TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ActionRecord:
    """One device action as the journal keeps it."""

    channel: str
    ts: str
    device: str
    action: str
    args: dict[str, Any]
    bot: str
    user: str | None
    status: str
    result: str
    at: float
    state: dict[str, Any] | None = None
    """The device's state after the action, as its driver returned it (what a relay
    restores); None for a failed action or one journaled by an older troupe."""


_ACTION_COLUMNS = "channel, ts, device, action, args, bot, user, status, result, at, state"


def _action(row: tuple[Any, ...]) -> ActionRecord:
    state = json.loads(row[10]) if row[10] else None
    return ActionRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), *row[5:10], state)


@dataclass(frozen=True)
class Timer:
    """A pending timed action ("... for 10 minutes"), kept so it survives a restart."""

    device: str
    action: str
    args: dict[str, Any]
    due: float
    channel: str
    ts: str


class Journal:
    """A bot's journal. Thread-safe: one connection, serialised by a lock."""

    def __init__(self, path: str | Path, bot: str) -> None:
        self.path = str(path)
        self.bot = bot
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(actions)")}
        if "state" not in columns:  # a journal written before troupe kept the state
            self._db.execute("ALTER TABLE actions ADD COLUMN state TEXT")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # commands -------------------------------------------------------------

    def begin(self, channel: str, ts: str, text: str, user: str | None) -> bool:
        """Record that this bot starts on a command; False if it already has it, unless a
        stop interrupted it (then it is begun again: see `interrupt`)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO commands VALUES (?, ?, ?, ?, 'begun', '', ?)",
                (channel, ts, text, user, time.time()),
            )
            if cur.rowcount == 0:
                cur = db.execute(
                    "UPDATE commands SET status = 'begun', updated = ? "
                    "WHERE channel = ? AND ts = ? AND status = 'interrupted'",
                    (time.time(), channel, ts),
                )
            return cur.rowcount == 1

    def status(self, channel: str, ts: str) -> str | None:
        """The command's status in this journal (begun, done, failed, skipped) or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT status FROM commands WHERE channel = ? AND ts = ?", (channel, ts)
            ).fetchone()
        return row[0] if row else None

    def finish(self, channel: str, ts: str, status: str = "done", note: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE commands SET status = ?, note = ?, updated = ? "
                "WHERE channel = ? AND ts = ?",
                (status, note, time.time(), channel, ts),
            )

    def hold(self, channel: str, ts: str) -> None:
        """This bot holds the command's claim (it won it or took it over): if a stop cuts
        it short before any action began, the bot says so on return (`held`), since the
        peers saw the claim held and left the command to it."""
        with self._tx() as db:
            db.execute(
                "UPDATE commands SET note = 'held' WHERE channel = ? AND ts = ? "
                "AND status = 'begun'",
                (channel, ts),
            )

    def held(self, channel: str, ts: str) -> bool:
        """Whether this bot held the command's claim (`hold`) and has not finished it."""
        with self._lock:
            row = self._db.execute(
                "SELECT note FROM commands WHERE channel = ? AND ts = ? "
                "AND status IN ('begun', 'interrupted')",
                (channel, ts),
            ).fetchone()
        return row is not None and row[0] == "held"

    def interrupt(self) -> list[tuple[str, str, str, str | None]]:
        """At start: mark what the last run began and never finished (a crash, a power cut)
        as interrupted, so `begin` and `action_begin` let this bot take it up once more;
        returns those commands as (channel, ts, text, user)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT channel, ts, text, user FROM commands WHERE status = 'begun' ORDER BY ts"
            ).fetchall()
            db.execute("UPDATE commands SET status = 'interrupted' WHERE status = 'begun'")
            db.execute("UPDATE actions SET status = 'interrupted' WHERE status = 'begun'")
        return [tuple(r) for r in rows]

    def acted_on(self, channel: str, ts: str) -> set[str]:
        """The devices this bot began an action on for the command (after a restart: on a
        shared device only the claim's holder or its taker does, so the claim was its own)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT device FROM actions WHERE channel = ? AND ts = ?", (channel, ts)
            ).fetchall()
        return {r[0] for r in rows}

    def interrupted_actions(self, channel: str, ts: str) -> list[ActionRecord]:
        """This command's device actions a stop cut short: begun, never known done."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ACTION_COLUMNS} FROM actions "
                "WHERE channel = ? AND ts = ? AND status = 'interrupted' ORDER BY id",
                (channel, ts),
            ).fetchall()
        return [_action(r) for r in rows]

    def unfinished(self) -> list[tuple[str, str, str]]:
        """Commands begun but not finished (a crash or power cut): (channel, ts, text)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT channel, ts, text FROM commands WHERE status = 'begun' ORDER BY ts"
            ).fetchall()
        return [tuple(r) for r in rows]

    # actions ---------------------------------------------------------------

    def action_begin(
        self,
        channel: str,
        ts: str,
        device: str,
        action: str,
        args: dict[str, Any],
        user: str | None,
    ) -> bool:
        """Record a device action about to happen; False if this bot already did or began it
        (an action a stop interrupted may begin again)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO actions (channel, ts, device, action, args, bot, user,"
                " status, at) VALUES (?, ?, ?, ?, ?, ?, ?, 'begun', ?)",
                (channel, ts, device, action, json.dumps(args), self.bot, user, time.time()),
            )
            if cur.rowcount == 0:
                cur = db.execute(
                    "UPDATE actions SET status = 'begun', at = ? WHERE channel = ? AND ts = ? "
                    "AND device = ? AND action = ? AND status = 'interrupted'",
                    (time.time(), channel, ts, device, action),
                )
            return cur.rowcount == 1

    def action_end(
        self,
        channel: str,
        ts: str,
        device: str,
        action: str,
        ok: bool,
        result: str,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        saved = json.dumps(dict(state)) if state is not None else None
        with self._tx() as db:
            db.execute(
                "UPDATE actions SET status = ?, result = ?, state = ? "
                "WHERE channel = ? AND ts = ? AND device = ? AND action = ?",
                ("done" if ok else "failed", result, saved, channel, ts, device, action),
            )

    def history(self, device: str | None = None, limit: int = 10) -> list[ActionRecord]:
        """The most recent actions, newest first, of one device or of all."""
        query = f"SELECT {_ACTION_COLUMNS} FROM actions"
        params: tuple[Any, ...] = ()
        if device:
            query += " WHERE device = ?"
            params = (device,)
        query += " ORDER BY at DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [_action(r) for r in rows]

    def last_state(self, device: str) -> ActionRecord | None:
        """The last successful action on a device: what a relay restores after a restart."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_ACTION_COLUMNS} FROM actions WHERE device = ? AND status = 'done' "
                "ORDER BY at DESC, id DESC LIMIT 1",
                (device,),
            ).fetchone()
        return _action(row) if row else None

    # timers ----------------------------------------------------------------

    def set_timer(self, timer: Timer) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO timers VALUES (?, ?, ?, ?, ?, ?)",
                (
                    timer.device,
                    timer.action,
                    json.dumps(timer.args),
                    timer.due,
                    timer.channel,
                    timer.ts,
                ),
            )

    def cancel_timer(self, device: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM timers WHERE device = ?", (device,)).rowcount == 1

    def timers(self) -> list[Timer]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device, action, args, due, channel, ts FROM timers ORDER BY due"
            ).fetchall()
        return [Timer(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]
