"""Run a workspace in a background thread: for tests, the benchmark and plugin authors.

Sync clients (slacker, slackbot, slack_sdk's WebClient) block, so the server gets its
own thread and event loop and the test talks to it over real HTTP and WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from troupe.devkit.workspace.config import WorkspaceConfig, demo_config
from troupe.devkit.workspace.core import Workspace
from troupe.devkit.workspace.server import build_workspace, start


@dataclass
class RunningWorkspace:
    """A workspace serving on 127.0.0.1; `api_url` is what slack_sdk takes as base_url."""

    workspace: Workspace
    host: str
    port: int
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        return f"{self.url}api/"

    def call_soon(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the server's loop and return its result (thread-safe)."""

        async def _run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(_run(), self.loop).result(timeout=10)

    def control(self, action: str, **body: Any) -> dict[str, Any]:
        """POST to the control API and return its JSON answer."""
        req = urllib.request.Request(
            f"{self.url}control/{action}",
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.workspace.config.control_token}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())


SLACKER_ERA = date(2020, 6, 1)
"""A day when apps could still send tokens in the query string and call rtm.start."""


def legacy_apps(config: WorkspaceConfig | None = None) -> WorkspaceConfig:
    """The config (the demo's by default) with every app created in 2020 and every person's
    token allowed in the query string: what slacker-era clients (slacker 0.14, slackbot
    1.0.5, SlackMQ 0.1.2) need, since they send tokens only in the query string."""
    config = config or demo_config()
    apps = [a.model_copy(update={"created": SLACKER_ERA}) for a in config.apps]
    humans = [h.model_copy(update={"legacy_query_tokens": True}) for h in config.humans]
    return config.model_copy(update={"apps": apps, "humans": humans})


@contextmanager
def running_workspace(
    config: WorkspaceConfig | None = None,
    state_path: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[RunningWorkspace]:
    """Serve a workspace (on a free port unless one is given) during the with-block."""
    config = config or demo_config()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def _thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            ws = build_workspace(config, state_path)
            runner, bound = loop.run_until_complete(start(ws, host, port))
            box.update(ws=ws, runner=runner, port=bound)
        except BaseException as err:  # reported to the caller below
            box["error"] = err
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=_thread, name="workspace", daemon=True)
    thread.start()
    if not ready.wait(timeout=30):
        raise TimeoutError("the workspace did not start within 30 s")
    if "error" in box:
        raise box["error"]
    try:
        yield RunningWorkspace(box["ws"], host, box["port"], loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
