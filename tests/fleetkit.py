"""Test support: a workspace, a federation file and bot processes, plus what the devices saw."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slack_sdk import WebClient

from troupe.devkit.fleet import Fleet
from troupe.devkit.workspace.config import Human, demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace

BOTS = ("kitchen-pi", "hall-pi", "garage-pi")
SHORT = {"kitchen-pi": "kitchen", "hall-pi": "hall", "garage-pi": "garage"}
USER_OF = {"kitchen-pi": "U0KITCHEN", "hall-pi": "U0HALL", "garage-pi": "U0GARAGE"}

DEVICES = """\
devices:
  kitchen lamp: {kind: light, area: kitchen, driver: counter, owner: kitchen-pi}
  garage light: {kind: light, area: garage, driver: counter, owner: garage-pi}
  hall light: {kind: light, area: hall, driver: counter}
  porch switch: {kind: switch, area: porch, driver: counter}
areas: {kitchen: [], garage: [], hall: [], porch: []}
"""


def _secret(tmp: Path, name: str, value: str) -> str:
    path = tmp / f"{name}.token"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return f"file:{path}"


def bus_section(tmp: Path, port: int) -> str:
    """The federation file's mqtt section for a shared-app bus on a local broker."""
    key = _secret(tmp, "bus", "a-bus-key")
    return f"mqtt: {{host: 127.0.0.1, port: {port}, bus: true, bus_key: '{key}'}}\n"


def write_federation(
    tmp: Path,
    api_url: str,
    mode: str = "app-per-bot",
    *,
    extra: str = "",
    slackmq: str = "{stale_s: 30, lease_s: 4, stagger_s: 0.3, linger_s: 45}",
    mqtt: str = "",
    plugins: str = "[]",
    access: str = '{admins: [U0ALICE], users: ["*"]}',
    devices: str | None = None,
) -> Path:
    """A federation file for the three test bots in one delivery mode."""
    apps = {a.name: a for a in demo_config().apps}
    bots = []
    slack_tokens = ""
    for bot in BOTS:
        if mode == "app-per-bot":
            app = apps[bot]
            bot_token = _secret(tmp, f"{SHORT[bot]}-bot", app.bot_token)
            app_token = _secret(tmp, f"{SHORT[bot]}-app", app.app_token)
            bots.append(f"  {bot}: {{bot_token: '{bot_token}', app_token: '{app_token}'}}")
        else:
            bots.append(f"  {bot}: {{}}")
    if mode == "rtm":
        slack_tokens = (
            f"  bot_token: '{_secret(tmp, 'classic', apps['troupe-classic'].bot_token)}'\n"
        )
    elif mode == "shared-app":
        slack_tokens = (
            f"  bot_token: '{_secret(tmp, 'shared-bot', apps['troupe'].bot_token)}'\n"
            f"  app_token: '{_secret(tmp, 'shared-app', apps['troupe'].app_token)}'\n"
        )
    text = (
        "federation: test\n"
        "slack:\n"
        f"  mode: {mode}\n"
        "  channel: '#home'\n"
        f"  base_url: {api_url}\n"
        f"{slack_tokens}"
        "bots:\n" + "\n".join(bots) + "\n"
        f"channels: {{'#kitchen': kitchen}}\n"
        f"slackmq: {slackmq}\n"
        f"journal: {tmp}/{{bot}}.sqlite3\n"
        f"plugins: {plugins}\n"
        f"access: {access}\n"
        f"{mqtt}"
        f"{devices or DEVICES}{extra}"
    )
    path = tmp / "federation.yaml"
    path.write_text(text)
    return path


@dataclass
class House:
    """A running workspace, a federation of bot processes and the counter file."""

    ws: RunningWorkspace
    fleet: Fleet
    counter: Path
    alice: WebClient

    def actions(self) -> list[dict[str, Any]]:
        if not self.counter.exists():
            return []
        return [json.loads(line) for line in self.counter.read_text().splitlines() if line]

    def say(self, text: str, channel: str = "#home", token: str | None = None) -> str:
        client = WebClient(token, base_url=self.ws.api_url) if token else self.alice
        return client.chat_postMessage(channel=channel, text=text)["ts"]

    def channel_id(self, name: str = "home") -> str:
        return {c.name: c.id for c in self.ws.workspace.config.channels}[name]

    def replies(self, ts: str, channel: str = "home") -> list[dict[str, Any]]:
        resp = self.alice.conversations_replies(channel=self.channel_id(channel), ts=ts)
        return [m for m in resp["messages"] if m["ts"] != ts]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {b.name}\n{b.output()[-3000:]}" for b in self.fleet.bots.values()
                )
                raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
            time.sleep(0.1)

    def journal(self, bot: str, query: str) -> list[tuple[Any, ...]]:
        """Read a bot's journal (SQLite in WAL mode reads fine beside the writer)."""
        path = self.fleet.workdir / f"{bot}.journal.sqlite3"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute(query).fetchall()
        finally:
            db.close()

    def per_command(self) -> Counter[tuple[str, str]]:
        return Counter((a.get("ts", "?"), a["device"]) for a in self.actions())


@contextmanager
def house(
    tmp: Path,
    mode: str = "app-per-bot",
    *,
    start: tuple[str, ...] = BOTS,
    bot_env: dict[str, dict[str, str]] | None = None,
    humans: tuple[Human, ...] = (),
    **federation: Any,
) -> Iterator[House]:
    """Serve a workspace (Slack's limits x10 so the tests stay quick) and start the bots;
    `humans` join the demo's people (guests, people of other teams)."""
    config = demo_config()
    config = config.model_copy(update={"rate_limits": 10.0, "humans": [*config.humans, *humans]})
    with running_workspace(config) as ws:
        fed = write_federation(tmp, ws.api_url, mode, **federation)
        counter = tmp / "actions.jsonl"
        fleet = Fleet(fed, tmp, {"TROUPE_COUNTER_FILE": str(counter)})
        try:
            for name in start:
                fleet.start(name, wait=False, env=(bot_env or {}).get(name))
            for name in start:
                fleet.wait_ready(name, timeout=60)
            yield House(ws, fleet, counter, WebClient("xoxp-alice", base_url=ws.api_url))
        finally:
            fleet.stop_all()
