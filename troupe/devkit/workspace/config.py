"""The workspace file (YAML) -> a validated model; the embedded demo workspace."""

from __future__ import annotations

import secrets
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Team(_Strict):
    """The one team (workspace) served."""

    id: str = "T0HOME"
    name: str = "Home"
    domain: str = "home"


class Channel(_Strict):
    """A public channel; `members` None means every human and app is a member."""

    id: str
    name: str
    members: list[str] | None = None
    topic: str = ""
    is_private: bool = False


QUERY_TOKENS_CUTOFF = date(2021, 2, 24)
"""Apps created from this day on may not send their token in the URL query string:
https://api.slack.com/changelog/2020-11-no-more-tokens-in-querystrings-for-newly-created-apps"""
RTM_START_CUTOFF = date(2021, 11, 30)
"""Apps created from this day on get rtm_connect_required from rtm.start; older ones have
been given rtm.connect's answer since 27 September 2022:
https://api.slack.com/changelog/2021-10-rtm-start-to-stop"""
CLASSIC_APPS_CUTOFF = date(2024, 6, 4)
"""No classic app can be created after this day (https://api.slack.com/changelog)."""


class Human(_Strict):
    """A person with a user token (xoxp-) who posts the way the Slack client does.

    `legacy_query_tokens` lets the token be sent in the URL query string, as Slack allows
    only for tokens of apps created before 24 February 2021.
    """

    id: str
    name: str
    token: str
    real_name: str = ""
    is_admin: bool = False
    guest: Literal["multi", "single"] | None = None
    """A multi-channel (is_restricted) or single-channel (is_ultra_restricted) guest."""
    team_id: str | None = None
    """Another team's id: a Slack Connect user in a shared channel (None: this team)."""
    legacy_query_tokens: bool = False


class App(_Strict):
    """A Slack app installed in the team, with its bot user.

    `classic` marks a classic app whose bot token may open RTM connections; Slack refuses
    rtm.connect to the bot tokens of apps made since 2020, and so does this workspace.
    `created` is the day the app was made (unset: recently, after every cut-off); it decides
    what Slack lets the app do. `legacy_query_tokens` says outright whether its tokens may
    travel in the URL query string (unset: only if created before 24 February 2021).
    """

    id: str
    name: str
    bot_user_id: str
    bot_id: str = ""
    bot_token: str
    app_token: str = ""
    classic: bool = False
    scopes: tuple[str, ...] | None = None
    """The bot token's scopes, answered as Slack does in `x-oauth-scopes`; None: all that
    `troupe manifest` asks for. A test grants fewer to see them reported missing."""
    created: date | None = None
    legacy_query_tokens: bool | None = None

    @model_validator(mode="after")
    def _bot_id_and_age(self) -> App:
        if not self.bot_id:
            object.__setattr__(self, "bot_id", "B" + self.id.removeprefix("A"))
        if self.classic and self.created is not None and self.created > CLASSIC_APPS_CUTOFF:
            raise ValueError(
                f"app {self.id} is classic but created {self.created}; Slack has let no one "
                f"create a classic app since {CLASSIC_APPS_CUTOFF}: give an earlier date"
            )
        return self

    @property
    def query_tokens_allowed(self) -> bool:
        """Whether Slack accepts this app's tokens in the URL query string."""
        if self.legacy_query_tokens is not None:
            return self.legacy_query_tokens
        return self.created is not None and self.created < QUERY_TOKENS_CUTOFF

    @property
    def rtm_start_allowed(self) -> bool:
        """Whether Slack answers this app's rtm.start (with rtm.connect's answer) at all."""
        return self.created is not None and self.created < RTM_START_CUTOFF


class WorkspaceConfig(_Strict):
    """Everything that describes one local workspace."""

    team: Team = Field(default_factory=Team)
    channels: list[Channel] = Field(default_factory=list)
    humans: list[Human] = Field(default_factory=list)
    apps: list[App] = Field(default_factory=list)
    rate_limits: Literal["slack", "off"] | float = "slack"
    latency_ms: float = 0
    pin_limit: int = Field(default=100, ge=1)
    control_token: str = Field(default_factory=lambda: "ctl-" + secrets.token_hex(16))
    """Guards the control API and device publishing; random unless the file sets one."""
    redelivery: Literal["slack", "fast"] = "slack"
    """When unacknowledged Socket Mode envelopes come again: on Slack's schedule (after the
    3 s ack timeout, then about 1 and 5 minutes later) or `fast` (every 3 s), for tests."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names besides loopback and the bound address that requests may name in Host."""

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _rate_limits(cls, value: object) -> object:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ValueError("rate_limits must be 'slack', 'off' or a positive multiplier")
        return value

    @model_validator(mode="after")
    def _unique(self) -> WorkspaceConfig:
        ids = [c.id for c in self.channels] + [h.id for h in self.humans]
        ids += [a.id for a in self.apps] + [a.bot_user_id for a in self.apps]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate ids: {', '.join(sorted(dup))}")
        tokens = [h.token for h in self.humans] + [a.bot_token for a in self.apps]
        tokens += [a.app_token for a in self.apps if a.app_token]
        if len(tokens) != len(set(tokens)):
            raise ValueError("every token must be different")
        return self

    @property
    def rate_multiplier(self) -> float | None:
        """How many times Slack's published limits to allow; None means no limit."""
        if self.rate_limits == "off":
            return None
        if self.rate_limits == "slack":
            return 1.0
        return float(self.rate_limits)


class WorkspaceConfigError(ValueError):
    """The workspace file cannot be used; the message names the file and the key."""


def load_config(path: str | Path) -> WorkspaceConfig:
    """Read and validate a workspace file, failing with the file and key at fault."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise WorkspaceConfigError(f"{path}: cannot read the workspace file: {err}") from err
    except yaml.YAMLError as err:
        raise WorkspaceConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise WorkspaceConfigError(f"{path}: the workspace file must be a mapping of keys")
    try:
        return WorkspaceConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise WorkspaceConfigError(f"{path}: key {key}: {first['msg']}") from err


def demo_config() -> WorkspaceConfig:
    """The ready-made workspace of `troupe-dev demo` and `troupe-dev workspace` without --config."""
    text = (
        resources.files("troupe.devkit.workspace").joinpath("demo.yaml").read_text(encoding="utf-8")
    )
    return WorkspaceConfig.model_validate(yaml.safe_load(text))
