"""Background tasks that are kept alive until they finish and never fail in silence."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def spawn(
    coro: Coroutine[Any, Any, T],
    what: str,
    tasks: set[asyncio.Task[Any]] | None = None,
    *,
    logger: logging.Logger | None = None,
) -> asyncio.Task[T]:
    """Run `coro` as a task; its failure is logged as "`what` failed" with the traceback.

    asyncio keeps only a weak reference to a task, so one nobody holds may vanish mid-way:
    `tasks` (the owner's set, to cancel or await at stop) holds it until it is done; without
    one, this module does. A cancelled task is not a failure.
    """
    task = asyncio.ensure_future(coro)
    holder = _RUNNING if tasks is None else tasks
    holder.add(task)
    task.add_done_callback(lambda done: _finished(done, what, holder, logger or log))
    return task


_RUNNING: set[asyncio.Task[Any]] = set()


def _finished(
    task: asyncio.Task[Any], what: str, holder: set[asyncio.Task[Any]], logger: logging.Logger
) -> None:
    holder.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("%s failed: %s", what, error, exc_info=error)
