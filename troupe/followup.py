"""Follow-ups in a command's thread ("turn it off", "and the hall light too", "make it 50%"),
read against the devices of the command that started the thread."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace

from slack_sdk.errors import SlackApiError

from troupe.intents import Command, Recognizer
from troupe.phrases import understood

log = logging.getLogger(__name__)

PRONOUNS = {
    "en": ("them", "it", "that", "those", "this", "these"),
    "de": ("es", "sie", "ihn", "das", "die", "den"),
}
ALSO = {
    "en": re.compile(
        r"^(?:and|also|plus)\s+(?P<a>.+?)(?:\s+(?:too|as well|also))?$"
        r"|^(?P<b>.+?)\s+(?:too|as well)$"
    ),
    "de": re.compile(r"^(?:und|auch)\s+(?P<a>.+?)(?:\s+auch)?$|^(?P<b>.+?)\s+auch(?:\s+noch)?$"),
}
PROBE = {"en": "turn on {}", "de": "schalte {} an"}
KEEP = 500
"""Commands remembered per bot for their threads; older threads are read from Slack."""

Fetch = Callable[[str, str], Awaitable[str | None]]


def read(recognizer: Recognizer, text: str, parent: Command, area: str | None) -> Command | None:
    """`text`, said in the thread of `parent`, as a command of its own; None if it is not a
    follow-up."""
    if not parent.devices or recognizer.language not in PRONOUNS or parent.unknown:
        return None
    language = recognizer.language
    plain = " ".join(text.casefold().split()).rstrip(".!?")
    also = ALSO[language].match(plain)
    if also is not None:
        named = recognizer.recognize(PROBE[language].format(also["a"] or also["b"]), area=area)
        if understood(named) and named is not None:
            return replace(parent, devices=named.devices, text=text)
    first = parent.devices[0]
    pronoun = re.search(rf"(?<!\w)(?:{'|'.join(PRONOUNS[language])})(?!\w)", plain)
    candidates = []
    if pronoun is not None:
        candidates.append(f"{plain[: pronoun.start()]}{first}{plain[pronoun.end() :]}")
    candidates.append(f"{first} {plain}")
    for candidate in candidates:
        command = recognizer.recognize(candidate, area=area)
        if understood(command) and command is not None and command.devices == (first,):
            devices = parent.devices
            if command.intent == "HassLightSet":  # brightness and colour: the lights only
                kinds = recognizer.devices
                devices = tuple(d for d in devices if kinds[d].kind == "light")
            return replace(command, devices=devices, text=text) if devices else None
    return None


class Threads:
    """The command each recent thread started, as this bot read it; else read from Slack
    (one conversations.replies call), only for a message that reads as a follow-up."""

    def __init__(self, recognizer: Recognizer, fetch: Fetch) -> None:
        self.recognizer = recognizer
        self.fetch = fetch
        self._known: OrderedDict[tuple[str, str], Command | None] = OrderedDict()

    def remember(self, channel: str, ts: str, command: Command | None) -> None:
        self._known[(channel, ts)] = command
        while len(self._known) > KEEP:
            self._known.popitem(last=False)

    async def follow_up(
        self, channel: str, thread_ts: str, text: str, area: str | None
    ) -> Command | None:
        """The follow-up `text` means, or None (chatter in a thread costs no Slack call)."""
        stand_in = self._stand_in()
        if stand_in is None or read(self.recognizer, text, stand_in, area) is None:
            return None
        parent = await self._parent(channel, thread_ts, area)
        if parent is None or not understood(parent):
            return None
        return read(self.recognizer, text, parent, area)

    def _stand_in(self) -> Command | None:
        """Any light (or device): to tell a follow-up from chatter before asking Slack."""
        devices = list(self.recognizer.devices.values())
        lights = [d for d in devices if d.kind == "light"] or devices
        return Command("HassTurnOn", (lights[0].name,), "") if lights else None

    async def _parent(self, channel: str, ts: str, area: str | None) -> Command | None:
        key = (channel, ts)
        if key not in self._known:
            try:
                text = await self.fetch(channel, ts)
            except SlackApiError as err:
                log.warning("cannot read the thread %s/%s: %s", channel, ts, err)
                return None
            command = None if text is None else self.recognizer.recognize(text, area=area)
            self.remember(channel, ts, command)
        return self._known[key]
