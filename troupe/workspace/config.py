"""The workspace file (YAML) -> a validated model; the embedded demo workspace."""

from __future__ import annotations

import secrets
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


class Human(_Strict):
    """A person with a user token (xoxp-) who posts the way the Slack client does."""

    id: str
    name: str
    token: str
    real_name: str = ""
    is_admin: bool = False
    guest: Literal["multi", "single"] | None = None
    """A multi-channel (is_restricted) or single-channel (is_ultra_restricted) guest."""
    team_id: str | None = None
    """Another team's id: a Slack Connect user in a shared channel (None: this team)."""


class App(_Strict):
    """A Slack app installed in the team, with its bot user.

    `classic` marks a classic app whose bot token may open RTM connections; Slack refuses
    rtm.connect to the bot tokens of apps made since 2020, and so does this workspace.
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

    @model_validator(mode="after")
    def _default_bot_id(self) -> App:
        if not self.bot_id:
            object.__setattr__(self, "bot_id", "B" + self.id.removeprefix("A"))
        return self


class WorkspaceConfig(_Strict):
    """Everything that describes one local workspace."""

    team: Team = Field(default_factory=Team)
    channels: list[Channel] = Field(default_factory=list)
    humans: list[Human] = Field(default_factory=list)
    apps: list[App] = Field(default_factory=list)
    rate_limits: Literal["slack", "off"] | float = "slack"
    latency_ms: float = 0
    pin_limit: int = Field(default=100, ge=1)
    control_token: str = Field(default_factory=lambda: "ctl-" + secrets.token_hex(8))

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
    """The ready-made workspace of `troupe demo` and `troupe workspace` without --config."""
    text = resources.files("troupe.workspace").joinpath("demo.yaml").read_text(encoding="utf-8")
    return WorkspaceConfig.model_validate(yaml.safe_load(text))
