"""The mqtt driver's options: each protocol's device options (the `mqtt:` section is
troupe.mqttsettings's, shared with discovery and the bus)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

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

from troupe.mqttsettings import MqttSettings
from troupe.plugin import DriverError
from troupe.plugins.mqtt.device import Malformed

Settings = MqttSettings
"""The `mqtt:` section, declared once in troupe.mqttsettings (discovery and the bus read it)."""


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
        """The value the template picks from a payload; Malformed if it is not there."""
        text = payload.decode(errors="replace")
        if not self.json:
            return text.strip()
        try:
            value: Any = json.loads(text)
        except ValueError:
            raise Malformed("it is not JSON") from None
        for step in self.path:
            try:
                value = value[step]
            except (KeyError, IndexError, TypeError):
                raise Malformed(f"it has no value at {self.source}") from None
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


def device_options(device: str, options: Mapping[str, Any]) -> Any:
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
