"""The federation bus over MQTT: in shared-app mode, relay a command's owned parts to
their owners (Slack hands each event to one bot only) and every-bot commands to all.

QoS 1 with a persistent session per bot, so a relay to a bot that is briefly away waits
for it at the broker; the owner's journal drops a relay it has already handled, and its
stale check drops one that waited too long.

Anyone who can reach the broker can publish, so a relay is trusted only when it is
sealed: an HMAC-SHA256 keyed by the federation's bus key (`mqtt.bus_key`) over the
sender, the recipient, the time it was sent, a nonce and the message. A relay sent, or
about a Slack message posted, more than `window_s` ago, and one seen before, is refused;
so is every unsealed one, logged once per sender. The topic names the sender too
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
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]
Confirm = Callable[[dict[str, Any]], Awaitable[bool]]
"""Whether a relayed message is real (the event it carries exists in Slack)."""

WINDOW_S = 60.0
"""How old a relay (and the Slack message it carries) may be when it arrives."""


class BusError(ConnectionError):
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
        settings: Mapping[str, Any],
        *,
        connect_timeout: float = 10.0,
        window_s: float = WINDOW_S,
    ) -> None:
        self.prefix = f"troupe/{federation}"
        self.bot = bot
        self.settings = dict(settings)
        self.connect_timeout = connect_timeout
        self.window_s = window_s
        self.clock: Callable[[], float] = time.time
        """Slack's time (the bot sets its SlackClock here): a Pi's own clock may be off."""
        self._key = b""
        self._seen: dict[str, float] = {}
        """MACs of the relays taken in the last window (a replay is refused)."""
        self.refused: collections.Counter[str] = collections.Counter()
        """Refused relays per sender (each sender is logged once, on its first)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Deliver | None = None
        self._confirm: Confirm | None = None
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"troupe-{federation}-{bot}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)

    def inbox(self, bot: str, sender: str = "+") -> str:
        """The topic `sender` relays to `bot` on (`+`: every sender, to subscribe)."""
        return f"{self.prefix}/relay/{bot}/{sender}"

    async def start(self, deliver: Deliver, confirm: Confirm | None = None) -> None:
        """Connect, subscribe to this bot's inbox and wait (bounded) until connected.

        `confirm`, if given, is asked about every sealed relay before `deliver` is: the
        bot checks there that the relayed message exists in Slack (troupe.relaycheck).
        """
        key = self.settings.get("bus_key")
        if not key:
            raise BusError(
                "the MQTT bus needs a key to seal relays: set mqtt.bus_key to env:NAME or "
                "file:PATH, the same secret on every bot"
            )
        self._key = (key.reveal() if hasattr(key, "reveal") else str(key)).encode()
        self._loop = asyncio.get_running_loop()
        self._deliver = deliver
        self._confirm = confirm
        username = self.settings.get("username")
        password = self.settings.get("password")
        if username:
            self._client.username_pw_set(
                str(username).replace("{bot}", self.bot),
                password.reveal() if hasattr(password, "reveal") else password,
            )
        if self.settings.get("tls"):
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        host = str(self.settings.get("host", "127.0.0.1"))
        port = int(self.settings.get("port", 1883))
        try:
            await asyncio.to_thread(self._client.connect, host, port, 30)
        except OSError as err:
            raise BusError(
                f"cannot reach the MQTT bus at {host}:{port} ({err}); start the broker "
                "or fix mqtt: in the federation file"
            ) from err
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout)
        except TimeoutError as err:
            self._client.loop_stop()
            raise BusError(f"the MQTT bus at {host}:{port} did not accept the connection") from err

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.error("bus connection refused: %s", reason)
            return
        client.subscribe(self.inbox(self.bot), qos=1)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._connected.set)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        log.warning("bus disconnected (%s); paho reconnects", reason)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._connected.clear)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._take, msg.topic, bytes(msg.payload))

    def _take(self, topic: str, payload: bytes) -> None:
        """In the loop: open the envelope; deliver its body if it is sealed and fresh."""
        sender = topic.rsplit("/", 1)[-1]
        body, problem = self.unseal(topic, payload)
        if body is None:
            self._refuse(sender, problem)
            return
        if self._deliver is None:
            return
        task = asyncio.ensure_future(self._confirmed(sender, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        for what, at in (("sent", float(sent)), ("about a Slack message", _event_time(body))):
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
        info = self._client.publish(self.inbox(to, self.bot), json.dumps(envelope), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            log.error("bus: could not relay to %s: %s", to, mqtt.error_string(info.rc))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def stop(self) -> None:
        await asyncio.to_thread(self._client.disconnect)
        self._client.loop_stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
