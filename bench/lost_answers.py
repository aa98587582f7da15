"""The lost-answers trial: one bot's claim answers are lost after Slack carried them out.

On Wi-Fi a `pins.add` can succeed at Slack while its answer never reaches the Pi. This
trial makes the workspace do that to every `pins.add` of one bot (it pins, then answers
503), runs three app-per-bot bots at production timings on a Slack-like network (50 ms ±
20 ms per call), posts on/off commands to shared devices at a steady rate, and reports
whether each command acted exactly once, in the order sent per device, and how long each
took from its post to its action (p50, p99), next to how many takeovers there were (a
bot that waited out its own lease would show as one).

    python -m bench.lost_answers [--commands 60] [--rate 40]

Writes bench/reports/lost-answers.md and .json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from slack_sdk import WebClient

from bench.files import CHANNEL, DEVICES, Timings, app_id, bot_names, workspace_config
from bench.files import write_federation as bench_federation
from bench.workload import percentile, read_actions
from troupe.devkit.fleet import Fleet
from troupe.devkit.workspace.testing import running_workspace
from troupe.slackmq import TAKEOVER

REPORTS = Path(__file__).parent / "reports"


def run(commands: int, per_minute: float, out: Path) -> dict[str, Any]:
    bots = bot_names(3)
    lossy = bots[0]
    with tempfile.TemporaryDirectory() as tmp, running_workspace(workspace_config(3)) as ws:
        folder = Path(tmp)
        fed = bench_federation(folder, ws.api_url, "app-per-bot", bots, Timings())
        counter = folder / "actions.jsonl"
        fleet = Fleet(fed, folder, {"TROUPE_COUNTER_FILE": str(counter)})
        try:
            fleet.start_all(bots)
            ws.control("latency", latency_ms=50, jitter_ms=20)
            ws.control("fail", method="pins.add", status=503, count=100_000, after=True,
                       app=app_id(lossy))  # fmt: skip
            alice = WebClient("xoxp-alice", base_url=ws.api_url)
            devices = list(DEVICES)[:2]
            sent: list[tuple[str, str, str]] = []
            for i in range(commands):
                device = devices[i % len(devices)]
                op = "on" if (i // len(devices)) % 2 == 0 else "off"
                ts = alice.chat_postMessage(channel=f"#{CHANNEL}", text=f"turn {op} the {device}")
                sent.append((ts["ts"], device, op))
                print(f"\rposted {i + 1}/{commands}", end="", flush=True)
                time.sleep(60.0 / per_minute)
            deadline = time.monotonic() + 60
            while len(read_actions(counter)) < commands and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2.0)
            print()
            actions = read_actions(counter)
            takeovers = 0
            for ts, _, _ in sent:
                message = alice.reactions_get(channel="C0HOME", timestamp=ts, full=True)
                names = {r["name"] for r in message["message"].get("reactions", [])}
                takeovers += TAKEOVER in names
            claimed_by_lossy = sum(1 for a in actions if a["bot"] == lossy)
        finally:
            fleet.stop_all()
    by_ts: dict[str, list[dict[str, Any]]] = {}
    for action in actions:
        by_ts.setdefault(action["ts"], []).append(action)
    latencies = [by_ts[ts][0]["at"] - float(ts) for ts, _, _ in sent if ts in by_ts]
    out_of_order = 0
    for device in devices:
        acted = [a for a in sorted(actions, key=lambda a: a["at"]) if a["device"] == device]
        tss = [float(a["ts"]) for a in acted]
        out_of_order += sum(1 for a, b in itertools.pairwise(tss) if b < a)
    result = {
        "commands": commands,
        "per_minute": per_minute,
        "lossy_bot": lossy,
        "acted_by_lossy_bot": claimed_by_lossy,
        "duplicates": sum(len(v) - 1 for v in by_ts.values()),
        "losses": sum(1 for ts, _, _ in sent if ts not in by_ts),
        "out_of_order": out_of_order,
        "takeovers": takeovers,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies) if latencies else None,
        "command": f"python -m bench.lost_answers --commands {commands} --rate {per_minute:g}",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "lost-answers.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "lost-answers.md").write_text(_markdown(result))
    return result


def _markdown(r: dict[str, Any]) -> str:
    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    return (
        "# Lost claim answers on one bot\n\n"
        f"`{r['command']}`: three app-per-bot bots, production timings (lease 15 s), every "
        f"`pins.add` of {r['lossy_bot']} carried out by the workspace and then answered 503; "
        "Web API calls 50 ms ± 20 ms.\n\n"
        "| commands | acted by the lossy bot | duplicates | losses | out of order | takeovers "
        "| p50 post→action | p99 post→action | max |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {r['commands']} | {r['acted_by_lossy_bot']} | {r['duplicates']} | {r['losses']} "
        f"| {r['out_of_order']} | {r['takeovers']} | {s(r['p50_s'])} | {s(r['p99_s'])} "
        f"| {s(r['max_s'])} |\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lost_answers", description=__doc__)
    parser.add_argument("--commands", type=int, default=60)
    parser.add_argument("--rate", type=float, default=40.0, help="commands per minute")
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    result = run(args.commands, args.rate, args.out)
    print(_markdown(result))
    ok = not (result["duplicates"] or result["losses"] or result["out_of_order"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
