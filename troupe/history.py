"""What the federation did to a device, read from Slack: the channels' commands that carry
the fleet's ✅, newest first, with who asked (every bot's work, not one bot's journal)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from troupe import confirm
from troupe.phrases import understood
from troupe.slackmq import DONE

if TYPE_CHECKING:
    from troupe.bot import Bot

log = logging.getLogger(__name__)

READ = 200
"""Messages read per channel (one conversations.history call each)."""


@dataclass(frozen=True)
class Entry:
    """One command the fleet carried out."""

    ts: str
    user: str | None
    text: str
    devices: tuple[str, ...]


def device_named(bot: Bot, spoken: str | None) -> str | None:
    """The device `spoken` names ("the porch switch", an alias), or None."""
    if not spoken:
        return None
    words = spoken.casefold().split()
    while words and words[0] in ("the", "my", "our", "der", "die", "das", "den", "dem"):
        words = words[1:]
    said = " ".join(words)
    for spec in bot.devices.values():
        if said in (spec.name.casefold(), *(a.casefold() for a in spec.aliases)):
            return spec.name
    return None


async def entries(bot: Bot, device: str | None, limit: int = 10) -> list[Entry]:
    """The fleet's last `limit` commands on `device` (any device if None), newest first."""
    found: list[Entry] = []
    for channel in bot.channel_areas:
        try:
            resp = await bot.web.conversations_history(channel=channel, limit=READ)
        except SlackApiError as err:
            log.warning("cannot read %s for history: %s", channel, err.response.get("error"))
            continue
        area = bot.channel_areas.get(channel)
        for message in resp.get("messages", []):
            if (
                message.get("bot_id")
                or message.get("subtype")
                or DONE not in bot._fleet_marks(message)
            ):
                continue
            text = str(message.get("text") or "")
            command = bot.recognizer.recognize(text, area=area)
            if command is None or not understood(command) or command.intent == "HassGetState":
                continue
            if confirm.asks(bot.devices, command):
                continue  # its ✅ marks the question asked, not the action
            if device is not None and device not in command.devices:
                continue
            found.append(Entry(str(message["ts"]), message.get("user"), text, command.devices))
    found.sort(key=lambda e: float(e.ts), reverse=True)
    return found[:limit]


def lines(bot: Bot, device: str | None, found: list[Entry]) -> str:
    """The answer: one line per command, or one sentence when there is none."""
    what = f"the {device}" if device else "any device"
    if not found:
        return f"The fleet has done nothing to {what} in the recent messages here."
    out = [f"What the fleet did to {what}, newest first:"]
    for entry in found:
        who = f"<@{entry.user}>" if entry.user else "someone"
        out.append(f"• {bot._local_time(entry.ts)} “{entry.text}” — asked by {who}")
    return "\n".join(out)


async def answer(bot: Bot, spoken: str | None) -> str:
    """The answer to "history [of DEVICE]": what the fleet did, or which name is unknown."""
    device = device_named(bot, spoken)
    if spoken and device is None:
        return f"I don't know a device called “{spoken}” — try `devices`."
    return lines(bot, device, await entries(bot, device))
