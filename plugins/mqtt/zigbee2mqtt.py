"""Zigbee2MQTT lights and plugs: JSON state, bridge availability and exposed features."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from troupe import colour
from troupe.federation import Action
from troupe.plugin import DeviceState, DriverError
from troupe.plugins.mqtt.device import (
    Command,
    Device,
    Heard,
    Malformed,
    json_payload,
    on_off,
    percent_of,
    text_of,
    wants_on,
)
from troupe.plugins.mqtt.options import Zigbee2MqttOptions


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
            self._read_devices(json_payload(payload))
            return None
        if topic == f"{self._base}/availability":
            self.available = _availability(payload)
            return None
        return self._read_state(json_payload(payload))

    def _read_devices(self, devices: Any) -> None:
        if not isinstance(devices, list):
            raise Malformed("bridge/devices is not a list")
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
            raise Malformed("the state is not a JSON object")
        heard: dict[str, Any] = {}
        if "state" in data:
            heard["on"] = on_off(data["state"])
        level = data.get("brightness")
        if level is not None:
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise Malformed(f"brightness {level!r} is not a number")
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
            self.temperature = kelvin
            self.color = colour.name_of_mireds(heard["mireds"])
        elif mode in ("xy", "hs") and "xy" in heard:
            self.temperature, self.color = None, self._name_of(heard["xy"])
        return Heard(**heard)

    def _name_of(self, xy: tuple[float, float]) -> str | None:
        if self._sent_color and math.dist(self._sent_color[1], xy) < 0.01:
            return self._sent_color[0]
        return colour.name_of_xy(xy)

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
        want = wants_on(action.op, self.on)
        word = {"on": "ON", "off": "OFF", "toggle": "TOGGLE"}.get(action.op, "ON")
        body: dict[str, Any] = {"state": word}
        checks: list[Callable[[Heard], bool]] = []
        if action.op == "set":
            args = action.kwargs
            percent = percent_of(action)
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
            wanted = colour.named(str(args["color"])) if args.get("color") is not None else None
            if wanted is not None and wanted.kelvin is not None and self._can("color_temp"):
                args = {"temperature": wanted.kelvin}  # a white: set as a colour temperature
            elif wanted is not None and want:
                if not self._can("color_xy"):
                    raise DriverError(f"the {self.name} cannot change colour")
                xy = wanted.xy
                body["color"] = {"x": xy[0], "y": xy[1]}
                self._sent_color = (wanted.name, xy)
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
    text = text_of(payload)
    if text.startswith("{"):
        data = json_payload(payload)
        text = data.get("state") if isinstance(data, dict) else None
    if text in ("online", "offline"):
        return text == "online"
    raise Malformed("it is neither online nor offline")
