"""Ask before moving a risky device (a garage door, a lock): one bot asks, and the command
acts, exactly once across the fleet, when the asker or an admin reacts 👍 within the window
(on Slack's clock). The action is claimed on the question, so it happens once even if the
bot that asked has died."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from troupe.intents import Command
from troupe.transports.base import Event

if TYPE_CHECKING:
    from troupe.bot import Bot

log = logging.getLogger(__name__)

YES = frozenset({"+1", "thumbsup"})
"""Slack's names of 👍 (it files a `thumbsup` reaction as `+1`)."""
WINDOW_S = 30.0
"""Seconds after the command, on Slack's clock, in which a 👍 counts."""
KEEP = 200


def needed(kind: str, confirm: bool | None) -> bool:
    """Whether a device asks first: as the federation file says, else covers and anything
    whose kind says lock or door."""
    if confirm is not None:
        return confirm
    return kind == "cover" or "lock" in kind or "door" in kind


def asks(devices: Mapping[str, Any], command: Command) -> bool:
    """Whether a command waits for a 👍: it moves a risky device (a question does not)."""
    if command.intent == "HassGetState":
        return False
    return any(needed(devices[n].kind, devices[n].confirm) for n in command.devices)


def question(command: Command, kinds: Mapping[str, str]) -> str:
    """ "Open the garage door? React 👍 within 30 s"."""
    covers = all(kinds.get(d) == "cover" for d in command.devices)
    verb = {
        "HassTurnOn": "Open" if covers else "Turn on",
        "HassTurnOff": "Close" if covers else "Turn off",
        "HassToggle": "Toggle",
        "HassLightSet": "Change",
    }.get(command.intent, "Move")
    names = list(command.devices)
    what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{verb} the {what}? React 👍 within {WINDOW_S:.0f} s."


@dataclass(frozen=True)
class Pending:
    """A command waiting for its 👍."""

    channel: str
    ts: str
    user: str | None
    command: Command
    deadline: float
    """Slack time after which a 👍 no longer counts."""


class Confirmations:
    """The commands this bot knows to be waiting for a 👍, and the questions asked."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], Pending] = {}
        self._questions: dict[tuple[str, str], str] = {}
        """(channel, command ts) -> the ts of the fleet's question in its thread."""

    def hold(self, pending: Pending) -> None:
        self._pending[(pending.channel, pending.ts)] = pending
        while len(self._pending) > KEEP:
            del self._pending[next(iter(self._pending))]

    def saw_question(self, channel: str, thread_ts: str | None, ts: str) -> None:
        """A fleet bot's message in the thread of a waiting command: the question."""
        if thread_ts and (channel, thread_ts) in self._pending:
            self._questions.setdefault((channel, thread_ts), ts)

    def waiting(self, channel: str, ts: str) -> tuple[Pending, str] | None:
        """The waiting command a reaction on `ts` (the command or the question) is for,
        with its question's ts; None if this bot does not know both."""
        key = (channel, ts)
        if key not in self._pending:
            key = next((k for k, q in self._questions.items() if k[0] == channel and q == ts), key)
        pending = self._pending.get(key)
        asked = self._questions.get(key)
        return None if pending is None or asked is None else (pending, asked)

    def drop(self, channel: str, ts: str) -> None:
        self._pending.pop((channel, ts), None)
        self._questions.pop((channel, ts), None)


async def ask(bot: Bot, event: Event, command: Command) -> tuple[str, str]:
    """Every bot holds the command; one (under the claim) asks in its thread."""
    deadline = float(event.ts) + WINDOW_S
    bot.confirmations.hold(Pending(event.channel, event.ts, event.user, command, deadline))
    kinds = {name: spec.kind for name, spec in bot.devices.items()}

    async def post(_takeover: bool) -> None:
        text = question(command, kinds)
        try:
            resp = await bot.web.chat_postMessage(
                channel=event.channel, text=text, thread_ts=event.ts
            )
        except SlackApiError as err:
            log.error("could not ask in %s: %s", event.channel, err.response.get("error"))
            return
        bot.confirmations.saw_question(event.channel, event.ts, str(resp["ts"]))

    if not event.relay:
        await bot._claimed(event, bot.roster, post)
    return "done", "asked for a 👍"


async def on_reaction(bot: Bot, event: Event) -> None:
    """A 👍: act on the waiting command if the asker or an admin gave it in time."""
    if event.kind != "reaction_added" or event.reaction not in YES:
        return
    found = bot.confirmations.waiting(event.channel, event.ts)
    if found is None and bot.is_fleet_user(event.raw.get("item_user")):
        found = await recall(bot, event.channel, event.ts)
    if found is None:
        return
    pending, asked = found
    if event.user != pending.user and not bot.access.is_admin(event.user):
        log.info("ignoring a 👍 by %s: only the asker or an admin confirms", event.user)
        return
    at = _slack_time(event.raw, bot.clock.now())
    if at > pending.deadline:
        log.info("ignoring a 👍 %.0f s after the window", at - pending.deadline)
        return
    bot.confirmations.drop(pending.channel, pending.ts)
    # Claimed on the question: the fleet acts once, whichever bots saw the 👍.
    confirmed = Event(
        "message",
        pending.channel,
        asked,
        user=pending.user,
        text=pending.command.text,
        thread_ts=pending.ts,
    )
    if not bot.journal.begin(confirmed.channel, confirmed.ts, confirmed.text, confirmed.user):
        return
    await bot._run_devices(confirmed, pending.command)
    bot.journal.finish(confirmed.channel, confirmed.ts, "done", "confirmed")


async def recall(bot: Bot, channel: str, ts: str) -> tuple[Pending, str] | None:
    """A 👍 on a fleet message this bot never saw asked (shared-app: Slack hands the
    command, the question and the 👍 each to one bot only): read the question and the
    command it answers from Slack (two conversations.replies calls). None unless it is a
    fleet question in the thread of a command that waits for a 👍."""
    try:
        asked = (await bot.web.conversations_replies(channel=channel, ts=ts, limit=1))["messages"]
        root = asked[0].get("thread_ts") if asked else None
        if not root or root == ts or not bot.is_fleet_user(asked[0].get("user")):
            return None
        head = (await bot.web.conversations_replies(channel=channel, ts=root, limit=1))["messages"]
    except SlackApiError as err:
        log.warning("cannot read the question %s/%s: %s", channel, ts, err.response.get("error"))
        return None
    if not head or head[0].get("ts") != root or bot.is_fleet_user(head[0].get("user")):
        return None
    text = str(head[0].get("text") or "")
    command = bot.recognizer.recognize(text, area=bot.channel_areas.get(channel))
    if command is None or not asks(bot.devices, command):
        return None
    return Pending(channel, root, head[0].get("user"), command, float(root) + WINDOW_S), ts


def _slack_time(raw: Mapping[str, Any], now: float) -> float:
    """When Slack saw the reaction (its event_ts), else Slack's time now."""
    try:
        return float(raw.get("event_ts") or now)
    except (TypeError, ValueError):
        return now
