"""The federation bus over MQTT: in shared-app mode, relay a command's owned parts to
their owners (Slack hands each event to one bot only) and every-bot commands to all.

QoS 1 with a persistent session per bot, so a relay to a bot that is briefly away waits
for it at the broker; the owner's journal drops a relay it has already handled, and its
stale check drops one that waited too long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


class BusError(ConnectionError):
    """The bus broker cannot be reached."""


class Bus:
    """One bot's connection to the bus: relay(to, message) and a handler for its inbox."""

    def __init__(
        self,
        federation: str,
        bot: str,
        settings: Mapping[str, Any],
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        self.prefix = f"troupe/{federation}"
        self.bot = bot
        self.settings = dict(settings)
        self.connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Deliver | None = None
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

    def inbox(self, bot: str) -> str:
        return f"{self.prefix}/relay/{bot}"

    async def start(self, deliver: Deliver) -> None:
        """Connect, subscribe to this bot's inbox and wait (bounded) until connected."""
        self._loop = asyncio.get_running_loop()
        self._deliver = deliver
        username = self.settings.get("username")
        password = self.settings.get("password")
        if username:
            self._client.username_pw_set(
                username, password.reveal() if hasattr(password, "reveal") else password
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
        try:
            message = json.loads(msg.payload)
        except ValueError:
            log.warning("bus: dropping a message that is not JSON on %s", msg.topic)
            return
        if not isinstance(message, dict) or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._spawn, message)

    def _spawn(self, message: dict[str, Any]) -> None:
        if self._deliver is None:
            return
        task = asyncio.ensure_future(self._deliver(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def relay(self, to: str, message: Mapping[str, Any]) -> None:
        """Send a message to one bot's inbox (QoS 1: at least once; the journal dedupes)."""
        info = self._client.publish(self.inbox(to), json.dumps(dict(message)), qos=1)
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
