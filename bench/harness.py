"""One trial (a system in one mode with N bots) through its phases, and the grid of trials.

A trial serves its own workspace with Slack's rate limits and a Slack-like network, starts
the bots as processes, then runs:

1. clean   - commands at the profile's rate, no fault: latency, calls per command, CPU/RSS
             under load; then an idle window while the claim pins linger (CPU/RSS idle);
2. chaos   - commands at the same rate with the fault schedule: duplicates, losses, 429s;
3. steps   - (optional) the rate stepped up until a step loses, duplicates or lags;
4. failover - every bot restarted with "die right after winning a claim"; one command:
             the time from the post to the taker's action.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos import BURST_429, Chaos, Fault, schedule
from bench.files import (
    CHANNEL_ID,
    DEVICES,
    MQTT_DEVICE,
    Timings,
    bot_names,
    devices,
    workspace_config,
)
from bench.mqttrig import MqttRig
from bench.procstat import Sample, snapshot, usage
from bench.systems import LEGACY, System
from bench.workload import (
    Command,
    Poster,
    action_time,
    all_acted,
    percentile,
    read_actions,
    tally,
    wait_until,
)
from troupe.devkit.fleet import Fleet
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace

HUMANS = {"U0ALICE"}
TIER2_PER_MINUTE = 20


def compressed_window_s(bots: int) -> float:
    """The rate limiter's window during the rate steps.

    Slack counts per-minute limits over a minute; the steps count the same per-minute rates
    over a shorter window (the counts scaled down with it), so a step proves a sustained
    rate in tens of seconds. The window keeps room for one full Tier-2 burst of every bot
    (N pins.add calls, as SlackMQ 0.1.2 makes per command): with less, the calls beyond the
    budget would be refused for free instead of using it up, which flatters SlackMQ 0.1.2.
    For troupe (one pins.add per command) a shorter window is only stricter."""
    return max(6.0, 60.0 * bots / TIER2_PER_MINUTE)


Progress = Callable[[str], None]


@dataclass(frozen=True)
class Profile:
    """What a run measures: bot counts, command counts and rate, faults, timings."""

    name: str
    bots: tuple[int, ...]
    clean_commands: int
    chaos_commands: int
    rate_per_min: float
    faults: str
    timings: Timings = field(default_factory=Timings)
    rate_steps: tuple[float, ...] = ()
    step_s: float = 40.0
    sustain_s: float = 10.0
    """A rate step passes only if every command acted within this many seconds."""
    failover: bool = True
    latency_ms: float = 50.0
    jitter_ms: float = 20.0
    idle_s: float = 3.0
    slack_window_s: float = 60.0
    """The rate limiter's window: Slack's per-minute counts over this many seconds (60: as
    Slack; shorter compresses time, e.g. 6 s lets ten times Slack's rate through)."""
    fault_every: int = 3
    """The full fault schedule's spacing: one fault every this many chaos commands."""
    warmup: bool = True
    """Post one command before the clean phase, outside every count."""
    devices: int = len(DEVICES)
    """How many devices the stream cycles over (bench.files.devices)."""

    def phases(self) -> int:
        return 3 + bool(self.rate_steps) + self.failover

    def bots_for(self, mode: str) -> tuple[int, ...]:
        """The bot counts run in one mode: shared-app stops at Slack's 10 Socket Mode
        connections per app (a larger N runs as 10 there)."""
        cap = MAX_BOTS.get(mode)
        return tuple(dict.fromkeys(min(n, cap) if cap else n for n in self.bots))


MAX_BOTS = {"shared-app": 10}
"""Slack opens at most 10 Socket Mode connections per app: one shared app, 10 bots."""


QUICK = Profile(
    name="quick",
    bots=(2,),
    clean_commands=3,
    chaos_commands=12,
    rate_per_min=48,
    faults="quick",
    timings=Timings(stale_s=8, lease_s=4, stagger_s=0.4, linger_s=10),
)
"""Under 3 minutes for the three systems: short timings so takeovers and pin releases
fit, no rate steps."""

FULL = Profile(
    name="full",
    bots=(2, 8, 16),
    clean_commands=6,
    chaos_commands=16,
    rate_per_min=20,
    faults="full",
    rate_steps=(18, 30, 45),
    step_s=30.0,
)
"""The grid people read (latest.md, the README's table), 100 minutes on 2 CPUs with
troupe's default timings: N from 2 to 16 (shared-app stops at Slack's 10), the first five
fault kinds (one every third chaos command: dropped sockets, a 429 burst, a kill, late
events; the soak runs all ten), and the rate steps that matter: 18 a minute (one app's
pins.add budget, where SlackMQ 0.1.2 and a pins-only shared app stop), 30, and 45 (the
shared-app goal)."""


@dataclass
class _Trial:
    system: System
    bots: list[str]
    profile: Profile
    ws: RunningWorkspace
    fleet: Fleet
    counter: Path
    folder: Path
    base_delays: dict[str, float]
    mqtt: MqttRig | None = None
    """mosquitto and the plug troupe's bots reach over it (None for SlackMQ 0.1.2)."""
    notes: list[str] = field(default_factory=list)

    @property
    def mqtt_port(self) -> int | None:
        return self.mqtt.port if self.mqtt is not None else None

    def control(self, action: str, **body: Any) -> dict[str, Any]:
        return self.ws.control(action, **body)

    def pids(self) -> dict[str, int]:
        return {name: b.proc.pid for name, b in self.fleet.bots.items() if b.alive}

    def snap(self) -> dict[str, Sample]:
        return snapshot(self.pids())


def _calls(counters: dict[str, Any]) -> tuple[Counter[str], int]:
    """Bot calls by method (humans' posts are the workload, not the system) and bot 429s."""
    by_method: Counter[str] = Counter()
    for key, methods in counters.get("calls", {}).items():
        if key not in HUMANS:
            by_method.update(methods)
    http_429 = sum(
        n
        for key, methods in counters.get("http_429", {}).items()
        if key not in HUMANS
        for n in methods.values()
    )
    return by_method, http_429


def _per_command(by_method: Counter[str], commands: int) -> tuple[float | None, dict[str, float]]:
    if commands <= 0:
        return None, {}
    per = {m: round(n / commands, 2) for m, n in sorted(by_method.items())}
    return round(sum(by_method.values()) / commands, 2), per


OnPost = Callable[[int, int], bool]
"""Called after each command posted (index, count): False stops the stream there."""


def _stream(
    t: _Trial,
    poster: Poster,
    count: int,
    rate_per_min: float,
    faults: Sequence[Fault] = (),
    chaos: Chaos | None = None,
    on_post: OnPost | None = None,
) -> list[Command]:
    """Post `count` commands at a steady rate, applying the faults due at each index."""
    interval = 60.0 / rate_per_min
    due: dict[int, list[Fault]] = {}
    for fault in faults:
        due.setdefault(fault.at, []).append(fault)
    start = time.monotonic()
    sent: list[Command] = []
    for i in range(count):
        pause = start + i * interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if chaos is not None:
            chaos.undo_due(i)
            for fault in due.get(i, []):
                chaos.before_post(i, fault)
        cmd = poster.post(device=chaos.device_for(due.get(i, [])) if chaos else None)
        sent.append(cmd)
        if chaos is not None:
            for fault in due.get(i, []):
                chaos.after_post(i, fault, cmd.ts)
        if on_post is not None and not on_post(i, count):
            break
    return sent


def _pct(values: Sequence[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value, 1)


LEGACY_BOUND_S = 6.0
"""SlackMQ 0.1.2 acts right after its ack or never (no lease, no takeover): slackbot's 1 s
read loop plus a queue behind busy workers fits in this bound."""


def _keep_commands(path: Path, commands: Sequence[Command], answers: dict[str, list[str]]) -> None:
    """The chaos phase's commands, in the order posted, with their answers, beside the
    bots' logs and journals: the report's *_at indices are line numbers of this file."""
    with path.open("w") as out:
        for i, cmd in enumerate(commands):
            line = {"at": i, **asdict(cmd), "answers": answers.get(cmd.ts, [])}
            out.write(json.dumps(line) + "\n")


def _settle(t: _Trial, commands: Sequence[Command]) -> bool:
    """Wait until every command has acted, or until none still can; whether all did.

    A command can still act until it goes stale (no bot claims it after that), plus a
    takeover (the lease, the ranks' stagger) and its retries: past that it is lost."""
    if not commands:
        return True
    timings = t.profile.timings
    if t.system.name == LEGACY:
        bound = LEGACY_BOUND_S
    else:
        bound = timings.stale_s + 2 * timings.lease_s + len(t.bots) * timings.stagger_s + 5
    remaining = float(commands[-1].ts) + bound - time.time()
    return wait_until(all_acted(commands, t.counter), max(1.0, remaining))


def _until_released(t: _Trial, commands: Sequence[Command], at_least_s: float) -> None:
    """Wait past the last command's linger, so its pin release is counted in this phase."""
    linger = 4.0 if t.system.name == LEGACY else t.profile.timings.linger_s + 1.0
    end = float(commands[-1].ts) + linger if commands else 0.0
    time.sleep(max(at_least_s, end - time.time()))


def _setup_network(ws: RunningWorkspace, profile: Profile, seed: str) -> dict[str, float]:
    """50 ms +- 20 ms on every Web API call; each app's events delayed by a fixed amount
    drawn from the same range (the workspace delays events per app, without jitter)."""
    low = max(0.0, profile.latency_ms - profile.jitter_ms)
    ws.control("latency", latency_ms=low, jitter_ms=2 * profile.jitter_ms)
    rng = random.Random(seed)
    delays = {}
    for app in ws.workspace.config.apps:
        delays[app.id] = round(rng.uniform(low, profile.latency_ms + profile.jitter_ms) / 1000, 4)
        if delays[app.id] > 0:
            ws.control("delay", app=app.id, seconds=delays[app.id])
    return delays


@contextlib.contextmanager
def _workspace_log(path: Path) -> Iterator[None]:
    """The workspace's deliveries, acks and connections, beside the bots' logs: which
    connection Slack handed each envelope to, so a lost command's path can be read."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("troupe.devkit.workspace")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # its warnings are in the file too; the debug stays there
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        handler.close()


def run_trial(
    system: System,
    n: int,
    profile: Profile,
    workdir: Path,
    progress: Progress | None = None,
    *,
    fault_schedule: str | None = None,
    on_post: OnPost | None = None,
) -> dict[str, Any]:
    """Run one trial and return its report row (see bench/report.py for the fields)."""
    report = progress or (lambda _label: None)
    phase_s: dict[str, float] = {}
    mark = [time.monotonic()]

    def tick(label: str) -> None:
        now = time.monotonic()
        phase_s[label] = round(now - mark[0], 1)
        mark[0] = now
        report(label)

    bots = bot_names(n)
    folder = workdir / f"{system.name}-{system.mode}-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    counter = folder / "actions.jsonl"
    counter.unlink(missing_ok=True)
    row: dict[str, Any] = {"system": system.name, "mode": system.mode, "bots": n}
    with running_workspace(workspace_config(n)) as ws, contextlib.ExitStack() as stack:
        stack.enter_context(_workspace_log(folder / "workspace.log"))
        delays = _setup_network(ws, profile, f"{system.label}/{n}")
        rig = MqttRig.start() if system.uses_mqtt else None
        if rig is not None:
            stack.callback(rig.close)  # after the bots stop, also on Ctrl-C or a failure
        port = rig.port if rig is not None else None
        fleet = system.fleet(
            ws.api_url, folder, bots, profile.timings, counter, port, devices=profile.devices
        )
        t = _Trial(system, bots, profile, ws, fleet, counter, folder, delays, rig)
        try:
            fleet.start_all(bots, timeout=240)
            ready = sorted(fleet.bots[b].ready_after_s or 0.0 for b in bots)
            row["ready_s"] = round(ready[-1], 2)
            row["ready_s_median"] = round(ready[len(ready) // 2], 2)
            # forget the start-up calls (each phase starts fresh); a compressed window
            t.control("ratelimit", window_s=profile.slack_window_s)
            tick("started")
            row.update(_phases(t, fault_schedule or profile.faults, tick, on_post))
        finally:
            t.fleet.stop_all()
            _keep_logs(t, "-failover" if t.fleet is not fleet else "")
    phase_s["stop"] = round(time.monotonic() - mark[0], 1)
    row["phase_s"] = phase_s
    row["notes"] = t.notes
    return row


def _phases(
    t: _Trial, fault_schedule: str, tick: Progress, on_post: OnPost | None = None
) -> dict[str, Any]:
    p = t.profile
    poster = Poster(t.ws.api_url, list(devices(p.devices)))
    out: dict[str, Any] = {}

    # 0. warm-up, not counted: each bot's one-time look-ups (users.info about the person
    # who posts) are start-up cost, not a cost per command. One command per bot, a second
    # apart: in shared-app mode Slack hands each to one connection (round robin), so each
    # bot needs its own to meet the person once.
    if p.warmup:
        warm = []
        for _ in t.bots:
            warm.append(poster.post())
            time.sleep(1.0)
        wait_until(all_acted(warm, t.counter), 30)
        if t.mqtt is not None:
            t.mqtt.forget_received()
        # A bot reads the channel back before acting in its first stale_s on a connection
        # (commands it may have missed while away): start-up cost too, waited out here,
        # with the warm-up's own pin releases (at ts + linger), so none lands in the clean
        # phase's count.
        time.sleep(p.timings.stale_s)
        _until_released(t, warm, 0.0)

    # 1. clean
    t.control("counters/reset")
    before = t.snap()
    clean = _stream(t, poster, p.clean_commands, p.rate_per_min, on_post=on_post)
    _settle(t, clean)
    load = usage(before, t.snap())
    idle_from = t.snap()
    _until_released(t, clean, p.idle_s)
    idle = usage(idle_from, t.snap())
    clean_by_method, clean_429 = _calls(t.control("counters"))
    clean_score = tally(clean, read_actions(t.counter))
    tick("clean")

    # 2. chaos
    t.control("counters/reset")
    faults = schedule(fault_schedule, p.chaos_commands, every=p.fault_every)
    chaos = Chaos(
        t.system, t.fleet, t.bots, t.control, t.base_delays, api_url=t.ws.api_url, mqtt=t.mqtt
    )
    try:
        noisy = _stream(t, poster, p.chaos_commands, p.rate_per_min, faults, chaos, on_post)
    finally:
        chaos.undo_all()
    if t.mqtt is not None and not t.mqtt.wait_up():
        t.notes.append("mosquitto did not come back after a restart: " + "; ".join(t.mqtt.restarts))
    restarts = chaos.wait_restarted()
    _settle(t, noisy)
    _until_released(t, noisy, p.timings.lease_s + 2 * p.timings.stagger_s * len(t.bots) + 2)
    chaos_by_method, chaos_429 = _calls(t.control("counters"))
    threads = t.control("threads", channel=CHANNEL_ID)["threads"]
    answers = poster.answers(clean + noisy, threads)
    offsets = chaos.clock_offsets
    heard = {MQTT_DEVICE: t.mqtt.heard()} if t.mqtt is not None else None
    chaos_score = tally(noisy, read_actions(t.counter), answers, offsets, heard)
    tick("chaos")

    total = tally(clean + noisy, read_actions(t.counter), answers, offsets, heard)
    at = {c.ts: i for i, c in enumerate(noisy)}
    _keep_commands(t.folder / "commands.jsonl", noisy, answers)
    if heard is not None:  # what the plug itself heard, beside the counted actions
        rows = [{"device": d, "at": at, "op": op} for d, h in heard.items() for at, op in h]
        (t.folder / "heard.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    overheads = [
        ms - 1000 * t.base_delays.get(t.system.event_app(bot), 0.0)
        for ms, bot in zip(clean_score.latencies_ms, clean_score.acted_by, strict=True)
    ]
    calls_per_command, by_method = _per_command(clean_by_method, len(clean))
    chaos_per_command, chaos_methods = _per_command(chaos_by_method, len(noisy))
    injected = sum(
        BURST_429 for entry in chaos.log if entry["fault"] == "burst-429" and entry["applied"]
    )
    out.update(
        commands=total.commands,
        duplicates=total.duplicates,
        losses=total.losses,
        out_of_order=total.out_of_order,
        unanswered=len(total.unanswered),
        api_calls_per_command=calls_per_command,
        calls_by_method=by_method,
        http_429=clean_429 + chaos_429,
        p50_ms=clean_score.pct(50),
        p95_ms=clean_score.pct(95),
        p99_ms=clean_score.pct(99),
        overhead_p50_ms=_pct(overheads, 50),
        overhead_p99_ms=_pct(overheads, 99),
        max_commands_per_min=None,
        failover_s=None,
        rss_mb=load.rss_mb_max if load else None,
        rate_per_min=p.rate_per_min,
        profile=p.name,
        timings=asdict(p.timings),
        clean={
            "commands": clean_score.commands,
            "duplicates": clean_score.duplicates,
            "losses": clean_score.losses,
        },
        chaos={
            "commands": chaos_score.commands,
            "duplicates": chaos_score.duplicates,
            "losses": chaos_score.losses,
            "out_of_order": chaos_score.out_of_order,
            "unanswered": len(chaos_score.unanswered),
            "superseded": chaos_score.superseded,
            "already": chaos_score.already,
            "unanswered_at": [at[ts] for ts in chaos_score.unanswered],
            "lost_at": [at[ts] for ts in chaos_score.lost],
            "out_of_order_at": [at[ts] for ts in chaos_score.disordered if ts in at],
            "duplicated_at": [at[ts] for ts in chaos_score.duplicated],
            "api_calls_per_command": chaos_per_command,
            "calls_by_method": chaos_methods,
            "http_429": chaos_429,
            "http_429_injected": injected,
            "p50_ms": chaos_score.pct(50),
            "p95_ms": chaos_score.pct(95),
            "p99_ms": chaos_score.pct(99),
            "faults": chaos.log,
        },
        mqtt=_mqtt_counts(t, clean + noisy),
        killed_claimer_s=_killed_claimer_s(chaos.log, noisy, read_actions(t.counter), offsets),
        ready_s_restart=round(max(restarts), 2) if restarts else None,
        load=asdict(load) if load else None,
        idle=asdict(idle) if idle else None,
    )

    # 3. rate steps
    if p.rate_steps:
        out["max_commands_per_min"], out["rate_steps"] = _rate_steps(t, poster)
        tick("steps")

    # 4. failover
    if p.failover:
        out["failover_s"], out["failover"] = _failover(t)
        tick("failover")
    return out


def _mqtt_counts(t: _Trial, commands: Sequence[Command]) -> dict[str, Any] | None:
    """The MQTT device's commands: sent to it, counted by the bots (confirmed by the plug),
    and received by the plug (more than counted: a command reached it whose confirmation
    was lost, or reached it twice)."""
    if t.mqtt is None:
        return None
    ours = {c.ts for c in commands if c.device == MQTT_DEVICE}
    counted = [a for a in read_actions(t.counter) if a.get("device") == MQTT_DEVICE]
    return {
        "device": MQTT_DEVICE,
        "commands": len(ours),
        "counted": sum(1 for a in counted if a.get("ts") in ours),
        "received": t.mqtt.commands_received(),
        "broker_restarts": list(t.mqtt.restarts),
    }


def _killed_claimer_s(
    log: Sequence[dict[str, Any]],
    commands: Sequence[Command],
    actions: Sequence[dict[str, Any]],
    clock_offsets: dict[str, float],
) -> list[float | None]:
    """For each command whose claimer was killed mid-command: seconds from its post to
    its first action (a takeover, or the claimer's own if it acted before it died); None
    for one that never acted (it was answered as superseded, or lost)."""
    first: dict[str, float] = {}
    for action in actions:
        ts, at = str(action.get("ts")), action_time(action, clock_offsets)
        first[ts] = min(first.get(ts, at), at)
    out: list[float | None] = []
    for entry in log:
        if entry["fault"] == "kill" and entry["applied"] and entry["at"] < len(commands):
            ts = commands[entry["at"]].ts
            out.append(round(first[ts] - float(ts), 2) if ts in first else None)
    return out


def _rate_steps(t: _Trial, poster: Poster) -> tuple[float | None, list[dict[str, Any]]]:
    """Step the offered rate up; the best rate whose step was exactly-once and on time."""
    p = t.profile
    window = compressed_window_s(len(t.bots))
    t.control("ratelimit", window_s=window, multiplier=window / 60)
    seconds = max(p.step_s, 3 * window)
    steps: list[dict[str, Any]] = []
    best: float | None = None
    try:
        for rate in p.rate_steps:
            count = max(6, round(rate * seconds / 60))
            sent = _stream(t, poster, count, rate)
            deadline = float(sent[-1].ts) + p.sustain_s - time.time()
            wait_until(all_acted(sent, t.counter), max(0.0, deadline))
            time.sleep(2 * p.timings.stagger_s * len(t.bots) + 1)  # a late duplicate shows
            score = tally(sent, read_actions(t.counter))
            slowest = max(score.latencies_ms, default=0.0)
            passed = score.exactly_once and slowest <= p.sustain_s * 1000
            steps.append(
                {
                    "rate_per_min": rate,
                    "commands": count,
                    "window_s": window,
                    "duplicates": score.duplicates,
                    "losses": score.losses,
                    "p50_ms": score.pct(50),
                    "max_ms": round(slowest, 1),
                    "passed": passed,
                }
            )
            if not passed:
                break
            best = rate
    finally:
        t.control("ratelimit", window_s=p.slack_window_s, multiplier=1.0)
    return best, steps


def _failover(t: _Trial) -> tuple[float | None, dict[str, Any]]:
    """Restart every bot so that whoever wins the claim dies at once; time the takeover."""
    p = t.profile
    t.fleet.stop_all()
    _keep_logs(t, "")
    counter = t.folder / "failover.jsonl"
    counter.unlink(missing_ok=True)
    fleet = t.system.fleet(
        t.ws.api_url, t.folder, t.bots, p.timings, counter, t.mqtt_port, devices=p.devices
    )
    t.fleet = fleet
    t.control("ratelimit")
    for name in t.bots:
        fleet.start(name, wait=False, env=t.system.die_after_claim())
    for name in t.bots:
        fleet.wait_ready(name, timeout=240)
    cmd = Poster(t.ws.api_url, list(devices(p.devices))).post()
    timeout = 2 * p.timings.lease_s + len(t.bots) * p.timings.stagger_s + 5
    if t.system.name == LEGACY:
        timeout = LEGACY_BOUND_S
    acted = wait_until(all_acted([cmd], counter), timeout)
    actions = [a for a in read_actions(counter) if a.get("ts") == cmd.ts]
    dead = sorted(b.name for b in fleet.bots.values() if not b.alive)
    detail = {
        "acted": acted,
        "actions": len(actions),
        "killed": dead,
        "taker": actions[0]["bot"] if actions else None,
    }
    if not acted:
        t.notes.append(f"failover: no bot carried out the command within {timeout:.0f} s")
        return None, detail
    return round(min(float(a["at"]) for a in actions) - float(cmd.ts), 2), detail


def _keep_logs(t: _Trial, suffix: str) -> None:
    """Each bot's output beside the trial's files, for a look after the run."""
    for name in t.fleet.bots:
        (t.folder / f"{name}{suffix}.log").write_text(t.fleet.history(name) + "\n")
