"""Faults on a schedule: WebSocket drops, SIGKILL mid-command and restart, 429 bursts,
one bot's events delayed, an MQTT broker restart. Each is keyed to a command index of the
chaos phase and applied through the workspace's control API or to the bot processes.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.systems import System
from troupe.fleet import Fleet

KINDS = ("drop-one", "drop-all", "burst-429", "kill", "delay-one", "mqtt-restart")

KILL_AFTER_POST_S = 0.08
"""How long after the post returns the claimer is killed: about one event delivery plus
half an API round trip, so it dies while claiming or acting (mid-command)."""


BURST_429 = 2
"""pins.add calls answered 429 by one burst: SlackMQ 0.1.2's racing bots all meet it; troupe's
claimer waits Retry-After twice (about 2 s, under 80% of the quick profile's lease)."""


@dataclass(frozen=True)
class Fault:
    """One fault at command `at` of the chaos phase; `span` commands later it is undone."""

    at: int
    kind: str
    seconds: float = 0.0
    span: int = 0


def schedule(name: str, commands: int) -> list[Fault]:
    """A named fault schedule spread over `commands` commands.

    none: no fault. kill / drop-one / burst-429 / delay-one / drop-all: that one fault in
    the middle. quick: drop-one, burst-429, kill and delay-one, once each. full: every kind
    in turn, one fault every 3 commands.
    """
    if name == "none" or commands <= 0:
        return []
    if name in KINDS:
        return [_fault(name, commands // 2)]
    if name == "quick":
        kinds = ["drop-one", "burst-429", "kill", "delay-one"]
        step = max(1, commands // len(kinds))
        return [_fault(k, min(commands - 1, step * i + 1)) for i, k in enumerate(kinds)]
    if name == "full":
        kinds = ["drop-one", "burst-429", "kill", "delay-one", "drop-all", "mqtt-restart"]
        return [_fault(kinds[j % len(kinds)], at) for j, at in enumerate(range(2, commands, 3))]
    raise ValueError(f"unknown fault schedule {name!r}; use none, quick, full or one of {KINDS}")


def _fault(kind: str, at: int) -> Fault:
    if kind == "delay-one":
        return Fault(at, kind, seconds=2.0, span=3)
    return Fault(at, kind)


@dataclass
class Chaos:
    """Applies faults to one running trial and records what was done or skipped."""

    system: System
    fleet: Fleet
    bots: Sequence[str]
    control: Callable[..., dict[str, Any]]
    base_delays: dict[str, float]
    log: list[dict[str, Any]] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    _undo: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    _turn: int = 0

    def before_post(self, index: int, fault: Fault) -> None:
        """Apply a fault that must be in place before command `index` is posted."""
        if fault.kind == "kill":
            return
        handler = getattr(self, "_" + fault.kind.replace("-", "_"))
        self._note(index, fault, *handler(index, fault))

    def after_post(self, index: int, fault: Fault, ts: str) -> None:
        """Apply a fault that strikes while command `index` is in flight (kill)."""
        if fault.kind != "kill":
            return
        time.sleep(KILL_AFTER_POST_S)
        victim = self.system.claimer(ts, self.bots)
        self.fleet.kill(victim)
        self.fleet.start(victim, wait=False)
        self.restarted.append(victim)
        self._note(index, fault, True, f"SIGKILL {victim} mid-command, restarted")

    def undo_due(self, index: int) -> None:
        """Undo the faults whose span ends before command `index`."""
        for undo in self._undo.pop(index, []):
            undo()

    def undo_all(self) -> None:
        for index in sorted(self._undo):
            self.undo_due(index)

    def wait_restarted(self, timeout: float = 120.0) -> list[float]:
        """Wait for the restarted bots; how long each took to be ready (alone, under load)."""
        took = []
        for name in dict.fromkeys(self.restarted):
            self.fleet.wait_ready(name, timeout)
            took.append(self.fleet.bots[name].ready_after_s or 0.0)
        return took

    # the faults ---------------------------------------------------------------------

    def _next_bot(self) -> str:
        bot = self.bots[self._turn % len(self.bots)]
        self._turn += 1
        return bot

    def _drop_one(self, index: int, fault: Fault) -> tuple[bool, str]:
        bot = self._next_bot()
        app = self.system.own_app(bot)
        if app is None:
            return False, "skipped: the bots share one app, so a drop cuts all of them"
        dropped = self.control("drop", app=app).get("dropped")
        return True, f"dropped {bot}'s WebSocket ({dropped} connection(s))"

    def _drop_all(self, index: int, fault: Fault) -> tuple[bool, str]:
        total = 0
        for app in self.system.apps(self.bots):
            total += int(self.control("drop", app=app).get("dropped") or 0)
        return True, f"dropped every bot's WebSocket ({total} connection(s))"

    def _burst_429(self, index: int, fault: Fault) -> tuple[bool, str]:
        count = BURST_429
        self.control("fail", method="pins.add", status=429, count=count, retry_after=1)
        return True, f"next {count} pins.add calls answer 429 (Retry-After: 1)"

    def _delay_one(self, index: int, fault: Fault) -> tuple[bool, str]:
        bot = self._next_bot()
        app = self.system.own_app(bot)
        if app is None:
            return False, "skipped: the bots share one app; the workspace delays per app only"
        self.control("delay", app=app, seconds=fault.seconds)
        base = self.base_delays.get(app, 0.0)
        self._undo.setdefault(index + max(1, fault.span), []).append(
            lambda: self.control("delay", app=app, seconds=base) and None
        )
        return True, f"{bot}'s events delayed {fault.seconds:g} s for {fault.span} commands"

    def _mqtt_restart(self, index: int, fault: Fault) -> tuple[bool, str]:
        if importlib.util.find_spec("troupe.bus") is None:
            return False, "skipped: troupe has no MQTT bus (troupe/bus.py) to restart a broker for"
        return False, "skipped: the harness does not run an MQTT broker yet"

    def _note(self, index: int, fault: Fault, applied: bool, note: str) -> None:
        self.log.append({"at": index, "fault": fault.kind, "applied": applied, "note": note})
