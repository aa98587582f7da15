"""Test support: bots built from a federation file and run in this test's own event loop,
against a real workspace (real slack_sdk, Socket Mode, HTTP), with counter devices.

Faster than bot processes and able to reach inside: a bot's Pi clock can be set wrong, its
lock wrapped, its devices slowed. Process fleets (fleetkit) stay for what only processes
show (kills, restarts).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetkit import BOTS, USER_OF, write_federation
from slack_sdk.web.async_client import AsyncWebClient

from troupe.bot import Bot
from troupe.config import load as load_federation
from troupe.devkit.workspace.config import demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace
from troupe.runner import build_bot

__all__ = ["BOTS", "USER_OF", "Fleet", "fleet"]


@dataclass
class Fleet:
    """Bots in this loop, the workspace they talk to and the counter file."""

    ws: RunningWorkspace
    bots: dict[str, Bot]
    counter: Path
    alice: AsyncWebClient
    home: str
    posted: dict[str, float] = field(default_factory=dict)

    async def say(self, text: str, *, token: str | None = None, channel: str | None = None) -> str:
        client = AsyncWebClient(token, base_url=self.ws.api_url) if token else self.alice
        resp = await client.chat_postMessage(channel=channel or self.home, text=text)
        self.posted[resp["ts"]] = time.monotonic()
        return str(resp["ts"])

    def actions(self) -> list[dict[str, Any]]:
        if not self.counter.exists():
            return []
        return [json.loads(line) for line in self.counter.read_text().splitlines() if line]

    async def replies(self, ts: str, channel: str | None = None) -> list[dict[str, Any]]:
        resp = await self.alice.conversations_replies(channel=channel or self.home, ts=ts)
        return [m for m in resp["messages"] if m["ts"] != ts]

    async def reactions(self, ts: str) -> dict[str, list[str]]:
        resp = await self.alice.reactions_get(channel=self.home, timestamp=ts, full=True)
        message = resp.get("message") or {}
        return {r["name"]: r["users"] for r in message.get("reactions", [])}

    async def until(self, predicate: Callable[[], Any], timeout: float, what: str) -> None:
        """Wait (letting the bots run) until predicate() is true; fail after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.05)

    async def answered(self, ts: str, n: int = 1, timeout: float = 20) -> list[str]:
        """The texts of the first n answers in the thread of `ts` (waits for them)."""

        async def enough() -> bool:
            return len(await self.replies(ts)) >= n

        await self.until(enough, timeout, f"{n} answer(s) to {ts}")
        return [m["text"] for m in await self.replies(ts)]

    def calls(self) -> dict[str, dict[str, int]]:
        return self.ws.control("counters")["calls"]


@asynccontextmanager
async def fleet(
    tmp: Path,
    mode: str = "app-per-bot",
    *,
    start: tuple[str, ...] = BOTS,
    prepare: Callable[[Bot], None] | None = None,
    rate_limits: float = 10.0,
    **federation: Any,
) -> AsyncIterator[Fleet]:
    """A workspace and the bots of `start`, each built as `troupe run` builds it."""
    config = demo_config().model_copy(update={"rate_limits": rate_limits})
    counter = tmp / "actions.jsonl"
    with running_workspace(config) as ws:
        path = write_federation(tmp, ws.api_url, mode, **federation)
        text = path.read_text().replace("driver: counter", f"driver: counter, path: '{counter}'")
        path.write_text(text)
        fed = load_federation(path)
        bots = {name: build_bot(fed, name, journal_path=tmp / f"{name}.sqlite3") for name in start}
        for bot in bots.values():
            bot.on_ready = lambda _line: None
            if prepare is not None:
                prepare(bot)
        alice = AsyncWebClient("xoxp-alice", base_url=ws.api_url)
        home = {c.name: c.id for c in ws.workspace.config.channels}["home"]
        try:
            await asyncio.gather(*(bot.start() for bot in bots.values()))
            yield Fleet(ws, bots, counter, alice, home)
        finally:
            for bot in bots.values():
                if bot.ready.is_set():
                    await bot.stop()
