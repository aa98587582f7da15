"""The gpio_relay driver: relays on a Pi's GPIO pins, their wall switches and motion sensors.

A relay device (`pin: 17`) is a gpiozero OutputDevice; `button: 5` adds a wall switch that
toggles it and emits a `pressed` event; a sensor device (`motion: 22`) is a PIR
MotionSensor that emits a `motion` event at most once per `interval_s`. The runtime words
and posts the events (troupe.announcer), so this driver never writes to chat but to
report a switch that failed.
gpiozero calls back from its own threads; those calls cross into the bot's event loop
with call_soon_threadsafe, and every gpiozero call from the loop runs in a thread with a
bounded wait. See docs/devices-gpio.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from gpiozero import Button, Device, MotionSensor, OutputDevice
from gpiozero.exc import BadPinFactory, GPIOPinInUse, GPIOZeroError, PinInvalidPin
from gpiozero.pins import Factory
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from troupe.federation import Action
from troupe.hardware.gpio import GpioBoard, Wire, board_for
from troupe.plugin import DeviceState, Driver, DriverError
from troupe.tasks import spawn

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_S = 3.0
"""How long a GPIO call may take before the device is reported as not answering."""
BOUNCE_S = 0.05

BcmPin = Annotated[int, Field(strict=True, ge=0, le=27)]


class RelayOptions(BaseModel):
    """A relay device's own keys in the federation file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pin: BcmPin
    active_high: bool = True
    initial: Literal["restore", "off", "on"] = "restore"
    button: BcmPin | None = None


class MotionOptions(BaseModel):
    """A motion sensor device's own keys in the federation file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    motion: BcmPin
    interval_s: float = Field(default=60.0, gt=0)
    message: str | None = Field(default=None, min_length=1)


DeviceOptions = Annotated[
    Annotated[RelayOptions, Tag("pin")] | Annotated[MotionOptions, Tag("motion")],
    Discriminator(lambda keys: "motion" if isinstance(keys, dict) and "motion" in keys else "pin"),
]
"""A device's keys: a motion sensor when it names `motion`, else a relay."""


_HINTS = {
    "pin": "the relay's BCM GPIO number, 0 to 27",
    "button": "the wall switch's BCM GPIO number, 0 to 27",
    "motion": "the motion sensor's BCM GPIO number, 0 to 27",
    "active_high": "true, or false for an active-low relay board",
    "initial": "restore, off or on",
    "interval_s": "seconds between two motion events, more than 0",
    "message": "the text to post on motion",
}


@dataclass
class _Relay:
    name: str
    options: RelayOptions
    device: OutputDevice
    button: Button | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Motion:
    name: str
    options: MotionOptions
    device: MotionSensor
    text: str
    announced_at: float | None = None


_default_factory: Factory | None = None
_default_lock = threading.Lock()


def _system_factory() -> Factory:
    """gpiozero's default factory (lgpio on a Pi), built once per process but never set
    as gpiozero's global Device.pin_factory, so nothing else in the process is affected."""
    global _default_factory
    with _default_lock:
        if _default_factory is None:
            _default_factory = Device._default_pin_factory()
        return _default_factory


class GpioRelayDriver(Driver):
    """Relays, wall switches and motion sensors on this Pi's GPIO header."""

    name = "gpio_relay"
    options_model = DeviceOptions

    def __init__(
        self,
        bot: str,
        options: Mapping[str, Any] | None = None,
        *,
        pin_factory: Factory | GpioBoard | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = TIMEOUT_S,
        **hooks: Any,
    ) -> None:
        """`pin_factory` (or the options key of that name) is a gpiozero Factory or a
        GpioBoard; without one, GPIOZERO_PIN_FACTORY=mock uses this bot's simulated board
        and anything else gpiozero's default factory. `clock` times motion messages."""
        super().__init__(bot, options, **hooks)
        self._given = pin_factory if pin_factory is not None else self.options.get("pin_factory")
        self.clock = clock
        self.timeout_s = timeout_s
        self.board: GpioBoard | None = None
        self.factory: Factory | None = None
        self._relays: dict[str, _Relay] = {}
        self._motions: dict[str, _Motion] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # lifecycle ------------------------------------------------------------------------------

    async def start(self, devices: Mapping[str, Mapping[str, Any]]) -> None:
        self._loop = asyncio.get_running_loop()
        unknown = sorted(set(self.options) - {"pin_factory"})
        if unknown:
            raise DriverError(
                f"the gpio_relay section has an unknown key {unknown[0]!r}; it takes none"
            )
        parsed = {name: _parse(name, opts) for name, opts in devices.items()}
        _check_pins(parsed)
        try:
            self.factory = await self._resolve_factory()
            for name, opts in parsed.items():
                if isinstance(opts, RelayOptions):
                    await self._add_relay(name, opts)
                else:
                    await self._add_motion(name, opts)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Detach callbacks, finish pending messages, close every device (pins released)."""
        self._closing = True
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=self.timeout_s)
            for task in late:
                task.cancel()
        devices: list[Device] = []
        for relay in self._relays.values():
            devices += [relay.device] + ([relay.button] if relay.button else [])
        devices += [m.device for m in self._motions.values()]
        names = list(self._relays) + list(self._motions)
        self._relays.clear()
        self._motions.clear()
        if devices:
            await self._call("closing the GPIO devices", lambda: _close_all(devices))
        if self.board is not None:
            for name in names:
                self.board.unwire(name)

    async def _resolve_factory(self) -> Factory:
        given = self._given
        if isinstance(given, GpioBoard):
            self.board = given
            return given.factory
        if isinstance(given, Factory):
            return given
        if given is not None:
            raise DriverError(
                f"pin_factory must be a gpiozero pin factory or a GpioBoard, not {given!r}"
            )
        if os.environ.get("GPIOZERO_PIN_FACTORY", "").strip().lower() == "mock":
            self.board = board_for(self.bot)
            assert self.board is not None
            return self.board.factory
        try:
            return await asyncio.wait_for(asyncio.to_thread(_system_factory), self.timeout_s)
        except Exception as err:  # gpiozero raises whatever the pin library raises
            raise DriverError(
                f"no GPIO library works on this machine ({err}); on a Raspberry Pi install "
                "python3-lgpio, elsewhere set GPIOZERO_PIN_FACTORY=mock to try troupe "
                "without hardware"
            ) from err

    async def _add_relay(self, name: str, opts: RelayOptions) -> None:
        initial = self._initial(name, opts)
        factory = self.factory
        relay = await self._open(
            name,
            opts.pin,
            "relay",
            lambda: OutputDevice(
                opts.pin,
                active_high=opts.active_high,
                initial_value=initial,
                pin_factory=factory,
            ),
        )
        entry = _Relay(name, opts, relay)
        self._relays[name] = entry
        self._label(Wire(name, "relay", opts.pin, opts.active_high))
        if opts.button is not None:
            pin = opts.button
            pressed = self._from_thread(self._pressed, name)

            def wall_switch() -> Button:
                button = Button(pin, pull_up=True, bounce_time=BOUNCE_S, pin_factory=factory)
                button.when_pressed = pressed
                return button

            entry.button = await self._open(name, pin, "wall switch", wall_switch)
            self._label(Wire(name, "wall switch", pin, active_high=False))

    async def _add_motion(self, name: str, opts: MotionOptions) -> None:
        factory = self.factory
        moved = self._from_thread(self._moved, name)

        def sensor() -> MotionSensor:
            found = _settled(MotionSensor(opts.motion, pin_factory=factory))
            found.when_motion = moved
            return found

        device = await self._open(name, opts.motion, "motion sensor", sensor)
        self._motions[name] = _Motion(name, opts, device, opts.message or "")
        self._label(Wire(name, "motion sensor", opts.motion, active_high=True))

    def _initial(self, name: str, opts: RelayOptions) -> bool:
        """The state to switch the relay to at start: `on`, `off`, or the journal's last."""
        if opts.initial != "restore":
            return opts.initial == "on"
        record = self.recall(name)
        if record is None or record.status != "done":
            return False
        if record.state is not None and record.state.get("on") is not None:
            return bool(record.state["on"])
        return record.action in ("on", "set")  # journaled before troupe kept the state

    def _label(self, wire: Wire) -> None:
        if self.board is not None:
            self.board.wire(wire)

    # the driver API -----------------------------------------------------------------------

    async def act(self, device: str, action: Action) -> DeviceState:
        if device in self._motions:
            raise DriverError(f"the {device} is a motion sensor; it cannot be switched")
        relay = self._relays.get(device)
        if relay is None:
            raise DriverError(f"the {device} is not a GPIO device of this bot")
        if action.op == "set":
            raise DriverError(f"the {device} can only be switched on and off")
        if action.op not in ("on", "off", "toggle"):
            raise DriverError(f"the {device} cannot {action.op}")
        return DeviceState(on=await self._switch(relay, action.op))

    async def state(self, device: str) -> DeviceState:
        relay = self._relays.get(device)
        if relay is not None:
            on = await self._call(f"reading the {device}", lambda: relay.device.is_active)
            return DeviceState(on=bool(on))
        motion = self._motions.get(device)
        if motion is None:
            raise DriverError(f"the {device} is not a GPIO device of this bot")
        seen = await self._call(f"reading the {device}", lambda: motion.device.motion_detected)
        return DeviceState(detail="sensing motion" if seen else "quiet")

    def gpio_device(self, device: str) -> OutputDevice | MotionSensor:
        """The gpiozero object behind a device (its relay or its sensor): what a test
        waits on (wait_for_no_motion) and what a status page reads."""
        if device in self._relays:
            return self._relays[device].device
        if device in self._motions:
            return self._motions[device].device
        raise KeyError(device)

    # switching ----------------------------------------------------------------------------

    async def _switch(self, relay: _Relay, op: str) -> bool:
        """Drive the relay (on, off or toggle) and return whether it is now on."""
        device = relay.device

        def flip() -> bool:
            if op == "on":
                device.on()
            elif op == "off":
                device.off()
            else:
                device.toggle()
            return bool(device.is_active)

        async with relay.lock:
            return await self._call(f"switching the {relay.name}", flip)

    async def _call(self, what: str, func: Callable[[], T]) -> T:
        """Run one gpiozero call in a thread, bounded; its failures become one sentence."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(func), self.timeout_s)
        except TimeoutError as err:
            raise DriverError(
                f"the GPIO did not answer within {self.timeout_s:g} s while {what}"
            ) from err
        except (GPIOZeroError, OSError) as err:
            raise DriverError(f"the GPIO failed while {what}: {err}") from err

    async def _open(self, name: str, pin: int, role: str, build: Callable[[], T]) -> T:
        """Make one gpiozero device, turning the ways a pin can fail into a sentence."""
        where = f"GPIO {pin} ({role} of the {name})"
        try:
            return await asyncio.wait_for(asyncio.to_thread(build), self.timeout_s)
        except TimeoutError as err:
            raise DriverError(f"{where} did not open within {self.timeout_s:g} s") from err
        except GPIOPinInUse as err:
            raise DriverError(f"{where} is already in use by another device or program") from err
        except BadPinFactory as err:
            raise DriverError(f"{where} cannot be opened: no GPIO library works here") from err
        except PinInvalidPin as err:
            raise DriverError(f"{where} does not exist on this board") from err
        except PermissionError as err:
            raise DriverError(
                f"{where} cannot be opened: permission denied; add the user to the gpio group"
            ) from err
        except (GPIOZeroError, OSError) as err:
            raise DriverError(f"{where} cannot be opened: {err}") from err

    # gpiozero's threads -> the event loop ----------------------------------------------------

    def _from_thread(self, handler: Callable[[str], None], name: str) -> Callable[[], None]:
        """A gpiozero callback that hands the event to the loop (gpiozero calls it from
        its own thread, or from the caller's when a mock pin is driven)."""

        def fire() -> None:
            loop = self._loop
            if self._closing or loop is None or loop.is_closed():
                return
            loop.call_soon_threadsafe(handler, name)

        return fire

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        spawn(coro, what, self._tasks, logger=log)

    def _pressed(self, name: str) -> None:
        if not self._closing and name in self._relays:
            self._spawn(self._wall_toggle(name), f"the wall switch of the {name}")

    async def _wall_toggle(self, name: str) -> None:
        relay = self._relays[name]
        try:
            on = await self._switch(relay, "toggle")
        except DriverError as err:
            log.error("the wall switch of the %s could not toggle it: %s", name, err)
            await self.notify(f"the wall switch of the {name} was pressed, but {err}")
            return
        await self.emit(name, "pressed", "on" if on else "off")
        await self.changed(name)

    def _moved(self, name: str) -> None:
        motion = self._motions.get(name)
        if self._closing or motion is None:
            return
        now = self.clock()
        last = motion.announced_at
        if last is not None and now - last < motion.options.interval_s:
            log.debug("motion at the %s within %gs of the last message", name, now - last)
            return
        motion.announced_at = now
        self._spawn(self.emit(name, "motion", motion.text), f"the motion event of the {name}")


# options --------------------------------------------------------------------------------------


def _parse(name: str, options: Mapping[str, Any]) -> RelayOptions | MotionOptions:
    """Validate one device's keys; the error names the device and the key."""
    opts = dict(options)
    if "motion" in opts and "pin" in opts:
        raise DriverError(
            f"the {name} has both pin (a relay) and motion (a motion sensor); "
            "a device is one or the other"
        )
    model: type[RelayOptions] | type[MotionOptions] = (
        MotionOptions if "motion" in opts else RelayOptions
    )
    try:
        return model.model_validate(opts)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        known = ", ".join(model.model_fields)
        if first["type"] == "extra_forbidden":
            raise DriverError(
                f"the {name} has an unknown option {key!r}; gpio_relay knows {known}"
            ) from err
        if first["type"] == "missing":
            raise DriverError(
                f"the {name} needs the option {key!r} ({_HINTS.get(key, key)})"
            ) from err
        raise DriverError(
            f"the {name}'s option {key!r} cannot be {first.get('input')!r}; "
            f"write {_HINTS.get(key, 'a valid value')}"
        ) from err


def _check_pins(parsed: Mapping[str, RelayOptions | MotionOptions]) -> None:
    """Two devices (or a relay and its own switch) on one pin would fight over it."""
    users: dict[int, str] = {}
    for name, opts in parsed.items():
        if isinstance(opts, RelayOptions):
            uses = [(opts.pin, f"the {name}")]
            if opts.button is not None:
                uses.append((opts.button, f"the wall switch of the {name}"))
        else:
            uses = [(opts.motion, f"the {name}")]
        for pin, who in uses:
            if pin in users:
                raise DriverError(
                    f"{users[pin]} and {who} both use GPIO {pin}; give each its own pin"
                )
            users[pin] = who


def _settled(sensor: MotionSensor, timeout: float = 1.0) -> MotionSensor:
    """Wait (bounded) for the sensor's first sample: gpiozero fires no event for it, so
    motion that starts before it would go unannounced."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sensor.wait_for_inactive(0.02) or sensor.wait_for_active(0):
            break
    return sensor


def _close_all(devices: list[Device]) -> None:
    for device in devices:
        device.close()
