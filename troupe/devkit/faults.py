"""Fault injection for chaos tests and the benchmark: a Bot that dies where it is told to.

`die-after-claim`: the process SIGKILLs itself right after each claim it wins, before
acting — the worst moment for a holder to die. `die-mid-action`: it SIGKILLs itself once a
device action is journaled as begun, before the driver runs it — a power cut mid-command.
`timer_scale` runs timed actions that many times faster, so "for 1 minute" takes a second.

Only the development kit's bot runner (troupe.devkit.botrun) builds this class; the runtime's
Bot has plain seams where these overrides go and never reads $TROUPE_FAULTS.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from troupe.bot import Bot
from troupe.federation import Action
from troupe.plugin import DeviceState
from troupe.slackmq import Lock, SlackMQ

FAULTS = frozenset({"die-after-claim", "die-mid-action"})


def _die() -> None:
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
            _die()
        return won


def _dying(act: Callable[[str, Action], Awaitable[DeviceState]]) -> Any:
    """A driver's act() that kills the process first: the bot has journaled the action as
    begun, so this is a power cut between the journal and the device."""

    async def act_and_die(device: str, action: Action) -> DeviceState:
        _die()
        return await act(device, action)

    return act_and_die


def chaos_bot(faults: Iterable[str] = (), timer_scale: float = 1.0) -> type[Bot]:
    """A Bot subclass with these faults and this timer speed-up."""
    wanted = frozenset(faults)
    unknown = wanted - FAULTS
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {sorted(FAULTS)}")
    scale = max(1e-3, timer_scale)

    class ChaosBot(Bot):
        def _claim_lock(self, slackmq: SlackMQ) -> Lock:
            lock = super()._claim_lock(slackmq)
            if "die-after-claim" in wanted:
                return DieAfterClaim(lock)  # type: ignore[return-value]
            return lock

        async def _start_drivers(self) -> None:
            await super()._start_drivers()
            if "die-mid-action" in wanted:
                for driver in self.drivers.values():
                    driver.act = _dying(driver.act)  # type: ignore[method-assign]

        def _timer_delay(self, seconds: float) -> float:
            return super()._timer_delay(seconds) / scale

    return ChaosBot
