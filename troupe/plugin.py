"""The plugin API: commands (regex + docstring), device drivers, discovery, slackbot support.

A plugin is a module (or a package). It declares commands with @command (a regex; the
docstring is the help text), each called with a Context: what a command may see and do,
more only by declaring `needs=`. Device drivers are Driver subclasses whose act() returns
the device's new state; the runtime words the answer. Plugins written for slackbot keep
their own decorators (`from slackbot.bot import listen_to, respond_to`) unchanged: troupe
reads slackbot's registry after import. troupe claims every command itself, so plugins
carry no ack/unack code; the seed's slackmq calls inside a command still work.
docs/plugins.md is the author's guide.
"""

from __future__ import annotations

import abc
import importlib
import inspect
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from troupe import _imp_shim
from troupe.errors import TroupeError

if TYPE_CHECKING:
    from troupe.devents import Emit
    from troupe.federation import Action
    from troupe.journal import ActionRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    needs: frozenset[str] = frozenset()
    """The capabilities (NEEDS) its Context grants beyond the common ones."""


NEEDS: Mapping[str, str] = {
    "slack": "ctx.slack: post as the bot anywhere, and send direct messages (SlackPoster)",
    "services": "ctx.service(cls): a service running beside the bot, by its class",
    "transport": "ctx.connection: how the bot is connected to Slack (kind, connected)",
}
"""What a command may ask for with `needs=`; every other command gets the Context alone."""


def command(
    pattern: str,
    *,
    each: bool = False,
    admin: bool = False,
    needs: Iterable[str] = (),
    flags: int = re.IGNORECASE,
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Declare an async function `func(ctx: Context)` as a chat command.

    The pattern is matched against the whole message (re.fullmatch, surrounding spaces and
    a trailing "!" or "?" ignored); the docstring's first line is its help. `needs` names
    the capabilities (NEEDS) it uses beyond the Context's common ones.
    """
    compiled = re.compile(pattern, flags)
    wanted = frozenset(needs)
    if unknown := sorted(wanted - NEEDS.keys()):
        raise PluginError(
            f"needs={unknown} names no capability; a command may need {', '.join(NEEDS)}"
        )

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
            needs=wanted,
        )
        return func

    return attach


class DeviceFacts(Protocol):
    """A device of the federation file, as a command sees it."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def area(self) -> str | None: ...
    @property
    def driver(self) -> str: ...
    @property
    def owner(self) -> str | None:
        """The bot that alone drives it; None: any bot."""


@dataclass(frozen=True)
class Message:
    """The chat message that ran the command."""

    channel: str
    ts: str
    user: str | None
    text: str
    thread_ts: str | None = None
    """The thread it was said in; None at the top level of the channel."""


@dataclass(frozen=True)
class Me:
    """The bot running the command."""

    name: str
    host: str
    version: str
    mode: str
    """How it reaches Slack: socket, rtm or shared-app."""
    started: float
    roster: tuple[str, ...]
    """Every bot of the federation, this one included."""
    clock: str
    """How far this Pi's clock is from Slack's, in words."""

    @property
    def uptime_s(self) -> float:
        return time.time() - self.started


@dataclass(frozen=True)
class Connection:
    """How the bot is connected to Slack (the `transport` capability)."""

    kind: str
    """Socket Mode, RTM, ..."""
    connected: bool


class SlackPoster:
    """The part of Slack's Web API a plugin may use when it declares needs="slack": post
    as the bot in a channel or a thread, or to one person directly. Nothing that reads the
    workspace, pins, or touches troupe's claims."""

    def __init__(self, client: Any) -> None:
        self._client = client  # slack_sdk's AsyncWebClient (the bot's, so calls are counted)

    async def post(self, channel: str, text: str, thread_ts: str | None = None) -> str:
        """Post a message; returns its ts."""
        answer = await self._client.chat_postMessage(
            channel=channel, text=text, thread_ts=thread_ts
        )
        return str(answer["ts"])

    async def direct_message(self, user: str, text: str) -> str:
        """Post to one person in a direct message; returns its ts. Needs im:write."""
        opened = await self._client.conversations_open(users=user)
        return await self.post(opened["channel"]["id"], text)


@dataclass(frozen=True, eq=False)
class Context:
    """What a troupe command function receives: the match, the message, this bot, the
    devices, and a few things it may do. Nothing here reaches into the runtime: a command
    that needs more declares it (`@command(..., needs=("slack",))`, see NEEDS)."""

    match: re.Match[str]
    message: Message
    me: Me
    devices: Mapping[str, DeviceFacts]
    scenes: tuple[str, ...]
    commands: tuple[CommandSpec, ...]
    """Every command the loaded plugins declare (what `help` lists)."""
    ports: ContextPorts = field(repr=False)
    """The runtime's side of the methods below; plugins call the methods, not these."""
    needs: frozenset[str] = frozenset()

    @property
    def user(self) -> str | None:
        """Who asked (a Slack user id)."""
        return self.message.user

    async def say(self, text: str) -> None:
        """Answer in the command's thread."""
        await self.ports.say(text)

    async def announce(self, text: str) -> None:
        """Post in the bot's main channel (not in the thread)."""
        await self.ports.announce(text)

    async def once(self, work: Callable[[], Awaitable[None]]) -> None:
        """For a command every bot runs (each=True): exactly one bot of the fleet does
        `work` (claimed through Slack as device commands are); the others skip it."""
        await self.ports.once(work)

    async def answer_once(self, text: str) -> None:
        """For a command every bot runs: exactly one bot answers `text`."""
        await self.once(lambda: self.say(text))

    async def state(self, device: str) -> DeviceState:
        """A device's state now (offline, with the reason, if this bot cannot tell)."""
        return await self.ports.state(device)

    def history(self, device: str | None = None, limit: int = 10) -> list[ActionRecord]:
        """This bot's journal: the latest actions, newest first, of one device or all."""
        return self.ports.history(device, limit)

    async def fleet_history(self, device: str | None = None) -> str:
        """What the whole federation did to a device (any device if None), read from
        Slack: the answer's text, newest first, with who asked."""
        return await self.ports.fleet_history(device)

    def section(self, name: str) -> Mapping[str, Any]:
        """The federation file's section named like a driver (`hue:`), secrets still
        wrapped; empty if the file has none."""
        return self.ports.section(name)

    @property
    def slack(self) -> SlackPoster:
        """Post as the bot beyond the command's thread (needs="slack")."""
        self._granted("slack")
        return self.ports.slack()

    def service(self, kind: type[T]) -> T | None:
        """The running service of this class, if the bot runs one (needs="services")."""
        return self.ports.service(kind) if self._granted("services") else None

    @property
    def connection(self) -> Connection:
        """How this bot is connected to Slack (needs="transport")."""
        self._granted("transport")
        return self.ports.connection()

    def _granted(self, need: str) -> bool:
        if need not in self.needs:
            raise PluginError(
                f"the command uses ctx's {need!r} capability without declaring it: "
                f"@command(..., needs=({need!r},))"
            )
        return True


@dataclass(frozen=True)
class ContextPorts:
    """The runtime's implementation of a Context's methods (the bot builds one per command)."""

    say: Callable[[str], Awaitable[None]]
    announce: Callable[[str], Awaitable[None]]
    once: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]
    state: Callable[[str], Awaitable[DeviceState]]
    history: Callable[[str | None, int], list[ActionRecord]]
    fleet_history: Callable[[str | None], Awaitable[str]]
    section: Callable[[str], Mapping[str, Any]]
    slack: Callable[[], SlackPoster]
    service: Callable[[type[Any]], Any]
    connection: Callable[[], Connection]


@dataclass(frozen=True)
class DeviceState:
    """What a driver knows of a device right now."""

    on: bool | None = None
    brightness: int | None = None
    color: str | None = None
    temperature: int | None = None
    online: bool = True
    detail: str = ""

    def shows(self, op: str, args: Mapping[str, Any]) -> bool:
        """Whether the device already is as `op` with `args` leaves it (on, off, set: the
        idempotent operations); False when it cannot tell (offline, state unknown)."""
        if not self.online or self.on is None or op not in ("on", "off", "set"):
            return False
        if op == "off":
            return not self.on
        fields = ("brightness", "color", "temperature")
        return self.on and all(getattr(self, k) == args[k] for k in fields if k in args)

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


async def _send_again() -> str | None:
    return None


resend_check: ContextVar[Callable[[], Awaitable[str | None]]] = ContextVar(
    "resend_check", default=_send_again
)
"""Asked by a driver before it sends an action once more that a dropped connection cut
short (a broker restarting): None to send it, or the sentence saying why not. Order is
the runtime's, not the driver's: while the device was away a newer command may have
reached it, and the resend would undo it. The runtime sets it for each action."""


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
        emit: Emit | None = None,
    ) -> None:
        """`options` is the federation file's section named like the driver (`hue:`,
        `mqtt:`), secrets still wrapped (call .reveal()). `notify(text)` posts in the
        bot's main channel (a wall switch, a motion sensor); `recall(device)` is the last
        action the journal holds for a device (a relay restoring its state at start);
        `changed(device)` tells the bot a device changed by itself (a wall switch), so
        whoever watches states (Home Assistant, the demo page) hears of it. `client` is
        the bot's shared connection for that section, if it has one (the mqtt driver gets
        the bot's one MQTT client, troupe.mqttclient); a driver given none opens its own.
        `emit(device, kind, detail)` reports what a device did by itself (troupe.devents:
        pressed, motion, offline, online, changed): the runtime posts it in chat, once
        across the fleet, and automations may trigger on it."""
        self.bot = bot
        self.options = dict(options or {})
        self.notify = notify or _quiet
        self.recall = recall or (lambda _device: None)
        self.changed = changed or _quiet
        self.client = client
        self.emit: Emit = emit or _no_event

    async def start(self, devices: Mapping[str, Mapping[str, Any]]) -> None:
        """Set up the devices this bot drives: name -> the device's options."""
        return None

    async def stop(self) -> None:
        """Release hardware and connections."""
        return None

    async def ready(self, device: str) -> bool:
        """Wait, briefly, for a device that cannot be reached just now but soon will be
        (its connection dropped and is coming back); return at once otherwise. True when
        it waited. The runtime waits here before it checks the order of commands, so a
        command that waited still yields to a newer one that reached the device meanwhile,
        or, when it waited, to a newer one still on its way; act() reports a device that
        stayed unreachable."""
        return False

    @abc.abstractmethod
    async def act(self, device: str, action: Action) -> DeviceState:
        """Carry out the action (on, off, toggle, set: troupe.operations); return the
        device's state now, as the device confirmed it where it can."""

    @abc.abstractmethod
    async def state(self, device: str) -> DeviceState:
        """The device's current state."""


async def _quiet(_text: str) -> None:
    return None


async def _no_event(_device: str, _kind: str, _detail: str = "") -> None:
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
    """A command's regex as people read it: "history(?: (?:of |for )?(?P<device>.+))?" ->
    "history [[of/for] <device>]"."""
    text = re.sub(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)", r"<\1>", pattern)
    text = re.sub(r"(\w) \?(\w)", r"\1 \2", text)  # "roll ?call"

    def either(inner: str) -> str:
        return "/".join(part.strip() for part in inner.split("|"))

    before = None
    while before != text:
        before = text
        text = re.sub(r"\(\?:([^()]*)\)\?", lambda m: f"[{either(m[1])}]", text)
        text = re.sub(r"\(\?:([^()]*)\)(?!\?)", lambda m: either(m[1]), text)
    text = re.sub(r"(\S)\[", r"\1 [", text)
    text = re.sub(r"\]([^\s\]])", r"] \1", text)
    text = re.sub(r"[\\^$]", "", text)
    return " / ".join(part.strip() for part in text.split("|")).strip()
