"""The `mqtt` driver: Tasmota plugs, Zigbee2MQTT lights, Shelly gen2 relays, generic topics.

One paho client per bot runs on paho's own thread; every callback crosses into asyncio
with call_soon_threadsafe, so all state lives on the event loop. A device's state is what
the device itself last said on its own topics, and act() returns only once the device
has confirmed the change (bounded), so "turned on the porch switch" is never a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from troupe.federation import Action
from troupe.plugin import DeviceState, Driver, DriverError
from troupe.secrets import Secret, SecretError

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 3.0
"""How long start() waits for the broker before going on with the devices offline."""
KEEPALIVE_S = 30


# options ------------------------------------------------------------------------------------


def _protocol_version(value: object) -> object:
    text = str(value).strip().lower().removeprefix("mqtt").strip()
    return {"5": "5", "5.0": "5", "3.1.1": "3.1.1", "311": "3.1.1", "4": "3.1.1"}.get(text, value)


class Settings(BaseModel):
    """The federation file's `mqtt:` section, as far as this driver uses it."""

    model_config = ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    ca_file: Path | None = None
    """The CA that signed the broker's certificate (default: the system's CAs)."""
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol_version)] = "5"

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.password is not None and not self.username:
            raise ValueError("password needs a username")
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is only used with tls: true")
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _topic(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("cannot be empty")
    if "+" in value or "#" in value:
        raise ValueError("is a topic, not a filter: it cannot contain + or #")
    return value


Topic = Annotated[str, AfterValidator(_topic)]


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    confirm_s: float = Field(default=3.0, gt=0, le=60)
    """How long act() waits for the device to confirm a command."""


class TasmotaOptions(_Options):
    protocol: Literal["tasmota"]
    topic: Topic
    """The device's MQTT Topic (%topic%); the FullTopic is Tasmota's default."""


class Zigbee2MqttOptions(_Options):
    protocol: Literal["zigbee2mqtt"]
    topic: Topic
    """The device's friendly name in Zigbee2MQTT."""
    base_topic: Topic = "zigbee2mqtt"


class ShellyOptions(_Options):
    protocol: Literal["shelly"]
    topic: Topic
    """The device's MQTT prefix (by default its id, e.g. shellyplus1-a8032ab12345)."""
    switch: int = Field(default=0, ge=0)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TEMPLATE_SEGMENT = re.compile(
    r"\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\[\s*(?P<index>-?\d+)\s*\]"
    r"|\[\s*'(?P<single>[^']*)'\s*\]|\[\s*\"(?P<double>[^\"]*)\"\s*\]"
)


@dataclass(frozen=True)
class ValueTemplate:
    """A safe subset of Home Assistant's value_template: `value` (the payload as text) or
    `value_json` followed by .key, ['key'] or [index]; optionally inside {{ }}. No eval."""

    source: str
    json: bool
    path: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str) -> ValueTemplate:
        body = text.strip()
        if body.startswith("{{") and body.endswith("}}"):
            body = body[2:-2].strip()
        if body == "value":
            return cls(text, False, ())
        if not body.startswith("value_json"):
            raise ValueError(
                "must be value, or value_json followed by .key or [index] "
                "(e.g. value_json.state); filters and expressions are not supported"
            )
        rest, path = body[len("value_json") :], []
        while rest:
            found = _TEMPLATE_SEGMENT.match(rest)
            if found is None:
                raise ValueError(f"cannot read {rest!r}; write .key, ['key'] or [index]")
            if found["index"] is not None:
                path.append(int(found["index"]))
            else:
                path.append(found["name"] or found["single"] or found["double"] or "")
            rest = rest[found.end() :]
        return cls(text, True, tuple(path))

    def extract(self, payload: bytes) -> Any:
        """The value the template picks from a payload; _Malformed if it is not there."""
        text = payload.decode(errors="replace")
        if not self.json:
            return text.strip()
        try:
            value: Any = json.loads(text)
        except ValueError:
            raise _Malformed("it is not JSON") from None
        for step in self.path:
            try:
                value = value[step]
            except (KeyError, IndexError, TypeError):
                raise _Malformed(f"it has no value at {self.source}") from None
        return value


def _template(value: object) -> object:
    return ValueTemplate.parse(value) if isinstance(value, str) else value


Template = Annotated[ValueTemplate, BeforeValidator(_template)]


class GenericOptions(_Options):
    """Any device with a command topic; payloads may hold {state} and {brightness}."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    protocol: Literal["generic"]
    command_topic: Topic
    payload_on: str = "ON"
    payload_off: str = "OFF"
    payload_toggle: str | None = None
    state_topic: Topic | None = None
    value_template: Template | None = None
    state_on: str = "ON"
    state_off: str = "OFF"
    brightness_template: Template | None = None
    brightness_scale: int = Field(default=100, ge=1)
    """The device's full brightness ({brightness} is 0..scale; 255 for many)."""
    availability_topic: Topic | None = None
    payload_available: str = "online"
    payload_not_available: str = "offline"
    retain: bool = False

    @field_validator("payload_on", "payload_off", "payload_toggle")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        for name in _PLACEHOLDER.findall(value or ""):
            if name not in ("state", "brightness"):
                raise ValueError(
                    f"{{{name}}} is not a placeholder; use {{state}} or {{brightness}}"
                )
        return value

    @model_validator(mode="after")
    def _templates_need_a_topic(self) -> GenericOptions:
        for key in ("value_template", "brightness_template"):
            if getattr(self, key) is not None and self.state_topic is None:
                raise ValueError(f"{key} needs a state_topic to read from")
        return self


DeviceOptions = Annotated[
    TasmotaOptions | Zigbee2MqttOptions | ShellyOptions | GenericOptions,
    Field(discriminator="protocol"),
]
PROTOCOLS = ("tasmota", "zigbee2mqtt", "shelly", "generic")


class _DeviceOptionsModel(BaseModel):
    options: DeviceOptions


def _device_options(device: str, options: Mapping[str, Any]) -> Any:
    try:
        return _DeviceOptionsModel.model_validate({"options": dict(options)}).options
    except ValidationError as err:
        error = err.errors(include_url=False)[0]
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            raise DriverError(
                f"the mqtt device {device!r} needs protocol: one of {', '.join(PROTOCOLS)}"
            ) from None
        key = ".".join(str(p) for p in error["loc"][2:])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"is not an option of the {error['loc'][1]} protocol"
        if not key:
            message = f"the options of the mqtt device {device!r} clash: {message}"
            raise DriverError(message) from None
        raise DriverError(f"the mqtt device {device!r} has a bad option {key}: {message}") from None


# colours ------------------------------------------------------------------------------------

COLORS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "orange": (255, 165, 0),
    "yellow": (255, 255, 0),
    "green": (0, 128, 0),
    "lime": (0, 255, 0),
    "blue": (0, 0, 255),
    "cyan": (0, 255, 255),
    "turquoise": (64, 224, 208),
    "purple": (128, 0, 128),
    "magenta": (255, 0, 255),
    "violet": (238, 130, 238),
    "pink": (255, 192, 203),
    "brown": (165, 42, 42),
    "gold": (255, 215, 0),
}
"""The colour names the intents know, as CSS defines them (what Home Assistant uses)."""


def color_xy(name: str) -> tuple[float, float]:
    """The CIE 1931 xy of a colour name (sRGB, D65), as Zigbee lights take it."""
    rgb = COLORS.get(name.strip().lower())
    if rgb is None:
        if name.strip().lower() == "black":
            raise DriverError("a light cannot show black; turn it off instead")
        raise DriverError(f"I know no colour called {name!r}; try one of {', '.join(COLORS)}")

    def linear(c: float) -> float:
        c /= 255
        return ((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92

    r, g, b = (linear(c) for c in rgb)
    x = r * 0.4124 + g * 0.3576 + b * 0.1805
    y = r * 0.2126 + g * 0.7152 + b * 0.0722
    z = r * 0.0193 + g * 0.1192 + b * 0.9505
    return (round(x / (x + y + z), 4), round(y / (x + y + z), 4))


def _nearest_color(x: float, y: float) -> str | None:
    best = min(COLORS, key=lambda name: math.dist(color_xy(name), (x, y)))
    return best if math.dist(color_xy(best), (x, y)) < 0.02 else None


# devices ------------------------------------------------------------------------------------


class _Malformed(ValueError):
    """A device sent something this driver cannot read; logged, never fatal."""


@dataclass(frozen=True)
class Heard:
    """What one message from a device told: the waiters of act() look at this."""

    on: bool | None = None
    brightness: int | None = None
    mireds: int | None = None
    xy: tuple[float, float] | None = None
    rpc_id: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Command:
    """A message to publish, and what the device must say back for it to count as done."""

    topic: str
    payload: str
    confirms: Callable[[Heard], bool] | None
    """None: nothing will confirm it (a generic device without a state topic)."""
    retain: bool = False
    assumed: bool | None = None
    """The state to assume once published, when nothing confirms it."""


def _percent(action: Action) -> int | None:
    value = action.kwargs.get("brightness")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise DriverError(f"brightness must be between 0 and 100 percent, not {value}")
    return round(value)


def _wants_on(op: str, current: bool | None) -> bool | None:
    """The state an op leads to; None for a toggle of an unknown state."""
    if op == "off":
        return False
    if op == "toggle":
        return None if current is None else not current
    return True


class Device:
    """One device: the topics it speaks on, how to command it, what it last said."""

    options: Any

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.options = options
        self.available: bool | None = None
        """None until the device has said (a retained LWT or availability message)."""
        self.on: bool | None = None
        self.brightness: int | None = None
        self.color: str | None = None
        self.temperature: int | None = None
        self.lock = asyncio.Lock()
        self.waiters: list[tuple[Callable[[Heard], bool], asyncio.Future[Heard]]] = []

    def subscriptions(self) -> list[str]:
        raise NotImplementedError

    def refresh(self) -> list[tuple[str, str]]:
        """Messages that make the device report its state (sent after each connect)."""
        return []

    def receive(self, topic: str, payload: bytes) -> Heard | None:
        raise NotImplementedError

    def command(self, action: Action) -> Command:
        raise NotImplementedError

    def forget(self) -> None:
        """The connection dropped: retained availability will be sent again."""
        self.available = None

    def snapshot(self) -> DeviceState:
        if self.available is False:
            return DeviceState(online=False, detail="offline")
        return DeviceState(
            on=self.on,
            brightness=self.brightness if self.on else None,
            color=self.color if self.on else None,
            temperature=self.temperature if self.on else None,
            detail="" if self.on is not None else "no state reported yet",
        )

    def _switch_only(self, action: Action) -> None:
        if action.op == "set":
            raise DriverError(f"the {self.name} is a switch: it cannot dim or change colour")


def _word(payload: bytes) -> str:
    return payload.decode(errors="replace").strip()


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        raise _Malformed("it is not JSON") from None


def _on_off(value: object, on: str = "ON", off: str = "OFF") -> bool:
    if isinstance(value, str) and value.upper() in (on.upper(), off.upper()):
        return value.upper() == on.upper()
    raise _Malformed(f"{value!r} is neither {on} nor {off}")


class Tasmota(Device):
    """A Tasmota relay with the default FullTopic %prefix%/%topic%/."""

    options: TasmotaOptions

    def subscriptions(self) -> list[str]:
        t = self.options.topic
        return [f"stat/{t}/POWER", f"stat/{t}/RESULT", f"tele/{t}/STATE", f"tele/{t}/LWT"]

    def refresh(self) -> list[tuple[str, str]]:
        return [(f"cmnd/{self.options.topic}/POWER", "")]

    def receive(self, topic: str, payload: bytes) -> Heard | None:
        kind = topic.rsplit("/", 1)[-1]
        if kind == "LWT":
            self.available = _on_off(_word(payload), "Online", "Offline")
            return None
        if kind == "POWER":
            self.on = _on_off(_word(payload))
            return Heard(on=self.on)
        data = _json(payload)
        if not isinstance(data, dict):
            raise _Malformed("it is not a JSON object")
        power = data.get("POWER", data.get("POWER1"))
        if power is None:
            return None  # another command's answer, or telemetry without the relay
        self.on = _on_off(power)
        return Heard(on=self.on)

    def command(self, action: Action) -> Command:
        self._switch_only(action)
        word = {"on": "ON", "off": "OFF", "toggle": "TOGGLE"}.get(action.op, "ON")
        want = _wants_on(action.op, self.on)
        return Command(
            f"cmnd/{self.options.topic}/POWER",
            word,
            lambda heard: heard.on is not None and (want is None or heard.on == want),
        )


class Zigbee2Mqtt(Device):
    """A light (or plug) paired to Zigbee2MQTT; its abilities come from bridge/devices."""

    options: Zigbee2MqttOptions

    def __init__(self, name: str, options: Any) -> None:
        super().__init__(name, options)
        self.bridge_online: bool | None = None
        self.features: set[str] | None = None
        """The exposed light features (state, brightness, color_temp, color_xy); None
        until bridge/devices was read."""
        self.paired: bool | None = None
        self.mireds = (153, 500)
        self._sent_color: tuple[str, tuple[float, float]] | None = None
        self._sent_kelvin: tuple[int, int] | None = None

    @property
    def _base(self) -> str:
        return f"{self.options.base_topic}/{self.options.topic}"

    def subscriptions(self) -> list[str]:
        bridge = f"{self.options.base_topic}/bridge"
        return [self._base, f"{self._base}/availability", f"{bridge}/state", f"{bridge}/devices"]

    def refresh(self) -> list[tuple[str, str]]:
        return [(f"{self._base}/get", '{"state":""}')]

    def forget(self) -> None:
        super().forget()
        self.bridge_online = None

    def receive(self, topic: str, payload: bytes) -> Heard | None:
        bridge = f"{self.options.base_topic}/bridge"
        if topic == f"{bridge}/state":
            self.bridge_online = _availability(payload)
            return None
        if topic == f"{bridge}/devices":
            self._read_devices(_json(payload))
            return None
        if topic == f"{self._base}/availability":
            self.available = _availability(payload)
            return None
        return self._read_state(_json(payload))

    def _read_devices(self, devices: Any) -> None:
        if not isinstance(devices, list):
            raise _Malformed("bridge/devices is not a list")
        for entry in devices:
            if isinstance(entry, dict) and entry.get("friendly_name") == self.options.topic:
                break
        else:
            self.paired, self.features = False, None
            return
        self.paired, self.features = True, set()
        definition = entry.get("definition") or {}
        for expose in definition.get("exposes") or () if isinstance(definition, dict) else ():
            if not isinstance(expose, dict):
                continue
            for feature in expose.get("features") or [expose]:
                if not isinstance(feature, dict) or not isinstance(feature.get("name"), str):
                    continue
                self.features.add(feature["name"])
                if feature["name"] == "color_temp":
                    low, high = feature.get("value_min"), feature.get("value_max")
                    if isinstance(low, int) and isinstance(high, int) and 0 < low < high:
                        self.mireds = (low, high)

    def _read_state(self, data: Any) -> Heard:
        if not isinstance(data, dict):
            raise _Malformed("the state is not a JSON object")
        heard: dict[str, Any] = {}
        if "state" in data:
            heard["on"] = _on_off(data["state"])
        level = data.get("brightness")
        if level is not None:
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise _Malformed(f"brightness {level!r} is not a number")
            heard["brightness"] = round(level)
        # Read everything before changing anything: a bad field leaves the state alone.
        if "on" in heard:
            self.on = heard["on"]
        if "brightness" in heard:
            self.brightness = round(max(0, min(254, heard["brightness"])) * 100 / 254)
        mode = data.get("color_mode")
        mireds = data.get("color_temp")
        if isinstance(mireds, (int, float)) and not isinstance(mireds, bool) and mireds > 0:
            heard["mireds"] = round(mireds)
        color = data.get("color")
        if isinstance(color, dict) and all(
            isinstance(color.get(axis), (int, float)) for axis in ("x", "y")
        ):
            heard["xy"] = (float(color["x"]), float(color["y"]))
        if mode == "color_temp" and "mireds" in heard:
            kelvin = round(1_000_000 / heard["mireds"])
            if self._sent_kelvin and self._sent_kelvin[1] == heard["mireds"]:
                kelvin = self._sent_kelvin[0]
            self.temperature, self.color = kelvin, None
        elif mode in ("xy", "hs") and "xy" in heard:
            self.temperature, self.color = None, self._name_of(heard["xy"])
        return Heard(**heard)

    def _name_of(self, xy: tuple[float, float]) -> str | None:
        if self._sent_color and math.dist(self._sent_color[1], xy) < 0.01:
            return self._sent_color[0]
        return _nearest_color(*xy)

    def snapshot(self) -> DeviceState:
        if self.bridge_online is False:
            return DeviceState(online=False, detail="Zigbee2MQTT is offline")
        return super().snapshot()

    def offline_reason(self) -> str | None:
        if self.bridge_online is False:
            return f"Zigbee2MQTT, which drives the {self.name}, is offline"
        if self.paired is False:
            return f"Zigbee2MQTT has no device called {self.options.topic!r}"
        return None

    def _can(self, feature: str) -> bool:
        return self.features is None or feature in self.features

    def command(self, action: Action) -> Command:
        want = _wants_on(action.op, self.on)
        word = {"on": "ON", "off": "OFF", "toggle": "TOGGLE"}.get(action.op, "ON")
        body: dict[str, Any] = {"state": word}
        checks: list[Callable[[Heard], bool]] = []
        if action.op == "set":
            args = action.kwargs
            percent = _percent(action)
            if percent is not None and not self._can("brightness"):
                raise DriverError(f"the {self.name} cannot dim")
            if args.get("color") is not None and args.get("temperature") is not None:
                raise DriverError("a light takes a colour or a colour temperature, not both")
            if percent == 0:
                body, want = {"state": "OFF"}, False
            elif percent is not None:
                level = round(percent * 254 / 100)
                body["brightness"] = level
                checks.append(lambda h: h.brightness is not None and abs(h.brightness - level) <= 1)
            if args.get("color") is not None and want:
                if not self._can("color_xy"):
                    raise DriverError(f"the {self.name} cannot change colour")
                xy = color_xy(str(args["color"]))
                body["color"] = {"x": xy[0], "y": xy[1]}
                self._sent_color = (str(args["color"]).lower(), xy)
                checks.append(lambda h: h.xy is not None and math.dist(h.xy, xy) < 0.01)
            if args.get("temperature") is not None and want:
                kelvin = args["temperature"]
                if isinstance(kelvin, bool) or not isinstance(kelvin, (int, float)) or kelvin <= 0:
                    raise DriverError(f"a colour temperature of {kelvin} kelvin is not possible")
                if not self._can("color_temp"):
                    raise DriverError(f"the {self.name} has no adjustable white")
                low, high = self.mireds
                mireds = max(low, min(high, round(1_000_000 / kelvin)))
                body["color_temp"] = mireds
                clamped = mireds != round(1_000_000 / kelvin)
                self._sent_kelvin = None if clamped else (round(kelvin), mireds)
                checks.append(lambda h: h.mireds is not None and abs(h.mireds - mireds) <= 1)

        def confirms(heard: Heard) -> bool:
            if heard.on is None or (want is not None and heard.on != want):
                return False
            return all(check(heard) for check in checks)

        return Command(f"{self._base}/set", json.dumps(body), confirms)


def _availability(payload: bytes) -> bool:
    """Zigbee2MQTT's availability: {"state":"online"} (or the legacy plain word)."""
    text = _word(payload)
    if text.startswith("{"):
        data = _json(payload)
        text = data.get("state") if isinstance(data, dict) else None
    if text in ("online", "offline"):
        return text == "online"
    raise _Malformed("it is neither online nor offline")


class Shelly(Device):
    """A Shelly gen2/gen3 relay (Plus 1, Pro 1, ...) over MQTT JSON-RPC."""

    options: ShellyOptions

    def __init__(self, name: str, options: Any, src: str, ids: Callable[[], int]) -> None:
        super().__init__(name, options)
        self.src = src
        self._ids = ids
        self._sent: dict[int, tuple[str, bool | None]] = {}

    def subscriptions(self) -> list[str]:
        p = self.options.topic
        status = f"{p}/status/switch:{self.options.switch}"
        return [f"{p}/online", f"{p}/events/rpc", status, f"{self.src}/rpc"]

    def refresh(self) -> list[tuple[str, str]]:
        return [(f"{self.options.topic}/rpc", self._request("Switch.GetStatus", None))]

    def _request(self, method: str, on: bool | None) -> str:
        rpc_id = self._ids()
        self._sent[rpc_id] = (method, on)
        while len(self._sent) > 64:  # requests the device never answered
            del self._sent[next(iter(self._sent))]
        params: dict[str, Any] = {"id": self.options.switch}
        if method == "Switch.Set":
            params["on"] = on
        return json.dumps({"id": rpc_id, "src": self.src, "method": method, "params": params})

    def receive(self, topic: str, payload: bytes) -> Heard | None:
        p = self.options.topic
        if topic == f"{p}/online":
            self.available = _on_off(_word(payload), "true", "false")
            return None
        data = _json(payload)
        if not isinstance(data, dict):
            raise _Malformed("it is not a JSON object")
        if topic == f"{self.src}/rpc":
            return self._answer(data)
        if topic.endswith("/events/rpc"):
            if data.get("method") != "NotifyStatus":
                return None
            data = (data.get("params") or {}).get(f"switch:{self.options.switch}")
            if not isinstance(data, dict) or "output" not in data:
                return None  # a status of another component, or without the output
        output = data.get("output")
        if not isinstance(output, bool):
            raise _Malformed(f"output {output!r} is not true or false")
        self.on = output
        return Heard(on=output)

    def _answer(self, data: dict[str, Any]) -> Heard | None:
        rpc_id = data.get("id")
        if not isinstance(rpc_id, int) or rpc_id not in self._sent:
            return None  # an answer to another device on the same response topic
        method, on = self._sent.pop(rpc_id)
        error = data.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else None
            return Heard(rpc_id=rpc_id, error=str(message or error))
        result = data.get("result")
        if not isinstance(result, dict):
            raise _Malformed("the answer has neither result nor error")
        if method == "Switch.GetStatus":
            output = result.get("output")
            if not isinstance(output, bool):
                raise _Malformed(f"output {output!r} is not true or false")
            self.on = output
        elif method == "Switch.Toggle":
            was_on = result.get("was_on")
            if not isinstance(was_on, bool):
                raise _Malformed(f"was_on {was_on!r} is not true or false")
            self.on = not was_on
        else:
            self.on = on
        return Heard(on=self.on, rpc_id=rpc_id)

    def command(self, action: Action) -> Command:
        self._switch_only(action)
        if action.op == "toggle":
            payload = self._request("Switch.Toggle", None)
        else:
            payload = self._request("Switch.Set", action.op != "off")
        rpc_id = json.loads(payload)["id"]
        return Command(f"{self.options.topic}/rpc", payload, lambda h: h.rpc_id == rpc_id)


class Generic(Device):
    """Any device with a command topic, an optional state topic and availability topic."""

    options: GenericOptions

    def subscriptions(self) -> list[str]:
        o = self.options
        return [t for t in (o.state_topic, o.availability_topic) if t]

    def receive(self, topic: str, payload: bytes) -> Heard | None:
        o = self.options
        if topic == o.availability_topic and topic != o.state_topic:
            word = _word(payload)
            if word not in (o.payload_available, o.payload_not_available):
                raise _Malformed(
                    f"{word!r} is neither {o.payload_available} nor {o.payload_not_available}"
                )
            self.available = word == o.payload_available
            return None
        value = o.value_template.extract(payload) if o.value_template else _word(payload)
        text = value if isinstance(value, str) else json.dumps(value)
        if text not in (o.state_on, o.state_off):
            raise _Malformed(f"{text!r} is neither {o.state_on} nor {o.state_off}")
        heard: dict[str, Any] = {"on": text == o.state_on}
        if o.brightness_template is not None:
            level = o.brightness_template.extract(payload)
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise _Malformed(f"brightness {level!r} is not a number")
            heard["brightness"] = round(level)
            scale = o.brightness_scale
            self.brightness = round(max(0, min(scale, level)) * 100 / scale)
        self.on = heard["on"]
        return Heard(**heard)

    def command(self, action: Action) -> Command:
        o = self.options
        percent = _percent(action) if action.op == "set" else None
        if action.op == "set":
            args = action.kwargs
            if args.get("color") is not None or args.get("temperature") is not None:
                raise DriverError(f"the {self.name} cannot change colour")
            if percent is not None and "{brightness}" not in o.payload_on:
                raise DriverError(f"the {self.name} cannot dim")
        want = _wants_on(action.op, self.on)
        if action.op == "toggle" and o.payload_toggle is not None:
            template = o.payload_toggle
        elif want is None:
            raise DriverError(
                f"the {self.name} has not reported its state, so I cannot tell which way to toggle"
            )
        elif percent == 0:
            template, want = o.payload_off, False
        else:
            template = o.payload_on if want else o.payload_off
        level = round((percent if percent is not None else 100) * o.brightness_scale / 100)
        state = o.state_on if want or want is None else o.state_off
        payload = template.replace("{state}", state).replace("{brightness}", str(level))
        if o.state_topic is None:
            return Command(o.command_topic, payload, None, o.retain, assumed=want)

        def confirms(heard: Heard) -> bool:
            if heard.on is None or (want is not None and heard.on != want):
                return False
            if percent and o.brightness_template is not None:
                return heard.brightness is not None and abs(heard.brightness - level) <= 1
            return True

        return Command(o.command_topic, payload, confirms, o.retain)


# the driver ----------------------------------------------------------------------------------


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
            options = _device_options(name, raw)
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
            except _Malformed as err:
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

    async def act(self, device: str, action: Action) -> str:
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
        return _done(device, action, target.snapshot())

    async def state(self, device: str) -> DeviceState:
        target = self.devices[device]
        if not self.connected:
            return DeviceState(online=False, detail=self._unreachable(target) or "")
        return target.snapshot()


def _done(device: str, action: Action, state: DeviceState) -> str:
    if action.op == "on":
        return f"turned on the {device}"
    if action.op == "off":
        return f"turned off the {device}"
    if action.op == "toggle":
        now = "" if state.on is None else f" (now {'on' if state.on else 'off'})"
        return f"toggled the {device}{now}"
    return f"set the {device} to {state.describe()}"
