"""Fault injection for chaos tests and the benchmark, switched on by $TROUPE_FAULTS.

`die-after-claim`: the process SIGKILLs itself right after each claim it wins, before
acting — the worst moment for a holder to die. `die-mid-action`: it SIGKILLs itself once a
device action is journaled as begun, before the driver runs it — a power cut mid-command.
Never set in production.
$TROUPE_TIMER_SCALE (a number, default 1) runs timed actions that many times faster, so a
test of "for 1 minute" takes a second.
"""

from __future__ import annotations

import os
import signal

from troupe.slackmq import Lock


def timer_scale() -> float:
    try:
        return max(1e-3, float(os.environ.get("TROUPE_TIMER_SCALE", "1")))
    except ValueError:
        return 1.0


def wanted(name: str) -> bool:
    return name in os.environ.get("TROUPE_FAULTS", "").split(",")


def point(name: str) -> None:
    """A place where the process dies when $TROUPE_FAULTS names it."""
    if wanted(name):
        os.kill(os.getpid(), signal.SIGKILL)


class DieAfterClaim:
    """A Lock that kills its own process once it has won a claim."""

    def __init__(self, lock: Lock) -> None:
        self._lock = lock

    def __getattr__(self, name: str) -> object:
        return getattr(self._lock, name)

    async def claim(self, channel: str, ts: str) -> bool:
        won = await self._lock.claim(channel, ts)
        if won:
            point("die-after-claim")
        return won


def wrap(lock: Lock) -> Lock:
    """The lock, with whichever faults $TROUPE_FAULTS asks for."""
    if wanted("die-after-claim"):
        return DieAfterClaim(lock)  # type: ignore[return-value]
    return lock
