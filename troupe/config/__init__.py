"""The federation file (one YAML file, the same on every Pi) -> a validated Federation.

One module per job: schema (the models), yamlfile (YAML with line numbers), wording (one
`file:line: key: sentence` per problem), sections and crosschecks (validation), loader
(load and check). The drivers' own sections and options are checked by troupe.plugincheck.
"""

from __future__ import annotations

import os
from pathlib import Path

from troupe.config.loader import check, load
from troupe.config.schema import (
    KINDS,
    MODES,
    AccessRule,
    AccessSettings,
    BotSettings,
    Device,
    Federation,
    Kind,
    Mode,
    SceneState,
    SlackmqSettings,
    SlackSettings,
    canonical,
)
from troupe.config.wording import ConfigError, Loc, Problem
from troupe.mqttsettings import MqttSettings

__all__ = [
    "DEFAULT_PATH",
    "KINDS",
    "MODES",
    "AccessRule",
    "AccessSettings",
    "BotSettings",
    "ConfigError",
    "Device",
    "Federation",
    "Kind",
    "Loc",
    "Mode",
    "MqttSettings",
    "Problem",
    "SceneState",
    "SlackSettings",
    "SlackmqSettings",
    "canonical",
    "check",
    "default_path",
    "load",
]

DEFAULT_PATH = "/etc/troupe/federation.yaml"


def default_path() -> Path:
    """The federation file to use when none is named: $TROUPE_FEDERATION, else /etc/troupe."""
    return Path(os.environ.get("TROUPE_FEDERATION") or DEFAULT_PATH).expanduser()
