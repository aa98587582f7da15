"""Write a run's rows as JSON, a Markdown report and a PNG chart (matplotlib, if present)."""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import footprint

FIELDS = (
    "system",
    "mode",
    "bots",
    "commands",
    "duplicates",
    "losses",
    "out_of_order",
    "unanswered",
    "api_calls_per_command",
    "calls_by_method",
    "http_429",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_commands_per_min",
    "failover_s",
    "rss_mb",
    "ready_s",
)
"""Every row has these keys (None where not measured); other keys are details."""

RTT_MS = 50.0
"""One Web API round trip in the simulated network (the mean added latency per call)."""


def machine() -> str:
    """The machine a run was measured on, in one line."""
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every report field present, in order, then the details."""
    return {**{k: row.get(k) for k in FIELDS}, **{k: v for k, v in row.items() if k not in FIELDS}}


def write(
    rows: Sequence[dict[str, Any]],
    out: Path,
    tag: str,
    *,
    command: str,
    context: dict[str, Any],
    latest: bool = True,
) -> list[Path]:
    """Write <tag>.json, <tag>.md and <tag>.png into `out` (and copy them to latest.*)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [normalise(r) for r in rows]
    written = []
    json_path = out / f"{tag}.json"
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    written.append(json_path)
    meta_path = out / f"{tag}.meta.json"
    meta_path.write_text(json.dumps({"command": command, "context": context}, indent=2) + "\n")
    written.append(meta_path)
    png_path = out / f"{tag}.png"
    chart_note = chart(rows, png_path)
    if chart_note is None:
        written.append(png_path)
    md_path = out / f"{tag}.md"
    md_path.write_text(
        markdown(
            rows,
            command=command,
            context=context,
            chart=png_path.name if chart_note is None else None,
            chart_note=chart_note,
        )
    )
    written.append(md_path)
    if latest and tag != "latest":
        for path in list(written):
            target = out / ("latest" + path.name.removeprefix(tag))
            shutil.copyfile(path, target)
            written.append(target)
    return written


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _indices(values: Sequence[int] | None) -> str:
    if not values:
        return "-"
    shown = ", ".join(str(v) for v in values[:12])
    return shown + (", ..." if len(values) > 12 else "")


def markdown(
    rows: Sequence[dict[str, Any]],
    *,
    command: str,
    context: dict[str, Any],
    chart: str | None,
    chart_note: str | None = None,
) -> str:
    lines = [
        f"# Benchmark: troupe and SlackMQ 0.1.2 ({context.get('profile', '?')} run)",
        "",
        f"Command: `{command}`  ",
        f"Finished: {context.get('finished', '?')}, after {context.get('duration_s', '?')} s  ",
        f"Machine: {machine()}  ",
        f"Workload: {context.get('workload', '')}  ",
        f"Network: {context.get('network', '')}  ",
        f"Faults: {context.get('faults', '')}  ",
        f"Timings (slackmq): {context.get('timings', '')}",
        "",
        "## Results",
        "",
        "| system | mode | bots | commands | dup | lost | out of order | unanswered | calls/cmd "
        "| 429s | p50 ms | p95 ms | p99 ms | max cmd/min | failover s | RSS MB | ready s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        if r.get("error"):
            error = str(r["error"]).splitlines()[0].replace("|", "/")
            head = f"| {r['system']} | {r['mode']} | {r['bots']} | error: {error} |"
            lines.append(head + " |" * 13)
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    r["system"],
                    r["mode"],
                    str(r["bots"]),
                    _fmt(r["commands"]),
                    _fmt(r["duplicates"]),
                    _fmt(r["losses"]),
                    _fmt(r["out_of_order"]),
                    _fmt(r["unanswered"]),
                    _fmt(r["api_calls_per_command"], 2),
                    _fmt(r["http_429"]),
                    _fmt(r["p50_ms"], 0),
                    _fmt(r["p95_ms"], 0),
                    _fmt(r["p99_ms"], 0),
                    _fmt(r["max_commands_per_min"], 0),
                    _fmt(r["failover_s"], 2),
                    _fmt(r["rss_mb"]),
                    _fmt(r["ready_s"], 2),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "dup and lost count device actions against commands over both phases (clean + chaos);",
        "out of order counts actions that landed after a newer command's action on the same",
        "device; unanswered counts commands with no bot answer in their thread after the run",
        "(a command troupe left alone because a newer one had set the device, and said so, is",
        "neither lost nor unanswered);",
        "calls/cmd, calls by method and latency are from the clean phase (no faults); 429s are",
        "every 429 the bots received in both phases, including the injected bursts.",
        "",
        "## Web API calls per command, by method (clean phase)",
        "",
    ]
    for r in rows:
        if r.get("calls_by_method"):
            methods = ", ".join(f"{m} {n}" for m, n in r["calls_by_method"].items())
            lines.append(f"- {r['system']} {r['mode']}, {r['bots']} bots: {methods}")
    lines += ["", "## Under faults (chaos phase)", ""]
    lines += [
        "| system | mode | bots | commands | dup | lost | out of order | unanswered "
        "| superseded | calls/cmd | 429s (injected) | p50 ms | p99 ms "
        "| lost / duplicated / unanswered at command |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        c = r.get("chaos") or {}
        if not c:
            continue
        lines.append(
            f"| {r['system']} | {r['mode']} | {r['bots']} | {c['commands']} | {c['duplicates']} "
            f"| {c['losses']} | {_fmt(c.get('out_of_order'))} | {_fmt(c.get('unanswered'))} "
            f"| {_fmt(c.get('superseded'))} | {_fmt(c['api_calls_per_command'], 2)} "
            f"| {c['http_429']} ({c['http_429_injected']}) | {_fmt(c['p50_ms'], 0)} "
            f"| {_fmt(c['p99_ms'], 0)} | {_indices(c.get('lost_at'))} / "
            f"{_indices(c.get('duplicated_at'))} / {_indices(c.get('unanswered_at'))} |"
        )
    lines += ["", "Faults as applied:", ""]
    for r in rows:
        faults = (r.get("chaos") or {}).get("faults") or []
        if faults:
            lines.append(f"- {r['system']} {r['mode']}, {r['bots']} bots:")
            for f in faults:
                mark = "" if f["applied"] else " (not applied)"
                lines.append(f"  - command {f['at']}: {f['fault']}{mark}: {f['note']}")
    lines += ["", "## Resources per bot", ""]
    lines += [
        "| system | mode | bots | RSS idle MB (max) | CPU idle % (mean) | RSS load MB (max) "
        "| CPU load % (mean / max) | ready s (median / max) |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        idle, load = r.get("idle") or {}, r.get("load") or {}
        if not load:
            continue
        lines.append(
            f"| {r['system']} | {r['mode']} | {r['bots']} | {_fmt(idle.get('rss_mb_max'))} "
            f"| {_fmt(idle.get('cpu_pct_mean'), 2)} | {_fmt(load.get('rss_mb_max'))} "
            f"| {_fmt(load.get('cpu_pct_mean'), 2)} / {_fmt(load.get('cpu_pct_max'), 2)} "
            f"| {_fmt(r.get('ready_s_median'), 2)} / {_fmt(r.get('ready_s'), 2)} |"
        )
    steps = [r for r in rows if r.get("rate_steps")]
    if steps:
        lines += ["", "## Rate steps (sustained commands per minute)", ""]
        for r in steps:
            parts = [
                f"{s['rate_per_min']:g}/min {'ok' if s['passed'] else 'FAIL'}"
                f" (lost {s['losses']}, dup {s['duplicates']}, max {s['max_ms']:.0f} ms)"
                for s in r["rate_steps"]
            ]
            lines.append(f"- {r['system']} {r['mode']}, {r['bots']} bots: " + "; ".join(parts))
    failovers = [r for r in rows if r.get("failover")]
    if failovers:
        lines += ["", "## Failover (the claimer SIGKILLs itself right after its claim)", ""]
        for r in failovers:
            f = r["failover"]
            took = (
                f"{r['failover_s']} s from the post to {f['taker']}'s action"
                if r["failover_s"] is not None
                else "never: the command was lost"
            )
            lines.append(
                f"- {r['system']} {r['mode']}, {r['bots']} bots: {took} "
                f"(killed: {', '.join(f['killed']) or 'none'}; actions: {f['actions']})"
            )
    lines += ["", "## Targets (issue 6)", ""]
    lines += targets(rows)
    if chart:
        lines += ["", f"![chart]({chart})"]
    elif chart_note:
        lines += ["", f"No chart: {chart_note}"]
    if context.get("footprint"):
        lines += ["", *footprint.markdown(context["footprint"])]
    notes = list(context.get("notes", []))
    for r in rows:
        notes += [f"{r['system']} {r['mode']}, {r['bots']} bots: {n}" for n in r.get("notes", [])]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def targets(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each target of issue 6 against what this run measured (or that it did not)."""
    ok = [r for r in rows if not r.get("error")]
    troupe = [r for r in ok if r["system"] == "troupe"]
    out = []
    commands = sum(r["commands"] or 0 for r in troupe)
    bad = sum(
        (r["duplicates"] or 0)
        + (r["losses"] or 0)
        + (r.get("out_of_order") or 0)
        + (r.get("unanswered") or 0)
        for r in troupe
    )
    per_mode = "; ".join(
        f"{r['mode']} {r['bots']} bots: {r['duplicates']} dup, {r['losses']} lost, "
        f"{r.get('out_of_order')} out of order, {r.get('unanswered')} unanswered"
        for r in troupe
    )
    out.append(
        f"- Exactly once, in order, answered: troupe, {commands} commands over "
        f"{len(troupe)} trials "
        f"({per_mode}): {'met' if troupe and bad == 0 else 'NOT met' if troupe else 'not measured'}"
        " in this run. The target itself (10,000 commands, 8 bots, full schedule) was not run."
    )
    background = ("pins.list", "users.info")
    calls = [
        r["api_calls_per_command"]
        - sum((r.get("calls_by_method") or {}).get(m, 0) for m in background)
        for r in troupe
        if r["api_calls_per_command"] is not None
    ]
    if calls:
        out.append(
            f"- Calls per command <= 4 whatever N: troupe {min(calls):.2f}-{max(calls):.2f} "
            f"({'met' if max(calls) <= 4 else 'NOT met'}), not counting what each bot spends "
            "in the background whatever the commands: the pin sweep's pins.list every "
            "linger_s, one users.info per sender every 10 minutes."
        )
    legacy = [r for r in ok if r["system"] != "troupe" and r["api_calls_per_command"]]
    for r in legacy:
        out.append(
            f"  SlackMQ 0.1.2 with {r['bots']} bots: {r['api_calls_per_command']:.2f} "
            f"(pins.add {r['calls_by_method'].get('pins.add', 0)} per command)."
        )
    shared8 = [r for r in troupe if r["mode"] != "app-per-bot" and r["bots"] == 8]
    rated = [r for r in shared8 if r["max_commands_per_min"] is not None]
    if rated:
        best = max(r["max_commands_per_min"] for r in rated)
        out.append(
            f"- 8 bots sharing one app sustain >= 18 commands/min: {best:g}/min "
            f"({'met' if best >= 18 else 'NOT met'})."
        )
    else:
        out.append("- 8 bots sharing one app sustain >= 18/min: not measured in this run.")
    for r in troupe:
        o50, o99 = r.get("overhead_p50_ms"), r.get("overhead_p99_ms")
        if o50 is None or o99 is None:
            continue
        out.append(
            f"- Overhead on top of the event's delivery, troupe {r['mode']} {r['bots']} bots: "
            f"p50 {o50:.0f} ms ({'met' if o50 <= RTT_MS else 'NOT met'}: <= 1 round trip of "
            f"{RTT_MS:.0f} ms), p99 {o99:.0f} ms "
            f"({'met' if o99 <= 2 * RTT_MS else 'NOT met'}: <= 2 round trips)."
        )
    rss = [r["rss_mb"] for r in troupe if r["rss_mb"] is not None]
    ready = [r["ready_s"] for r in troupe if r["ready_s"] is not None]
    if rss and ready:
        out.append(
            f"- Per-bot RSS <= 60 MB: troupe max {max(rss):.1f} MB "
            f"({'met' if max(rss) <= 60 else 'NOT met'}); ready within 2 s: max "
            f"{max(ready):.2f} s ({'met' if max(ready) <= 2 else 'NOT met'})."
        )
    return out


def chart(rows: Sequence[dict[str, Any]], path: Path) -> str | None:
    """Four panels against the number of bots; the reason when no chart could be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r.get("error"):
            series.setdefault(f"{r['system']} {r['mode']}", []).append(r)
    if not series:
        return "no successful trial"
    panels = [
        ("api_calls_per_command", "Web API calls per command (clean)"),
        ("p50_ms", "command to action p50, ms (clean)"),
        ("losses", "lost + duplicated actions (clean + chaos)"),
        ("max_commands_per_min", "sustained commands/min"),
    ]
    counts = sorted({r["bots"] for rs in series.values() for r in rs})
    width = 0.8 / len(series)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        drawn = False
        for i, (label, rs) in enumerate(series.items()):
            by_n = {r["bots"]: r for r in rs}
            xs, ys = [], []
            for j, n in enumerate(counts):
                r = by_n.get(n)
                if r is None:
                    continue
                y = (r["losses"] or 0) + (r["duplicates"] or 0) if key == "losses" else r[key]
                if y is not None:
                    xs.append(j + (i - (len(series) - 1) / 2) * width)
                    ys.append(y)
            if xs:
                ax.bar(xs, ys, width=width, label=label)
                drawn = True
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "not measured in this run",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_title(title)
        ax.set_xlabel("bots")
        ax.set_xticks(range(len(counts)), [str(n) for n in counts])
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(series), fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def rerender(out: Path, tag: str, *, latest: bool = False) -> list[Path]:
    """Write <tag>.md and <tag>.png again from <tag>.json (after a change to this module)."""
    rows = json.loads((out / f"{tag}.json").read_text())
    meta = json.loads((out / f"{tag}.meta.json").read_text())
    return write(rows, out, tag, command=meta["command"], context=meta["context"], latest=latest)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Render a report again from its JSON.")
    parser.add_argument("tag", help="the report's name, e.g. quick or medium")
    parser.add_argument("--latest", action="store_true", help="also copy it to latest.*")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "reports")
    args = parser.parse_args()
    for path in rerender(args.out, args.tag, latest=args.latest):
        print(f"wrote {path}")
