"""`python -m bench.footprint`: one bot's memory and start-up CPU, troupe next to SlackMQ 0.1.2.

Each bot below is started alone in its own process, five times (the medians are kept), with
their modules byte-compiled first as an installed package has them:

- troupe's demo kitchen-pi (`troupe demo`'s house: gpio_relay, hue and mqtt devices,
  simulated hardware) — the bot issue 14 sets the goals for;
- troupe's benchmark bot (app-per-bot, devices on the counter driver only);
- a SlackMQ 0.1.2 bot (slackbot 1.0.5 with the seed's plugin, bench/legacy);
- four floors that run no troupe code (FLOOR): the libraries kitchen-pi needs, imported
  (slack_sdk's blocking client and builtin Socket Mode, and one verified TLS context);
  then also the English sentences of the intents troupe acts on parsed (what kitchen-pi
  parses at start), or of every intent; and the second with slack_sdk's aiohttp clients
  instead (AsyncWebClient and the aiohttp Socket Mode: what troupe ran on before), which
  says what aiohttp would cost.

For kitchen-pi also where its memory and CPU go (STAGES): its start path run in one
process, read after each step.

For each: CPU seconds from exec to the ready line (utime + stime in /proc/PID/stat, read
when the line arrives), resident memory (VmRSS in /proc/PID/status) SETTLE_S after the
ready line, and the peak so far (VmHWM). Writes bench/reports/footprint.json and .md;
`python -m bench` puts the same table in its report.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from bench.procstat import sample
from troupe.intents import SUPPORTED_INTENTS

REPORTS = Path(__file__).resolve().parent / "reports"
SETTLE_S = 2.0
"""Seconds after the ready line before RSS is read: what the start set going settles."""
RSS_GOAL_MB = 55.0
CPU_GOAL_S = 0.5
GOAL_BOT = "troupe demo kitchen-pi"
"""The row the goals of issue 14 (item 6) apply to."""
FLOOR_BOT = "floor: + the intents troupe acts on"
"""The floor to set kitchen-pi against: its libraries, and the sentences it parses at start."""
FLOOR_ALL_BOT = "floor: + every HA English sentence"
AIOHTTP_FLOOR_BOT = "floor with aiohttp: + the intents troupe acts on"


def measure_process(
    cmd: Sequence[str], env: Mapping[str, str], cwd: Path, ready: str, timeout: float = 60.0
) -> dict[str, float]:
    """Start `cmd`, wait for a line starting with `ready`, measure, then stop it."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
        cwd=cwd,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
    started = time.monotonic()
    output: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, started + timeout - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise RuntimeError(f"{ready!r} never came:\n{''.join(output[-20:])}")
            if line.startswith(ready):
                at_ready = sample(proc.pid)
                break
            output.append(line)
        ready_s = time.monotonic() - started
        time.sleep(SETTLE_S)
        settled = sample(proc.pid)
        if at_ready is None or settled is None:
            raise RuntimeError(f"the process exited after its ready line:\n{''.join(output)}")
        return {
            "cpu_s": at_ready.cpu_s,
            "ready_s": ready_s,
            "rss_mb": settled.rss_mb,
            "peak_mb": settled.peak_mb,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pump(proc: subprocess.Popen[str], into: queue.Queue[str | None]) -> None:
    """Each line the process prints, then None when it closes its output."""
    if proc.stdout is not None:
        for line in proc.stdout:
            into.put(line)
    into.put(None)


Started = tuple[list[str], dict[str, str], str]
"""A bot's command line, its environment and the start of its ready line."""
Starter = Callable[[Path], AbstractContextManager[Started]]
"""Sets up what the bot needs (a workspace, the demo's hardware) in a folder."""


@contextmanager
def demo_kitchen(folder: Path) -> Iterator[Started]:
    """The demo house without its bots, and the command line of its kitchen-pi."""
    from troupe.devkit.demo import demo_house

    with demo_house(folder, bots=()) as house:
        fleet = house.fleet
        yield fleet.command("kitchen-pi"), fleet.env, "kitchen-pi ready"


@contextmanager
def bench_bot(folder: Path) -> Iterator[Started]:
    """The benchmark's first troupe bot (counter devices, app-per-bot), alone."""
    from bench.files import Timings, bot_names, workspace_config
    from bench.systems import TROUPE, System
    from troupe.devkit.workspace.testing import running_workspace

    bots = bot_names(2)
    with running_workspace(workspace_config(2)) as ws:
        fleet = System(TROUPE, "app-per-bot").fleet(
            ws.api_url, folder, bots, Timings(), folder / "actions.jsonl"
        )
        yield fleet.command(bots[0]), fleet.env, f"{bots[0]} ready"


@contextmanager
def legacy_bot(folder: Path) -> Iterator[Started]:
    """A SlackMQ 0.1.2 bot (slackbot 1.0.5, the seed's plugin), alone."""
    from bench.files import Timings, bot_names, workspace_config
    from bench.systems import LEGACY, LEGACY_MODE, System
    from troupe.devkit.workspace.testing import running_workspace

    bots = bot_names(2)
    with running_workspace(workspace_config(2)) as ws:
        fleet = System(LEGACY, LEGACY_MODE).fleet(
            ws.api_url, folder, bots, Timings(), folder / "actions.jsonl"
        )
        yield fleet.command(bots[0]), fleet.env, f"{bots[0]} ready"


FLOOR = """\
import sys, time
import asyncio, sqlite3, ssl, yaml, pydantic
if "aiohttp" in sys.argv[1:]:
    import aiohttp, slack_sdk.web.async_client, slack_sdk.socket_mode.aiohttp
else:
    import slack_sdk, slack_sdk.socket_mode.builtin
    context = ssl.create_default_context(capath=ssl.get_default_verify_paths().capath)
import hassil.recognize, home_assistant_intents, paho.mqtt.client, gpiozero, phue
if "en" in sys.argv[1:]:
    intents = hassil.Intents.from_dict(home_assistant_intents.get_intents("en"))
    if "supported" in sys.argv[1:]:
        names = set(sys.argv[sys.argv.index("supported") + 1 :])
        intents = hassil.filter_intents(intents, intent_names=names)
    for intent in intents.intents.values():
        for data in intent.data:
            data.sentences
print("floor ready", flush=True)
time.sleep(60)
"""
"""What no troupe code can go below: the libraries kitchen-pi needs, imported and nothing
else (slack_sdk's blocking client and builtin Socket Mode, and the one verified TLS context
a client of https://slack.com needs, its roots read from the system's hashed folder as
troupe.slackapi does); with `en` also Home Assistant's English sentences parsed, as the
recognizer does; with `aiohttp` slack_sdk's aiohttp clients instead (aiohttp makes its own
two TLS contexts at import); with `supported` (then the intent names) only the intents
troupe acts on are parsed, as kitchen-pi does at start: the others keep chatter that names
them silent ("7", "set a timer") and are parsed at the first near miss."""


SUPPORTED = ("supported", *sorted(SUPPORTED_INTENTS))
"""FLOOR's arguments for parsing only the intents troupe acts on, as kitchen-pi does at start."""


def floor(*args: str) -> Starter:
    """A floor row: the FLOOR script with its arguments (`en`, `aiohttp`)."""

    @contextmanager
    def start(_folder: Path) -> Iterator[Started]:
        yield [sys.executable, "-c", FLOOR, *args], dict(os.environ), "floor ready"

    return start


STAGES = """\
import json, sys, time

def mark(stage):
    rss = next(line for line in open("/proc/self/status") if line.startswith("VmRSS:"))
    stages.append({"stage": stage, "rss_mb": int(rss.split()[1]) / 1024,
                   "cpu_s": time.process_time()})

stages = []
mark("interpreter")
import asyncio, troupe.cli, troupe.runner
from troupe.config import load
mark("imports (troupe.cli, troupe.runner)")
fed = load(sys.argv[1])
mark("federation file loaded")
bot = troupe.runner.build_bot(fed, sys.argv[2], journal_path=sys.argv[3])
mark("bot built (its drivers, journal)")
bot.recognizer.warm()
mark("intents warmed")

async def connect():
    await bot.start()
    mark("connected to Slack, ready")
    bot.recognizer.recognize(sys.argv[4])
    mark("a first unknown device named (other intents parsed)")
    await bot.stop()

asyncio.run(connect())
print(json.dumps(stages))
"""
"""kitchen-pi's start path in one process: resident memory and CPU seconds
(time.process_time, from exec) after each step; then what the first command naming an
unknown device adds (the intents troupe does not act on are parsed then)."""

NEAR_MISS = "turn on the gazebo lights"
"""A command naming a device nobody set up, in English: the demo's language."""


def stages(cmd: Sequence[str], env: Mapping[str, str], cwd: Path) -> list[dict[str, Any]]:
    """STAGES for the bot `cmd` starts (`python -m troupe run --config F --bot B ...`)."""
    config, bot = cmd[cmd.index("--config") + 1], cmd[cmd.index("--bot") + 1]
    journal = cwd / f"{bot}.stages.sqlite3"
    done = subprocess.run(
        [sys.executable, "-c", STAGES, config, bot, str(journal), NEAR_MISS],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=cwd,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the start path failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


BOTS: dict[str, tuple[str, Starter]] = {
    GOAL_BOT: ("gpio_relay, hue, mqtt: 7 devices", demo_kitchen),
    "troupe bench bot-1": ("counter: 6 devices", bench_bot),
    "slackmq-0.1.2 bot-1": ("the seed's plugin", legacy_bot),
    "floor: the libraries alone": ("no troupe code: kitchen-pi's imports only", floor()),
    FLOOR_BOT: ("and the 5 intents' sentences parsed", floor("en", *SUPPORTED)),
    FLOOR_ALL_BOT: ("and all 43 intents' sentences parsed", floor("en")),
    AIOHTTP_FLOOR_BOT: ("aiohttp; the 5 intents parsed", floor("en", "aiohttp", *SUPPORTED)),
}


def compile_sources() -> None:
    """Byte-compile troupe and the legacy bots, as `pip install` does on a Pi: otherwise,
    under PYTHONDONTWRITEBYTECODE or in a read-only checkout, every start compiles them."""
    import bench
    import troupe
    import troupe.hardware
    import troupe.plugins

    for package in (troupe, troupe.plugins, troupe.hardware, bench):
        for folder in package.__path__:
            compileall.compile_dir(folder, quiet=1)


def measure(runs: int = 5, workdir: Path | None = None) -> list[dict[str, Any]]:
    """Each bot of BOTS started `runs` times; one row per bot with the medians."""
    compile_sources()
    base = workdir or Path(tempfile.mkdtemp(prefix="troupe-footprint-"))
    rows = []
    for name, (devices, start) in BOTS.items():
        folder = base / name.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        samples = []
        steps: list[list[dict[str, Any]]] = []
        with start(folder) as (cmd, env, ready):
            for _ in range(runs):
                samples.append(measure_process(cmd, env, folder, ready))
            if name == GOAL_BOT:
                steps = [stages(cmd, env, folder) for _ in range(runs)]
        row: dict[str, Any] = {"bot": name, "devices": devices, "runs": runs}
        for key in ("cpu_s", "ready_s", "rss_mb", "peak_mb"):
            row[key] = round(statistics.median(s[key] for s in samples), 2)
        if steps:
            row["stages"] = [
                {
                    "stage": step["stage"],
                    **{
                        key: round(statistics.median(run[i][key] for run in steps), 2)
                        for key in ("rss_mb", "cpu_s")
                    },
                }
                for i, step in enumerate(steps[0])
            ]
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]] | None) -> list[str]:
    """The footprint section of a report (empty when nothing was measured)."""
    if not rows:
        return []
    lines = [
        "## Footprint of one bot (python -m bench.footprint)",
        "",
        "| bot | devices | CPU s to ready | ready s | RSS MB | peak RSS MB |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bot']} | {r['devices']} | {r['cpu_s']:.2f} | {r['ready_s']:.2f} "
            f"| {r['rss_mb']:.1f} | {r['peak_mb']:.1f} |"
        )
    lines += [
        "",
        f"Each bot started alone, {rows[0]['runs']} times, medians, its modules byte-compiled "
        "first (as installed). CPU: utime + stime from exec to the ready line "
        "(/proc/PID/stat); RSS: VmRSS "
        f"{SETTLE_S:g} s after the ready line; peak: VmHWM (/proc/PID/status). The floor "
        "rows run no troupe code: the libraries kitchen-pi needs are imported (asyncio, "
        "slack_sdk's blocking client and builtin Socket Mode, pydantic, PyYAML, hassil, "
        "sqlite3, paho, gpiozero, phue) and the one verified TLS context a client of "
        "https://slack.com needs is made, then Home Assistant's English sentences are "
        "parsed: those of the intents troupe acts on, as the recognizer does at start, or "
        "all of them. The floor with aiohttp imports slack_sdk's aiohttp clients instead "
        "(AsyncWebClient and its Socket Mode, what troupe ran on before): the bot process "
        "no longer loads aiohttp.",
    ]
    by_bot = {r["bot"]: r for r in rows}
    goal, floor = by_bot.get(GOAL_BOT), by_bot.get(FLOOR_BOT)
    heavy, every = by_bot.get(AIOHTTP_FLOOR_BOT), by_bot.get(FLOOR_ALL_BOT)
    if goal is not None:
        rss_ok = goal["rss_mb"] <= RSS_GOAL_MB
        cpu_ok = goal["cpu_s"] <= CPU_GOAL_S
        lines += [
            "",
            f"- Per-bot RSS <= {RSS_GOAL_MB:g} MB with the demo's kitchen-pi devices: "
            f"{goal['rss_mb']:.1f} MB ({'met' if rss_ok else 'NOT met'}).",
            f"- Start to ready <= {CPU_GOAL_S:g} CPU-seconds: {goal['cpu_s']:.2f} s "
            f"({'met' if cpu_ok else 'NOT met'}).",
        ]
    if goal is not None and floor is not None:
        lines.append(
            f"- troupe's own share (kitchen-pi less the floor with the intents it acts on): "
            f"{goal['rss_mb'] - floor['rss_mb']:.1f} MB, "
            f"{goal['cpu_s'] - floor['cpu_s']:.2f} CPU-seconds."
        )
    if floor is not None and floor["rss_mb"] > RSS_GOAL_MB:
        lines.append(
            f"- That floor, no troupe code at all, is already {floor['rss_mb']:.1f} MB: over "
            f"the {RSS_GOAL_MB:g} MB goal before troupe builds anything."
        )
    if floor is not None and heavy is not None:
        lines.append(
            f"- What aiohttp would cost (the floor with it less that floor), which the bot "
            f"no longer loads: {heavy['rss_mb'] - floor['rss_mb']:.1f} MB, "
            f"{heavy['cpu_s'] - floor['cpu_s']:.2f} CPU-seconds."
        )
    if floor is not None and every is not None:
        lines.append(
            f"- The other intents' sentences (every sentence less the intents troupe acts "
            f"on), parsed at the first near miss, which they may silence: "
            f"{every['rss_mb'] - floor['rss_mb']:.1f} MB, "
            f"{every['cpu_s'] - floor['cpu_s']:.2f} CPU-seconds."
        )
    if goal is not None and goal.get("stages"):
        lines += [
            "",
            "Where kitchen-pi's start goes: its start path run in one process "
            "(bench.footprint.STAGES), read after each step, medians (a run of its own, so "
            "the ready line differs a little from the row above); the last line is after "
            f"a first command naming an unknown device ({NEAR_MISS!r}), which parses the "
            "intents troupe does not act on:",
            "",
            "| step | RSS MB | + MB | CPU s | + CPU s |",
            "|---|--:|--:|--:|--:|",
        ]
        before = {"rss_mb": 0.0, "cpu_s": 0.0}
        for step in goal["stages"]:
            lines.append(
                f"| {step['stage']} | {step['rss_mb']:.1f} | "
                f"{step['rss_mb'] - before['rss_mb']:+.1f} | {step['cpu_s']:.2f} | "
                f"{step['cpu_s'] - before['cpu_s']:+.2f} |"
            )
            before = step
    return lines


def write(rows: Sequence[dict[str, Any]], out: Path, command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "footprint.json"
    json_path.write_text(json.dumps({"command": command, "rows": list(rows)}, indent=2) + "\n")
    md_path = out / "footprint.md"
    machine = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    head = [
        "# Benchmark: one bot's footprint",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}",
    ]
    md_path.write_text("\n".join([*head, "", *markdown(rows)]) + "\n")
    return [json_path, md_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="starts per bot (the median is kept)")
    parser.add_argument("--out", type=Path, default=REPORTS, help="report folder")
    args = parser.parse_args(argv)
    rows = measure(args.runs)
    command = "python -m bench.footprint " + " ".join(argv if argv is not None else sys.argv[1:])
    print("\n".join(markdown(rows)))
    for path in write(rows, args.out, command.strip()):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
