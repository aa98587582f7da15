"""`troupe demo`: the local workspace, three bots and simulated devices, on one machine."""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

from troupe.fleet import Fleet
from troupe.workspace.config import demo_config
from troupe.workspace.server import build_workspace, start

BOTS = {"kitchen-pi": "kitchen", "hall-pi": "hall", "garage-pi": "garage"}

FEDERATION = """\
federation: demo
slack:
  mode: app-per-bot
  channel: "#home"
  base_url: {base_url}
bots:
{bots}
areas: {{kitchen: [cuisine], hall: [hallway], garage: [], porch: [], living room: [lounge]}}
channels: {{"#home": living room, "#kitchen": kitchen}}
slackmq: {{stale_s: 30, lease_s: 15, stagger_s: 0.4, linger_s: 45}}
journal: {workdir}/{{bot}}.sqlite3
devices:
  kitchen lamp:
    {{kind: light, area: kitchen, driver: counter, owner: kitchen-pi, aliases: [kitchen light]}}
  kitchen fan: {{kind: fan, area: kitchen, driver: counter, owner: kitchen-pi}}
  hall light: {{kind: light, area: hall, driver: counter}}
  porch switch: {{kind: switch, area: porch, driver: counter}}
  garage light: {{kind: light, area: garage, driver: counter, owner: garage-pi}}
  living room lamp: {{kind: light, area: living room, driver: counter}}
scenes:
  movie mode: {{hall light: {{on: true, brightness: 20}}, kitchen lamp: off, living room lamp: off}}
aliases: {{goodnight: turn off all lights}}
access: {{admins: [U0ALICE], users: ["*"]}}
"""


def write_federation(workdir: Path, base_url: str) -> Path:
    """The demo's federation file, with each bot's tokens in 0600 files beside it."""
    tokens = {app.name: app for app in demo_config().apps}
    lines = []
    for bot, short in BOTS.items():
        for kind, value in (("bot", tokens[bot].bot_token), ("app", tokens[bot].app_token)):
            path = workdir / f"{short}.{kind}.token"
            path.write_text(value + "\n")
            path.chmod(0o600)
        lines.append(
            f"  {bot}: {{bot_token: 'file:{workdir}/{short}.bot.token', "
            f"app_token: 'file:{workdir}/{short}.app.token'}}"
        )
    path = workdir / "federation.yaml"
    path.write_text(FEDERATION.format(base_url=base_url, bots="\n".join(lines), workdir=workdir))
    return path


async def run_demo(host: str = "127.0.0.1", port: int = 3000) -> None:
    """Serve the workspace, start the three bots, and run until Ctrl-C."""
    config = demo_config()
    ws = build_workspace(config)
    runner, bound = await start(ws, host, port)
    url = f"http://{host}:{bound}/"
    with tempfile.TemporaryDirectory(prefix="troupe-demo-") as tmp:
        workdir = Path(tmp)
        fed = write_federation(workdir, f"{url}api/")
        env = {"TROUPE_COUNTER_FILE": str(workdir / "actions.jsonl")}
        print(f"workspace ready at {url} (Web API {url}api/)", flush=True)
        fleet = Fleet(fed, workdir, env, echo=True)
        try:
            await asyncio.to_thread(fleet.start_all, list(BOTS))
            print(f"demo ready: open {url} and type “lights on” or “help” in #home", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await asyncio.to_thread(fleet.stop_all)
            await runner.cleanup()
