"""The command stream and its scoring: what was asked, what the devices did, how late.

Every command names one shared device ("turn on the hall light"), so exactly one device
action is expected per command. Actions are read from the counter file the bots append
to (one JSON line each, with the command's channel and ts).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry import RateLimitErrorRetryHandler

from bench.files import CHANNEL, DEVICES, HUMAN_TOKEN

ALICE_ID = "U0ALICE"
SUPERSEDED = "the newer command at"
"""How troupe answers a command it left alone because a newer one already set the device."""
ALREADY = "already: I restarted in the middle of this command"
"""How troupe answers a command whose action a stop cut short, found already done once back."""


@dataclass(frozen=True)
class Command:
    """One command as posted: its Slack ts and the device action it must cause."""

    ts: str
    text: str
    device: str
    op: str


def nth_text(i: int, devices: Sequence[str] = tuple(DEVICES)) -> tuple[str, str, str]:
    """The i-th command of the stream: (text, device, op), cycling devices and on/off."""
    device = devices[i % len(devices)]
    op = "on" if (i // len(devices)) % 2 == 0 else "off"
    return f"turn {op} the {device}", device, op


class Poster:
    """Posts commands as a human (alice's user token), the way the Slack client does."""

    def __init__(self, api_url: str, devices: Sequence[str] = tuple(DEVICES)) -> None:
        self.devices = tuple(devices)
        self.client = WebClient(HUMAN_TOKEN, base_url=api_url, timeout=30)
        self.client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=20))
        self.count = 0

    def post(self, *, device: str | None = None) -> Command:
        """The next command of the stream; with `device`, the same op turned to that device
        (the slow device, the MQTT device while its broker restarts)."""
        text, stream_device, op = nth_text(self.count, self.devices)
        self.count += 1
        if device is not None and device != stream_device:
            text = f"turn {op} the {device}"
        device = device or stream_device
        ts = self.client.chat_postMessage(channel=f"#{CHANNEL}", text=text)["ts"]
        return Command(ts, text, device, op)

    @staticmethod
    def answers(
        commands: Iterable[Command], threads: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> dict[str, list[str]]:
        """The bots' answers in each command's thread (alice's own messages left out),
        from the workspace's read-back of every thread (control/threads): read one
        conversations.replies at a time under Tier 3, 10,000 threads took the soak about
        5 minutes a mode."""
        return {
            cmd.ts: [
                str(m.get("text") or "")
                for m in threads.get(cmd.ts, ())
                if m.get("bot_id") or m.get("user") != ALICE_ID
            ]
            for cmd in commands
        }


def read_actions(path: Path) -> list[dict[str, Any]]:
    """Every device action the counter file holds (a half-written last line is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[k]


@dataclass
class Tally:
    """Commands against device actions: duplicates, losses and command-to-action latency."""

    commands: int = 0
    duplicates: int = 0
    losses: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    acted_by: list[str] = field(default_factory=list)
    """The bot whose action came first, for each latency in `latencies_ms`."""
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    out_of_order: int = 0
    """Actions that landed after a newer command's action on the same device."""
    disordered: list[str] = field(default_factory=list)
    """The commands whose action landed after a newer one's (out_of_order of them)."""
    superseded: int = 0
    """Commands left alone, and answered so, because a newer one had set the device."""
    already: int = 0
    """Commands whose bot, restarted mid-action, found the device already as asked and
    said so, where the newest older command on it that acted had set the same."""
    unanswered: list[str] = field(default_factory=list)
    """Commands with no bot answer in their thread (None: answers not read)."""

    @property
    def exactly_once(self) -> bool:
        return self.duplicates == 0 and self.losses == 0

    def pct(self, q: float) -> float | None:
        value = percentile(self.latencies_ms, q)
        return None if value is None else round(value, 1)


def action_time(action: dict[str, Any], clock_offsets: dict[str, float]) -> float:
    """When an action happened: its counter line's time, less its bot's wrong clock (a bot
    restarted with its clock ahead stamps its actions ahead too; once it learns Slack's
    clock some of its lines are right, so the skew comes off only where it is nearer)."""
    at = float(action.get("at", 0))
    skew = clock_offsets.get(str(action.get("bot")), 0.0)
    if skew and abs(at - skew - float(action.get("ts", 0))) < abs(at - float(action.get("ts", 0))):
        at -= skew
    return at


def tally(
    commands: Iterable[Command],
    actions: Iterable[dict[str, Any]],
    answers: dict[str, list[str]] | None = None,
    clock_offsets: dict[str, float] | None = None,
    heard: Mapping[str, Sequence[tuple[float, str]]] | None = None,
) -> Tally:
    """Score commands against the actions seen: each must have caused exactly one, in the
    order of the commands per device (the counter file's order is the devices' order), and
    each must have an answer in its thread. A command answered as superseded (a newer one
    already set its device) is not lost, nor one answered as already done after a restart
    where the newest older command that acted on its device had done the same, or where
    the device itself heard it (`heard`: per device, what reached it and when, for a
    device whose actions are counted once it confirmed them) and no count shows it.
    `clock_offsets` takes a bot's wrong clock out of its actions' times."""
    commands = list(commands)
    actions = list(actions)
    offsets = clock_offsets or {}
    asked = {(c.ts, c.device) for c in commands}
    per: Counter[tuple[str, str]] = Counter()
    first: dict[tuple[str, str], tuple[float, str]] = {}
    newest: dict[str, float] = {}
    result = Tally()
    for action in actions:
        key = (str(action.get("ts")), str(action.get("device")))
        per[key] += 1
        at, bot = action_time(action, offsets), str(action.get("bot"))
        first[key] = min(first.get(key, (at, bot)), (at, bot))
        if key in asked and per[key] == 1:
            if float(key[0]) < newest.get(key[1], 0.0):
                result.out_of_order += 1
                result.disordered.append(key[0])
            newest[key[1]] = max(newest.get(key[1], 0.0), float(key[0]))
    for cmd in commands:
        result.commands += 1
        key = (cmd.ts, cmd.device)
        n = per.get(key, 0)
        said = (answers or {}).get(cmd.ts, [])
        if answers is not None and not said:
            result.unanswered.append(cmd.ts)
        if n == 0 and any(SUPERSEDED in text for text in said):
            result.superseded += 1
            continue
        if n == 0 and any(ALREADY in text for text in said):
            device_heard = (heard or {}).get(cmd.device)
            if _was(cmd, commands, per) or _heard(cmd, commands, first, device_heard):
                result.already += 1
                continue
        if n == 0:
            result.losses += 1
            result.lost.append(cmd.ts)
            continue
        if n > 1:
            result.duplicates += n - 1
            result.duplicated.append(cmd.ts)
        at, bot = first[key]
        result.latencies_ms.append((at - float(cmd.ts)) * 1000)
        result.acted_by.append(bot)
    return result


def _was(cmd: Command, commands: Sequence[Command], per: Counter[tuple[str, str]]) -> bool:
    """Whether the newest older command on the device that acted did what `cmd` asks."""
    before = [
        c
        for c in commands
        if c.device == cmd.device and float(c.ts) < float(cmd.ts) and per.get((c.ts, c.device))
    ]
    return bool(before) and max(before, key=lambda c: float(c.ts)).op == cmd.op


def _heard(
    cmd: Command,
    commands: Sequence[Command],
    first: Mapping[tuple[str, str], tuple[float, str]],
    heard: Sequence[tuple[float, str]] | None,
) -> bool:
    """Whether the device heard `cmd`'s op after `cmd` was posted and before any newer
    command's counted action on it, more often than older commands' counted actions of
    that op in the span account for (each of those was heard there too)."""
    if not heard:
        return False
    posted = float(cmd.ts)
    ops = {c.ts: c.op for c in commands if c.device == cmd.device}
    counted = [(ts, at) for (ts, device), (at, _) in first.items() if device == cmd.device]
    until = min((at for ts, at in counted if float(ts) > posted), default=float("inf"))
    older = sum(
        1
        for ts, at in counted
        if float(ts) < posted and posted < at < until and ops.get(ts) == cmd.op
    )
    got = sum(1 for at, op in heard if op == cmd.op and posted < at < until)
    return got > older


def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    """Poll until the predicate holds or the timeout passes; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def all_acted(commands: Sequence[Command], counter: Path) -> Callable[[], bool]:
    """A predicate: every command has at least one action in the counter file."""
    wanted = {(c.ts, c.device) for c in commands}

    def check() -> bool:
        seen = {(str(a.get("ts")), str(a.get("device"))) for a in read_actions(counter)}
        return wanted <= seen

    return check
