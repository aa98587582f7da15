"""`python -m bench.fuzz_long --scenarios N`: the claim-protocol model test's long budget.

Plays N random scenarios through tests/test_model.py's model, which drives the real
pipeline (each bot a `troupe.bot.Bot` on a fake Web API, a counting driver and its own
SlackClock, on a virtual clock): 3-5 bots; late, stale and repeated deliveries; late
events; Pi clocks up to 10 minutes off; crashes after a claim, after acting, at any
moment, with restarts; claim answers lost after Slack applied them; a person's 🔄, ✅ and
pins; devices slower than the lease; a full pin list. It prints progress, the cases
tried, the broken promises by kind, and the notable cases seen. Scenario i is drawn from
random.Random(seed + i), so any failure replays with `--replay SEED`.

    python -m bench.fuzz_long --scenarios 200000 --jobs 2
    python -m bench.fuzz_long --replay 4711
    python -m bench.fuzz_long --scenarios 5000 --latency 6    # past the lease budget

--latency goes outside what troupe promises (Slack calls that together outlast the
lease); the failures it shows are the protocol's known limits, counted by kind, not bugs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import random
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

MODEL_PATH = Path(__file__).resolve().parent.parent / "tests" / "test_model.py"


def _model() -> ModuleType:
    """tests/test_model.py, imported by path (tests/ is not a package; its helpers are
    imported from beside it)."""
    if str(MODEL_PATH.parent) not in sys.path:
        sys.path.insert(0, str(MODEL_PATH.parent))
    spec = importlib.util.spec_from_file_location("troupe_claim_model", MODEL_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _scenario(model: ModuleType, seed: int, latency: float | None) -> Any:
    scenario = model.draw_scenario(random.Random(seed))
    if latency is not None:
        scenario = dataclasses.replace(scenario, max_latency=latency)
    return scenario


def _batch(
    seeds: range, latency: float | None
) -> tuple[int, Counter[str], Counter[str], list[tuple[int, str, str]]]:
    """Run scenarios for `seeds` in this process: (cases, tallies, broken kinds, examples)."""
    logging.disable(logging.CRITICAL)
    model = _model()
    tally: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    examples: list[tuple[int, str, str]] = []
    for seed in seeds:
        verdict = model.check(_scenario(model, seed, latency))
        tally.update(verdict.tally)
        for kind, message in verdict.broken:
            if kinds[kind] < 3:
                examples.append((seed, kind, message))
            kinds[kind] += 1
    return len(seeds), tally, kinds, examples


def run(examples: int, seed: int, jobs: int, latency: float | None) -> int:
    started = time.monotonic()
    chunk = 500
    end = seed + examples
    batches = [range(s, min(s + chunk, end)) for s in range(seed, end, chunk)]
    cases = 0
    tally: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    shown: list[tuple[int, str, str]] = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_batch, b, latency) for b in batches]
        for future in futures:
            n, t, k, ex = future.result()
            cases += n
            tally.update(t)
            kinds.update(k)
            shown += ex
            for case_seed, kind, message in ex:  # as they come: a long run need not end
                print(f"  seed {case_seed} [{kind}] {message[:300]}", file=sys.stderr)
            rate = cases / max(1e-9, time.monotonic() - started)
            print(
                f"{cases}/{examples} scenarios, {sum(kinds.values())} broken, {rate:.0f}/s",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.monotonic() - started
    print(f"cases tried: {cases} (seeds {seed}..{seed + examples - 1}) in {elapsed:.0f} s")
    if latency is not None:
        print(f"outside the promises: latency up to {latency} s per Slack call leg")
    print(f"failures: {sum(kinds.values())}" + (f" by kind {dict(kinds)}" if kinds else ""))
    for case_seed, kind, message in shown[:10]:
        print(f"  seed {case_seed} [{kind}] {message[:400]}")
    print("seen:")
    for key in sorted(tally):
        print(f"  {key}: {tally[key]}")
    return 1 if kinds else 0


def replay(seed: int, latency: float | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = _model()
    scenario = _scenario(model, seed, latency)
    print(scenario)
    sim = model.run(scenario)
    for execution in sim.executions:
        print(" ", execution)
    for ts, answers in sim.board.answers.items():
        for answer in answers:
            print(f"  {ts}: {answer}")
    verdict = model.judge(scenario, sim)
    print(dict(verdict.tally))
    for kind, message in verdict.broken:
        print(f"[{kind}] {message}")
    return 1 if verdict.broken else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_long", description=__doc__)
    parser.add_argument(
        "--scenarios", "--examples", type=int, default=20000, help="scenarios to play"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scenario")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--latency", type=float, help="max latency per Slack call leg (s)")
    parser.add_argument("--replay", type=int, metavar="SEED", help="play one scenario, verbosely")
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay(args.replay, args.latency)
    return run(args.scenarios, args.seed, max(1, args.jobs), args.latency)


if __name__ == "__main__":
    sys.exit(main())
