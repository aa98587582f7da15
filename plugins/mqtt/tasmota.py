"""Tasmota relays: cmnd/stat/tele topics under the default FullTopic."""

from __future__ import annotations

from troupe.federation import Action
from troupe.plugins.mqtt.device import (
    Command,
    Device,
    Heard,
    Malformed,
    json_payload,
    on_off,
    text_of,
    wants_on,
)
from troupe.plugins.mqtt.options import TasmotaOptions


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
            self.available = on_off(text_of(payload), "Online", "Offline")
            return None
        if kind == "POWER":
            self.on = on_off(text_of(payload))
            return Heard(on=self.on)
        data = json_payload(payload)
        if not isinstance(data, dict):
            raise Malformed("it is not a JSON object")
        power = data.get("POWER", data.get("POWER1"))
        if power is None:
            return None  # another command's answer, or telemetry without the relay
        self.on = on_off(power)
        return Heard(on=self.on)

    def command(self, action: Action) -> Command:
        self._switch_only(action)
        word = {"on": "ON", "off": "OFF", "toggle": "TOGGLE"}.get(action.op, "ON")
        want = wants_on(action.op, self.on)
        return Command(
            f"cmnd/{self.options.topic}/POWER",
            word,
            lambda heard: heard.on is not None and (want is None or heard.on == want),
        )
