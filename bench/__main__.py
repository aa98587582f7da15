"""`python -m bench --quick | --full`: run the benchmark and write bench/reports/.

python -m bench --quick                # 2 bots, three systems, quick faults (< 3 min)
python -m bench --full                 # N in 2, 8, 16, five faults, steps 18/30/45 (100 min)
python -m bench --full --bots 2,4,8 --commands 40 --tag medium
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench import footprint, report
from bench.harness import FULL, QUICK, Profile, run_trial
from bench.systems import LEGACY, MODES, TROUPE, available_modes, systems

REPORTS = Path(__file__).resolve().parent / "reports"


class Bar:
    """A one-line progress bar on stderr (no dependency)."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total = max(1, total)
        self.done = 0
        self.width = width
        self.started = time.monotonic()
        self.label = ""

    def step(self, label: str) -> None:
        self.done = min(self.total, self.done + 1)
        self.label = label
        self.draw()

    def draw(self) -> None:
        filled = round(self.width * self.done / self.total)
        elapsed = time.monotonic() - self.started
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
            f"{elapsed:5.0f} s  {self.label[:60]:<60}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the quick run (default)")
    size.add_argument("--full", action="store_true", help="the whole grid")
    parser.add_argument("--bots", type=_ints, help="bot counts, e.g. 2,4,8")
    parser.add_argument("--modes", help=f"troupe modes, from {', '.join(MODES)}")
    parser.add_argument("--no-legacy", action="store_true", help="leave out SlackMQ 0.1.2")
    parser.add_argument("--no-troupe", action="store_true", help="leave out troupe")
    parser.add_argument("--clean", type=int, help="commands in the clean phase")
    parser.add_argument("--commands", type=int, help="commands in the chaos phase")
    parser.add_argument("--rate", type=float, help="commands per minute")
    parser.add_argument("--faults", help="fault schedule: none, quick, full or one fault kind")
    parser.add_argument("--steps", type=_floats, help="rate steps per minute, e.g. 10,20,40")
    parser.add_argument("--no-steps", action="store_true", help="skip the rate steps")
    parser.add_argument("--step-s", type=float, help="seconds of commands per rate step")
    parser.add_argument("--no-failover", action="store_true", help="skip the failover trial")
    parser.add_argument(
        "--no-footprint", action="store_true", help="skip one bot's RSS and start-up CPU"
    )
    parser.add_argument(
        "--tag", help="report name (default: the profile's; a tagged run leaves latest.* alone)"
    )
    parser.add_argument("--out", type=Path, default=REPORTS, help="report folder")
    parser.add_argument("--workdir", type=Path, help="keep trial files here (default: temp)")
    return parser.parse_args(argv)


def profile_from(args: argparse.Namespace) -> Profile:
    p = FULL if args.full else QUICK
    changes: dict[str, object] = {}
    if args.bots:
        changes["bots"] = args.bots
    if args.clean is not None:
        changes["clean_commands"] = args.clean
    if args.commands is not None:
        changes["chaos_commands"] = args.commands
    if args.rate:
        changes["rate_per_min"] = args.rate
    if args.faults:
        changes["faults"] = args.faults
    if args.steps:
        changes["rate_steps"] = args.steps
    if args.step_s:
        changes["step_s"] = args.step_s
    if args.no_steps:
        changes["rate_steps"] = ()
    if args.no_failover:
        changes["failover"] = False
    return replace(p, **changes)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    profile = profile_from(args)
    modes, skipped = available_modes()
    if args.modes:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        unknown = set(modes) - set(MODES)
        if unknown:
            print(f"unknown mode(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        skipped = {m: n for m, n in skipped.items() if m not in modes}
    chosen = [
        s
        for s in systems(modes, legacy=not args.no_legacy)
        if not (args.no_troupe and s.name == TROUPE)
    ]
    if not chosen:
        print("nothing to run", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="troupe-bench-"))
    grid = sorted(
        ((n, i, system) for i, system in enumerate(chosen) for n in profile.bots_for(system.mode)),
        key=lambda cell: cell[:2],
    )
    bar = Bar(len(grid) * profile.phases())
    print(f"trial files in {workdir}", file=sys.stderr)
    started = time.monotonic()
    footprints = None
    if not args.no_footprint:
        print("measuring one bot's footprint (python -m bench.footprint)", file=sys.stderr)
        footprints = footprint.measure(5 if args.full else 3, workdir / "footprint")
    rows = []
    for n, _, system in grid:
        ticks = 0

        def tick(phase: str, system=system, n=n) -> None:
            nonlocal ticks
            ticks += 1
            bar.step(f"{system.label}, {n} bots: {phase}")

        bar.label = f"{system.label}, {n} bots: starting"
        bar.draw()
        try:
            rows.append(run_trial(system, n, profile, workdir, tick))
        except (RuntimeError, OSError, TimeoutError) as err:
            rows.append({"system": system.name, "mode": system.mode, "bots": n, "error": str(err)})
            print(f"\n{system.label}, {n} bots failed: {err}", file=sys.stderr)
            for _ in range(profile.phases() - ticks):
                bar.step(f"{system.label}, {n} bots: failed")
    bar.close()
    t = profile.timings
    context = {
        "profile": profile.name if not args.tag else args.tag,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.monotonic() - started),
        "workload": (
            f"{profile.clean_commands} clean + {profile.chaos_commands} chaos commands per "
            f"trial at {profile.rate_per_min:g}/min, each 'turn on/off the <device>' on a "
            "shared device (claimed through SlackMQ); rate steps "
            f"{', '.join(f'{r:g}' for r in profile.rate_steps) or 'none'}"
        ),
        "network": (
            f"{profile.latency_ms:g} ms +- {profile.jitter_ms:g} ms on every Web API call; "
            "each app's events delayed by a fixed value drawn from the same range; Slack's "
            "rate limits (rate_limits: slack)"
        ),
        "faults": f"schedule '{profile.faults}'",
        "timings": (
            f"stale_s {t.stale_s:g}, lease_s {t.lease_s:g}, stagger_s {t.stagger_s:g}, "
            f"linger_s {t.linger_s:g}"
        ),
        "footprint": footprints,
        "notes": [f"{mode}: {note}" for mode, note in skipped.items()]
        + ([] if not args.no_legacy else [f"{LEGACY} left out (--no-legacy)"]),
    }
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    tag = args.tag or profile.name
    # latest.* are the profile runs the README reads; a tagged run is an experiment beside them
    written = report.write(
        rows, args.out, tag, command=command.strip(), context=context, latest=not args.tag
    )
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
