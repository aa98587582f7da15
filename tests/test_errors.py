"""Every exception troupe raises on purpose derives from TroupeError (and the builtin it
resembles), so one `except TroupeError` catches them all."""

from __future__ import annotations

import pytest

from troupe.bus import BusError
from troupe.config import ConfigError
from troupe.discovery import DiscoveryError
from troupe.errors import ClaimError, TroupeError
from troupe.manifest import ManifestError
from troupe.mqttclient import MqttClientError
from troupe.plugin import DriverError, PluginError
from troupe.release import LockError
from troupe.runner import StartError
from troupe.secrets import SecretError
from troupe.update import UpdateError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (BusError, ConnectionError),
        (UpdateError, RuntimeError),
        (ManifestError, ValueError),
        (LockError, ValueError),
        (ConfigError, ValueError),
        (DiscoveryError, ValueError),
        (MqttClientError, ValueError),
        (DriverError, RuntimeError),
        (PluginError, ImportError),
        (StartError, ValueError),
        (SecretError, ValueError),
        (ClaimError, RuntimeError),
    ],
)
def test_each_error_has_one_root_and_its_builtin(error: type, builtin: type) -> None:
    assert issubclass(error, TroupeError)
    assert issubclass(error, builtin)
