"""`troupe-dev demo`: the local workspace, three bots and simulated hardware on one machine.

The house: an MQTT broker (mosquitto, or the embedded amqtt when it is not installed), a
Hue bridge simulator, a Tasmota plug, a Zigbee2MQTT bulb and a Shelly relay on the broker,
GPIO relays on gpiozero's MockFactory in each Pi's process, and three bots — kitchen-pi,
hall-pi, garage-pi — each its own Slack app. Device states show on the chat page.
The same house is what the end-to-end tests run against (DemoHouse).
"""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from troupe.devkit.fleet import Fleet
from troupe.devkit.workspace.config import WorkspaceConfig, demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace

BOTS = {"kitchen-pi": "kitchen", "hall-pi": "hall", "garage-pi": "garage"}
HUE_USER = "troupe-demo-user"
HUE_LIGHTS = [("hall light", "color"), ("living room lamp", "ambiance")]
TASMOTA = "porch"
Z2M = ["bedroom bulb"]
SHELLY = "shellyplus1-garden"

FEDERATION = """\
federation: demo
slack:
  mode: app-per-bot
  channel: "#home"
  base_url: {base_url}
bots:
{bots}
areas: {{kitchen: [cuisine], hall: [hallway], garage: [], porch: [], garden: [],
         living room: [lounge], bedroom: []}}
channels: {{"#home": living room, "#kitchen": kitchen}}
slackmq: {{stale_s: 30, lease_s: 15, stagger_s: 0.4, linger_s: 45}}
journal: {workdir}/{{bot}}.sqlite3
hue: {{bridge: "{hue}", username: "file:{workdir}/hue.username"}}
mqtt: {{host: 127.0.0.1, port: {mqtt_port}, protocol: "{mqtt_protocol}"}}
devices:
  kitchen lamp:
    {{kind: light, area: kitchen, driver: gpio_relay, owner: kitchen-pi, pin: 17,
      active_high: false, aliases: [kitchen light]}}
  kitchen fan: {{kind: fan, area: kitchen, driver: gpio_relay, owner: kitchen-pi, pin: 27}}
  garage light: {{kind: light, area: garage, driver: gpio_relay, owner: garage-pi, pin: 17}}
  hall light: {{kind: light, area: hall, driver: hue, light: 1}}
  living room lamp: {{kind: light, area: living room, driver: hue, light: 2}}
  porch switch: {{kind: switch, area: porch, driver: mqtt, protocol: tasmota, topic: {tasmota}}}
  bedroom bulb: {{kind: light, area: bedroom, driver: mqtt, protocol: zigbee2mqtt,
                 topic: {z2m}}}
  garden pump: {{kind: switch, area: garden, driver: mqtt, protocol: shelly, topic: {shelly}}}
scenes:
  movie mode: {{hall light: {{on: true, brightness: 20}}, kitchen lamp: off,
               living room lamp: off}}
aliases: {{goodnight: turn off all lights}}
access: {{admins: [U0ALICE], users: ["*"]}}
location: {{latitude: 48.8566, longitude: 2.3522, timezone: Europe/Paris}}
automations:
  - alias: porch light at dusk
    trigger: {{platform: sun, event: sunset, offset: "-00:15:00"}}
    action: {{device: porch switch, state: on}}
"""


def _secret_file(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return f"file:{path}"


def write_federation(
    workdir: Path,
    base_url: str,
    hue: str,
    mqtt_port: int,
    mqtt5: bool = True,
    *,
    automations: bool = True,
) -> Path:
    """The demo's federation file, each secret in a 0600 file beside it; without its
    automations (the porch switch at dusk) where `automations` is False."""
    tokens = {app.name: app for app in demo_config().apps}
    lines = []
    for bot, short in BOTS.items():
        bot_token = _secret_file(workdir / f"{short}.bot.token", tokens[bot].bot_token)
        app_token = _secret_file(workdir / f"{short}.app.token", tokens[bot].app_token)
        lines.append(f"  {bot}: {{bot_token: '{bot_token}', app_token: '{app_token}'}}")
    _secret_file(workdir / "hue.username", HUE_USER)
    path = workdir / "federation.yaml"
    template = FEDERATION if automations else FEDERATION.split("automations:")[0]
    path.write_text(
        template.format(
            base_url=base_url,
            bots="\n".join(lines),
            workdir=workdir,
            hue=hue,
            mqtt_port=mqtt_port,
            mqtt_protocol="5" if mqtt5 else "3.1.1",
            tasmota=TASMOTA,
            z2m=Z2M[0],
            shelly=SHELLY,
        )
    )
    return path


@dataclass
class DemoHouse:
    """Everything `troupe-dev demo` runs, for the demo and the end-to-end tests."""

    workspace: RunningWorkspace
    fleet: Fleet
    bridge: Any
    broker: Any
    tasmota: Any
    zigbee: Any
    shelly: Any
    workdir: Path


@contextmanager
def demo_house(
    workdir: Path,
    *,
    config: WorkspaceConfig | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    echo: bool = False,
    bot_env: dict[str, str] | None = None,
    bots: Sequence[str] = tuple(BOTS),
    automations: bool = True,
) -> Iterator[DemoHouse]:
    """Start the simulated hardware, the workspace and the bots (all three unless `bots`
    names fewer: the footprint benchmark starts its one bot itself); stop all after.
    `automations`: False leaves out the demo's automations, whose firing depends on the
    time of day (a test that scales timers would see the dusk one fire in seconds)."""
    from troupe.hardware.broker import start_broker
    from troupe.hardware.hue import running_bridge
    from troupe.hardware.mqtt import ShellyPlus1, TasmotaPlug, Zigbee2Mqtt

    with ExitStack() as stack:
        broker = start_broker(0)
        stack.callback(broker.stop)
        protocol = _paho_protocol(broker.mqtt5)
        devices = [
            TasmotaPlug(TASMOTA, broker.host, broker.port, protocol=protocol),
            Zigbee2Mqtt(broker.host, broker.port, Z2M, protocol=protocol),
            ShellyPlus1(SHELLY, broker.host, broker.port, protocol=protocol),
        ]
        for device in devices:
            device.start()
            stack.callback(device.stop)
        bridge = stack.enter_context(running_bridge(HUE_LIGHTS, usernames=[HUE_USER]))
        workspace = stack.enter_context(
            running_workspace(config or demo_config(), host=host, port=port)
        )
        fed = write_federation(
            workdir,
            workspace.api_url,
            bridge.address,
            broker.port,
            broker.mqtt5,
            automations=automations,
        )
        env = {
            "GPIOZERO_PIN_FACTORY": "mock",
            "TROUPE_PAGE_URL": workspace.url,
            "TROUPE_PAGE_TOKEN": workspace.workspace.config.control_token,
            **(bot_env or {}),
        }
        fleet = Fleet(fed, workdir, env, echo=echo)
        stack.callback(fleet.stop_all)
        fleet.start_all(list(bots))
        yield DemoHouse(workspace, fleet, bridge, broker, *devices, workdir)


def _paho_protocol(mqtt5: bool) -> int:
    import paho.mqtt.client as mqtt

    return mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311


def run_demo(host: str = "127.0.0.1", port: int = 3000) -> None:
    """Run the demo house until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="troupe-demo-") as tmp:
        print("starting the demo house: broker, Hue bridge, MQTT devices, workspace…")
        with demo_house(Path(tmp), host=host, port=port, echo=True) as house:
            url = house.workspace.url
            print(f"workspace ready at {url} (Web API {url}api/)", flush=True)
            print(f"demo ready: open {url} and type “lights on” or “help” in #home", flush=True)
            stop.wait()
        print("demo stopped")
