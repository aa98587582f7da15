"""A device that only counts what it is told: for tests, the benchmark and trying troupe.

Each action is appended as one JSON line to the file named by the device's `path` option
(or $TROUPE_COUNTER_FILE), so separate bot processes are counted in one place. The file is
also the device's memory, as a real device would be: every bot reads the same state from it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from troupe.federation import Action
from troupe.plugin import DeviceState, Driver, DriverError, command_origin


def apply(old: DeviceState, op: str, args: Mapping[str, Any]) -> DeviceState:
    """The state after one action."""
    if op == "toggle":
        return DeviceState(on=not old.on, brightness=old.brightness, color=old.color)
    if op == "off":
        return DeviceState(on=False, brightness=old.brightness, color=old.color)
    return DeviceState(
        on=True,
        brightness=args.get("brightness", old.brightness),
        color=args.get("color", old.color),
        temperature=args.get("temperature", old.temperature),
    )


class CounterDriver(Driver):
    """Counts actions; `delay_s` plays a slow device, `fail: true` a broken one."""

    name = "counter"

    async def start(self, devices: Mapping[str, Mapping[str, Any]]) -> None:
        self.devices = {name: dict(opts) for name, opts in devices.items()}
        self.memory: dict[str, DeviceState] = {name: DeviceState(on=False) for name in devices}

    def _path(self, device: str) -> Path | None:
        path = self.devices[device].get("path") or os.environ.get("TROUPE_COUNTER_FILE")
        return Path(path) if path else None

    async def act(self, device: str, action: Action) -> DeviceState:
        opts = self.devices[device]
        if opts.get("delay_s"):
            await asyncio.sleep(float(opts["delay_s"]))
        if opts.get("fail"):
            raise DriverError(f"the {device} is not answering")
        args = action.kwargs
        new = apply(await self.state(device), action.op, args)
        self.memory[device] = new
        path = self._path(device)
        if path is not None:
            await count(path, self.bot, device, action)
        return new

    async def state(self, device: str) -> DeviceState:
        path = self._path(device)
        if path is None:
            return self.memory[device]
        return await asyncio.to_thread(_replay, path, device)


async def count(path: Path, bot: str, device: str, action: Action) -> None:
    """Append one action, with the command it serves (channel, ts) and when, to the
    counter file: the benchmark's MQTT device counts its confirmed actions here too."""
    record = {"device": device, "op": action.op, "args": action.kwargs, "bot": bot}
    origin = command_origin.get()
    if origin:
        record.update(channel=origin[0], ts=origin[1])
    await asyncio.to_thread(_append, path, json.dumps({**record, "at": time.time()}))


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _replay(path: Path, device: str) -> DeviceState:
    state = DeviceState(on=False)
    if not path.exists():
        return state
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("device") == device:
            state = apply(state, record.get("op", ""), record.get("args") or {})
    return state
