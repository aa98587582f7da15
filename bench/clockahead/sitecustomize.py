"""Loaded at the start of a clock-off bot (bench.chaos.clock_ahead puts this folder first
on PYTHONPATH): Python's wall clock runs BENCH_CLOCK_AHEAD_S seconds ahead, as on a Pi
that booted with a wrong time, and its monotonic clock is left true, as a Pi's counts
from boot. Everything the bot reads the time of day from (time.time, time.time_ns, so
SlackClock's local clock and the log's stamps) is ahead; nothing in troupe knows."""

import os
import time

_AHEAD = float(os.environ.get("BENCH_CLOCK_AHEAD_S") or 0)

if _AHEAD:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _AHEAD
    time.time_ns = lambda: _time_ns() + int(_AHEAD * 1_000_000_000)
