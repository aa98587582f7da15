"""A simulated Philips Hue bridge (REST API v1) over HTTP: `troupe-dev hardware hue`.

Good enough that the real phue 1.1 drives it unchanged. model.py is the bridge (state,
API answers, the history of every change), server.py its HTTP face and fault switches
(plus running_bridge() for tests), cli.py the command line.
"""

from troupe.hardware.hue.cli import build_parser, main
from troupe.hardware.hue.model import (
    KINDS,
    LINK_WINDOW_S,
    MAX_LIGHTS,
    BridgeModel,
    GroupSpec,
    LightKind,
    default_layout,
)
from troupe.hardware.hue.server import RunningBridge, Switches, build_app, running_bridge, start

__all__ = [
    "KINDS",
    "LINK_WINDOW_S",
    "MAX_LIGHTS",
    "BridgeModel",
    "GroupSpec",
    "LightKind",
    "RunningBridge",
    "Switches",
    "build_app",
    "build_parser",
    "default_layout",
    "main",
    "running_bridge",
    "start",
]
