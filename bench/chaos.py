"""Faults on a schedule: WebSocket drops, SIGKILL mid-command and restart, 429 bursts,
one bot's events delayed, an MQTT broker restart, a bot whose clock is ten minutes off,
claim answers lost after Slack applied them, a person reacting 🔄 and ✅ to a command in
flight, and a device slower than the lease. Each is keyed to a command index of the chaos
phase and applied through the workspace's control API or to the bot processes; nothing of
it lives in troupe's runtime (the wrong clock is bench/clockahead's, at the bot's start).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slack_sdk import WebClient

from bench.files import CHANNEL_ID, HUMAN_TOKEN, MQTT_DEVICE, SLOW_DEVICE
from bench.mqttrig import MqttRig
from bench.systems import LEGACY, System
from troupe.devkit.fleet import Fleet

KINDS = (
    "drop-one",
    "drop-all",
    "burst-429",
    "kill",
    "delay-one",
    "mqtt-restart",
    "clock-off",
    "lost-answers",
    "person-reacts",
    "slow-device",
)
QUICK_KINDS = (
    "drop-one",
    "burst-429",
    "kill",
    "delay-one",
    "clock-off",
    "lost-answers",
    "person-reacts",
    "slow-device",
)

CLOCK_OFF_S = 600.0
"""How far the clock-off bot's clock is ahead: a Pi that booted with a wrong time."""

LOST_ANSWERS = 2
"""Claim calls (pins.add, or the shared app's reactions.add) that Slack carries out and
then answers 503 (the answer lost on the way back): slack_sdk retries and meets
already_pinned or already_reacted."""

KILL_AFTER_POST_S = 0.08
"""How long after the post returns the claimer is killed: about one event delivery plus
half an API round trip, so it dies while claiming or acting (mid-command)."""


BURST_429 = 2
"""Claim calls answered 429 by one burst: SlackMQ 0.1.2's racing bots all meet it; troupe's
claimer waits Retry-After twice (about 2 s, under 80% of the quick profile's lease)."""


AFTER_POST = ("kill", "person-reacts", "mqtt-restart")
"""Faults that strike once the command is posted, while it is in flight."""


def clock_ahead(seconds: float, pythonpath: str | None = None) -> dict[str, str]:
    """The environment that starts a bot with its wall clock `seconds` ahead (`pythonpath`:
    the bot's own, kept after the clock's folder).

    bench/clockahead/sitecustomize.py moves Python's time.time and time.time_ns ahead at
    the bot's start, leaving its monotonic clock true, as on a Pi that booted with a
    wrong time. libfaketime did this before; its 0.9.10 (Debian's) cannot fake the wall
    clock alone for Python 3.11+: faking both clocks hung every timed wait of the bot's
    threads (the bot connected and never read an envelope: in shared-app mode Slack's
    hand-outs to it were lost until its minute retry), and leaving the monotonic clock
    alone made each time.sleep fail with EINVAL."""
    path = os.pathsep.join(p for p in (str(CLOCK_AHEAD_DIR), pythonpath) if p)
    return {"PYTHONPATH": path, "BENCH_CLOCK_AHEAD_S": f"{seconds:g}"}


CLOCK_AHEAD_DIR = Path(__file__).parent / "clockahead"
"""The folder of the sitecustomize module that sets a bot's wall clock ahead."""


@dataclass(frozen=True)
class Fault:
    """One fault at command `at` of the chaos phase; `span` commands later it is undone."""

    at: int
    kind: str
    seconds: float = 0.0
    span: int = 0


def schedule(name: str, commands: int, every: int = 3) -> list[Fault]:
    """A named fault schedule spread over `commands` commands.

    none: no fault. One kind's name: that one fault in the middle. quick: each kind of
    QUICK_KINDS once. full: every kind in turn, one fault every `every` commands.
    """
    if name == "none" or commands <= 0:
        return []
    if name in KINDS:
        return [_fault(name, commands // 2)]
    if name == "quick":
        step = max(1, commands // len(QUICK_KINDS))
        return [_fault(k, min(commands - 1, step * i + 1)) for i, k in enumerate(QUICK_KINDS)]
    if name == "full":
        spots = range(2, commands, max(1, every))
        return [_fault(KINDS[j % len(KINDS)], at) for j, at in enumerate(spots)]
    raise ValueError(f"unknown fault schedule {name!r}; use none, quick, full or one of {KINDS}")


def _fault(kind: str, at: int) -> Fault:
    if kind == "delay-one":
        return Fault(at, kind, seconds=2.0, span=3)
    if kind == "clock-off":
        return Fault(at, kind, seconds=CLOCK_OFF_S)
    return Fault(at, kind)


@dataclass
class Chaos:
    """Applies faults to one running trial and records what was done or skipped."""

    system: System
    fleet: Fleet
    bots: Sequence[str]
    control: Callable[..., dict[str, Any]]
    base_delays: dict[str, float]
    api_url: str = ""
    mqtt: MqttRig | None = None
    """The trial's broker and MQTT device (troupe's systems): what mqtt-restart restarts."""
    log: list[dict[str, Any]] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    clock_offsets: dict[str, float] = field(default_factory=dict)
    """Bots restarted with a wrong clock: how far ahead (their counter lines say so too)."""
    _undo: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    _turn: int = 0

    def before_post(self, index: int, fault: Fault) -> None:
        """Apply a fault that must be in place before command `index` is posted."""
        if fault.kind in AFTER_POST:
            return
        handler = getattr(self, "_" + fault.kind.replace("-", "_"))
        self._note(index, fault, *handler(index, fault))

    def after_post(self, index: int, fault: Fault, ts: str) -> None:
        """Apply a fault that strikes while command `index` is in flight (kill, a person's
        reactions, a broker restart)."""
        if fault.kind == "mqtt-restart":
            self._note(index, fault, *self._mqtt_restart(index, fault))
            return
        if fault.kind == "person-reacts":
            human = WebClient(HUMAN_TOKEN, base_url=self.api_url, timeout=30)
            for name in ("arrows_counterclockwise", "white_check_mark"):
                human.reactions_add(channel=CHANNEL_ID, timestamp=ts, name=name)
            self._note(index, fault, True, "alice reacted 🔄 and ✅ to the command in flight")
            return
        if fault.kind != "kill":
            return
        time.sleep(KILL_AFTER_POST_S)
        victim = self.system.claimer(ts, self.bots)
        self.fleet.kill(victim)
        self.fleet.start(victim, wait=False)
        self.restarted.append(victim)
        self._note(index, fault, True, f"SIGKILL {victim} mid-command, restarted")

    def device_for(self, faults: Sequence[Fault]) -> str | None:
        """The device this command goes to instead of the stream's: the slow device (which
        SlackMQ 0.1.2's bots lack), or the MQTT device while its broker restarts."""
        kinds = {f.kind for f in faults}
        if self.system.name != LEGACY and "slow-device" in kinds:
            return SLOW_DEVICE[0]
        if self.mqtt is not None and "mqtt-restart" in kinds:
            return MQTT_DEVICE
        return None

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
        if app is None:  # one app for the fleet: one of its connections, one Pi's
            (app,) = self.system.apps([bot])
            dropped = self.control("drop", app=app, one=True).get("dropped")
            return True, f"dropped one of the shared app's WebSockets ({dropped})"
        dropped = self.control("drop", app=app).get("dropped")
        return True, f"dropped {bot}'s WebSocket ({dropped} connection(s))"

    def _drop_all(self, index: int, fault: Fault) -> tuple[bool, str]:
        total = 0
        for app in self.system.apps(self.bots):
            total += int(self.control("drop", app=app).get("dropped") or 0)
        return True, f"dropped every bot's WebSocket ({total} connection(s))"

    def _burst_429(self, index: int, fault: Fault) -> tuple[bool, str]:
        count, method = BURST_429, self.system.claim_method
        self.control("fail", method=method, status=429, count=count, retry_after=1)
        return True, f"next {count} {method} calls answer 429 (Retry-After: 1)"

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

    def _clock_off(self, index: int, fault: Fault) -> tuple[bool, str]:
        self.wait_restarted()  # never two bots down at once
        bot = self._next_bot()
        self.fleet.kill(bot)
        ahead = clock_ahead(fault.seconds, self.fleet.env.get("PYTHONPATH"))
        self.fleet.start(bot, wait=False, env=ahead)
        self.restarted.append(bot)
        self.clock_offsets[bot] = fault.seconds
        return True, f"{bot} restarted with its wall clock {fault.seconds:g} s ahead"

    def _lost_answers(self, index: int, fault: Fault) -> tuple[bool, str]:
        bot = self._next_bot()
        app, method = self.system.own_app(bot), self.system.claim_method
        if app is None:  # one shared app: the next claims of whichever bots make them
            bot, app = "the shared app", self.system.apps(self.bots)[0]
        self.control("fail", method=method, status=503, count=LOST_ANSWERS, after=True, app=app)
        return True, f"{bot}'s next {LOST_ANSWERS} {method} carried out, then answered 503"

    def _slow_device(self, index: int, fault: Fault) -> tuple[bool, str]:
        if self.system.name == LEGACY:
            return False, "skipped: SlackMQ 0.1.2's bots have no slow device"
        return True, "the command goes to the cellar light, which takes 1.5 leases to act"

    def _mqtt_restart(self, index: int, fault: Fault) -> tuple[bool, str]:
        if self.mqtt is None:
            return False, "skipped: SlackMQ 0.1.2's bots drive no MQTT device"
        note = self.mqtt.crash_and_restart()  # as the post returns: before the bots act
        return not note.startswith("skipped"), f"{note}, the {MQTT_DEVICE} command in flight"

    def _note(self, index: int, fault: Fault, applied: bool, note: str) -> None:
        self.log.append({"at": index, "fault": fault.kind, "applied": applied, "note": note})
