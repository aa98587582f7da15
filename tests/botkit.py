"""Test support: the dispatch pipeline in-process, on virtual time, with no sockets.

Bots are built from a federation file as `troupe run` builds them (troupe.runner), then
given a fake Slack: a Web API client that records every call (FakeWeb), a transport fed
Events by the test (FakeTransport) and, through the runtime's `_claim_lock` seam, the
in-memory lock (troupe.devkit.memorylock) in place of SlackMQ. Time is virtual
(tests/virtualtime.py): a 15 s lease or "for 1 minute" costs nothing, and each bot's Pi
clock is its own SlackClock, fed from the fake answers.

For what the pipeline decides: answers, Slack calls, access, chatter, staleness, scenes,
durations, per-device order. Slack's own rules (pins, limits, retries) are tested against
the local workspace (tests/pipekit.py), and what only processes show (kill -9, restarts,
sockets) with bot processes (tests/fleetkit.py).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetkit import BOTS, USER_OF, write_federation
from slack_sdk.errors import SlackApiError
from virtualtime import BASE, VirtualLoop
from virtualtime import run as run_virtual

from troupe.bot import Bot
from troupe.config import load as load_federation
from troupe.devkit.memorylock import MemoryBoard, MemoryLock
from troupe.devkit.workspace.config import Human, demo_config
from troupe.intents import Command, Recognizer
from troupe.people import People
from troupe.runner import build_bot
from troupe.slackclock import SlackClock
from troupe.slackmq import DONE, TAKEOVER, WORKING, Lock, SlackMQ
from troupe.transports.base import Ack, Event, EventHandler

__all__ = ["ALICE", "BOB", "BOTS", "HOME", "KITCHEN", "USER_OF", "Home", "home", "run"]

ALICE, BOB = "U0ALICE", "U0BOB"
HOME, KITCHEN = "C0HOME", "C0KITCHEN"
TEAM = "T0HOME"
SETTLE_S = 120.0
"""Virtual seconds after which every lease, stagger and answer is over."""


def run(main: Callable[[VirtualLoop], Coroutine[Any, Any, Any]]) -> Any:
    """Run a test's coroutine on virtual time (tests/virtualtime.py)."""
    return run_virtual(main)


class FakeSlack:
    """Slack's side: the demo workspace's people, bots and channels, the messages posted
    and every Web API call made (who, method, arguments)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, humans: tuple[Human, ...] = ()) -> None:
        self.loop = loop
        config = demo_config()
        self.channels = [{"id": c.id, "name": c.name} for c in config.channels]
        self.users: dict[str, dict[str, Any]] = {}
        for h in (*config.humans, *humans):
            self.users[h.id] = {
                "id": h.id,
                "name": h.name,
                "team_id": h.team_id or TEAM,
                "is_restricted": h.guest is not None,
                "is_ultra_restricted": h.guest == "single",
            }
        self.bot_ids: dict[str, str] = {}
        for app in config.apps:
            self.users[app.bot_user_id] = {
                "id": app.bot_user_id,
                "name": app.name,
                "team_id": TEAM,
                "is_bot": True,
            }
            self.bot_ids[app.bot_user_id] = app.bot_id or "B" + app.bot_user_id[1:]
        self.messages: dict[str, list[dict[str, Any]]] = {}
        """Per channel, every message posted, oldest first (thread answers included)."""
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self._last = 0

    def now(self) -> float:
        return BASE + self.loop.time()

    def post(self, channel: str, user: str, text: str, **extra: Any) -> dict[str, Any]:
        """A message as Slack stamps and keeps it (each its own, increasing ts)."""
        self._last = max(round(self.now() * 1_000_000), self._last + 1)  # in µs, exactly
        ts = f"{self._last // 1_000_000}.{self._last % 1_000_000:06d}"
        message = {"type": "message", "channel": channel, "user": user, "text": text}
        message.update(ts=ts, **{k: v for k, v in extra.items() if v is not None})
        self.messages.setdefault(channel, []).append(message)
        return message

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The answers in a message's thread, oldest first."""
        return [
            m for m in self.messages.get(channel, []) if m.get("thread_ts") == ts and m["ts"] != ts
        ]


class FakeWeb:
    """One bot's Web API client: each call is recorded and teaches the bot's clock Slack's
    time, as troupe.slackapi's client does from each answer. An unknown method fails the
    test (AttributeError), so the kit grows only with what the runtime calls."""

    def __init__(self, slack: FakeSlack, user: str, clock: SlackClock, board: MemoryBoard) -> None:
        self.slack, self.user, self.clock, self.board = slack, user, clock, board
        self.token, self.base_url = f"xoxb-{user.lower()}", "http://127.0.0.1:9/api/"

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, dict[str, Any]]]:
        if name.startswith("_"):
            raise AttributeError(name)
        answer = getattr(self, f"_{name}")

        async def call(**kw: Any) -> dict[str, Any]:
            sent = self.clock.local()
            self.slack.calls.append((self.user, name.replace("_", "."), kw))
            result = answer(**kw)
            self.clock.saw_stamp(self.slack.now(), sent, self.clock.local())
            return result

        return call

    def _auth_test(self) -> dict[str, Any]:
        bot_id = self.slack.bot_ids[self.user]
        return {"ok": True, "user_id": self.user, "bot_id": bot_id, "team_id": TEAM}

    def _users_list(self, **_: Any) -> dict[str, Any]:
        return {"ok": True, "members": list(self.slack.users.values())}

    def _users_info(self, user: str) -> dict[str, Any]:
        if user not in self.slack.users:
            raise SlackApiError("user_not_found", {"ok": False, "error": "user_not_found"})
        return {"ok": True, "user": self.slack.users[user]}

    def _conversations_list(self, **_: Any) -> dict[str, Any]:
        return {"ok": True, "channels": self.slack.channels}

    def _chat_postMessage(
        self, channel: str, text: str, thread_ts: str | None = None
    ) -> dict[str, Any]:
        bot_id = self.slack.bot_ids[self.user]
        message = self.slack.post(channel, self.user, text, thread_ts=thread_ts, bot_id=bot_id)
        return {"ok": True, "channel": channel, "ts": message["ts"]}

    def _conversations_history(
        self, channel: str, oldest: str = "0", limit: int = 100, **_: Any
    ) -> dict[str, Any]:
        """Top-level messages after `oldest`, newest first, with the board's marks and, as
        Slack gives them, their replies' count and users."""
        found = []
        for m in self.slack.messages.get(channel, []):
            if float(m["ts"]) <= float(oldest) or m.get("thread_ts"):
                continue
            marks = self.board.reactions.get((channel, m["ts"]), {})
            reactions = [
                {"name": n, "users": [USER_OF.get(u, u) for u in us]}
                for n, us in marks.items()
                if us
            ]
            thread = self.slack.thread(channel, m["ts"])
            replies = {
                "reply_count": len(thread),
                "reply_users": sorted({t["user"] for t in thread}),
            }
            found.append({**m, "reactions": reactions, **(replies if thread else {})})
        return {"ok": True, "messages": found[::-1][:limit]}

    def _conversations_replies(self, channel: str, ts: str, **_: Any) -> dict[str, Any]:
        parent = [m for m in self.slack.messages.get(channel, []) if m["ts"] == ts]
        return {"ok": True, "messages": [*parent, *self.slack.thread(channel, ts)]}

    def _pins_list(self, channel: str) -> dict[str, Any]:
        return {"ok": True, "items": []}  # the board's pins are the lock's (MemoryLock)


class FakeTransport:
    """The Transport the test feeds: `deliver` hands a Slack event to the bot's pipeline
    in a task of its own, as a socket's reader would; acks are counted."""

    mode = "fake"

    def __init__(self) -> None:
        self.on_reconnect: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.handler: EventHandler | None = None
        self.acks = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.connected_since: float | None = None
        """None: connected since long before the test (no look-back); a test sets it."""

    async def start(self, handler: EventHandler) -> None:
        self.handler = handler

    async def stop(self) -> None:
        self.handler = None

    @property
    def connected(self) -> bool:
        return self.handler is not None

    async def _ack(self) -> None:
        self.acks += 1

    def deliver(self, raw: Mapping[str, Any], retry_attempt: int = 0) -> None:
        event = Event.from_slack(raw, retry_attempt)
        if self.handler is None or event is None:
            return
        ack: Ack = self._ack
        self.tasks.append(asyncio.ensure_future(self.handler(event, ack)))


@dataclass
class _Marks:
    """The board's pins and reactions as Slack's events, handed in through one bot's
    transport. The board does not say who made a mark, so each is said to come from
    `actor`, one of the fleet's bot users (the pipeline only checks that it is one)."""

    transport: FakeTransport
    actor: str

    def seen_pin(self, channel: str, ts: str) -> None:
        item = {"type": "message", "channel": channel, "message": {"ts": ts}}
        self.transport.deliver(
            {"type": "pin_added", "user": self.actor, "channel_id": channel, "item": item}
        )

    def _reaction(self, name: str, channel: str, ts: str) -> None:
        item = {"type": "message", "channel": channel, "ts": ts}
        raw = {"type": "reaction_added", "user": self.actor, "reaction": name, "item": item}
        self.transport.deliver(raw)

    def seen_done(self, channel: str, ts: str) -> None:
        self._reaction(DONE, channel, ts)

    def seen_ballot(self, channel: str, ts: str) -> None:
        self._reaction(TAKEOVER, channel, ts)

    def seen_renewal(self, channel: str, ts: str) -> None:
        self._reaction(WORKING, channel, ts)


class _Shared:
    """One warmed recognizer per federation file's devices and language, shared by the
    bots and tests of a worker: warming takes the better part of a second, and a text is
    recognised once for all bots (the same text and area, the same Command)."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.recognizer = recognizer
        self.language = recognizer.language
        self.devices = recognizer.devices
        self._seen: dict[tuple[str, str | None], Command | None] = {}
        recognizer.warm()

    def warm(self) -> float:
        return self.recognizer.warm()

    def recognize(self, text: str, *, area: str | None = None) -> Command | None:
        if (text, area) not in self._seen:
            self._seen[(text, area)] = self.recognizer.recognize(text, area=area)
        return self._seen[(text, area)]


_RECOGNIZERS: dict[str, _Shared] = {}


def _recognizer(key: str, made: Recognizer) -> _Shared:
    if key not in _RECOGNIZERS:
        _RECOGNIZERS[key] = _Shared(made)
    return _RECOGNIZERS[key]


class KitBot(Bot):
    """A Bot whose claims go to the in-memory board instead of Slack's pins (the
    runtime's `_claim_lock` seam); `board` is set before it starts."""

    board: MemoryBoard

    def _claim_lock(self, slackmq: SlackMQ) -> Lock:
        return MemoryLock(self.board, self.name)


@dataclass
class Home:
    """Bots in this loop on one fake Slack and one board, and the counter devices' file."""

    slack: FakeSlack
    board: MemoryBoard
    bots: dict[str, KitBot]
    transports: dict[str, FakeTransport]
    counter: Path
    delays: dict[str, float] = field(default_factory=dict)

    async def say(
        self,
        text: str,
        *,
        user: str = ALICE,
        channel: str = HOME,
        to: tuple[str, ...] | None = None,
        settle: bool = True,
        **extra: Any,
    ) -> str:
        """Post a message and deliver it to the bots (`to`, default all that run), each
        after its delay; by default wait (virtually) until everything it caused is over."""
        if user in self.slack.bot_ids and "bot_id" not in extra:
            extra["bot_id"] = self.slack.bot_ids[user]
        message = self.slack.post(channel, user, text, **extra)
        for name in to or tuple(self.bots):
            transport = self.transports[name]
            loop = asyncio.get_running_loop()
            loop.call_later(self.delays.get(name, 0.0), transport.deliver, dict(message))
        if settle:
            await self.settle()
        return str(message["ts"])

    async def settle(self, seconds: float = SETTLE_S) -> None:
        """Let virtual time run on (every lease, stagger and linger of a command); a
        handler that raised fails the test."""
        await asyncio.sleep(seconds)
        self.raise_failures()

    def raise_failures(self) -> None:
        for transport in self.transports.values():
            for task in transport.tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise AssertionError("a bot's handler raised") from task.exception()

    def answers(self, ts: str, channel: str = HOME) -> list[str]:
        return [m["text"] for m in self.slack.thread(channel, ts)]

    def answered_by(self, ts: str, channel: str = HOME) -> list[tuple[str, str]]:
        return [(m["user"], m["text"]) for m in self.slack.thread(channel, ts)]

    def actions(self) -> list[dict[str, Any]]:
        if not self.counter.exists():
            return []
        return [json.loads(line) for line in self.counter.read_text().splitlines() if line]

    def calls(self) -> Counter[tuple[str, str]]:
        """Every Slack call, as (bot user, method): the Web API's and the lock's, but for
        the pin sweep's pins.list (one bot every linger_s, whatever was said)."""
        web = Counter((u, m) for u, m, _ in self.slack.calls if m != "pins.list")
        lock = Counter((USER_OF.get(bot, bot), method) for bot, method in self.board.calls)
        return web + lock

    def reset_calls(self) -> None:
        self.slack.calls.clear()
        self.board.calls.clear()

    def marks(self, ts: str, channel: str = HOME) -> dict[str, list[str]]:
        """The board's reactions on a message (by bot name)."""
        found = self.board.reactions.get((channel, ts), {})
        return {name: list(users) for name, users in found.items() if users}


@asynccontextmanager
async def home(
    tmp: Path,
    *,
    start: tuple[str, ...] = BOTS,
    humans: tuple[Human, ...] = (),
    offsets: Mapping[str, float] | None = None,
    **federation: Any,
) -> AsyncIterator[Home]:
    """The bots of `start` (app-per-bot mode) built from a federation file as `troupe run`
    builds them, each with its Pi clock `offsets[name]` s off Slack's."""
    loop = asyncio.get_running_loop()
    counter = tmp / "actions.jsonl"
    path = write_federation(tmp, "http://127.0.0.1:9/api/", "app-per-bot", **federation)
    path.write_text(
        path.read_text().replace("driver: counter", f"driver: counter, path: '{counter}'")
    )
    fed = load_federation(path)
    slack = FakeSlack(loop, humans)
    board = MemoryBoard()
    bots: dict[str, KitBot] = {}
    transports: dict[str, FakeTransport] = {}
    for name in start:
        journal = tmp / f"{name}.journal.sqlite3"
        bot = build_bot(fed, name, journal_path=journal, bot_class=KitBot)
        assert isinstance(bot, KitBot)
        bot.board = board
        user = USER_OF[name]
        offset = (offsets or {}).get(name, 0.0)
        clock = SlackClock(local=lambda offset=offset: BASE + loop.time() + offset)
        web = FakeWeb(slack, user, clock, board)
        bot.web = web  # type: ignore[assignment]
        bot.people = People(web)
        bot.clock = clock
        bot.transport = transports[name] = FakeTransport()
        key = path.read_text().split("devices:")[-1]
        bot.recognizer = _recognizer(key, bot.recognizer)  # type: ignore[assignment]
        bot.on_ready = lambda _line: None
        bots[name] = bot
    for name, bot in bots.items():
        await bot.start()
        board.subscribe(name, _Marks(transports[name], USER_OF[name]))  # type: ignore[arg-type]
    house = Home(slack, board, bots, transports, counter)
    try:
        yield house
    finally:
        for bot in bots.values():
            await bot.stop()
    house.raise_failures()
