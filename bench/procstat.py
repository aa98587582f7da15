"""Per-process RSS and CPU time from /proc (Linux), without a psutil dependency."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """One process at one moment: resident memory and CPU seconds used so far."""

    rss_mb: float
    cpu_s: float
    at: float
    peak_mb: float = 0.0
    """The most resident memory the process has had so far (VmHWM)."""


def sample(pid: int) -> Sample | None:
    """The process's RSS and CPU time, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / _TICKS
    kb = {
        key: int(rest.split()[0])
        for key, _, rest in (line.partition(":") for line in status.splitlines())
        if key in ("VmRSS", "VmHWM")
    }
    return Sample(kb.get("VmRSS", 0) / 1024, cpu_s, time.monotonic(), kb.get("VmHWM", 0) / 1024)


def snapshot(pids: Mapping[str, int]) -> dict[str, Sample]:
    """Samples of several named processes; those that have exited are left out."""
    out = {}
    for name, pid in pids.items():
        s = sample(pid)
        if s is not None:
            out[name] = s
    return out


@dataclass(frozen=True)
class Usage:
    """What the bots used over a window: the largest RSS and the mean and max CPU share."""

    rss_mb_max: float
    rss_mb_mean: float
    cpu_pct_mean: float
    cpu_pct_max: float


def usage(before: Mapping[str, Sample], after: Mapping[str, Sample]) -> Usage | None:
    """Per-bot usage between two snapshots (bots present in both), or None if none were."""
    rss: list[float] = []
    cpu: list[float] = []
    for name, end in after.items():
        start = before.get(name)
        if start is None or end.at <= start.at:
            continue
        rss.append(end.rss_mb)
        cpu.append(100 * (end.cpu_s - start.cpu_s) / (end.at - start.at))
    if not rss:
        return None
    return Usage(
        rss_mb_max=round(max(rss), 1),
        rss_mb_mean=round(sum(rss) / len(rss), 1),
        cpu_pct_mean=round(sum(cpu) / len(cpu), 2),
        cpu_pct_max=round(max(cpu), 2),
    )
