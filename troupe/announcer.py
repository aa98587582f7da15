"""Posts device events in chat: each once across the fleet, in its channel, within quiet limits.

An event only its owner sees (its own GPIO) is posted by that bot at once. An event every
bot sees (a shared MQTT or Hue device going offline) is posted by the first bot of a
ranking every bot computes alike from the device and the kind of event; each later bot
waits its turn (rank x `watch_s`), watching the channel's events for the fleet's post, and
posts only if it saw none and one read of the channel finds none either. The quiet limits
(debounce, at most `per_minute` per device counted over the fleet's posts, quiet hours)
are judged on Slack's clock. docs/protocol.md says what is and is not promised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import zoneinfo
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from troupe.devents import KINDS, DeviceEvent
from troupe.eventsettings import EventsSettings, Rule, rule_for
from troupe.federation import rank
from troupe.tasks import spawn

if TYPE_CHECKING:
    from troupe.bot import Bot
    from troupe.transports.base import Event

log = logging.getLogger(__name__)

SKEW_S = 2.0
"""How far apart two bots may see the same device message (broker delivery, polling)."""
MOTION_WORDS = ("motion", "sensor", "detector", "pir")


def words(device: str, kind: str, detail: str = "") -> str:
    """The one sentence every bot writes for an event, alike on every bot (the fleet's
    posts are recognised by their text)."""
    if kind == "pressed":
        return (
            f"{device} turned {detail} at the wall switch"
            if detail
            else (f"the wall switch of the {device} was pressed")
        )
    if kind == "motion":
        return detail or _motion_text(device)
    if kind == "offline":
        return f"the {device} went offline"
    if kind == "online":
        return f"the {device} is back online"
    return (
        f"the {device} was turned {detail} at the device"
        if detail
        else (f"the {device} changed by itself")
    )


def _motion_text(name: str) -> str:
    """What a sensor says, from its name: words like motion and sensor are dropped to find
    the place ("hall motion" says "motion in the hall"); with none, "motion at the porch
    eye". The device's `message` option overrides it."""
    words_ = name.split()
    place = [w for w in words_ if w.lower() not in MOTION_WORDS]
    if place and len(place) < len(words_):
        return f"motion in the {' '.join(place)}"
    return f"motion at the {name}"


def quiet(hours: str | None, at: float, zone: str) -> bool:
    """Whether Slack's time `at` falls in the quiet span (which may wrap past midnight)."""
    if hours is None:
        return False
    start, end = (dt.time.fromisoformat(part) for part in hours.split("-"))
    now = dt.datetime.fromtimestamp(at, zoneinfo.ZoneInfo(zone)).time()
    return start <= now < end if start <= end else now >= start or now < end


def group_of(kind: str) -> str:
    """Events that replace one another: offline and online are one sort."""
    return "availability" if kind in ("offline", "online") else kind


@dataclass(frozen=True)
class _Post:
    channel: str
    text: str
    at: float
    device: str | None


class Announcer:
    """A bot's service that turns its device events into chat messages."""

    def __init__(self, settings: EventsSettings) -> None:
        self.settings = settings
        self.bot: Bot | None = None
        self.posts: deque[_Post] = deque(maxlen=500)
        """The fleet's event posts of the last minutes (this bot's and the ones seen)."""
        self._texts: dict[str, tuple[str, str]] = {}
        """Every text an event can be posted with -> (device, kind)."""
        self._latest: dict[tuple[str, str], int] = {}
        self._availability: dict[str, str] = {}
        """Per device, the last availability the fleet posted (offline or online)."""
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, bot: Bot) -> None:
        self.bot = bot
        for name, device in bot.devices.items():
            details = {
                "pressed": ("", "on", "off"),
                "changed": ("", "on", "off"),
                "motion": (str(device.options.get("message") or ""),),
            }
            for kind in KINDS:
                for detail in details.get(kind, ("",)):
                    self._texts.setdefault(words(name, kind, detail), (name, kind))
            self.channel_of(name)  # a channel not in the federation stops the start
        bot.event_listeners.append(self.on_event)
        bot.fleet_messages.append(self.saw)

    async def stop(self) -> None:
        if self.bot is not None:
            if self.on_event in self.bot.event_listeners:
                self.bot.event_listeners.remove(self.on_event)
            if self.saw in self.bot.fleet_messages:
                self.bot.fleet_messages.remove(self.saw)
        for task in list(self._tasks):
            task.cancel()

    # what the fleet posted ------------------------------------------------------------

    def saw(self, event: Event) -> None:
        """A fleet bot's message (bot.fleet_messages): note its event posts (no Slack call)."""
        assert self.bot is not None
        if event.kind != "message" or event.thread_ts or not self.bot.is_fleet_user(event.user):
            return
        found = self._texts.get(event.text)
        if found is not None:
            self._note(_Post(event.channel, event.text, float(event.ts), found[0]), found[1])

    def _note(self, post: _Post, kind: str) -> None:
        if any(p.channel == post.channel and p.at == post.at for p in self.posts):
            return  # this bot's own post, come back as an event
        self.posts.append(post)
        if post.device is not None and group_of(kind) == "availability":
            self._availability[post.device] = kind

    def _posted(self, channel: str, text: str, since: float) -> bool:
        return any(p.channel == channel and p.text == text and p.at >= since for p in self.posts)

    # the event ----------------------------------------------------------------------

    def channel_of(self, device: str, rule: Rule | None = None) -> str:
        """The channel id for a device's events: its rule's, its area's, the federation's."""
        assert self.bot is not None
        spec = self.bot.devices[device]
        rule = rule or rule_for(self.settings, device, spec.area)
        if rule.channel is not None:
            for channel_id, refs in self.bot.channel_refs.items():
                if rule.channel in refs:
                    return channel_id
            raise ValueError(
                f"the events of the {device} go to {rule.channel}, which is not a channel of "
                "the federation file; add it under channels:"
            )
        for channel_id, area in self.bot.channel_areas.items():
            if area is not None and area == spec.area:
                return channel_id
        return next(iter(self.bot.channel_areas))

    async def on_event(self, event: DeviceEvent) -> None:
        """Listener: post the event unless a limit holds it back or the fleet posted it."""
        spawn(self._announce(event), f"announcing the {event.device}", self._tasks, logger=log)

    async def _announce(self, event: DeviceEvent) -> None:
        bot = self.bot
        assert bot is not None
        spec = bot.devices.get(event.device)
        if spec is None:
            return
        rule = rule_for(self.settings, event.device, spec.area)
        if event.kind not in rule.kinds:
            return
        group = group_of(event.kind)
        if group == "availability":  # before it, the device was the other way
            other = "online" if event.kind == "offline" else "offline"
            self._availability.setdefault(event.device, other)
        key = (event.device, group)
        mine = self._latest[key] = self._latest.get(key, 0) + 1
        if rule.debounce_s:
            await asyncio.sleep(rule.debounce_s)
            if self._latest[key] != mine:
                return  # a newer event of the same sort replaces it
        if group == "availability" and self._availability.get(event.device) == event.kind:
            return  # back where the last post left it (flapping within the debounce)
        if quiet(rule.quiet_hours, event.at, self.settings.timezone):
            return
        channel = self.channel_of(event.device, rule)
        text = words(event.device, event.kind, event.detail)
        since = event.at - SKEW_S
        shared = spec.owner is None
        position = 0
        if shared:
            order = rank(f"{event.device}\0{group}", bot.roster)
            position = order.index(bot.name) if bot.name in order else len(order)
            deadline = asyncio.get_running_loop().time() + position * self.settings.watch_s
            while asyncio.get_running_loop().time() < deadline:
                if self._posted(channel, text, since):
                    return
                await asyncio.sleep(0.05)
        if self._posted(channel, text, since):
            return
        if self._over_limit(event.device, rule, bot.clock.now()):
            log.info("%s: not posting %r: %d a minute at most", bot.name, text, rule.per_minute)
            return
        if position > 0 and await self._in_channel(channel, text, since):
            return
        try:
            answer = await bot.web.chat_postMessage(channel=channel, text=text)
        except SlackApiError as err:
            log.error("could not post %r in %s: %s", text, channel, err.response.get("error"))
            return
        self._note(_Post(channel, text, float(answer["ts"]), event.device), event.kind)

    def _over_limit(self, device: str, rule: Rule, now: float) -> bool:
        recent = sum(1 for p in self.posts if p.device == device and p.at > now - 60)
        return recent >= rule.per_minute

    async def _in_channel(self, channel: str, text: str, since: float) -> bool:
        """One read of the channel: did the fleet post it while this bot was not looking?"""
        assert self.bot is not None
        try:
            resp = await self.bot.web.conversations_history(
                channel=channel, oldest=f"{since:.6f}", limit=100
            )
        except SlackApiError as err:
            log.warning("cannot read %s: %s", channel, err.response.get("error"))
            return False
        for message in resp.get("messages", []):
            if message.get("text") == text and self.bot.is_fleet_user(message.get("user")):
                found = self._texts.get(text)
                self._note(
                    _Post(channel, text, float(message["ts"]), found and found[0]),
                    found[1] if found else "",
                )
                return True
        return False


def attach(bot: Bot, settings: EventsSettings | None = None) -> Announcer:
    """Give a bot its announcer (the runner calls this for every bot)."""
    announcer = Announcer(settings or EventsSettings())
    bot.services.append(announcer)
    return announcer
