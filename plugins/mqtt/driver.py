"""The paho side of the mqtt driver: one client, its thread bridged into asyncio, act() and state().

paho runs on its own thread; every callback crosses into asyncio with call_soon_threadsafe,
so all state lives on the event loop. A device's state is what the device itself last said
on its own topics, and act() returns only once the device has confirmed the change
(bounded), so "turned on the porch switch" is never a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from troupe.federation import Action
from troupe.plugin import DeviceState, Driver, DriverError
from troupe.plugins.mqtt.device import Device, Heard, Malformed
from troupe.plugins.mqtt.generic import Generic
from troupe.plugins.mqtt.options import (
    DeviceOptions,
    Settings,
    ShellyOptions,
    TasmotaOptions,
    Zigbee2MqttOptions,
    device_options,
)
from troupe.plugins.mqtt.shelly import Shelly
from troupe.plugins.mqtt.tasmota import Tasmota
from troupe.plugins.mqtt.zigbee2mqtt import Zigbee2Mqtt
from troupe.secrets import SecretError

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 3.0
"""How long start() waits for the broker before going on with the devices offline."""
KEEPALIVE_S = 30


class MqttDriver(Driver):
    """Devices reached through the federation's MQTT broker (the `mqtt:` section)."""

    name = "mqtt"
    options_model = DeviceOptions
    section_model = Settings

    async def start(self, devices: Mapping[str, Mapping[str, Any]]) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.options:
            raise DriverError(
                f"the mqtt devices ({', '.join(devices)}) need an mqtt section in the "
                "federation file: mqtt: {host: BROKER, port: 1883}"
            )
        try:
            self.settings = Settings.model_validate(self.options)
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
        self.connected = False
        self.refused: str | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._client = self._make_client()
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._ready.wait(), CONNECT_WAIT_S)
        except TimeoutError:
            log.warning(
                "the MQTT broker at %s is not reachable yet; its %d devices stay offline "
                "until it is",
                self.settings.address,
                len(self.devices),
            )

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        protocol = mqtt.MQTTv5 if s.protocol == "5" else mqtt.MQTTv311
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._src, protocol=protocol)
        if s.password is not None:
            try:
                s.password.reveal()  # fail at start, not at each reconnect
            except SecretError as err:
                raise DriverError(f"cannot read the MQTT password: {err}") from None
        if s.tls:
            try:
                client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None)
            except OSError as err:
                raise DriverError(f"cannot read the MQTT ca_file {s.ca_file}: {err}") from None
        client.reconnect_delay_set(min_delay=0.5, max_delay=5)
        client.on_pre_connect = self._paho_pre_connect
        client.on_connect = self._paho_connect
        client.on_subscribe = self._paho_subscribed
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        return client

    async def stop(self) -> None:
        self._closing = True
        client = getattr(self, "_client", None)
        if client is None:
            return
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        self._fail_all(DriverError("troupe is shutting down"))

    # paho's thread: hand everything to the event loop ----------------------------------------

    def _call(self, func: Callable[..., None], *args: Any) -> None:
        if self._closing:
            return
        # RuntimeError: the event loop closed during shutdown, so nothing waits any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(func, *args)

    def _paho_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._call(self._on_refused, str(reason))
            return
        # Subscribing in on_connect renews the subscriptions after every reconnect.
        topics = sorted(self._routes)
        if topics:
            client.subscribe([(topic, 1) for topic in topics])
        else:
            self._paho_subscribed(client, None, 0, [])

    def _paho_subscribed(self, _c: Any, _u: Any, _mid: int, codes: list[Any], *_: Any) -> None:
        refused = [str(code) for code in codes if code.is_failure]
        if refused:
            log.error(
                "the MQTT broker at %s refused %d of troupe's subscriptions (%s): check its ACL",
                self.settings.address,
                len(refused),
                refused[0],
            )
        self._call(self._on_connected)

    def _paho_pre_connect(self, client: mqtt.Client, _userdata: Any) -> None:
        """Read the password at each (re)connect, so a rotated one is picked up."""
        s = self.settings
        if not s.username:
            return
        try:
            # "{bot}": each bot logs in as itself (one broker user per bot, for the ACL)
            user = s.username.replace("{bot}", self.bot)
            client.username_pw_set(user, s.password.reveal() if s.password else None)
        except SecretError as err:
            log.error("cannot read the MQTT password: %s", err)

    def _paho_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        self._call(self._on_disconnected, str(reason))

    def _paho_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._call(self._on_message, msg.topic, bytes(msg.payload))

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
        for device in self.devices.values():
            device.forget()
        if was:
            log.warning(
                "lost the MQTT broker at %s (%s); reconnecting", self.settings.address, reason
            )
            self._fail_all(
                DriverError(f"the connection to the MQTT broker at {self.settings.address} dropped")
            )

    def _on_message(self, topic: str, payload: bytes) -> None:
        for device in self._routes.get(topic, ()):
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
            if device.waiters and (problem := self._unreachable(device)):
                self._fail(device, DriverError(problem))
            if heard is None:
                continue
            for confirms, future in list(device.waiters):
                if not future.done() and confirms(heard):
                    future.set_result(heard)

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

    async def act(self, device: str, action: Action) -> DeviceState:
        target = self.devices[device]
        async with target.lock:
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
                    raise DriverError(
                        f"the MQTT broker at {self.settings.address} is not reachable"
                    )
                if command.confirms is None:
                    target.on = command.assumed
                else:
                    timeout = target.options.confirm_s
                    try:
                        heard = await asyncio.wait_for(future, timeout)
                    except TimeoutError:
                        raise DriverError(
                            f"the {device} did not confirm within {timeout:g} s"
                        ) from None
                    if heard.error:
                        raise DriverError(f"the {device} refused: {heard.error}")
            finally:
                target.waiters.remove(waiter)
        return target.snapshot()

    async def state(self, device: str) -> DeviceState:
        target = self.devices[device]
        if not self.connected:
            return DeviceState(online=False, detail=self._unreachable(target) or "")
        return target.snapshot()
