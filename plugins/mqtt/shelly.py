"""Shelly gen2/gen3 relays over MQTT JSON-RPC (Switch.Set, Switch.Toggle, NotifyStatus)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from troupe.federation import Action
from troupe.plugins.mqtt.device import (
    Command,
    Device,
    Heard,
    Malformed,
    json_payload,
    on_off,
    text_of,
)
from troupe.plugins.mqtt.options import ShellyOptions


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
            self.available = on_off(text_of(payload), "true", "false")
            return None
        data = json_payload(payload)
        if not isinstance(data, dict):
            raise Malformed("it is not a JSON object")
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
            raise Malformed(f"output {output!r} is not true or false")
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
            raise Malformed("the answer has neither result nor error")
        if method == "Switch.GetStatus":
            output = result.get("output")
            if not isinstance(output, bool):
                raise Malformed(f"output {output!r} is not true or false")
            self.on = output
        elif method == "Switch.Toggle":
            was_on = result.get("was_on")
            if not isinstance(was_on, bool):
                raise Malformed(f"was_on {was_on!r} is not true or false")
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
