"""Generic MQTT devices: a command topic with payload templates, optional state and availability."""

from __future__ import annotations

import json
from typing import Any

from troupe.federation import Action
from troupe.plugin import DriverError
from troupe.plugins.mqtt.device import (
    Command,
    Device,
    Heard,
    Malformed,
    percent_of,
    text_of,
    wants_on,
)
from troupe.plugins.mqtt.options import GenericOptions


class Generic(Device):
    """Any device with a command topic, an optional state topic and availability topic."""

    options: GenericOptions

    def subscriptions(self) -> list[str]:
        o = self.options
        return [t for t in (o.state_topic, o.availability_topic) if t]

    def receive(self, topic: str, payload: bytes) -> Heard | None:
        o = self.options
        if topic == o.availability_topic and topic != o.state_topic:
            word = text_of(payload)
            if word not in (o.payload_available, o.payload_not_available):
                raise Malformed(
                    f"{word!r} is neither {o.payload_available} nor {o.payload_not_available}"
                )
            self.available = word == o.payload_available
            return None
        value = o.value_template.extract(payload) if o.value_template else text_of(payload)
        text = value if isinstance(value, str) else json.dumps(value)
        if text not in (o.state_on, o.state_off):
            raise Malformed(f"{text!r} is neither {o.state_on} nor {o.state_off}")
        heard: dict[str, Any] = {"on": text == o.state_on}
        if o.brightness_template is not None:
            level = o.brightness_template.extract(payload)
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise Malformed(f"brightness {level!r} is not a number")
            heard["brightness"] = round(level)
            scale = o.brightness_scale
            self.brightness = round(max(0, min(scale, level)) * 100 / scale)
        self.on = heard["on"]
        return Heard(**heard)

    def command(self, action: Action) -> Command:
        o = self.options
        percent = percent_of(action) if action.op == "set" else None
        if action.op == "set":
            args = action.kwargs
            if args.get("color") is not None or args.get("temperature") is not None:
                raise DriverError(f"the {self.name} cannot change colour")
            if percent is not None and "{brightness}" not in o.payload_on:
                raise DriverError(f"the {self.name} cannot dim")
        want = wants_on(action.op, self.on)
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
