"""The federation bus over MQTT: in shared-app mode, relay a command's owned parts to
their owners (Slack hands each event to one bot only) and every-bot commands to all, and
pass notices: hints that only ever make a bot wait (a peer's late action under way).

QoS 1 with a persistent session per bot, so a relay to a bot that is briefly away waits
for it at the broker; the owner's journal drops a relay it has already handled, and its
stale check drops one that waited too long.

Anyone who can reach the broker can publish, so a relay is trusted only when it is
sealed: an HMAC-SHA256 keyed by the federation's bus key (`mqtt.bus_key`) over the
sender, the recipient, the time it was sent, a nonce and the message. A relay sent, or
about a Slack message posted, more than `window_s` ago, and one seen before, is refused;
so is every unsealed one, logged once per sender. A notice is sealed the same way but is
not read back from Slack: the worst a forged one can do is hold a bot's newer command on
a device until the older one's stale limit. The topic names the sender too
(`troupe/FED/relay/TO/FROM`), so a broker ACL can let each bot write only as itself.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt

from troupe.errors import TroupeError
from troupe.mqttclient import Message, MqttClient, Subscription
from troupe.mqttsettings import MqttSettings
from troupe.tasks import spawn

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]
Confirm = Callable[[dict[str, Any]], Awaitable[bool]]
"""Whether a relayed message is real (the event it carries exists in Slack)."""
NOTICE = "notice"
"""The body key of a notice (`Bus.notify`), as against a relay's `kind` and `event`."""

WINDOW_S = 60.0
"""How old a relay (and the Slack message it carries) may be when it arrives."""


class BusError(TroupeError, ConnectionError):
    """The bus broker cannot be reached, or the bus has no key to seal relays with."""


def seal(key: bytes, sender: str, to: str, body: Mapping[str, Any], sent: float) -> dict[str, Any]:
    """The envelope of one relay: who to whom, when, a nonce, the body and their MAC."""
    envelope = {"from": sender, "to": to, "sent": sent, "nonce": secrets.token_hex(8)}
    envelope["body"] = dict(body)
    envelope["mac"] = _mac(key, envelope)
    return envelope


def _mac(key: bytes, envelope: Mapping[str, Any]) -> str:
    fields = {k: envelope.get(k) for k in ("from", "to", "sent", "nonce", "body")}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _event_time(body: Mapping[str, Any]) -> float | None:
    event = body.get("event")
    try:
        return float(event["ts"]) if isinstance(event, Mapping) else None
    except (KeyError, TypeError, ValueError):
        return None


class Bus:
    """One bot's connection to the bus: relay(to, message) and a handler for its inbox."""

    def __init__(
        self,
        federation: str,
        bot: str,
        settings: MqttSettings | Mapping[str, Any],
        *,
        client: MqttClient | None = None,
        connect_timeout: float = 10.0,
        window_s: float = WINDOW_S,
    ) -> None:
        """`client` is the bot's shared MQTT connection (troupe.mqttclient); without one
        the bus opens its own from `settings`, the federation file's mqtt section."""
        self.prefix = f"troupe/{federation}"
        self.bot = bot
        self.settings = MqttSettings.model_validate(settings)
        self.connect_timeout = connect_timeout
        self.window_s = window_s
        self.clock: Callable[[], float] = time.time
        """Slack's time (the bot sets its SlackClock here): a Pi's own clock may be off."""
        self._key = b""
        self._seen: dict[str, float] = {}
        """MACs of the relays taken in the last window (a replay is refused)."""
        self.refused: collections.Counter[str] = collections.Counter()
        """Refused relays per sender (each sender is logged once, on its first)."""
        self._deliver: Deliver | None = None
        self._confirm: Confirm | None = None
        self._notice: Deliver | None = None
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client = client or MqttClient(
            self.settings, f"troupe-{federation}-{bot}", bot, persistent=True
        )
        self._subscription = Subscription(
            [(self.inbox(bot), 1)],
            on_message=self._on_message,
            on_connected=lambda _kept: self._connected.set(),
            on_disconnected=self._on_disconnect,
            on_refused=lambda reason: log.error("bus connection refused: %s", reason),
        )

    def inbox(self, bot: str, sender: str = "+") -> str:
        """The topic `sender` relays to `bot` on (`+`: every sender, to subscribe)."""
        return f"{self.prefix}/relay/{bot}/{sender}"

    async def start(
        self, deliver: Deliver, confirm: Confirm | None = None, notice: Deliver | None = None
    ) -> None:
        """Connect, subscribe to this bot's inbox and wait (bounded) until connected.

        `confirm`, if given, is asked about every sealed relay before `deliver` is: the
        bot checks there that the relayed message exists in Slack (troupe.relaycheck).
        `notice` takes each sealed notice (`notify`); without it notices are dropped.
        """
        key = self.settings.bus_key
        if not key:
            raise BusError(
                "the MQTT bus needs a key to seal relays: set mqtt.bus_key to env:NAME or "
                "file:PATH, the same secret on every bot"
            )
        self._key = key.reveal().encode()
        self._deliver = deliver
        self._confirm = confirm
        self._notice = notice
        self._client.subscribe(self._subscription)
        await self._client.start()
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout)
        except TimeoutError as err:
            self._client.unsubscribe(self._subscription)
            await self._client.stop()
            raise BusError(
                f"the MQTT bus at {self.settings.address} did not accept the connection; "
                "start the broker or fix mqtt: in the federation file"
            ) from err

    def _on_disconnect(self, reason: str) -> None:
        log.warning("bus disconnected (%s); reconnecting", reason)
        self._connected.clear()

    def _on_message(self, message: Message) -> None:
        self._take(message.topic, message.payload)

    def _take(self, topic: str, payload: bytes) -> None:
        """In the loop: open the envelope; deliver its body if it is sealed and fresh."""
        sender = topic.rsplit("/", 1)[-1]
        body, problem = self.unseal(topic, payload)
        if body is None:
            self._refuse(sender, problem)
            return
        if NOTICE in body:
            if self._notice is not None and isinstance(body[NOTICE], dict):
                notice = self._notice(body[NOTICE])
                spawn(notice, f"a notice from {sender}", self._tasks, logger=log)
            return
        if self._deliver is None:
            return
        spawn(self._confirmed(sender, body), f"the relay from {sender}", self._tasks, logger=log)

    def unseal(self, topic: str, payload: bytes, now: float | None = None) -> tuple[Any, str]:
        """The body of a sealed, fresh, first-seen relay on `topic`, or (None, why not)."""
        now = self.clock() if now is None else now
        sender = topic.rsplit("/", 1)[-1]
        try:
            envelope = json.loads(payload)
        except ValueError:
            return None, "not JSON"
        if not isinstance(envelope, dict) or not isinstance(envelope.get("mac"), str):
            return None, "not sealed with the bus key"
        if not hmac.compare_digest(envelope["mac"].encode(), _mac(self._key, envelope).encode()):
            return None, "its seal does not match the bus key"
        body, sent = envelope.get("body"), envelope.get("sent")
        if envelope.get("from") != sender or envelope.get("to") != self.bot:
            return None, "sealed for another sender or recipient than its topic names"
        if not isinstance(body, dict) or not isinstance(sent, (int, float)):
            return None, "not a relay this bot can read"
        times = [("sent", float(sent))]
        if NOTICE not in body:  # a notice may be about a command up to its stale limit old
            times.append(("about a Slack message", _event_time(body)))
        for what, at in times:
            if at is None or abs(now - at) > self.window_s:
                return None, f"{what} outside the {self.window_s:g} s window"
        self._seen = {mac: at for mac, at in self._seen.items() if now - at <= self.window_s}
        if envelope["mac"] in self._seen:
            return None, "a replay of a relay already taken"
        self._seen[envelope["mac"]] = float(sent)
        return body, ""

    def _refuse(self, sender: str, why: str) -> None:
        self.refused[sender] += 1
        if self.refused[sender] == 1:
            log.warning(
                "bus: refused a relay from %r: %s (further refusals of this sender are not logged)",
                sender,
                why,
            )

    async def _confirmed(self, sender: str, body: dict[str, Any]) -> None:
        if self._confirm is not None and not await self._confirm(body):
            self._refuse(sender, "the message it relays is not in Slack")
            return
        assert self._deliver is not None
        await self._deliver(body)

    async def relay(self, to: str, message: Mapping[str, Any]) -> None:
        """Send a message to one bot's inbox (QoS 1: at least once; the journal dedupes)."""
        envelope = seal(self._key, self.bot, to, message, self.clock())
        topic = self.inbox(to, self.bot)
        info = self._client.publish(topic, json.dumps(envelope), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            log.error("bus: could not relay to %s: %s", to, mqtt.error_string(info.rc))

    async def notify(self, to: str, notice: Mapping[str, Any]) -> None:
        """Send a notice to one bot's inbox: a hint that can only make it wait, never act,
        so it is taken on its seal alone, without the Slack read a relay costs."""
        await self.relay(to, {NOTICE: dict(notice)})

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def stop(self) -> None:
        self._client.unsubscribe(self._subscription)
        await self._client.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
