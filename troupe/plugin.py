"""The plugin API: commands (regex + docstring), device drivers, discovery, slackbot support.

A plugin is a module. It declares commands with @command (a regex; the docstring is the
help text) and device drivers as Driver subclasses. Plugins written for slackbot keep
their own decorators (`from slackbot.bot import listen_to, respond_to`) unchanged: troupe
reads slackbot's registry after import. troupe claims every command itself, so plugins
carry no ack/unack code; the seed's slackmq calls inside a command still work.
"""

from __future__ import annotations

import abc
import importlib
import inspect
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from troupe import _imp_shim
from troupe.errors import TroupeError

if TYPE_CHECKING:
    from troupe.federation import Action
    from troupe.journal import ActionRecord

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "troupe.plugins"
BUILTIN_PLUGINS = ("troupe.plugins.system",)
"""The shipped plugins every bot loads: commands only."""
BUILTIN_DRIVERS: Mapping[str, str] = {
    "counter": "troupe.plugins.counter",
    "gpio_relay": "troupe.plugins.gpio_relay",
    "hue": "troupe.plugins.hue",
    "mqtt": "troupe.plugins.mqtt",
}
"""The shipped drivers and their plugins. Each brings its library (gpiozero, phue, paho),
so a bot imports one only when asked to (load_plugins' `drivers`): a Pi Zero's memory."""


class PluginError(TroupeError, ImportError):
    """A plugin could not be loaded or declares something invalid."""


@dataclass(frozen=True)
class CommandSpec:
    """One command: what text it matches, who answers, and its help (the docstring)."""

    name: str
    pattern: re.Pattern[str]
    func: Callable[..., Any]
    help: str
    plugin: str
    each: bool = False
    """Every live bot answers once (roll call), instead of exactly one bot."""
    admin: bool = False
    """Only the federation's admins may run it."""
    style: Literal["troupe", "slackbot"] = "troupe"
    addressed: bool = False
    """slackbot's respond_to: only when the bot is mentioned first or messaged directly."""


def command(
    pattern: str, *, each: bool = False, admin: bool = False, flags: int = re.IGNORECASE
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Declare an async function `func(ctx: Context)` as a chat command.

    The pattern is matched against the whole message (re.fullmatch, surrounding spaces and
    a trailing "!" or "?" ignored); the docstring's first line is its help.
    """
    compiled = re.compile(pattern, flags)

    def attach(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if not inspect.iscoroutinefunction(func):
            raise PluginError(f"command {func.__qualname__} must be an async function")
        func.__troupe_command__ = CommandSpec(  # type: ignore[attr-defined]
            name=func.__name__,
            pattern=compiled,
            func=func,
            help=inspect.cleandoc(func.__doc__ or "").split("\n")[0],
            plugin=func.__module__,
            each=each,
            admin=admin,
        )
        return func

    return attach


@dataclass(frozen=True)
class DeviceState:
    """What a driver knows of a device right now."""

    on: bool | None = None
    brightness: int | None = None
    color: str | None = None
    temperature: int | None = None
    online: bool = True
    detail: str = ""

    def describe(self) -> str:
        if not self.online:
            return "offline"
        if self.on is None:
            return self.detail or "unknown"
        text = "on" if self.on else "off"
        if self.on and self.brightness is not None:
            text += f", {self.brightness}%"
        if self.on and self.color:
            text += f", {self.color}"
        return text


command_origin: ContextVar[tuple[str, str] | None] = ContextVar("command_origin", default=None)
"""The (channel, ts) of the command a driver is acting for, for drivers that record it."""


class DriverError(TroupeError, RuntimeError):
    """A device did not do what it was asked; the message is one sentence for the chat."""


class Driver(abc.ABC):
    """A kind of device (gpio_relay, hue, mqtt, ...). One instance per bot.

    Subclasses must set `name` and implement act() and state(); they may override start()
    and stop(). act() gets one of troupe.operations' operations and returns the device's
    new state: the runtime words the answer. Blocking libraries run in asyncio.to_thread;
    act() raises DriverError with a sentence when the device did not do it.
    """

    name: ClassVar[str]
    options_model: ClassVar[Any] = None
    """The pydantic type of one device's options; `troupe check` validates each device."""
    section_model: ClassVar[Any] = None
    """The pydantic type of the file's section named like the driver (`hue:`), if it needs one."""

    def __init__(
        self,
        bot: str,
        options: Mapping[str, Any] | None = None,
        *,
        notify: Callable[[str], Awaitable[None]] | None = None,
        recall: Callable[[str], ActionRecord | None] | None = None,
        changed: Callable[[str], Awaitable[None]] | None = None,
        client: Any = None,
    ) -> None:
        """`options` is the federation file's section named like the driver (`hue:`,
        `mqtt:`), secrets still wrapped (call .reveal()). `notify(text)` posts in the
        bot's main channel (a wall switch, a motion sensor); `recall(device)` is the last
        action the journal holds for a device (a relay restoring its state at start);
        `changed(device)` tells the bot a device changed by itself (a wall switch), so
        whoever watches states (Home Assistant, the demo page) hears of it. `client` is
        the bot's shared connection for that section, if it has one (the mqtt driver gets
        the bot's one MQTT client, troupe.mqttclient); a driver given none opens its own."""
        self.bot = bot
        self.options = dict(options or {})
        self.notify = notify or _quiet
        self.recall = recall or (lambda _device: None)
        self.changed = changed or _quiet
        self.client = client

    async def start(self, devices: Mapping[str, Mapping[str, Any]]) -> None:
        """Set up the devices this bot drives: name -> the device's options."""
        return None

    async def stop(self) -> None:
        """Release hardware and connections."""
        return None

    @abc.abstractmethod
    async def act(self, device: str, action: Action) -> DeviceState:
        """Carry out the action (on, off, toggle, set: troupe.operations); return the
        device's state now, as the device confirmed it where it can."""

    @abc.abstractmethod
    async def state(self, device: str) -> DeviceState:
        """The device's current state."""


async def _quiet(_text: str) -> None:
    return None


@dataclass
class PluginSet:
    """Everything the loaded plugins declare."""

    commands: list[CommandSpec] = field(default_factory=list)
    drivers: dict[str, type[Driver]] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)

    def match(
        self, text: str, *, addressed: bool = True
    ) -> tuple[CommandSpec, re.Match[str]] | None:
        """The first command whose pattern matches the text (troupe commands first).
        `addressed`: the bot was mentioned first or messaged directly, which slackbot's
        respond_to commands require."""
        cleaned = text.strip().rstrip("!?.").strip()
        for spec in self.commands:
            if spec.addressed and not addressed:
                continue
            if spec.style == "troupe":
                found = spec.pattern.fullmatch(cleaned)
            else:
                found = spec.pattern.search(text)
            if found:
                return spec, found
        return None


def _slackbot_commands(module: ModuleType) -> list[CommandSpec]:
    """Commands this module registered through slackbot's own decorators."""
    # Not imported here: slackbot brings requests and its kin (5 MB). A plugin using its
    # decorators has imported slackbot.bot, hence slackbot.manager, already.
    manager = sys.modules.get("slackbot.manager")
    if manager is None:
        return []
    found = []
    for category, addressed in (("listen_to", False), ("respond_to", True)):
        for pattern, func in manager.PluginsManager.commands.get(category, {}).items():
            if getattr(func, "__module__", None) != module.__name__:
                continue
            found.append(
                CommandSpec(
                    name=func.__name__,
                    pattern=pattern,
                    func=func,
                    help=inspect.cleandoc(func.__doc__ or "").split("\n")[0],
                    plugin=module.__name__,
                    style="slackbot",
                    addressed=addressed,
                )
            )
    return found


def _collect(module: ModuleType, into: PluginSet) -> None:
    for value in vars(module).values():
        spec = getattr(value, "__troupe_command__", None)
        if isinstance(spec, CommandSpec) and spec.plugin == module.__name__:
            into.commands.append(spec)
        if (
            inspect.isclass(value)
            and issubclass(value, Driver)
            and value is not Driver
            and not inspect.isabstract(value)
            and _declared_in(value, module)
        ):
            if value.name in into.drivers and into.drivers[value.name] is not value:
                raise PluginError(
                    f"two plugins declare the driver {value.name!r}: "
                    f"{into.drivers[value.name].__module__} and {module.__name__}"
                )
            into.drivers[value.name] = value
    into.commands.extend(_slackbot_commands(module))


def _declared_in(value: type, module: ModuleType) -> bool:
    """Whether a class belongs to this plugin: defined in it, or, for a plugin that is a
    package (troupe.plugins.mqtt), in one of its modules; not merely imported from another."""
    owner = value.__module__
    return owner == module.__name__ or (
        hasattr(module, "__path__") and owner.startswith(module.__name__ + ".")
    )


def load_plugins(
    modules: Sequence[str] = (),
    *,
    builtins: bool = True,
    entry_points_too: bool = True,
    drivers: Collection[str] | None = None,
) -> PluginSet:
    """Import the built-in plugins, the configured modules and installed entry points.

    `drivers` names the drivers a bot needs: of the built-in driver plugins only theirs
    are imported (None: all, as `troupe check` wants). Should one of them come from no
    plugin, all are imported after all, so the bot's error lists every known driver.
    """
    names: list[str] = list(BUILTIN_PLUGINS) if builtins else []
    if builtins:
        names += [m for d, m in BUILTIN_DRIVERS.items() if drivers is None or d in drivers]
    names += [m for m in modules if m not in names]
    plugins = PluginSet()
    _imp_shim.install()  # slackbot plugins import slackbot.bot, which imports `imp`
    loaded = [_import(name) for name in names]
    if entry_points_too:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                module = ep.load()
            except ImportError as err:
                raise PluginError(f"cannot load the plugin entry point {ep.name!r}: {err}") from err
            if isinstance(module, ModuleType) and module.__name__ not in names:
                loaded.append(module)
                names.append(module.__name__)
    for module in loaded:
        _collect(module, plugins)
    missing = set(drivers or ()) - plugins.drivers.keys()
    rest = [m for m in BUILTIN_DRIVERS.values() if m not in names] if builtins else []
    if missing and rest:
        for name in rest:
            _collect(_import(name), plugins)
        names += rest
    plugins.modules = names
    return plugins


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise PluginError(
            f"cannot import the plugin {name!r} ({err}); check the plugins list "
            "in the federation file and that the module is installed"
        ) from err


def describe(commands: Iterable[CommandSpec]) -> list[str]:
    """Help lines: the pattern in a readable form and the docstring."""
    lines = []
    for spec in commands:
        if spec.help:
            lines.append(f"• `{_readable(spec.pattern.pattern)}` — {spec.help}")
    return lines


def _readable(pattern: str) -> str:
    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", pattern)
    text = re.sub(r"[\\^$]|\(\?:|\)\??|\?", "", text)
    return text.replace("|", " / ").strip()
