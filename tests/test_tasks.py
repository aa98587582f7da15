"""troupe.tasks.spawn: a background task is held until done and never fails in silence."""

from __future__ import annotations

import asyncio
import logging

import pytest

from troupe.tasks import spawn


async def test_a_failed_task_is_logged_with_what_it_was(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("the bridge said no")

    tasks: set[asyncio.Task[None]] = set()
    task = spawn(broken(), "turning on the hall light", tasks)
    assert tasks == {task}
    with caplog.at_level(logging.ERROR, logger="troupe.tasks"):
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert tasks == set()
    (record,) = caplog.records
    assert record.getMessage() == "turning on the hall light failed: the bridge said no"
    # the traceback comes along (troupe.redact may have turned it into text already)
    assert record.exc_info is not None or "RuntimeError: the bridge said no" in record.exc_text


async def test_a_cancelled_task_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    tasks: set[asyncio.Task[None]] = set()
    task = spawn(asyncio.sleep(10), "waiting", tasks)
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert tasks == set() and caplog.records == []
