"""The federation file (one YAML file, the same on every Pi) -> a validated Federation."""

from __future__ import annotations

import difflib
import os
import re
import socket
import types
import typing
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from troupe.automations import Automation, LocationSettings, ScheduleSettings
from troupe.errors import TroupeError
from troupe.secrets import Secret, SecretError, looks_like_slack_token
from troupe.update import UpdateSettings

DEFAULT_PATH = "/etc/troupe/federation.yaml"
Kind = Literal["light", "fan", "switch", "outlet", "cover", "sensor"]
Mode = Literal["app-per-bot", "shared-app", "rtm"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
MODES: tuple[str, ...] = typing.get_args(Mode)
Loc = tuple[str | int, ...]


# --- problems ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the federation file, printed as one `file:line: key: message`."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return ": ".join(part for part in (where, self.key, self.message) if part)


class ConfigError(TroupeError, ValueError):
    """The federation file cannot be used; carries every problem found, one per line."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --- value types ------------------------------------------------------------------------


def canonical(name: str) -> str:
    """A device, area or scene name as troupe compares it: lowercase, single spaces."""
    return " ".join(name.split()).lower()


def _name(value: object) -> object:
    if isinstance(value, str):
        value = canonical(value)
        if not value:
            raise ValueError("a name cannot be empty")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a name must be text")
    else:
        value = str(value)
    return value


_BOT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _bot_name(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("a bot name must be text (the Pi's hostname)")
    value = value.strip().lower()
    if not _BOT_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a hostname; use letters, digits and '-' (like kitchen-pi)"
        )
    return value


_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")


def _channel(value: object) -> object:
    if value is None:
        raise ValueError(
            'no channel given; a #name must be quoted in YAML, or # starts a comment: "#home"'
        )
    if not isinstance(value, str):
        raise ValueError("a channel must be a #name or a channel id like C0123ABC")
    value = value.strip()
    if _CHANNEL_ID.fullmatch(value):
        return value
    if value.startswith("#") and 1 < len(value) <= 81 and not re.search(r"[\s#,.]", value[1:]):
        return value.lower()
    raise ValueError(f"{value!r} is not a #name (quoted) or a channel id like C0123ABC")


def _command(value: object) -> object:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("the alias stands for no command; write the command text it replaces")
    if not isinstance(value, str):
        raise ValueError("an alias must stand for command text")
    return " ".join(value.split())


_USER_ID = re.compile(r"[UWB][A-Z0-9]{2,}")


_USER_NAME = re.compile(r"@?([a-z0-9][a-z0-9._-]{0,79})", re.IGNORECASE)


def _user(value: object) -> object:
    """A Slack user id, '*', or a user name, kept as '@name' (each bot looks it up at start)."""
    if value == "*" or (isinstance(value, str) and _USER_ID.fullmatch(value)):
        return value
    if isinstance(value, str) and (named := _USER_NAME.fullmatch(value)):
        return "@" + named.group(1).lower()
    raise ValueError(
        f"{value!r} is not a Slack user id (like U012ABC), a user name (like @alice) "
        "or '*' for everyone"
    )


_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _module(value: object) -> object:
    if isinstance(value, str) and _MODULE.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is not an import path like mypackage.myplugin")


def _language(value: str) -> str:
    from home_assistant_intents import get_languages

    known = list(get_languages())
    if value not in known:
        raise ValueError(
            f"{value!r} is not a language of home-assistant-intents{_hint(value, known)}"
        )
    return value


def _journal(value: str) -> str:
    try:
        value.format(bot="x")
    except (KeyError, IndexError, ValueError):
        raise ValueError("the journal path may use {bot} and no other {placeholder}") from None
    return value


def _brightness(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 100:
        raise ValueError(f"must be between 0 and 100 (got {value})")
    return value


def _slug(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
        raise ValueError(f"{value!r} is not a short lowercase name (letters, digits, - and _)")
    return value


Name = Annotated[str, BeforeValidator(_name)]
BotName = Annotated[str, BeforeValidator(_bot_name)]
ChannelRef = Annotated[str, BeforeValidator(_channel)]
Command = Annotated[str, BeforeValidator(_command)]
UserRef = Annotated[str, BeforeValidator(_user)]
Module = Annotated[str, BeforeValidator(_module)]


def _none_is_empty(value: object) -> object:
    return {} if value is None else value


def _none_is_empty_list(value: object) -> object:
    return () if value is None else value


# --- the model --------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackSettings(_Frozen):
    """How the bots meet Slack: one app per bot, one shared app, or classic RTM."""

    mode: Mode = "app-per-bot"
    channel: ChannelRef
    base_url: str | None = None
    bot_token: Secret | None = None
    app_token: Secret | None = None

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL like http://127.0.0.1:3000/api/")
        return value if value.endswith("/") else value + "/"


class BotSettings(_Frozen):
    """One bot of the roster: its own tokens (app-per-bot mode)."""

    bot_token: Secret | None = None
    app_token: Secret | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: object) -> object:
        return _none_is_empty(data)


class MqttSettings(_Frozen):
    """The MQTT broker: devices that speak MQTT, and the bus between bots if `bus`."""

    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    ca_file: str | None = None
    """The CA that signed the broker's certificate (default: the system's CAs)."""
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(str)] = "5"
    """MQTT protocol version: 5, or 3.1.1 for older brokers."""
    bus: bool = False
    bus_key: Secret | None = None
    """The federation's secret that seals bus relays (env:/file:, the same on every bot)."""
    discovery: bool = False
    """Publish each bot's GPIO relays to Home Assistant (MQTT discovery)."""
    discovery_prefix: str = "homeassistant"

    @model_validator(mode="after")
    def _bus_needs_a_key(self) -> MqttSettings:
        if self.bus and self.bus_key is None:
            raise ValueError(
                "bus: true needs bus_key, the secret that seals relays between the bots; "
                "add bus_key: env:TROUPE_BUS_KEY (or file:PATH), the same on every bot"
            )
        return self


class HueSettings(_Frozen):
    """The Philips Hue bridge; its username is an API key, so a secret."""

    bridge: str
    username: Secret | None = None


class SlackmqSettings(_Frozen):
    """Timings of the pin-based claim that makes each command act exactly once."""

    stale_s: float = Field(default=30, gt=0)
    lease_s: float = Field(default=15, gt=0)
    stagger_s: float = Field(default=0.4, ge=0)
    linger_s: float = Field(default=45, gt=0)


_DEVICE_FIELDS = ("kind", "area", "driver", "owner", "aliases", "confirm")


class Device(_Frozen):
    """A device: the common fields, and `options` for the driver to validate itself."""

    kind: Kind
    area: Name | None = None
    driver: Annotated[str, AfterValidator(lambda v: _nonempty(v, "driver"))]
    owner: BotName | None = None
    aliases: Annotated[tuple[Name, ...], BeforeValidator(_none_is_empty_list)] = ()
    options: dict[str, Any] = Field(default_factory=dict)
    confirm: bool | None = None
    """Ask for a 👍 before acting; unset: yes for covers and kinds with lock or door."""

    @model_validator(mode="before")
    @classmethod
    def _split_options(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        options = {k: v for k, v in data.items() if k not in _DEVICE_FIELDS}
        return {k: v for k, v in data.items() if k in _DEVICE_FIELDS} | {"options": options}


def _nonempty(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} cannot be empty")
    return value.strip()


_HOME_ASSISTANT_KEYS = {
    "state": "on",
    "brightness_pct": "brightness",
    "color_temp_kelvin": "temperature",
    "color_name": "color",
}
"""Home Assistant's spellings of a scene's keys -> troupe's own, normalised at load."""


def _home_assistant_keys(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    for theirs, ours in _HOME_ASSISTANT_KEYS.items():
        if theirs not in data:
            continue
        if ours in data:
            raise ValueError(f"{theirs} and {ours} say the same thing; keep one")
        value = data.pop(theirs)
        if theirs == "state":
            if isinstance(value, str) and value.strip().lower() in ("on", "off"):
                value = value.strip().lower() == "on"
            elif not isinstance(value, bool):
                raise ValueError(f"state must be on or off (got {value!r})")
        data[ours] = value
    return data


class SceneState(_Frozen):
    """What a scene does to one device; `on`/`off`/true/false are shorthands for `on`.

    Home Assistant's spellings work too (`state: on`, `brightness_pct`, `color_temp_kelvin`,
    `color_name`) and become troupe's keys at load, so the bot sees one vocabulary.
    """

    on: bool | None = None
    brightness: Annotated[int | None, AfterValidator(_brightness)] = None
    color: str | None = None
    temperature: int | None = Field(default=None, ge=1000, le=12000)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        if isinstance(data, bool):
            return {"on": data}
        if isinstance(data, str) and data.strip().lower() in ("on", "off"):
            return {"on": data.strip().lower() == "on"}
        if not isinstance(data, dict):
            raise ValueError(
                f"{data!r} is not a device state; use on, off, or a mapping with "
                "on, brightness (0-100), color, temperature (kelvin)"
            )
        if not data:
            raise ValueError("says nothing to do; use on, off, or a mapping with on, brightness")
        return _home_assistant_keys(data)


def _any_channel(value: object) -> object:
    return value if value == "*" else _channel(value)


class AccessRule(_Frozen):
    """One grant or refusal. The first rule that matches a request decides it; a request
    no rule matches is allowed (for the users `access.users` lets in at all)."""

    users: tuple[UserRef, ...] = ("*",)
    """Who the rule is about: Slack user ids or @names, or '*'."""
    channels: tuple[Annotated[str, BeforeValidator(_any_channel)], ...] = ("*",)
    """Where: channel ids or #names, or '*'."""
    what: tuple[str, ...] = ("*",)
    """Device names, areas, scene names or command names (help, roll_call...), or '*'."""
    allow: bool = True


class AccessSettings(_Frozen):
    """Who may command the bots: Slack user ids or @names, '*' for everyone."""

    admins: tuple[UserRef, ...] = ()
    users: tuple[UserRef, ...] = ("*",)
    bots: tuple[UserRef, ...] = ()
    direct: tuple[UserRef, ...] | None = None
    """Who may send a bot direct messages; None means the admins."""
    rules: tuple[AccessRule, ...] = ()
    max_duration_s: float = Field(default=24 * 3600, gt=0)
    """The longest "for ..." a timed command may ask for."""


class Federation(_Frozen):
    """The whole federation file, validated; every bot loads the same one."""

    federation: Annotated[str, AfterValidator(_slug)]
    language: Annotated[str, AfterValidator(_language)] = "en"
    slack: SlackSettings
    bots: dict[BotName, BotSettings]
    areas: dict[Name, Annotated[tuple[Name, ...], BeforeValidator(_none_is_empty_list)]] = Field(
        default_factory=dict
    )
    channels: dict[ChannelRef, Name] = Field(default_factory=dict)
    mqtt: MqttSettings | None = None
    hue: HueSettings | None = None
    slackmq: SlackmqSettings = Field(default_factory=SlackmqSettings)
    journal: Annotated[str, AfterValidator(_journal)] = "~/.local/state/troupe/{bot}.sqlite3"
    devices: dict[Name, Device] = Field(default_factory=dict)
    scenes: dict[Name, dict[Name, SceneState]] = Field(default_factory=dict)
    aliases: dict[Name, Command] = Field(default_factory=dict)
    access: AccessSettings = Field(default_factory=AccessSettings)
    update: UpdateSettings = Field(default_factory=UpdateSettings)
    plugins: tuple[Module, ...] = ()
    location: LocationSettings = Field(default_factory=LocationSettings)
    automations: tuple[Automation, ...] = ()
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)

    _source: str = PrivateAttr(default="")

    def bot(self, name: str) -> BotSettings:
        """That bot's settings with the tokens it will actually use in this mode."""
        key = name.strip().lower()
        if key not in self.bots:
            raise ConfigError([self._roster_problem(f"{name!r} is not a bot in the roster")])
        if self.slack.mode == "app-per-bot":
            return self.bots[key]
        return BotSettings(bot_token=self.slack.bot_token, app_token=self.slack.app_token)

    def resolve_bot_name(self, cli_name: str | None = None) -> str:
        """Which bot this process is: --bot, else $TROUPE_BOT, else the hostname."""
        for source, name in (
            ("--bot", cli_name),
            ("TROUPE_BOT", os.environ.get("TROUPE_BOT")),
            ("the hostname", socket.gethostname()),
        ):
            if not name or not name.strip():
                continue
            key = name.strip().lower()
            candidates = [key, key.split(".")[0]] if source == "the hostname" else [key]
            for candidate in candidates:
                if candidate in self.bots:
                    return candidate
            raise ConfigError(
                [self._roster_problem(f"{name!r} (from {source}) is not a bot in the roster")]
            )
        raise ConfigError([self._roster_problem("cannot tell which bot this is")])

    def _roster_problem(self, what: str) -> Problem:
        roster = ", ".join(self.bots)
        return Problem(
            self._source,
            None,
            "bots",
            f"{what}; use one of {roster} (pass --bot NAME or set TROUPE_BOT).",
        )

    def device_name(self, spoken: str) -> str | None:
        """The canonical name of the device called `spoken` (its name or an alias)."""
        key = canonical(spoken)
        if key in self.devices:
            return key
        return next((n for n, d in self.devices.items() if key in d.aliases), None)

    def devices_owned_by(self, bot: str) -> dict[str, Device]:
        """The devices only `bot` can drive (its GPIO pins and the like)."""
        return {n: d for n, d in self.devices.items() if d.owner == bot}

    def journal_path(self, bot: str) -> Path:
        """Where `bot` keeps its journal, `~` and `{bot}` expanded."""
        return Path(self.journal.format(bot=bot)).expanduser()


# --- YAML with line numbers -------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: on/off/yes/no stay words (scene `on:` keys), 010 is ten, 1:30 text."""


_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_constructor(
    _INT,
    lambda loader, node: (
        int(text, 16) if (text := loader.construct_scalar(node)).startswith("0x") else int(text)
    ),
)


@dataclass
class _Where:
    """The line of one node of the file, and of the nodes under it by key or index."""

    line: int
    children: dict[object, _Where] = field(default_factory=dict)

    def find(self, loc: Loc) -> int:
        """The line of the deepest node of `loc` present in the file."""
        node = self
        for part in loc:
            child = node.children.get(part)
            if child is None and isinstance(part, str):
                key = canonical(part)
                child = next(
                    (
                        c
                        for k, c in node.children.items()
                        if isinstance(k, str) and canonical(k) == key
                    ),
                    None,
                )
            if child is None:
                break
            node = child
        return node.line


def _walk(
    node: yaml.Node, loader: _Loader, loc: Loc, dupes: list[tuple[Loc, int, int]], seen: set[int]
) -> _Where:
    where = _Where(node.start_mark.line + 1)
    if id(node) in seen:
        raise yaml.MarkedYAMLError(
            problem="an alias (*name) refers to a node that contains it",
            problem_mark=node.start_mark,
        )
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        loader.flatten_mapping(node)
        owners: dict[object, bool] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue
            child = _walk(value_node, loader, (*loc, str(key)), dupes, seen)
            child.line = key_node.start_mark.line + 1
            is_own = id(key_node) in own
            if key in where.children and is_own and owners[key]:
                dupes.append(((*loc, str(key)), child.line, where.children[key].line))
            where.children[key] = child
            owners[key] = is_own
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            where.children[index] = _walk(item, loader, (*loc, index), dupes, seen)
    return where


def _parse(text: str, file: str) -> tuple[object, _Where, list[Problem]]:
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        what = err.reason
        if isinstance(err.character, int):
            what = f"character #x{err.character:04x} is not allowed"
        return None, _Where(1), [Problem(file, line, "", f"not valid YAML: {what}.")]
    dupes: list[tuple[Loc, int, int]] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, _Where(1), []
        where = _walk(node, loader, (), dupes, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        detail = err.problem or "cannot parse"
        if err.context:
            detail = f"{detail} ({err.context})"
        return (
            None,
            _Where(1),
            [Problem(file, mark.line + 1 if mark else None, "", f"not valid YAML: {detail}.")],
        )
    except yaml.YAMLError as err:
        return None, _Where(1), [Problem(file, None, "", f"not valid YAML: {err}.")]
    finally:
        loader.dispose()
    problems = [
        Problem(file, line, _key(loc), f"appears twice (first on line {first}); keep one.")
        for loc, line, first in dupes
    ]
    return data, where, problems


# --- validation -------------------------------------------------------------------------


def _key(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _hint(word: object, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _sentence(text: str) -> str:
    text = text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
    return text if text.endswith((".", "?", "!")) else text + "."


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _type_at(loc: Loc) -> Any:
    """The declared type at `loc` inside the Federation model, or None if not known."""
    tp: Any = Federation
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            if info is None:
                return None
            tp = info.annotation
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin in (tuple, list):
            tp = typing.get_args(tp)[0]
        else:
            return None
    return _unwrap(tp)


def _describe(error: Any, loc: Loc) -> tuple[Loc, str]:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        model = _type_at(loc[:-1])
        known = list(model.model_fields) if isinstance(model, type) else []
        where = "at the top level" if len(loc) == 1 else "here"
        return loc, f"{str(loc[-1])!r} is not a key troupe knows {where}{_hint(loc[-1], known)}"
    if kind == "missing":
        tp = _type_at(loc)
        if typing.get_origin(tp) is Literal:
            return loc, f"is required; use one of {', '.join(typing.get_args(tp))}"
        return loc, "is required but missing"
    if kind == "literal_error":
        choices = [str(c) for c in typing.get_args(_type_at(loc) or Literal[""])]
        value = error.get("input")
        return (
            loc,
            f"{value!r} is not allowed; use one of {', '.join(choices)}{_hint(value, choices)}",
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"must be a mapping of keys (got {type(error.get('input')).__name__})"
    if kind in ("tuple_type", "list_type"):
        return loc, f"must be a list (got {type(error.get('input')).__name__})"
    if kind == "value_error":
        return loc, msg.removeprefix("Value error, ")
    value = error.get("input")
    shown = (
        repr(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    )
    return loc, f"{msg} (got {shown[:60]})"


_SECTIONS_IN_ORDER = tuple(Federation.model_fields)


@dataclass
class _Sections:
    """Each top-level section validated alone: a bad entry never hides the others' checks."""

    values: dict[str, Any] = field(default_factory=dict)
    raw_keys: dict[str, dict[str, list[object]]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    """Sections present in the file that failed their own checks (already reported)."""

    def entries(self, section: str) -> dict[str, Any]:
        value = self.values.get(section)
        return value if isinstance(value, dict) else {}


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    if tp not in _ADAPTERS:
        _ADAPTERS[tp] = TypeAdapter(tp)
    return _ADAPTERS[tp]


def _validate(tp: Any, value: object, loc: Loc, report: Callable[[Loc, str], None]) -> Any:
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as err:
        for error in err.errors(include_url=False):
            report(*_describe(error, (*loc, *error["loc"])))
        return None


def _validate_sections(data: dict[str, Any], report: Callable[[Loc, str], None]) -> _Sections:
    sections = _Sections()
    for key in data:
        if key not in Federation.model_fields:
            report((str(key),), _describe({"type": "extra_forbidden", "msg": ""}, (str(key),))[1])
    for name, info in Federation.model_fields.items():
        if name not in data or (data[name] is None and not info.is_required()):
            if info.is_required():
                report((name,), "is required but missing")
                continue
            sections.values[name] = info.get_default(call_default_factory=True)
            continue
        annotation = info.annotation
        if typing.get_origin(_unwrap(annotation)) is dict and isinstance(data[name], dict):
            key_type, value_type = typing.get_args(_unwrap(annotation))
            entries: dict[str, Any] = {}
            raw: dict[str, list[object]] = {}
            for raw_key, raw_value in data[name].items():
                key = _validate(key_type, raw_key, (name, str(raw_key)), report)
                if key is None:
                    continue
                raw.setdefault(key, []).append(raw_key)
                entries[key] = _validate(value_type, raw_value, (name, str(raw_key)), report)
            sections.values[name] = entries
            sections.raw_keys[name] = raw
        else:
            sections.values[name] = _validate(annotation, data[name], (name,), report)
            if sections.values[name] is None:
                sections.failed.add(name)
    return sections


# --- checks across sections ---------------------------------------------------------------


def _prepared(data: dict[Any, Any]) -> dict[Any, Any]:
    """The file's data without `x-` keys (anchors), bots' default tokens filled in.

    In app-per-bot mode a bot that names no token reads $<BOT>_BOT_TOKEN / _APP_TOKEN.
    New dicts throughout: one YAML anchor may be shared by several bots.
    """
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    slack = data.get("slack")
    mode = slack.get("mode", "app-per-bot") if isinstance(slack, dict) else "app-per-bot"
    bots = data.get("bots")
    if mode != "app-per-bot" or not isinstance(bots, dict):
        return data
    filled: dict[Any, Any] = {}
    for name, settings in bots.items():
        if settings is None:
            settings = {}
        if isinstance(settings, dict) and isinstance(name, str):
            env = re.sub(r"[^A-Z0-9]", "_", name.strip().upper())
            settings = {
                "bot_token": f"env:{env}_BOT_TOKEN",
                "app_token": f"env:{env}_APP_TOKEN",
            } | settings
        filled[name] = settings
    return data | {"bots": filled}


def _cross_checks(s: _Sections) -> Iterator[tuple[Loc, str]]:
    if s.values.get("bots") == {}:
        yield ("bots",), "the roster is empty; list each bot by its Pi's hostname"
    yield from _check_collisions(s)
    yield from _check_slack(s)
    yield from _check_devices(s)
    yield from _check_scenes(s)
    areas = s.entries("areas")
    for channel, area in s.entries("channels").items():
        if area is not None and area not in areas:
            yield ("channels", channel), _unknown_area(area, areas)
    slackmq = s.values.get("slackmq")
    if isinstance(slackmq, SlackmqSettings) and slackmq.linger_s <= slackmq.stale_s:
        yield (
            ("slackmq", "linger_s"),
            (
                f"must be greater than stale_s ({slackmq.stale_s:g}): a bot that starts late must "
                "still find the claim pin before it is taken for stale and removed"
            ),
        )


def _check_collisions(s: _Sections) -> Iterator[tuple[Loc, str]]:
    for section, raw in s.raw_keys.items():
        for key, spellings in raw.items():
            if len(spellings) > 1:
                yield (
                    (section, str(spellings[-1])),
                    (
                        f"{spellings[-1]!r} and {spellings[0]!r} are the same name "
                        f"({key!r}); keep one"
                    ),
                )
    named: dict[str, str] = {}
    for name, device in s.entries("devices").items():
        named.setdefault(name, name)
        for index, alias in enumerate(device.aliases if device else ()):
            owner = named.setdefault(alias, name)
            if owner != name:
                yield (
                    ("devices", name, "aliases", index),
                    (
                        f"{alias!r} already names device {owner!r}; "
                        "each name must lead to one device"
                    ),
                )
    for name in s.entries("devices"):
        if named[name] != name:
            yield (
                ("devices", name),
                (
                    f"{name!r} is already an alias of device {named[name]!r}; "
                    "each name must lead to one device"
                ),
            )
    area_names: dict[str, str] = {a: a for a in s.entries("areas")}
    for area, aliases in s.entries("areas").items():
        for index, alias in enumerate(aliases or ()):
            owner = area_names.setdefault(alias, area)
            if owner != area:
                yield ("areas", area, index), f"{alias!r} already names area {owner!r}"


def _check_slack(s: _Sections) -> Iterator[tuple[Loc, str]]:
    slack = s.values.get("slack")
    if not isinstance(slack, SlackSettings):
        return
    mode = slack.mode
    if mode == "app-per-bot":
        for name, bot in s.entries("bots").items():
            missing = [t for t in ("bot_token", "app_token") if bot and getattr(bot, t) is None]
            if missing:
                yield (
                    ("bots", name, missing[0]),
                    (
                        f"bot {name!r} has no {' and no '.join(missing)}; in mode app-per-bot each "
                        "bot is its own Slack app: give it bot_token and app_token as env:NAME or "
                        "file:PATH (or leave them out to read $NAME_BOT_TOKEN and $NAME_APP_TOKEN)"
                    ),
                )
        for token in ("bot_token", "app_token"):
            if getattr(slack, token) is not None:
                yield (
                    ("slack", token),
                    ("is not used in mode app-per-bot (each bot has its own); move it under bots"),
                )
        return
    needed = ("bot_token", "app_token") if mode == "shared-app" else ("bot_token",)
    for token in needed:
        if getattr(slack, token) is None:
            yield (
                ("slack", token),
                (
                    f"mode {mode} needs slack.{token}: the one {token.replace('_', ' ')} "
                    "every bot shares (env:NAME or file:PATH)"
                ),
            )
    if mode == "rtm" and slack.app_token is not None:
        yield ("slack", "app_token"), "is not used in mode rtm (RTM needs only the bot token)"
    for name, bot in s.entries("bots").items():
        unused = [t for t in ("bot_token", "app_token") if bot and getattr(bot, t) is not None]
        if unused:
            yield (
                ("bots", name),
                (
                    f"{' and '.join(unused)} of bot {name!r} are not used in mode {mode}, where "
                    "every bot uses the tokens under slack; remove them or use mode app-per-bot"
                ),
            )


def _check_devices(s: _Sections) -> Iterator[tuple[Loc, str]]:
    bots, areas = s.entries("bots"), s.entries("areas")
    slack, mqtt = s.values.get("slack"), s.values.get("mqtt")
    shared = isinstance(slack, SlackSettings) and slack.mode == "shared-app"
    # An mqtt section that failed its own checks was reported already: no second line.
    no_bus = not (isinstance(mqtt, MqttSettings) and mqtt.bus) and "mqtt" not in s.failed
    for name, device in s.entries("devices").items():
        if device is None:
            continue
        if device.owner is not None and "bots" in s.values and device.owner not in bots:
            yield (
                ("devices", name, "owner"),
                (f"{device.owner!r} is not a bot in the roster; use one of {', '.join(bots)}"),
            )
        elif device.owner is not None and shared and no_bus:
            yield (
                ("devices", name, "owner"),
                (
                    f"{name!r} is owned by {device.owner!r}, but in mode shared-app Slack hands "
                    "each event to one bot only, so another bot can reach it only over the MQTT "
                    "bus; use mode app-per-bot, or configure mqtt with bus: true"
                ),
            )
        if device.area is not None and device.area not in areas:
            yield ("devices", name, "area"), _unknown_area(device.area, areas)
        unset = [f for f in _DEVICE_FIELDS if f not in device.model_fields_set]
        for option in device.options:
            close = difflib.get_close_matches(option, unset, n=1, cutoff=0.75)
            if close:
                yield (
                    ("devices", name, option),
                    (
                        f"did you mean {close[0]!r}? ({option!r} would be passed to the "
                        f"{device.driver} driver as an option)"
                    ),
                )


def _unknown_area(area: str, areas: dict[str, Any]) -> str:
    for declared, aliases in areas.items():
        if area in (aliases or ()):
            return f"{area!r} is an alias of area {declared!r}; use the area's name"
    if not areas:
        return f"area {area!r} is not declared; list it under areas"
    return f"area {area!r} is not declared in areas; declare it or use one of {', '.join(areas)}"


def _check_scenes(s: _Sections) -> Iterator[tuple[Loc, str]]:
    devices = s.entries("devices")
    names = {n: n for n in devices}
    for name, device in devices.items():
        for alias in device.aliases if device else ():
            names.setdefault(alias, name)
    for scene, states in s.entries("scenes").items():
        for target in states or {}:
            if target not in names:
                choices = f"; use one of {', '.join(devices)}" if devices else ""
                hint = _hint(target, list(names)) or choices
                yield ("scenes", scene, target), f"{target!r} is not a device{hint}"
            elif (device := devices[names[target]]) is not None and device.kind == "sensor":
                yield ("scenes", scene, target), f"{target!r} is a sensor; a scene cannot set it"


def _literal_tokens(value: object, loc: Loc) -> Iterator[Loc]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _literal_tokens(item, (*loc, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _literal_tokens(item, (*loc, index))
    elif isinstance(value, str) and looks_like_slack_token(value):
        yield loc


# --- entry points -----------------------------------------------------------------------


def _analyse(path: str | Path) -> tuple[Federation | None, list[Problem], _Where]:
    file = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as err:
        return (
            None,
            [Problem(file, None, "", f"cannot read the federation file: {err.strerror}.")],
            _Where(1),
        )
    except UnicodeDecodeError:
        return None, [Problem(file, None, "", "the federation file is not UTF-8 text.")], _Where(1)
    data, where, problems = _parse(text, file)
    if problems:
        return None, problems, where
    if not isinstance(data, dict):
        message = "the file is empty" if data is None else "the top level must be a mapping of keys"
        return (
            None,
            [
                Problem(
                    file, 1, "", f"{message}; start from the example in docs/federation-file.md."
                )
            ],
            where,
        )

    seen: set[str] = set()

    def report(loc: Loc, message: str) -> None:
        key = _key(loc)
        if key not in seen:
            seen.add(key)
            problems.append(Problem(file, where.find(loc), key, _sentence(message)))

    for loc in _literal_tokens(data, ()):
        report(
            loc,
            "this looks like a Slack token; secrets are not written in the federation file: "
            "put it in a file or the environment and write file:PATH or env:NAME",
        )
    data = _prepared(data)
    sections = _validate_sections(data, report)
    for loc, message in _cross_checks(sections):
        report(loc, message)
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        return None, problems, where
    try:
        federation = Federation.model_validate(data)
    except ValidationError as err:
        for error in err.errors(include_url=False):
            report(*_describe(error, tuple(error["loc"])))
        return None, problems, where
    federation._source = file
    return federation, [], where


def load(path: str | Path) -> Federation:
    """Read and validate the federation file; ConfigError lists every problem found."""
    federation, problems, _ = _analyse(path)
    if federation is None:
        raise ConfigError(problems)
    return federation


def check(path: str | Path, bot: str | None = None) -> list[Problem]:
    """Every problem in the federation file; with `bot`, also that its secrets resolve here.

    Like a bot, it imports the plugins and checks each device against its driver's options
    and section. The file alone cannot tell whether a Pi has its tokens, so
    `troupe check --bot NAME` on the Pi reads each secret that bot will use (without showing it).
    """
    federation, problems, where = _analyse(path)
    if federation is None:
        return problems
    file = str(path)
    from troupe.plugincheck import plugin_problems  # imports the plugins, as the Pi will

    for loc, message in plugin_problems(federation):
        problems.append(Problem(file, where.find(loc), _key(loc), _sentence(message)))
    if bot is None:
        return problems
    try:
        name = federation.resolve_bot_name(bot)
    except ConfigError as err:
        return list(err.problems)
    secrets: list[tuple[Loc, Secret | None]] = []
    if federation.slack.mode == "app-per-bot":
        settings = federation.bots[name]
        secrets += [(("bots", name, "bot_token"), settings.bot_token)]
        secrets += [(("bots", name, "app_token"), settings.app_token)]
    else:
        secrets += [(("slack", "bot_token"), federation.slack.bot_token)]
        secrets += [(("slack", "app_token"), federation.slack.app_token)]
    if federation.mqtt:
        secrets.append((("mqtt", "password"), federation.mqtt.password))
        secrets.append((("mqtt", "bus_key"), federation.mqtt.bus_key))
    if federation.hue:
        secrets.append((("hue", "username"), federation.hue.username))
    for loc, secret in secrets:
        if secret is None:
            continue
        try:
            secret.reveal()
        except SecretError as err:
            problems.append(Problem(file, where.find(loc), _key(loc), _sentence(str(err))))
    return problems


def default_path() -> Path:
    """The federation file to use when none is named: $TROUPE_FEDERATION, else /etc/troupe."""
    return Path(os.environ.get("TROUPE_FEDERATION") or DEFAULT_PATH).expanduser()
