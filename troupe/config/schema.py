"""The federation file's schema: value types and the pydantic models of its sections."""

from __future__ import annotations

import os
import re
import socket
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from troupe.automations import Automation, LocationSettings, ScheduleSettings
from troupe.config.wording import ConfigError, Loc, Problem, hint, key_of, sentence
from troupe.eventsettings import EventsSettings
from troupe.mqttsettings import MqttSettings
from troupe.secrets import Secret
from troupe.update import UpdateSettings

Kind = Literal["light", "fan", "switch", "outlet", "cover", "sensor"]
Mode = Literal["app-per-bot", "shared-app", "rtm"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
MODES: tuple[str, ...] = typing.get_args(Mode)


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
            f"{value!r} is not a language of home-assistant-intents{hint(value, known)}"
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


class SlackmqSettings(_Frozen):
    """Timings of the pin-based claim that makes each command act exactly once."""

    stale_s: float = Field(default=30, gt=0)
    lease_s: float = Field(default=15, gt=0)
    stagger_s: float = Field(default=0.4, ge=0)
    linger_s: float = Field(default=45, gt=0)


DEVICE_FIELDS = ("kind", "area", "driver", "owner", "aliases", "confirm")


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
        options = {k: v for k, v in data.items() if k not in DEVICE_FIELDS}
        return {k: v for k, v in data.items() if k in DEVICE_FIELDS} | {"options": options}


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
    """The broker (troupe.mqttsettings): the mqtt driver's section, which discovery and the
    bus read too, so troupe knows it. Every other driver's section is its own (below)."""
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
    events: EventsSettings = Field(default_factory=EventsSettings)
    """Device events to chat (troupe.eventsettings, troupe.announcer)."""
    driver_sections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """The drivers' own top-level sections (`hue:`), as written: each is validated by its
    driver's section_model, in `troupe check` and when a bot loads the driver."""

    _source: str = PrivateAttr(default="")
    _where: Any = PrivateAttr(default=None)
    """The file's lines (troupe.config.yamlfile.Where), to place later problems."""

    def problem(self, loc: Loc, message: str) -> Problem:
        """A problem found after loading (a driver refuses its options), placed in the file."""
        line = self._where.find(loc) if self._where is not None else None
        return Problem(self._source, line, key_of(loc), sentence(message))

    def section(self, name: str) -> Any:
        """The top-level section `name` (`mqtt`, `hue`), or None if the file has none."""
        if name in type(self).model_fields and name != "driver_sections":
            return getattr(self, name)
        return self.driver_sections.get(name)

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
