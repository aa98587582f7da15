"""Simulated MQTT devices: a Tasmota plug, Zigbee2MQTT bulbs and a Shelly Plus 1.

Each answers on the topics and in the payloads its firmware uses, so the mqtt plugin is
tested against what real devices say; and each records every command it receives (like
gpiozero's MockPin history), so a test can count what reached the device. They run on
paho-mqtt's own network thread: use them from tests, `make demo`, or
`troupe-dev hardware mqtt --tasmota porch --z2m "hall bulb" --shelly shellyplus1-garage`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from troupe import colour

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Received:
    """One command as it reached the device."""

    topic: str
    payload: bytes
    at: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        return self.payload.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """What a device was told and which states it went through; thread-safe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mute = False
        """A hung device: it still counts commands but answers none."""
        self._commands: list[Received] = []
        self._history: list[Any] = []
        self._cond = threading.Condition()
        self.on_command: Callable[[Recorder, Received], None] | None = None

    @property
    def commands(self) -> list[Received]:
        with self._cond:
            return list(self._commands)

    @property
    def count(self) -> int:
        with self._cond:
            return len(self._commands)

    @property
    def history(self) -> list[Any]:
        """Every state the device took, oldest first (starting with its initial state)."""
        with self._cond:
            return list(self._history)

    def wait_for_count(self, count: int, timeout: float = 5.0) -> bool:
        """Wait (bounded) until the device has received `count` commands."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._commands) >= count, timeout)

    def _record(self, topic: str, payload: bytes) -> Received:
        received = Received(topic, payload)
        with self._cond:
            self._commands.append(received)
            self._cond.notify_all()
        if self.on_command is not None:
            self.on_command(self, received)
        return received

    def _became(self, state: Any) -> None:
        with self._cond:
            self._history.append(state)
            self._cond.notify_all()


@dataclass(frozen=True)
class Birth:
    """A retained availability message: `payload` on connect, `will` on a lost connection."""

    topic: str
    payload: str
    will: str


class Connection:
    """One device's MQTT session: last will, birth message, subscriptions, reconnects."""

    def __init__(
        self,
        client_id: str,
        host: str,
        port: int,
        *,
        birth: Birth,
        subscriptions: Sequence[str],
        on_message: Callable[[str, bytes], None],
        on_connected: Callable[[], None],
        protocol: int = mqtt.MQTTv311,
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.host = host
        self.port = port
        self.birth = birth
        self.subscriptions = list(subscriptions)
        self.protocol = protocol
        self.username = username
        self.password = password
        self.tls_ca = tls_ca
        self._on_message = on_message
        self._on_connected = on_connected
        self._client: mqtt.Client | None = None
        self._ready = threading.Event()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    def start(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Connect, subscribe and announce; wait (bounded) until the device is listening."""
        if self._client is not None:
            return
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol
        )
        client.will_set(self.birth.topic, self.birth.will, qos=1, retain=True)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls_ca is not None:
            client.tls_set(ca_certs=self.tls_ca)
        client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        self._ready.clear()
        self._client = client
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        if not self._ready.wait(timeout):
            self.crash()
            raise TimeoutError(
                f"{self.client_id} could not connect to the broker at {self.host}:{self.port}"
            )

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        if self._client is not None:
            self._client.publish(topic, payload, qos=1, retain=retain)

    def stop(self) -> None:
        """A clean power-off: announce offline, then disconnect (no will is sent)."""
        client, self._client = self._client, None
        if client is None:
            return
        if client.is_connected():
            info = client.publish(self.birth.topic, self.birth.will, qos=1, retain=True)
            info.wait_for_publish(2)
        client.disconnect()
        client.loop_stop()

    def crash(self) -> None:
        """Pull the plug: drop the TCP connection with no DISCONNECT, so the broker
        publishes the last will, as it does when a device loses power or Wi-Fi."""
        client, self._client = self._client, None
        if client is None:
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # Shutting the socket down first also wakes paho's thread from its select().
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)
        client.loop_stop()
        if isinstance(sock, socket.socket):
            sock.close()

    def _connected(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason: Any,
        _properties: Any = None,
    ) -> None:
        if reason.is_failure:
            log.warning("%s: the broker refused the connection: %s", self.client_id, reason)
            return
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _subscribed(self, client: mqtt.Client, *_: Any) -> None:
        client.publish(self.birth.topic, self.birth.payload, qos=1, retain=True)
        self._on_connected()
        self._ready.set()

    def _message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(msg.topic, bytes(msg.payload))
        except Exception:
            # A simulator must survive any payload, as firmware does; the traceback says why.
            log.exception("%s could not handle %s", self.client_id, msg.topic)


# Tasmota ----------------------------------------------------------------------------------

_TASMOTA_ON = {"1", "on", "true"}
_TASMOTA_OFF = {"0", "off", "false"}
_TASMOTA_TOGGLE = {"2", "toggle"}


class TasmotaPlug(Recorder):
    """A Tasmota smart plug (one relay) with MQTT topic `topic` and the default FullTopic
    %prefix%/%topic%/: commands on cmnd/<topic>/POWER, answers on stat/<topic>/RESULT
    and stat/<topic>/POWER, telemetry on tele/<topic>/STATE, LWT on tele/<topic>/LWT."""

    def __init__(
        self, topic: str, host: str, port: int, *, on: bool = False, **connection: Any
    ) -> None:
        super().__init__(topic)
        self.topic = topic
        self.on = on
        self._became(on)
        self.connection = Connection(
            f"DVES_{zlib.crc32(topic.encode()) & 0xFFFFFF:06X}",
            host,
            port,
            birth=Birth(f"tele/{topic}/LWT", "Online", "Offline"),
            subscriptions=[f"cmnd/{topic}/POWER", f"cmnd/{topic}/POWER1"],
            on_message=self._handle,
            on_connected=self._telemetry,
            **connection,
        )

    def start(self, timeout: float = CONNECT_TIMEOUT_S) -> TasmotaPlug:
        self.connection.start(timeout)
        return self

    def stop(self) -> None:
        self.connection.stop()

    def crash(self) -> None:
        self.connection.crash()

    def press(self) -> None:
        """Someone presses the plug's button: it toggles and tells, as after a command."""
        self._set(not self.on)
        self._report()

    def _power(self) -> str:
        return "ON" if self.on else "OFF"

    def _report(self) -> None:
        self.connection.publish(f"stat/{self.topic}/RESULT", json.dumps({"POWER": self._power()}))
        self.connection.publish(f"stat/{self.topic}/POWER", self._power())

    def _telemetry(self) -> None:
        state = {"Time": time.strftime("%Y-%m-%dT%H:%M:%S"), "POWER": self._power()}
        self.connection.publish(f"tele/{self.topic}/STATE", json.dumps(state))

    def _handle(self, topic: str, payload: bytes) -> None:
        self._record(topic, payload)
        if self.mute:
            return
        word = payload.decode(errors="replace").strip().lower()
        if word in _TASMOTA_ON:
            self._set(True)
        elif word in _TASMOTA_OFF:
            self._set(False)
        elif word in _TASMOTA_TOGGLE:
            self._set(not self.on)
        elif word:
            self.connection.publish(f"stat/{self.topic}/RESULT", '{"Command":"Error"}')
            return
        self._report()

    def _set(self, on: bool) -> None:
        if on != self.on:
            self.on = on
            self._became(on)


# Zigbee2MQTT --------------------------------------------------------------------------------

MIREDS_RANGE = (153, 500)


class Zigbee2MqttBulb(Recorder):
    """One colour bulb paired to a Zigbee2MQTT bridge; `state` is what Zigbee2MQTT
    publishes on zigbee2mqtt/<name>."""

    def __init__(self, name: str, ieee: str) -> None:
        super().__init__(name)
        self.ieee = ieee
        self.available = True
        self.state: dict[str, Any] = {
            "state": "OFF",
            "brightness": 254,
            "color_temp": 370,
            "color_mode": "color_temp",
            "color": {"x": 0.4573, "y": 0.41},
            "linkquality": 120,
        }
        self._became(dict(self.state))

    @property
    def on(self) -> bool:
        return self.state["state"] == "ON"

    def apply(self, command: dict[str, Any]) -> None:
        """Change the bulb as the converters for a Zigbee light do."""
        new = dict(self.state)
        state = command.get("state")
        if isinstance(state, str):
            word = state.upper()
            if word == "TOGGLE":
                word = "OFF" if self.on else "ON"
            if word in ("ON", "OFF"):
                new["state"] = word
        if "brightness" in command and isinstance(command["brightness"], (int, float)):
            level = max(0, min(254, round(command["brightness"])))
            new["brightness"] = level
            if not isinstance(state, str):
                new["state"] = "ON" if level > 0 else "OFF"
        if "color_temp" in command and isinstance(command["color_temp"], (int, float)):
            low, high = MIREDS_RANGE
            new["color_temp"] = max(low, min(high, round(command["color_temp"])))
            new["color_mode"] = "color_temp"
        color = command.get("color")
        if isinstance(color, dict) and {"x", "y"} <= color.keys():
            new["color"] = {"x": float(color["x"]), "y": float(color["y"])}
            new["color_mode"] = "xy"
        elif isinstance(color, dict) and isinstance(color.get("hex"), str):
            new["color"] = dict(zip(("x", "y"), _hex_to_xy(color["hex"]), strict=True))
            new["color_mode"] = "xy"
        if new != self.state:
            self.state = new
            self._became(dict(new))

    def device_entry(self) -> dict[str, Any]:
        """The bulb as zigbee2mqtt/bridge/devices lists it."""
        return {
            "ieee_address": self.ieee,
            "friendly_name": self.name,
            "type": "Router",
            "network_address": int(self.ieee[-4:], 16),
            "supported": True,
            "disabled": False,
            "interview_completed": True,
            "power_source": "Mains (single phase)",
            "definition": {
                "model": "LED1624G9",
                "vendor": "IKEA",
                "description": "TRADFRI bulb E14/E26/E27 CWS, 600/806/810 lumen, dimmable, color",
                "supports_ota": True,
                "exposes": [
                    {
                        "type": "light",
                        "features": [
                            {"name": "state", "property": "state", "type": "binary",
                             "value_on": "ON", "value_off": "OFF", "value_toggle": "TOGGLE"},
                            {"name": "brightness", "property": "brightness", "type": "numeric",
                             "value_min": 0, "value_max": 254},
                            {"name": "color_temp", "property": "color_temp", "type": "numeric",
                             "unit": "mired", "value_min": MIREDS_RANGE[0],
                             "value_max": MIREDS_RANGE[1]},
                            {"name": "color_xy", "property": "color", "type": "composite"},
                        ],
                    }
                ],
            },
        }  # fmt: skip


class Zigbee2Mqtt:
    """A Zigbee2MQTT bridge (base topic `zigbee2mqtt`) with colour bulbs paired to it.

    The bridge is one MQTT client: bridge/state is its last will, each bulb's
    availability is its own retained message (a bulb can drop off the Zigbee network
    while the bridge stays online).
    """

    def __init__(
        self,
        host: str,
        port: int,
        names: Sequence[str],
        *,
        base: str = "zigbee2mqtt",
        **connection: Any,
    ) -> None:
        self.base = base
        self.bulbs = {
            name: Zigbee2MqttBulb(name, f"0x00178801{index:08x}")
            for index, name in enumerate(names, start=1)
        }
        subscriptions = []
        for name in self.bulbs:
            subscriptions += [f"{base}/{name}/set", f"{base}/{name}/get"]
        self.connection = Connection(
            f"zigbee2mqtt_{zlib.crc32('/'.join(names).encode()):08x}",
            host,
            port,
            birth=Birth(f"{base}/bridge/state", '{"state":"online"}', '{"state":"offline"}'),
            subscriptions=subscriptions,
            on_message=self._handle,
            on_connected=self._announce,
            **connection,
        )

    def __getitem__(self, name: str) -> Zigbee2MqttBulb:
        return self.bulbs[name]

    def start(self, timeout: float = CONNECT_TIMEOUT_S) -> Zigbee2Mqtt:
        self.connection.start(timeout)
        return self

    def stop(self) -> None:
        self.connection.stop()

    def crash(self) -> None:
        self.connection.crash()

    def set_available(self, name: str, available: bool) -> None:
        """A bulb drops off (or rejoins) the Zigbee network: it stops answering and
        Zigbee2MQTT's availability feature says so."""
        bulb = self.bulbs[name]
        bulb.available = available
        self._publish_availability(bulb)
        if available:
            self._publish_state(bulb)

    def _announce(self) -> None:
        coordinator = {
            "ieee_address": "0x00124b0024c3a1f0",
            "friendly_name": "Coordinator",
            "type": "Coordinator",
            "network_address": 0,
            "supported": True,
            "disabled": False,
            "interview_completed": True,
        }
        devices = [coordinator] + [bulb.device_entry() for bulb in self.bulbs.values()]
        self.connection.publish(f"{self.base}/bridge/devices", json.dumps(devices), retain=True)
        for bulb in self.bulbs.values():
            self._publish_availability(bulb)
            if bulb.available:
                self._publish_state(bulb)

    def _publish_availability(self, bulb: Zigbee2MqttBulb) -> None:
        state = "online" if bulb.available else "offline"
        self.connection.publish(
            f"{self.base}/{bulb.name}/availability", json.dumps({"state": state}), retain=True
        )

    def _publish_state(self, bulb: Zigbee2MqttBulb) -> None:
        self.connection.publish(f"{self.base}/{bulb.name}", json.dumps(bulb.state))

    def _handle(self, topic: str, payload: bytes) -> None:
        name, _, verb = topic[len(self.base) + 1 :].rpartition("/")
        bulb = self.bulbs.get(name)
        if bulb is None:
            return
        bulb._record(topic, payload)
        if bulb.mute or not bulb.available:
            return
        try:
            command = json.loads(payload)
        except ValueError:
            command = None
        if verb == "set" and not isinstance(command, dict):
            # Zigbee2MQTT reads a plain "ON"/"OFF"/"TOGGLE" as {"state": ...}
            command = {"state": payload.decode(errors="replace").strip()}
        if verb == "set":
            bulb.apply(command)
        self._publish_state(bulb)


def _hex_to_xy(value: str) -> tuple[float, float]:
    try:
        return colour.xy_of_hex(value)
    except ValueError:
        return (0.3127, 0.329)


# Shelly --------------------------------------------------------------------------------------


class ShellyPlus1(Recorder):
    """A Shelly Plus 1 (gen2) with MQTT enabled and topic prefix `prefix`: JSON-RPC on
    <prefix>/rpc answered on <src>/rpc, NotifyStatus on <prefix>/events/rpc, status on
    <prefix>/status/switch:0, availability "true"/"false" on <prefix>/online."""

    def __init__(
        self, prefix: str, host: str, port: int, *, on: bool = False, **connection: Any
    ) -> None:
        super().__init__(prefix)
        self.prefix = prefix
        self.device_id = prefix
        self.on = on
        self._source = "init"
        self._became(on)
        self.connection = Connection(
            prefix,
            host,
            port,
            birth=Birth(f"{prefix}/online", "true", "false"),
            subscriptions=[f"{prefix}/rpc"],
            on_message=self._handle,
            on_connected=self._publish_status,
            **connection,
        )

    def start(self, timeout: float = CONNECT_TIMEOUT_S) -> ShellyPlus1:
        self.connection.start(timeout)
        return self

    def stop(self) -> None:
        self.connection.stop()

    def crash(self) -> None:
        self.connection.crash()

    def press(self) -> None:
        """Someone flips the wall switch wired to the Shelly's input."""
        self._switch(not self.on, source="button")

    def _status(self) -> dict[str, Any]:
        return {
            "id": 0,
            "source": self._source,
            "output": self.on,
            "temperature": {"tC": 41.2, "tF": 106.2},
        }

    def _publish_status(self) -> None:
        self.connection.publish(f"{self.prefix}/status/switch:0", json.dumps(self._status()))

    def _handle(self, topic: str, payload: bytes) -> None:
        self._record(topic, payload)
        if self.mute:
            return
        try:
            request = json.loads(payload)
        except ValueError:
            return  # the firmware drops frames it cannot parse
        if not isinstance(request, dict) or not isinstance(request.get("src"), str):
            return  # without src there is nowhere to answer
        answer: dict[str, Any] = {"id": request.get("id"), "src": self.device_id}
        answer["dst"] = request["src"]
        try:
            answer["result"] = self._call(str(request.get("method")), request.get("params") or {})
        except _RpcError as err:
            answer["error"] = {"code": err.code, "message": err.message}
        self.connection.publish(f"{request['src']}/rpc", json.dumps(answer))

    def _call(self, method: str, params: Any) -> Any:
        if not isinstance(params, dict):
            raise _RpcError(-103, "Invalid argument 'params'!")
        if method in ("Switch.Set", "Switch.Toggle", "Switch.GetStatus"):
            if "id" not in params:
                raise _RpcError(-103, "Missing required argument 'id'!")
            if params["id"] != 0:
                raise _RpcError(-105, f"Argument 'id', value {params['id']} not found!")
        if method == "Switch.Set":
            if not isinstance(params.get("on"), bool):
                raise _RpcError(-103, "Missing required argument 'on'!")
            was_on = self.on
            self._switch(params["on"])
            return {"was_on": was_on}
        if method == "Switch.Toggle":
            was_on = self.on
            self._switch(not self.on)
            return {"was_on": was_on}
        if method == "Switch.GetStatus":
            return self._status()
        if method == "Shelly.GetStatus":
            return {"switch:0": self._status(), "sys": {"mac": "A8032AB12345", "uptime": 1234}}
        if method == "Shelly.GetDeviceInfo":
            return {
                "id": self.device_id,
                "mac": "A8032AB12345",
                "model": "SNSW-001X16EU",
                "gen": 2,
                "fw_id": "20230913-112003/v1.14.0-gcb84623",
                "app": "Plus1",
            }
        raise _RpcError(404, f"No handler for {method}")

    def _switch(self, on: bool, source: str = "MQTT") -> None:
        if on == self.on:
            return
        self.on, self._source = on, source
        self._became(on)
        change = {"id": 0, "output": on, "source": source}
        notify = {
            "src": self.device_id,
            "dst": f"{self.prefix}/events",
            "method": "NotifyStatus",
            "params": {"ts": round(time.time(), 2), "switch:0": change},
        }
        self.connection.publish(f"{self.prefix}/events/rpc", json.dumps(notify))
        self._publish_status()


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# the command line -----------------------------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """`troupe-dev hardware mqtt [--broker HOST:PORT] --tasmota NAME --z2m NAME --shelly NAME`:
    simulated devices until Ctrl-C, printing every command they receive."""
    parser = argparse.ArgumentParser(
        prog="troupe-dev hardware mqtt",
        description="Simulated MQTT devices: Tasmota plugs, Zigbee2MQTT bulbs, Shelly Plus 1s.",
    )
    parser.add_argument(
        "--broker", type=_address, help="HOST:PORT (default: start a broker on 127.0.0.1)"
    )
    parser.add_argument("--tasmota", action="append", default=[], metavar="TOPIC")
    parser.add_argument("--z2m", action="append", default=[], metavar="FRIENDLY_NAME")
    parser.add_argument("--shelly", action="append", default=[], metavar="PREFIX")
    parser.add_argument("--mqtt5", action="store_true", help="speak MQTT 5 (default 3.1.1)")
    args = parser.parse_args(argv)
    if not (args.tasmota or args.z2m or args.shelly):
        parser.error("name at least one device: --tasmota, --z2m or --shelly")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    broker = None
    if args.broker is None:
        from troupe.hardware.broker import BrokerError, start_broker

        try:
            broker = start_broker(0)
        except BrokerError as err:
            print(f"troupe-dev hardware mqtt: {err}", file=sys.stderr)
            return 1
        host, port = broker.host, broker.port
        print(f"MQTT broker ready at {broker.address} ({broker.kind})", flush=True)
    else:
        host, port = args.broker
    protocol = mqtt.MQTTv5 if args.mqtt5 else mqtt.MQTTv311

    def show(device: Recorder, received: Received) -> None:
        print(f"{device.name}: {received.topic} {received.text}", flush=True)

    devices: list[TasmotaPlug | Zigbee2Mqtt | ShellyPlus1] = []
    devices += [TasmotaPlug(t, host, port, protocol=protocol) for t in args.tasmota]
    if args.z2m:
        devices.append(Zigbee2Mqtt(host, port, args.z2m, protocol=protocol))
    devices += [ShellyPlus1(p, host, port, protocol=protocol) for p in args.shelly]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for device in devices:
            recorders = device.bulbs.values() if isinstance(device, Zigbee2Mqtt) else [device]
            for recorder in recorders:
                recorder.on_command = show
            device.start()
        names = [*args.tasmota, *args.z2m, *args.shelly]
        print(f"devices ready on {host}:{port}: {', '.join(names)}", flush=True)
        while not stop.wait(1.0):
            pass
    except TimeoutError as err:
        print(f"troupe-dev hardware mqtt: {err}", file=sys.stderr)
        return 1
    finally:
        for device in devices:
            device.stop()
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
