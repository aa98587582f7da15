"""The files a trial needs: a workspace config with N apps and a federation file per mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench.mqttdriver import NAME as COUNTED_MQTT
from bench.mqttrig import PLUG_TOPIC
from troupe.devkit.workspace.config import App, Channel, Human, WorkspaceConfig

CHANNEL = "home"
CHANNEL_ID = "C0HOME"
HUMAN_TOKEN = "xoxp-alice"
SHARED_APP = "troupe"
CLASSIC_APP = "troupe-classic"
CLASSIC_TOKEN = "xoxb-classic"
LEGACY_APP_ID = "A0LEGACY"
LEGACY_TOKEN = "xoxb-legacy"
LEGACY_CREATED = date(2020, 6, 1)
"""SlackMQ 0.1.2 runs on slacker, which sends its token in the URL query string (and
slackbot 1.0.5 opens RTM with rtm.start): only a classic app created before 24 February
2021 may do both, so its bots get an app as old as that."""

DEVICES: dict[str, str] = {
    "hall light": "hall",
    "porch light": "porch",
    "garden light": "garden",
    "desk lamp": "study",
    "attic light": "attic",
    "stair light": "stairs",
}
"""Every benchmark device is shared (no owner): any bot may drive it, so each command goes
through the claim protocol, which is what is measured. All use the counting driver."""

MORE_DEVICES: dict[str, str] = {
    "kitchen light": "kitchen",
    "bedroom lamp": "bedroom",
    "office lamp": "office",
    "garage light": "garage",
    "landing light": "landing",
    "patio light": "patio",
}
"""Six more, for a stream spread over more devices (the soak's --devices)."""


def devices(count: int = len(DEVICES)) -> dict[str, str]:
    """The first `count` benchmark devices (name -> area): DEVICES, then MORE_DEVICES."""
    every = {**DEVICES, **MORE_DEVICES}
    if not 1 <= count <= len(every):
        raise ValueError(f"the bench has 1 to {len(every)} devices, not {count}")
    return dict(list(every.items())[:count])


MQTT_DEVICE = "porch light"
"""The one device troupe's bots reach over MQTT (a simulated Tasmota plug on the trial's
mosquitto, bench.mqttrig), so a broker restart sits on its commands' path; its actions are
counted like the others' (bench.mqttdriver)."""

SLOW_DEVICE = ("cellar light", "cellar")
"""A device that takes 1.5 leases to act (the counting driver's `delay_s`): an unreachable
MQTT device. Only the chaos phase's slow-device fault sends it a command."""


@dataclass(frozen=True)
class Timings:
    """The federation file's `slackmq:` section for a run."""

    stale_s: float = 30.0
    lease_s: float = 15.0
    stagger_s: float = 0.4
    linger_s: float = 45.0

    def yaml(self) -> str:
        return (
            f"{{stale_s: {self.stale_s}, lease_s: {self.lease_s}, "
            f"stagger_s: {self.stagger_s}, linger_s: {self.linger_s}}}"
        )


def bot_names(n: int) -> list[str]:
    return [f"bot-{i}" for i in range(1, n + 1)]


def app_id(bot: str) -> str:
    return "A0" + bot.replace("-", "").upper()


def workspace_config(n: int, *, rate_limits: str | float = "slack") -> WorkspaceConfig:
    """One channel, one human, N apps (bot-1..bot-N), one shared app, one classic app for
    troupe's rtm mode (held to today's rules) and one classic app from 2020 for SlackMQ 0.1.2."""
    apps = [
        App(
            id=app_id(bot),
            name=bot,
            bot_user_id="U0" + bot.replace("-", "").upper(),
            bot_token=f"xoxb-{bot}",
            app_token=f"xapp-{bot}",
        )
        for bot in bot_names(n)
    ]
    apps.append(
        App(
            id="A0TROUPE",
            name=SHARED_APP,
            bot_user_id="U0TROUPE",
            bot_token="xoxb-troupe",
            app_token="xapp-troupe",
        )
    )
    apps.append(
        App(
            id="A0CLASSIC",
            name=CLASSIC_APP,
            bot_user_id="U0CLASSIC",
            bot_token=CLASSIC_TOKEN,
            classic=True,
        )
    )
    apps.append(
        App(
            id=LEGACY_APP_ID,
            name="slackmq-legacy",
            bot_user_id="U0LEGACY",
            bot_token=LEGACY_TOKEN,
            classic=True,
            created=LEGACY_CREATED,
        )
    )
    return WorkspaceConfig(
        channels=[Channel(id=CHANNEL_ID, name=CHANNEL)],
        humans=[Human(id="U0ALICE", name="alice", token=HUMAN_TOKEN, is_admin=True)],
        apps=apps,
        rate_limits=rate_limits,
    )


def _secret(folder: Path, name: str, value: str) -> str:
    path = folder / f"{name}.token"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return f"file:{path}"


def write_federation(
    folder: Path,
    api_url: str,
    mode: str,
    bots: Sequence[str],
    timings: Timings,
    mqtt_port: int | None = None,
    device_count: int = len(DEVICES),
) -> Path:
    """The federation file of `bots` in one delivery mode, secrets in 0600 files beside it;
    with `mqtt_port`, the MQTT_DEVICE is the plug on the broker at 127.0.0.1:mqtt_port,
    and in shared-app mode the bots' bus runs over that broker too."""
    secrets = folder / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    roster = []
    slack_tokens = ""
    for bot in bots:
        if mode == "app-per-bot":
            bot_token = _secret(secrets, f"{bot}-bot", f"xoxb-{bot}")
            app_token = _secret(secrets, f"{bot}-app", f"xapp-{bot}")
            roster.append(f"  {bot}: {{bot_token: '{bot_token}', app_token: '{app_token}'}}")
        else:
            roster.append(f"  {bot}: {{}}")
    if mode == "rtm":
        slack_tokens = f"  bot_token: '{_secret(secrets, 'classic', CLASSIC_TOKEN)}'\n"
    elif mode == "shared-app":
        slack_tokens = (
            f"  bot_token: '{_secret(secrets, 'shared-bot', 'xoxb-troupe')}'\n"
            f"  app_token: '{_secret(secrets, 'shared-app', 'xapp-troupe')}'\n"
        )
    stream = devices(device_count)
    lines = "\n".join(
        f"  {name}: {{kind: light, area: {area}, driver: counter}}"
        if name != MQTT_DEVICE or mqtt_port is None
        else f"  {name}: {{kind: light, area: {area}, driver: {COUNTED_MQTT},"
        f" protocol: tasmota, topic: {PLUG_TOPIC}}}"
        for name, area in stream.items()
    )
    slow, cellar = SLOW_DEVICE
    lines += (
        f"\n  {slow}: {{kind: light, area: {cellar}, driver: counter,"
        f" delay_s: {1.5 * timings.lease_s:g}}}"
    )
    areas = ", ".join(f"{area}: []" for area in (*stream.values(), cellar))
    text = (
        "federation: bench\n"
        "slack:\n"
        f"  mode: {mode}\n"
        f"  channel: '#{CHANNEL}'\n"
        f"  base_url: {api_url}\n"
        f"{slack_tokens}"
        "bots:\n" + "\n".join(roster) + "\n"
        f"slackmq: {timings.yaml()}\n"
        f"journal: {folder}/{{bot}}.sqlite3\n"
        "access: {users: ['*']}\n"
        f"areas: {{{areas}}}\n"
        f"devices:\n{lines}\n"
    )
    if mqtt_port is not None:
        text += (
            f"plugins: [bench.mqttdriver]\n{COUNTED_MQTT}: {{host: 127.0.0.1, port: {mqtt_port}}}\n"
        )
    if mqtt_port is not None and mode == "shared-app":  # the bus, as docs/install.md sets it up
        key = _secret(secrets, "bus", "bench-bus-key")
        text += f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, bus: true, bus_key: '{key}'}}\n"
    path = folder / f"federation-{mode}.yaml"
    path.write_text(text)
    return path
