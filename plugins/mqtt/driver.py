"""The mqtt driver itself: its devices on the bot's shared MQTT connection, act() and state().

The connection (troupe.mqttclient, shared with discovery and the bus) hands every message
to the event loop, so all state lives there. A device's state is what the device itself last said
on its own topics, and act() returns only once the device has confirmed the change
(bounded), so "turned on the porch switch" is never a guess.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from troupe.federation import Action
from troupe.mqttclient import MqttClient, MqttClientError, Subscription
from troupe.mqttsettings import MqttSettings
from troupe.plugin import DeviceState, Driver, DriverError, resend_check
from troupe.plugins.mqtt.device import Device, Heard, Malformed
from troupe.plugins.mqtt.generic import Generic
from troupe.plugins.mqtt.options import (
    DeviceOptions,
    ShellyOptions,
    TasmotaOptions,
    Zigbee2MqttOptions,
    device_options,
)
from troupe.plugins.mqtt.shelly import Shelly
from troupe.plugins.mqtt.tasmota import Tasmota
from troupe.plugins.mqtt.zigbee2mqtt import Zigbee2Mqtt
from troupe.tasks import spawn

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 3.0
"""How long start() waits for the broker before going on with the devices offline."""
RECONNECT_WAIT_S = 10.0
"""How long act() waits for a connection that just dropped to come back before it says the
broker is not reachable: a broker restart (an upgrade, a crash and its service starting it
again) takes a second or two, and the connection retries at most every 5 s. The bot renews
its claim meanwhile, as for any slow device; a broker away longer fails at once."""
RECONNECT_POLL_S = 0.05
DROP_NOTICE_S = 1.0
"""How long a resend waits for the loop to hear of a drop that a failed publish showed
first (paho's thread knew, its callback was still on its way)."""
COMMANDED_S = 5.0
"""A state change this soon after a command to the device (from anyone) is that command's."""


class Dropped(DriverError):
    """The connection to the broker dropped with a command in flight."""


class MqttDriver(Driver):
    """Devices reached through the federation's MQTT broker (the `mqtt:` section)."""

    name = "mqtt"
    options_model = DeviceOptions
    section_model = MqttSettings

    async def start(self, devices: Mapping[str, Mapping[str, Any]]) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.options:
            raise DriverError(
                f"the mqtt devices ({', '.join(devices)}) need an mqtt section in the "
                "federation file: mqtt: {host: BROKER, port: 1883}"
            )
        try:
            self.settings = MqttSettings.model_validate(self.options)
        except ValidationError as err:
            error = err.errors(include_url=False)[0]
            key = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            if not key:
                raise DriverError(f"the mqtt section does not hold together: {message}") from None
            raise DriverError(f"the mqtt section has a bad {key}: {message}") from None
        self._src = f"troupe-{re.sub(r'[^A-Za-z0-9_-]', '-', self.bot)}-{secrets.token_hex(3)}"
        ids = itertools.count(1)
        self.devices: dict[str, Device] = {}
        for name, raw in devices.items():
            options = device_options(name, raw)
            if isinstance(options, TasmotaOptions):
                self.devices[name] = Tasmota(name, options)
            elif isinstance(options, Zigbee2MqttOptions):
                self.devices[name] = Zigbee2Mqtt(name, options)
            elif isinstance(options, ShellyOptions):
                self.devices[name] = Shelly(name, options, self._src, lambda: next(ids))
            else:
                self.devices[name] = Generic(name, options)
        self._routes: dict[str, list[Device]] = {}
        for device in self.devices.values():
            for topic in device.subscriptions():
                self._routes.setdefault(topic, []).append(device)
        self._commanded: dict[str, list[Device]] = {}
        """Command topics -> devices: a command from anyone (a bot, Home Assistant) is
        heard, so only a change that follows none is a `changed` event."""
        self._commanded_at: dict[str, float] = {}
        for device in self.devices.values():
            if (topic := _command_topic(device)) and topic not in self._routes:
                self._commanded.setdefault(topic, []).append(device)
        self.connected = False
        self.refused: str | None = None
        self._ready = asyncio.Event()
        self._dropped_at: float | None = None
        """When the connection last dropped (the loop's clock)."""
        try:  # the bot's shared connection, or one of its own (a driver on its own)
            self._client = self.client or MqttClient(self.settings, self._src, self.bot)
        except MqttClientError as err:
            raise DriverError(str(err)) from None
        self._subscription = Subscription(
            [(topic, 1) for topic in sorted(self._routes)]
            + [(topic, 0) for topic in sorted(self._commanded)],
            on_message=lambda message: self._on_message(message.topic, message.payload),
            on_connected=lambda _kept: self._on_connected(),
            on_disconnected=self._on_disconnected,
            on_refused=self._on_refused,
            on_denied=self._on_denied,
        )
        self._client.subscribe(self._subscription)
        await self._client.start()
        try:
            await asyncio.wait_for(self._ready.wait(), CONNECT_WAIT_S)
        except TimeoutError:
            log.warning(
                "the MQTT broker at %s is not reachable yet; its %d devices stay offline "
                "until it is",
                self.settings.address,
                len(self.devices),
            )

    async def stop(self) -> None:
        client = getattr(self, "_client", None)
        if client is None:
            return
        client.unsubscribe(self._subscription)
        await client.stop()
        self._fail_all(DriverError("troupe is shutting down"))

    def _on_denied(self, refused: list[str]) -> None:
        log.error(
            "the MQTT broker at %s refused %d of troupe's subscriptions (%s): check its ACL",
            self.settings.address,
            len(refused),
            refused[0],
        )

    # the event loop --------------------------------------------------------------------------

    def _on_connected(self) -> None:
        if not self.connected:
            log.info("connected to the MQTT broker at %s", self.settings.address)
        self.connected, self.refused = True, None
        self._ready.set()
        for device in self.devices.values():
            for topic, payload in device.refresh():
                self._client.publish(topic, payload)

    def _on_refused(self, reason: str) -> None:
        if self.refused != reason:
            log.error(
                "the MQTT broker at %s refused the connection: %s", self.settings.address, reason
            )
        self.refused = reason

    def _on_disconnected(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        if was:
            self._dropped_at = self._loop.time()
        for device in self.devices.values():
            device.forget()
        if was:
            log.warning(
                "lost the MQTT broker at %s (%s); reconnecting", self.settings.address, reason
            )
            self._fail_all(
                Dropped(f"the connection to the MQTT broker at {self.settings.address} dropped")
            )

    def _on_message(self, topic: str, payload: bytes) -> None:
        if payload.strip():  # an empty one only asks for the state (Tasmota's refresh)
            for device in self._commanded.get(topic, ()):
                self._commanded_at[device.name] = self._loop.time()
        for device in self._routes.get(topic, ()):
            was, was_on = _availability(device), device.on
            try:
                heard = device.receive(topic, payload)
            except Malformed as err:
                log.warning(
                    "ignored a message for the %s on %s: %s (payload %r)",
                    device.name,
                    topic,
                    err,
                    payload[:120],
                )
                continue
            now = _availability(device)
            if was is not None and now is not None and was != now:  # not the first word
                word = "online" if now else "offline"
                spawn(self.emit(device.name, word, ""), f"the {word} event of the {device.name}")
            if heard is not None and self._by_itself(device, was_on):
                word = "on" if device.on else "off"
                spawn(self.emit(device.name, "changed", word), f"the change of the {device.name}")
            if device.waiters and (problem := self._unreachable(device)):
                self._fail(device, DriverError(problem))
            if heard is None:
                continue
            for confirms, future in list(device.waiters):
                if not future.done() and confirms(heard):
                    future.set_result(heard)

    def _by_itself(self, device: Device, was_on: bool | None) -> bool:
        """The device switched with no command heard just before (its own button, its app)."""
        if was_on is None or device.on is None or device.on == was_on or device.waiters:
            return False
        since = self._loop.time() - self._commanded_at.get(device.name, float("-inf"))
        return since > COMMANDED_S

    def _fail(self, device: Device, error: DriverError) -> None:
        for _, future in device.waiters:
            if not future.done():
                future.set_exception(error)

    def _fail_all(self, error: DriverError) -> None:
        for device in self.devices.values():
            self._fail(device, error)

    # the Driver API ---------------------------------------------------------------------------

    def _unreachable(self, device: Device) -> str | None:
        if self.refused:
            return f"the MQTT broker at {self.settings.address} refused troupe: {self.refused}"
        if not self.connected:
            return f"the MQTT broker at {self.settings.address} is not reachable"
        if isinstance(device, Zigbee2Mqtt) and (reason := device.offline_reason()):
            return reason
        if device.available is False:
            return f"the {device.name} is offline"
        return None

    async def _back(self, device: Device) -> bool:
        """Within RECONNECT_WAIT_S of a dropped connection (a broker restarting), wait for
        the connection, then for the device to say again that it is online: the devices
        reconnect too, and a command sent before they are back is lost. True if it waited."""
        waited = False
        if self._dropped_at is None:
            return waited
        deadline = self._dropped_at + RECONNECT_WAIT_S
        while self._loop.time() < deadline and not self.refused:
            if self.connected and (device.available is not None or not device.tells_online):
                return waited
            await asyncio.sleep(RECONNECT_POLL_S)
            waited = True
        return waited

    async def ready(self, device: str) -> bool:
        return await self._back(self.devices[device])

    async def act(self, device: str, action: Action) -> DeviceState:
        """Send the command and wait for the device to confirm it. When the connection
        drops with the command in flight (the broker restarting), an action safe to repeat
        (on, off, a set) is sent once more when the broker and the device are back: the
        device may or may not have had it, and either way it ends as asked. Unless the
        runtime withdraws it then (`resend_check`: a newer command reached the device
        meanwhile). Others fail."""
        target = self.devices[device]
        async with target.lock:
            try:
                await self._send(target, action)
            except Dropped as err:
                if not action.idempotent:
                    raise
                log.warning("%s; the %s gets its command again once it is back", err, device)
                await self._drop_heard()
                await self._back(target)
                if (withdrawn := await resend_check.get()()) is not None:
                    raise DriverError(withdrawn) from None
                await self._send(target, action)
        return target.snapshot()

    async def _drop_heard(self) -> None:
        """Wait (at most DROP_NOTICE_S) until the loop has heard that the connection
        dropped. A publish can fail in the moment between paho's thread losing the broker
        and its callback reaching the loop: a resend then found the connection still
        marked up, did not wait for the broker, and failed too (a soak's lost command)."""
        deadline = self._loop.time() + DROP_NOTICE_S
        while self.connected and self._loop.time() < deadline:
            await asyncio.sleep(RECONNECT_POLL_S)

    async def _send(self, target: Device, action: Action) -> None:
        """One attempt: wait for a broker that just dropped, publish, await the confirmation."""
        await self._back(target)
        command = target.command(action)
        problem = self._unreachable(target)
        if problem:
            raise DriverError(problem)
        future: asyncio.Future[Heard] = self._loop.create_future()
        waiter = (command.confirms or (lambda _h: True), future)
        target.waiters.append(waiter)
        try:
            # QoS 0: paho would queue a QoS 1 command while the broker is away and
            # deliver it after this call has already reported a failure.
            sent = self._client.publish(command.topic, command.payload, retain=command.retain)
            if sent.rc != mqtt.MQTT_ERR_SUCCESS:
                raise Dropped(f"the MQTT broker at {self.settings.address} is not reachable")
            if command.confirms is None:
                target.on = command.assumed
            else:
                timeout = target.options.confirm_s
                try:
                    heard = await asyncio.wait_for(future, timeout)
                except TimeoutError:
                    raise DriverError(
                        f"the {target.name} did not confirm within {timeout:g} s"
                    ) from None
                if heard.error:
                    raise DriverError(f"the {target.name} refused: {heard.error}")
        finally:
            target.waiters.remove(waiter)

    async def state(self, device: str) -> DeviceState:
        target = self.devices[device]
        if not self.connected:
            return DeviceState(online=False, detail=self._unreachable(target) or "")
        return target.snapshot()


def _availability(device: Device) -> bool | None:
    """Whether the device says it is online (its own availability, or Zigbee2MQTT's);
    None until it has said. A change between two known answers is an online or offline
    event; the first answer after a (re)connect is not."""
    if isinstance(device, Zigbee2Mqtt) and device.offline_reason():
        return False
    return device.available


def _command_topic(device: Device) -> str | None:
    """Where the device takes its on/off commands (what an "on" would be published to)."""
    try:
        return device.command(Action(device.name, "on")).topic
    except DriverError:
        return None
