"""The systems under test: troupe in each delivery mode, and SlackMQ 0.1.2 in slackbot bots.

Both run as one process per bot through troupe's Fleet (the legacy bots through a Fleet
whose command line is bench.legacy.bot), so they are started, timed, killed and measured
the same way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.files import DEVICES, LEGACY_APP_ID, LEGACY_TOKEN, Timings, app_id, write_federation
from troupe.devkit.fleet import Fleet
from troupe.federation import rank

TROUPE = "troupe"
LEGACY = "slackmq-0.1.2"
LEGACY_MODE = "slackbot-rtm"
MODES = ("app-per-bot", "rtm", "shared-app")
REPO = Path(__file__).resolve().parent.parent


class LegacyFleet(Fleet):
    """Fleet's process handling for slackbot 1.0.5 bots running the seed's plugin, as the
    bot of an app created in 2020: SlackMQ 0.1.2 only works with Slack apps created before
    February 2021 (its slacker sends tokens in the query string)."""

    def __init__(self, api_url: str, workdir: str | Path, env: Mapping[str, str]) -> None:
        super().__init__("", workdir, env)
        self.api_url = api_url
        path = (str(REPO), self.env.get("PYTHONPATH", ""))
        self.env["PYTHONPATH"] = ":".join(p for p in path if p)

    def command(self, name: str) -> list[str]:
        cmd = [sys.executable, "-m", "bench.legacy.bot", "--name", name]
        return [*cmd, "--token", LEGACY_TOKEN, "--api-url", self.api_url]


@dataclass(frozen=True)
class System:
    """One system in one mode: how to start its bots and where their connections live."""

    name: str
    mode: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.mode}"

    @property
    def shared_identity(self) -> bool:
        """All bots share one app (so the control API cannot single out one bot)."""
        return self.mode != "app-per-bot"

    @property
    def claim_method(self) -> str:
        """The Web API method that claims a command: troupe's shared Slack user claims
        with a 👀 reaction (Tier 3); its own users and SlackMQ 0.1.2 pin (Tier 2)."""
        return "reactions.add" if self.name == TROUPE and self.shared_identity else "pins.add"

    @property
    def uses_mqtt(self) -> bool:
        """troupe's bots reach one device over MQTT (bench.mqttrig); SlackMQ 0.1.2's none."""
        return self.name == TROUPE

    def fleet(
        self,
        api_url: str,
        folder: Path,
        bots: Sequence[str],
        timings: Timings,
        counter: Path,
        mqtt_port: int | None = None,
        *,
        devices: int = len(DEVICES),
    ) -> Fleet:
        env = {"TROUPE_COUNTER_FILE": str(counter)}
        if self.name == LEGACY:
            return LegacyFleet(api_url, folder, env)
        config = write_federation(folder, api_url, self.mode, bots, timings, mqtt_port, devices)
        if mqtt_port is not None:  # the bots load bench.mqttdriver from this checkout
            path = (str(REPO), os.environ.get("PYTHONPATH", ""))
            env["PYTHONPATH"] = ":".join(p for p in path if p)
        return Fleet(config, folder, env)

    def apps(self, bots: Sequence[str]) -> list[str]:
        """The app ids whose connections carry these bots' events."""
        if self.name == LEGACY:
            return [LEGACY_APP_ID]
        if self.mode == "app-per-bot":
            return [app_id(b) for b in bots]
        return ["A0TROUPE" if self.mode == "shared-app" else "A0CLASSIC"]

    def own_app(self, bot: str) -> str | None:
        """The app only this bot uses, or None when the bots share one."""
        return app_id(bot) if self.mode == "app-per-bot" else None

    def event_app(self, bot: str) -> str:
        """The app whose events this bot receives."""
        return self.own_app(bot) or self.apps([bot])[0]

    def die_after_claim(self) -> dict[str, str]:
        """The environment that makes a bot SIGKILL itself right after winning a claim."""
        if self.name == LEGACY:
            return {"LEGACY_FAULTS": "die-after-ack"}
        return {"TROUPE_FAULTS": "die-after-claim"}

    def claimer(self, ts: str, bots: Sequence[str]) -> str:
        """The bot that claims this message first (troupe's rank 0); for SlackMQ 0.1.2,
        where every bot races, the same hash just picks a bot."""
        return rank(ts, bots)[0]


def available_modes() -> tuple[list[str], dict[str, str]]:
    """troupe's delivery modes the harness runs now, and a note for each one skipped."""
    skipped = {}
    modes = ["app-per-bot", "rtm"]
    if importlib.util.find_spec("troupe.bus") is not None:
        modes.append("shared-app")
    else:
        skipped["shared-app"] = (
            "skipped: troupe/bus.py does not exist yet, so shared-app mode (one app, Slack "
            "hands each event to one bot) is not benchmarked; run with --modes shared-app "
            "to try it anyway"
        )
    return modes, skipped


def systems(modes: Sequence[str], legacy: bool = True) -> list[System]:
    out = [System(TROUPE, m) for m in modes]
    if legacy:
        out.append(System(LEGACY, LEGACY_MODE))
    return out
