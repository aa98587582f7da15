"""The driver the bench's bots reach its MQTT plug with: troupe's mqtt driver, counting
each action the plug confirmed in the counter file, as the counter driver counts its own.

A bot loads it as a plugin (`plugins: [bench.mqttdriver]` in the bench's federation file);
it lives in the bench, not in troupe, because only the benchmark counts actions.
"""

from __future__ import annotations

import os
from pathlib import Path

from troupe.federation import Action
from troupe.plugin import DeviceState
from troupe.plugins.counter import count
from troupe.plugins.mqtt import MqttDriver

NAME = "counted_mqtt"


class CountedMqttDriver(MqttDriver):
    """An mqtt device whose confirmed actions are counted: the command went over the
    broker to the device, and the device said it switched, before the line is written.
    Its broker is the file's `counted_mqtt:` section (the mqtt driver's settings)."""

    name = NAME

    async def act(self, device: str, action: Action) -> DeviceState:
        state = await super().act(device, action)
        path = os.environ.get("TROUPE_COUNTER_FILE")
        if path:
            await count(Path(path), self.bot, device, action)
        return state
