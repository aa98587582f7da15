"""`python -m bench.soak`: thousands of commands under the whole fault schedule, each mode.

python -m bench.soak                                  # 10,000 commands, 8 bots, every mode
python -m bench.soak --commands 300 --bots 8 --tag soak-short
python -m bench.soak --resume                         # run only the modes not yet in soak.json

Each mode is one trial of the bench (bench/harness.py): a clean phase, then the chaos phase
with every fault kind in turn (one every `--fault-every` commands; mqtt-restart restarts
the trial's mosquitto with a command to the MQTT device in flight), then the failover
phase. Time is compressed, and the report says by how much: Slack's rate limits count
their per-minute budgets over 60/scale seconds, and the protocol's timings are the
defaults divided by the same scale, but never below the quick profile's (stale 8 s,
lease 4 s, linger 10 s, stagger 0.4 s: a bot restart and a loaded CPU take seconds, not
fractions), and stale never less than Slack's own 3 s redelivery (not compressed) plus a
lease plus 3 s: 10 s, linger 11 s (at 400 commands a minute about 73 claim pins live, of
Slack's 100 a channel). Progress goes to stderr every `--every` commands.
Each mode's row is written to <tag>.json as soon as it finishes, so an interrupted soak
keeps what it measured and
`--resume` runs the rest. Every process it starts is stopped when it ends, is interrupted
(Ctrl-C, SIGTERM) or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.files import Timings, devices
from bench.harness import QUICK, Profile, run_trial
from bench.systems import MODES, TROUPE, System
from bench.workload import read_actions
from troupe.slackmq import REDELIVERY_S

REPORTS = Path(__file__).resolve().parent / "reports"
DEFAULTS = Timings()
STALE_MARGIN_S = 3.0
"""How much longer than Slack's redelivery and a lease the soak's stale limit lasts: a
shared-app command handed out again after every socket dropped is taken over one lease
after the redelivery, and must still be fresh (the defaults keep 30 - 3 - 15 = 12 s).
Not more: the claim pins live until ts + linger (> stale), and at 400 commands a real
minute a 14 s linger kept about 94 of Slack's 100 pins taken (too_many_pins)."""


@dataclass(frozen=True)
class Soak:
    """One soak's size and compression (the command line's options)."""

    commands: int = 10_000
    bots: int = 8
    modes: tuple[str, ...] = MODES
    rate_per_min: float = 400.0
    """Commands posted per real minute."""
    scale: float = 40.0
    """Time compression: Slack's per-minute budgets count over 60/scale seconds. 40 with
    400 commands a real minute is 10 per Slack minute: rtm (two reactions.add of one app
    per command) collapsed into a 429 storm at 20 after every bot reconnected at once."""
    fault_every: int = 20
    clean: int = 100
    """Of `commands`, how many go first with no fault (calls per command, latency)."""
    max_minutes: float = 90.0
    """Stop posting (and say so) once the whole soak has run this long."""
    devices: int = 12
    """How many devices the stream cycles over. At 400 commands a real minute over 6, each
    device had a command every 0.9 s, less than one link of its in-order line takes under
    load (act, answer, ✅, the next holder's turn: about 1.1 s on 2 CPUs; the network is
    not compressed), so one fault's backlog never drained: commands acted just inside
    the stale limit and takeovers fell past it (the 6-device soak: 35 app-per-bot losses).
    A home sends one device a command every few minutes."""

    @property
    def timings(self) -> Timings:
        """The default timings divided by `scale`, floored at the quick profile's; and
        stale_s at least Slack's redelivery plus a lease plus STALE_MARGIN_S, since the 3 s
        redelivery is Slack's own and not compressed (the defaults keep 12 s over it)."""
        q = QUICK.timings
        lease = max(q.lease_s, DEFAULTS.lease_s / self.scale)
        stale = max(q.stale_s, DEFAULTS.stale_s / self.scale, REDELIVERY_S + lease + STALE_MARGIN_S)
        return Timings(
            stale_s=stale,
            lease_s=lease,
            stagger_s=max(q.stagger_s, DEFAULTS.stagger_s / self.scale),
            linger_s=max(q.linger_s, DEFAULTS.linger_s / self.scale, stale + 1),
        )

    @property
    def slack_rate_per_min(self) -> float:
        """The posting rate as Slack's limits see it (per compressed minute)."""
        return self.rate_per_min / self.scale

    def profile(self) -> Profile:
        return replace(
            QUICK,
            name="soak",
            bots=(self.bots,),
            clean_commands=min(self.clean, self.commands),
            chaos_commands=max(0, self.commands - self.clean),
            rate_per_min=self.rate_per_min,
            faults="full",
            fault_every=self.fault_every,
            timings=self.timings,
            slack_window_s=60.0 / self.scale,
            rate_steps=(),
            failover=True,
            devices=self.devices,
        )

    def key(self) -> dict[str, Any]:
        """What a finished mode must match for --resume to keep it."""
        return {k: v for k, v in asdict(self).items() if k not in ("modes", "max_minutes")}


class Progress:
    """A line on stderr every `every` commands: posted, acted, duplicates so far, ETA."""

    def __init__(self, soak: Soak, every: int, deadline: float) -> None:
        self.soak = soak
        self.every = max(1, every)
        self.deadline = deadline
        self.mode = ""
        self.counter: Path | None = None
        self.phase_started = time.monotonic()
        self.posted = 0
        self.stopped_early = False

    def start(self, mode: str, counter: Path) -> None:
        self.mode, self.counter, self.posted = mode, counter, 0
        self.phase_started = time.monotonic()
        self.stopped_early = False

    def on_post(self, index: int, count: int) -> bool:
        self.posted += 1
        if self.posted % self.every == 0 or index == count - 1:
            actions = read_actions(self.counter) if self.counter else []
            keys = [(a.get("ts"), a.get("device")) for a in actions]
            dup = len(keys) - len(set(keys))
            elapsed = time.monotonic() - self.phase_started
            left = (self.soak.commands - self.posted) * 60.0 / self.soak.rate_per_min
            sys.stderr.write(
                f"[soak {self.mode}] {self.posted}/{self.soak.commands} posted, "
                f"{len(set(keys))} acted, {dup} duplicate actions, {elapsed:.0f} s, "
                f"~{left:.0f} s of posting left\n"
            )
            sys.stderr.flush()
        if time.monotonic() > self.deadline:
            sys.stderr.write(f"[soak {self.mode}] past --max-minutes: posting stops here\n")
            self.stopped_early = True
            return False
        return True


def _stop_on_signals() -> None:
    """SIGTERM ends the soak like Ctrl-C: the trial's `finally` stops every bot and the
    workspace, then the process exits."""

    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def children() -> set[int]:
    """The live (not zombie) processes whose parent is this one, from /proc."""
    mine = str(os.getpid())
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == mine and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def _reap_children(spared: set[int]) -> list[int]:
    """Kill what this soak started that is still alive (a last resort after the trial's
    own stop): this process's children that were not there before it (`spared`)."""
    killed = []
    for pid in sorted(children() - spared):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return killed


def summary(row: dict[str, Any], soak: Soak) -> dict[str, Any]:
    """The soak's figures of one mode, from the trial's row."""
    chaos = row.get("chaos") or {}
    taken = [s for s in row.get("killed_claimer_s") or [] if s is not None]
    applied: dict[str, int] = {}
    for fault in chaos.get("faults", []):
        if fault["applied"]:
            applied[fault["fault"]] = applied.get(fault["fault"], 0) + 1
    return {
        "mode": row.get("mode"),
        "bots": row.get("bots"),
        "commands": row.get("commands"),
        "duplicates": row.get("duplicates"),
        "losses": row.get("losses"),
        "out_of_order": row.get("out_of_order"),
        "unanswered": row.get("unanswered"),
        "calls_per_command_clean": row.get("api_calls_per_command"),
        "calls_per_command_chaos": chaos.get("api_calls_per_command"),
        "calls_by_method_chaos": chaos.get("calls_by_method"),
        "p50_ms": chaos.get("p50_ms"),
        "p99_ms": chaos.get("p99_ms"),
        "p50_ms_clean": row.get("p50_ms"),
        "p99_ms_clean": row.get("p99_ms"),
        "failover_s": row.get("failover_s"),
        "killed_claimer_s": {
            "count": len(row.get("killed_claimer_s") or []),
            "acted": len(taken),
            "median": sorted(taken)[len(taken) // 2] if taken else None,
            "max": max(taken) if taken else None,
        },
        "http_429": row.get("http_429"),
        "faults_applied": applied,
        "mqtt": row.get("mqtt"),
        "superseded": chaos.get("superseded"),
        "already": chaos.get("already"),
        "lost_at": chaos.get("lost_at"),
        "out_of_order_at": chaos.get("out_of_order_at"),
        "duplicated_at": chaos.get("duplicated_at"),
        "unanswered_at": chaos.get("unanswered_at"),
        "phase_s": row.get("phase_s"),
        "error": row.get("error"),
        "notes": row.get("notes"),
        "soak": soak.key(),
    }


def markdown(results: list[dict[str, Any]], soak: Soak, context: dict[str, Any]) -> str:
    t = soak.timings
    lines = [
        "# Soak: troupe under the whole fault schedule",
        "",
        f"Command: `{context['command']}`  ",
        f"Finished: {context['finished']}, after {context['duration_s']} s  ",
        f"Machine: {context['machine']}  ",
        f"Workload: {soak.commands} commands per mode ({min(soak.clean, soak.commands)} "
        f"without faults first), {soak.bots} bots, posted at {soak.rate_per_min:g} a minute "
        f"over {soak.devices} devices (each one a command every "
        f"{60 * soak.devices / soak.rate_per_min:.1f} s); "
        f"every fault kind in turn, one every {soak.fault_every} commands (mqtt-restart: "
        "mosquitto SIGKILLed with a command to the MQTT device in flight, started again "
        "1.5 s later on the same port); then the failover phase (every bot dies right "
        "after winning a claim; one command)  ",
        f"Compressed time: Slack's per-minute rate limits count over {60 / soak.scale:g} s "
        f"(time runs {soak.scale:g} times faster for them: the posting rate is "
        f"{soak.slack_rate_per_min:g} commands per Slack minute); timings stale_s "
        f"{t.stale_s:g}, lease_s {t.lease_s:g}, stagger_s {t.stagger_s:g}, linger_s "
        f"{t.linger_s:g} (the defaults divided by {soak.scale:g}, never below the quick "
        "profile's, and stale_s at least Slack's 3 s redelivery, which is not compressed, "
        "plus a lease plus 3 s); the network (50 ms +- 20 ms a call) is not compressed  ",
    ]
    lines += [f"Note: {n}  " for n in context.get("notes", [])]
    lines += [
        "",
        "| mode | bots | commands | dup | lost | out of order | unanswered | calls/cmd clean "
        "| calls/cmd chaos | p50 ms | p99 ms | failover s | killed claimers: acted, median s, "
        "max s | 429s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for r in results:
        k = r["killed_claimer_s"]
        lines.append(
            f"| {r['mode']} | {r['bots']} | {r['commands']} | {r['duplicates']} | "
            f"{r['losses']} | {r['out_of_order']} | {r['unanswered']} | "
            f"{r['calls_per_command_clean']} | {r['calls_per_command_chaos']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['failover_s']} | "
            f"{k['acted']}/{k['count']}, {k['median']}, {k['max']} | {r['http_429']} |"
            if not r.get("error")
            else f"| {r['mode']} | {r['bots']} | failed: {r['error']} |"
        )
    lines += [
        "",
        "dup, lost, out of order and unanswered are over every command of the mode; p50/p99"
        " are post to first device action in the chaos phase; calls/cmd counts every Web API"
        " call of the bots per command; killed claimers are the commands whose claimer was"
        " SIGKILLed mid-command (acted: how many were carried out, by a taker or by the"
        " claimer before it died; the rest were answered as superseded or lost).",
        "",
        "## Faults applied, per mode",
        "",
    ]
    for r in results:
        applied = ", ".join(f"{k} {v}" for k, v in sorted((r["faults_applied"] or {}).items()))
        lines.append(f"- {r['mode']}: {applied or 'none'}")
        if m := r.get("mqtt"):
            lines.append(
                f"  - MQTT device ({m['device']}, a Tasmota plug on the trial's mosquitto): "
                f"{m['commands']} commands, {m['counted']} actions counted, {m['received']} "
                f"commands received by the plug; {len(m['broker_restarts'])} broker "
                "restart(s)"
            )
        for note in r.get("notes") or []:
            lines.append(f"  - {note}")
        if r.get("superseded") is not None:
            lines.append(
                f"  - answered without an action: {r['superseded']} left to a newer command,"
                f" {r.get('already') or 0} already as asked after a restart mid-command (each"
                " checked: the newest older command that acted on its device did the same)"
            )
        for what in ("lost_at", "duplicated_at", "unanswered_at", "out_of_order_at"):
            if r.get(what):
                lines.append(f"  - {what}: {r[what][:20]}")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    d = Soak()
    p.add_argument("--commands", type=int, default=d.commands, help="commands per mode")
    p.add_argument("--bots", type=int, default=d.bots)
    p.add_argument("--modes", default=",".join(d.modes), help=f"from {', '.join(MODES)}")
    p.add_argument("--rate", type=float, default=d.rate_per_min, help="commands a real minute")
    p.add_argument("--scale", type=float, default=d.scale, help="time compression (see above)")
    p.add_argument("--fault-every", type=int, default=d.fault_every)
    p.add_argument("--clean", type=int, default=d.clean, help="fault-free commands first")
    p.add_argument("--max-minutes", type=float, default=d.max_minutes)
    p.add_argument(
        "--devices", type=int, default=d.devices, help="devices the commands cycle over (1-12)"
    )
    p.add_argument("--every", type=int, default=100, help="progress every this many commands")
    p.add_argument("--tag", default="soak", help="report name in the report folder")
    p.add_argument("--out", type=Path, default=REPORTS)
    p.add_argument("--workdir", type=Path, help="trial files (default: a temp folder)")
    p.add_argument("--resume", action="store_true", help="keep finished modes of <tag>.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if set(modes) - set(MODES):
        print(f"unknown mode(s): {', '.join(sorted(set(modes) - set(MODES)))}", file=sys.stderr)
        return 2
    try:
        devices(args.devices)
    except ValueError as err:
        print(f"--devices: {err}.", file=sys.stderr)
        return 2
    soak = Soak(
        commands=args.commands,
        bots=args.bots,
        modes=modes,
        rate_per_min=args.rate,
        scale=args.scale,
        fault_every=args.fault_every,
        clean=args.clean,
        max_minutes=args.max_minutes,
        devices=args.devices,
    )
    json_path = args.out / f"{args.tag}.json"
    results: list[dict[str, Any]] = []
    if args.resume and json_path.exists():
        kept = json.loads(json_path.read_text()).get("modes", [])
        results = [r for r in kept if r.get("soak") == soak.key() and not r.get("error")]
        kept_modes = ", ".join(r["mode"] for r in results) or "nothing"
        print(f"resuming: kept {kept_modes}", file=sys.stderr)
    done = {r["mode"] for r in results}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="troupe-soak-"))
    command = "python -m bench.soak " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = time.monotonic()
    progress = Progress(soak, args.every, started + 60 * soak.max_minutes)
    notes: list[str] = []
    spared = children()
    _stop_on_signals()
    print(f"trial files in {workdir}", file=sys.stderr)
    try:
        for mode in modes:
            if mode in done:
                continue
            system = System(TROUPE, mode)
            counter = workdir / f"{system.name}-{mode}-{soak.bots}" / "actions.jsonl"
            progress.start(mode, counter)
            try:
                row = run_trial(
                    system,
                    soak.bots,
                    soak.profile(),
                    workdir,
                    lambda phase, mode=mode: print(f"[soak {mode}] {phase} done", file=sys.stderr),
                    on_post=progress.on_post,
                )
            except (RuntimeError, OSError, TimeoutError) as err:
                row = {"mode": mode, "bots": soak.bots, "error": str(err)}
            if progress.stopped_early:
                notes.append(f"{mode}: stopped posting at --max-minutes ({progress.posted} posted)")
            results = [r for r in results if r["mode"] != mode] + [summary(row, soak)]
            _write(args.out, args.tag, results, soak, command, started, notes)
    except KeyboardInterrupt:
        notes.append("interrupted: the modes above finished; run again with --resume")
        print("\ninterrupted: stopping every bot", file=sys.stderr)
    finally:
        leftover = _reap_children(spared)
        if leftover:
            notes.append(f"{len(leftover)} leftover process(es) killed at the end")
    for path in _write(args.out, args.tag, results, soak, command, started, notes):
        print(f"wrote {path}", file=sys.stderr)
    bad = [r for r in results if r.get("error") or any(r[k] for k in _ZERO)]
    return 1 if bad or len(results) < len(modes) else 0


_ZERO = ("duplicates", "losses", "out_of_order", "unanswered")
"""Goal 0 for each, in every mode."""


def _write(
    out: Path,
    tag: str,
    results: list[dict[str, Any]],
    soak: Soak,
    command: str,
    started: float,
    notes: list[str],
) -> list[Path]:
    order = {m: i for i, m in enumerate(MODES)}
    results = sorted(results, key=lambda r: order.get(r["mode"], 99))
    context = {
        "command": command.strip(),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.monotonic() - started),
        "machine": report.machine(),
        "notes": notes,
    }
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{tag}.json", out / f"{tag}.md"
    payload = {"context": context, "soak": asdict(soak), "modes": results}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown(results, soak, context))
    return [json_path, md_path]


if __name__ == "__main__":
    sys.exit(main())
