"""One MQTT connection per bot, shared by the mqtt driver, Home Assistant discovery and
the bus: one paho client, one network thread, one bridge from that thread into asyncio.

Each user registers a Subscription (its topic filters and callbacks) and calls start();
the first start connects, the last stop disconnects. Every paho callback crosses into the
event loop with call_soon_threadsafe, so the users' state lives on the loop only. The
subscriptions are renewed in on_connect, so they survive every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from troupe.errors import TroupeError
from troupe.mqttsettings import MqttSettings
from troupe.secrets import SecretError

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
SESSION_EXPIRY_S = 300
"""How long the broker keeps a persistent session (the bus's) while the bot is away: longer
than the bus's window, so every relay that could still be taken waits for the bot."""


class MqttClientError(TroupeError, ValueError):
    """The mqtt section cannot be used to connect (a secret or the CA file); one sentence."""


@dataclass(frozen=True)
class Message:
    """One message as paho delivered it, handed to the loop."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    mid: int = 0


def _nothing(*_args: Any) -> None:
    return None


@dataclass(frozen=True, eq=False)
class Subscription:
    """What one user of the connection listens to; every callback runs in the event loop."""

    topics: list[tuple[str, int]]
    """(filter, QoS) pairs, subscribed on every connect."""
    on_message: Callable[[Message], None] = _nothing
    on_connected: Callable[[bool], None] = _nothing
    """Once the broker answered this user's subscriptions; the argument says whether the
    broker kept the session (a persistent one), so redeliveries belong to the old one."""
    on_disconnected: Callable[[str], None] = _nothing
    on_refused: Callable[[str], None] = _nothing
    """The broker refused the login (the reason, as paho words it)."""
    on_denied: Callable[[list[str]], None] = _nothing
    """The broker refused some of the subscriptions (its ACL)."""


class MqttClient:
    """The bot's one paho client; see the module docstring."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        bot: str,
        *,
        persistent: bool = False,
    ) -> None:
        """`persistent`: the broker keeps the session (and QoS 1 messages for this client)
        while the bot is away, for SESSION_EXPIRY_S; the bus needs that, the others not."""
        self.settings = settings
        self.bot = bot
        self.persistent = persistent
        self.client_id = client_id
        self.connected = False
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._pending: dict[int, tuple[Subscription, bool]] = {}
        """SUBSCRIBE packet ids awaiting the broker's answer -> whose, and session kept?"""
        v5 = settings.protocol == "5"
        kwargs: dict[str, Any] = {} if v5 else {"clean_session": not persistent}
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self._paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs
        )
        if settings.password is not None:
            try:
                settings.password.reveal()  # fail at start, not at each reconnect
            except SecretError as err:
                raise MqttClientError(f"cannot read the MQTT password: {err}") from None
        if settings.tls:
            try:
                self._paho.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None)
            except OSError as err:
                raise MqttClientError(
                    f"cannot read the MQTT ca_file {settings.ca_file}: {err}"
                ) from None
        self._paho.reconnect_delay_set(min_delay=0.5, max_delay=5)
        self._paho.on_pre_connect = self._paho_pre_connect
        self._paho.on_connect = self._paho_connect
        self._paho.on_subscribe = self._paho_subscribed
        self._paho.on_disconnect = self._paho_disconnect
        self._paho.on_message = self._paho_message

    @property
    def address(self) -> str:
        return self.settings.address

    # what the users call (in the event loop) -----------------------------------------------

    def subscribe(self, subscription: Subscription) -> None:
        """Listen from now on; if connected already, subscribe at once."""
        with self._lock:
            self._subs.append(subscription)
            if self.connected:
                self._subscribe(subscription, session_present=False)

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subs:
                self._subs.remove(subscription)
            filters = [topic for topic, _ in subscription.topics]
            if self.connected and filters:
                self._paho.unsubscribe(filters)

    def will(self, topic: str, payload: str, *, qos: int = 1, retain: bool = True) -> None:
        """What the broker publishes if the bot vanishes (set before start: it is sent
        with the next connect)."""
        self._paho.will_set(topic, payload, qos=qos, retain=retain)

    def publish(
        self, topic: str, payload: str | bytes, *, qos: int = 0, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Hand a message to paho's thread (QoS 1 is kept for a reconnect, QoS 0 is not)."""
        return self._paho.publish(topic, payload, qos=qos, retain=retain)

    async def start(self) -> None:
        """Connect unless connected already (paho keeps trying while the broker is away)."""
        self._users += 1
        if self._users > 1:
            return
        self._loop = asyncio.get_running_loop()
        self._closing = False
        options: dict[str, Any] = {}
        if self.settings.protocol == "5":
            options["clean_start"] = not self.persistent
            if self.persistent:
                options["properties"] = Properties(PacketTypes.CONNECT)
                options["properties"].SessionExpiryInterval = SESSION_EXPIRY_S
        self._paho.connect_async(
            self.settings.host, self.settings.port, keepalive=KEEPALIVE_S, **options
        )
        self._paho.loop_start()

    async def stop(self) -> None:
        """The last user to stop disconnects and ends paho's thread."""
        self._users = max(0, self._users - 1)
        if self._users:
            return
        self._closing = True
        self._paho.disconnect()
        await asyncio.to_thread(self._paho.loop_stop)
        self.connected = False

    # paho's thread: hand everything to the event loop ---------------------------------------

    def _call(self, func: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or self._closing:
            return
        # RuntimeError: the event loop closed during shutdown, so nothing waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(func, *args)

    def _paho_pre_connect(self, client: mqtt.Client, _userdata: Any) -> None:
        """Read the password at each (re)connect, so a rotated one is picked up."""
        s = self.settings
        if not s.username:
            return
        try:
            user = s.username.replace("{bot}", self.bot)
            client.username_pw_set(user, s.password.reveal() if s.password else None)
        except SecretError as err:
            log.error("cannot read the MQTT password: %s", err)

    def _paho_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            for sub in list(self._subs):
                self._call(sub.on_refused, str(reason))
            return
        present = bool(getattr(flags, "session_present", False))
        with self._lock:
            self.connected = True
            for sub in self._subs:
                self._subscribe(sub, present)

    def _subscribe(self, sub: Subscription, session_present: bool) -> None:
        """With the lock held: one SUBSCRIBE per user, so each learns of its own answer."""
        if not sub.topics:
            self._call(sub.on_connected, session_present)
            return
        _rc, mid = self._paho.subscribe(list(sub.topics))
        self._pending[mid] = (sub, session_present)

    def _paho_subscribed(self, _c: Any, _u: Any, mid: int, codes: list[Any], *_: Any) -> None:
        with self._lock:
            sub, present = self._pending.pop(mid, (None, False))
        if sub is None or sub not in self._subs:
            return
        denied = [str(code) for code in codes if code.is_failure]
        if denied:
            self._call(sub.on_denied, denied)
        self._call(sub.on_connected, present)

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        with self._lock:
            self.connected = False
        for sub in list(self._subs):
            self._call(sub.on_disconnected, str(reason))

    def _paho_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        message = Message(
            msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup), msg.mid
        )
        for sub in list(self._subs):
            if any(mqtt.topic_matches_sub(topic, msg.topic) for topic, _ in sub.topics):
                self._call(sub.on_message, message)
