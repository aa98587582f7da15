"""Test support: a deterministic event loop on a virtual clock, and the runtime's `time`
reading that clock, so production timings (a 15 s lease, a 45 s linger) cost nothing."""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
import types
import unittest.mock
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from troupe import bot as bot_module
from troupe import federation, people, plugin, roster

T = TypeVar("T")

BASE = 1_700_000_000.0
"""Slack's clock at virtual time 0."""
PATCHED = (federation, bot_module, roster, people, plugin)
"""The runtime modules whose `time` the virtual clock replaces."""


SPIN_TURNS = 10_000
"""Turns of the loop in one virtual instant after which the clock moves a microsecond."""


class Deadlock(RuntimeError):
    """The loop has nothing to run and no timer: something waits forever."""


class _VirtualSelector(selectors.BaseSelector):
    """A selector with no I/O: waiting for `timeout` moves the virtual clock instead."""

    def __init__(self, clock: list[float]) -> None:
        self._clock = clock
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._still = 0

    @staticmethod
    def _fd(fileobj: Any) -> int:
        return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, self._fd(fileobj), events, data)
        self._keys[key.fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(self._fd(fileobj))

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[self._fd(fileobj)]

    def select(self, timeout: float | None = None) -> list[Any]:
        """Move the clock to the next timer. A wait whose remaining time is below the
        clock's precision (a lease's end computed as 1.8e-15 s away) finds the clock never
        moving and spins, where real time would have moved on: after SPIN_TURNS turns in
        one instant the clock moves a microsecond."""
        if timeout is None:
            raise Deadlock("nothing is scheduled and nothing is ready")
        if timeout > 0:
            self._clock[0] += timeout
            self._still = 0
            return []
        self._still += 1
        if self._still >= SPIN_TURNS:
            self._clock[0] += 1e-6
            self._still = 0
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return types.MappingProxyType(self._keys)

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() is virtual and jumps to the next timer at once."""

    def __init__(self) -> None:
        self._virtual = [0.0]
        super().__init__(selector=_VirtualSelector(self._virtual))

    def time(self) -> float:
        return self._virtual[0]


def _sync_to_thread(func: Callable[..., Any], /, *args: Any, **kw: Any) -> Any:
    """asyncio.to_thread on the virtual loop: threads would escape virtual time."""

    async def call() -> Any:
        return func(*args, **kw)

    return call()


@contextlib.contextmanager
def virtual_time(loop: VirtualLoop, base: float = BASE) -> Iterator[None]:
    """While in the block, the runtime's monotonic and wall clocks read the loop's virtual
    time (wall = base + virtual) and asyncio.to_thread runs inline."""
    fake = types.SimpleNamespace(
        monotonic=loop.time,
        time=lambda: base + loop.time(),
        strftime=time.strftime,
        localtime=time.localtime,
        gmtime=time.gmtime,
    )
    with contextlib.ExitStack() as stack:
        for module in PATCHED:
            stack.enter_context(unittest.mock.patch.object(module, "time", fake))
        stack.enter_context(unittest.mock.patch.object(asyncio, "to_thread", _sync_to_thread))
        yield


def run(main: Callable[[VirtualLoop], Coroutine[Any, Any, T]], base: float = BASE) -> T:
    """Run main(loop) to its end on a fresh virtual loop in virtual time; whatever it left
    running is cancelled."""
    loop = VirtualLoop()
    try:
        with virtual_time(loop, base):
            result = loop.run_until_complete(main(loop))
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
        return result
    finally:
        loop.close()
