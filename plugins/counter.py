"""A device that only counts what it is told: for tests, the benchmark and trying troupe.

Each action is appended as one JSON line to the file named by the device's `path` option
(or $TROUPE_COUNTER_FILE), so separate bot processes can be counted in one place; the
state is kept in memory per bot.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from troupe.federation import Action
from troupe.plugin import DeviceState, Driver, DriverError, command_origin, describe_setting


class CounterDriver(Driver):
    """Counts actions; `delay_s` plays a slow device, `fail: true` a broken one."""

    name = "counter"

    async def start(self, devices: Mapping[str, Mapping[str, Any]]) -> None:
        self.devices = {name: dict(opts) for name, opts in devices.items()}
        self.states: dict[str, DeviceState] = {name: DeviceState(on=False) for name in devices}

    async def act(self, device: str, action: Action) -> str:
        opts = self.devices[device]
        if opts.get("delay_s"):
            await asyncio.sleep(float(opts["delay_s"]))
        if opts.get("fail"):
            raise DriverError("the device is not answering")
        old = self.states[device]
        args = action.kwargs
        if action.op == "toggle":
            new = DeviceState(on=not old.on, brightness=old.brightness, color=old.color)
        elif action.op == "off":
            new = DeviceState(on=False, brightness=old.brightness, color=old.color)
        else:
            new = DeviceState(
                on=True,
                brightness=args.get("brightness", old.brightness),
                color=args.get("color", old.color),
                temperature=args.get("temperature", old.temperature),
            )
        self.states[device] = new
        path = opts.get("path") or os.environ.get("TROUPE_COUNTER_FILE")
        if path:
            record = {"device": device, "op": action.op, "args": args, "bot": self.bot}
            origin = command_origin.get()
            if origin:
                record.update(channel=origin[0], ts=origin[1])
            line = json.dumps({**record, "at": time.time()})
            await asyncio.to_thread(_append, str(path), line)
        verb = {"on": "turned on", "off": "turned off", "toggle": "toggled", "set": "set"}
        done = f"{verb.get(action.op, action.op)} the {device}"
        if action.op == "set":
            done += " to " + describe_setting(args)
        return done

    async def state(self, device: str) -> DeviceState:
        return self.states[device]


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
