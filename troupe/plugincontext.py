"""How a bot builds a command's Context (the narrow door between plugins and the runtime),
and how a plugin's own tests build one without a bot.

Only this module reads the Bot for a plugin. The Context holds values and closures, not
the Bot: a capability a command did not declare (`needs=`) is not in it at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from troupe import __version__
from troupe import history as fleet_history
from troupe.plugin import (
    CommandSpec,
    Connection,
    Context,
    ContextPorts,
    DeviceFacts,
    DeviceState,
    Me,
    Message,
    PluginError,
    SlackPoster,
)

if TYPE_CHECKING:
    from troupe.bot import Bot
    from troupe.transports.base import Event


def context_for(bot: Bot, spec: CommandSpec, event: Event, match: re.Match[str]) -> Context:
    """The Context one run of a command gets."""
    info = bot.info

    async def say(text: str) -> None:
        await bot.reply(event, text)

    async def once(work: Callable[[], Awaitable[None]]) -> None:
        assert bot.coordinator is not None

        async def run(_takeover: bool) -> None:
            await work()

        await bot.coordinator.coordinate(event.channel, event.ts, bot.roster, run)

    def section(name: str) -> Mapping[str, Any]:
        return dict(bot.driver_options.get(name) or {})

    def service(kind: type[Any]) -> Any:
        return next((s for s in bot.services if isinstance(s, kind)), None)

    def connection() -> Connection:
        kind = type(bot.transport).__name__.removesuffix("Transport") or "unknown"
        return Connection(kind, bool(getattr(bot.transport, "connected", True)))

    ports = ContextPorts(
        say=say,
        announce=bot.announce,
        once=once,
        state=bot.device_state,
        history=lambda device, limit: bot.journal.history(device, limit=limit),
        fleet_history=lambda spoken: fleet_history.answer(bot, spoken),
        section=section,
        slack=_granted(spec, "slack", lambda: SlackPoster(bot.web)),
        service=_granted(spec, "services", service),
        connection=_granted(spec, "transport", connection),
    )
    return Context(
        match=match,
        message=Message(event.channel, event.ts, event.user, event.text, event.thread_ts),
        me=Me(
            info.name,
            info.host,
            info.version,
            info.mode,
            info.started,
            tuple(bot.roster),
            bot.clock.describe(),
        ),
        devices=dict(bot.devices),
        scenes=tuple(sorted(bot.scenes)),
        commands=tuple(bot.plugins.commands),
        ports=ports,
        needs=spec.needs,
    )


def _granted(spec: CommandSpec, need: str, port: Callable[..., Any]) -> Callable[..., Any]:
    if need in spec.needs:
        return port

    def refused(*_args: Any) -> Any:
        raise PluginError(f"the command {spec.name} did not declare needs=({need!r},)")

    return refused


@dataclass
class Heard:
    """What a command did through a context made by `context_for_test`."""

    said: list[str] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)


def context_for_test(
    func: Callable[..., Any],
    text: str,
    *,
    bot: str = "test-pi",
    roster: Sequence[str] = (),
    user: str | None = "U0TEST",
    devices: Mapping[str, DeviceFacts] | None = None,
    states: Mapping[str, DeviceState] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    slack: Any = None,
    services: Sequence[Any] = (),
) -> tuple[Context, Heard]:
    """A Context for one command without a bot or Slack, for a plugin's own tests: `text`
    must match the command's pattern; what it says and announces is kept in Heard, and
    once() runs its work (this is the only bot). `slack` stands in for slack_sdk's
    AsyncWebClient (chat_postMessage, conversations_open) behind ctx.slack."""
    spec: CommandSpec = func.__troupe_command__  # type: ignore[attr-defined]
    match = spec.pattern.fullmatch(text.strip().rstrip("!?.").strip())
    if match is None:
        raise ValueError(f"{text!r} does not match the command {spec.name}")
    heard = Heard()

    async def say(line: str) -> None:
        heard.said.append(line)

    async def announce(line: str) -> None:
        heard.announced.append(line)

    async def once(work: Callable[[], Awaitable[None]]) -> None:
        await work()

    async def state(device: str) -> DeviceState:
        return (states or {}).get(device) or DeviceState(online=False, detail="unknown")

    def connection() -> Connection:
        return Connection("test", True)

    async def fleet(spoken: str | None) -> str:
        return f"The fleet has done nothing to {spoken or 'any device'} in this test."

    def service(kind: type[Any]) -> Any:
        return next((s for s in services if isinstance(s, kind)), None)

    ports = ContextPorts(
        say=say,
        announce=announce,
        once=once,
        state=state,
        history=lambda _device, _limit: [],
        fleet_history=fleet,
        section=lambda name: dict((sections or {}).get(name) or {}),
        slack=_granted(spec, "slack", lambda: SlackPoster(slack)),
        service=_granted(spec, "services", service),
        connection=_granted(spec, "transport", connection),
    )
    me = Me(bot, "localhost", __version__, "test", time.time(), (*roster,) or (bot,), "in step")
    message = Message("C0TEST", f"{time.time():.6f}", user, text)
    context = Context(match, message, me, dict(devices or {}), (), (spec,), ports, needs=spec.needs)
    return context, heard
