"""Assemble the workspace's aiohttp application and serve it."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from troupe.devkit.workspace import control, page, rtm, socketmode, webapi
from troupe.devkit.workspace.config import WorkspaceConfig, demo_config
from troupe.devkit.workspace.core import WORKSPACE_KEY, Faults, Workspace
from troupe.devkit.workspace.events import EventHub
from troupe.devkit.workspace.guard import LOOPBACK_NAMES, guard, host_names
from troupe.devkit.workspace.ratelimit import RateLimiter
from troupe.devkit.workspace.store import Store

log = logging.getLogger(__name__)

LOOPBACK = LOOPBACK_NAMES


class UnsafeBindError(ValueError):
    """The workspace would serve the demo's published tokens beyond this machine."""


def build_workspace(config: WorkspaceConfig, state_path: str | Path | None = None) -> Workspace:
    """Wire a store, an event hub and a rate limiter around one config."""
    ws = Workspace(
        config=config,
        store=None,  # type: ignore[arg-type]  # set just below: the store needs the hub
        hub=None,  # type: ignore[arg-type]
        limiter=RateLimiter(config.rate_multiplier),
        faults=Faults(latency_ms=config.latency_ms),
    )
    ws.hub = EventHub(ws)
    ws.store = Store(config, state_path=state_path, publish=ws.hub.publish)
    return ws


def build_app(ws: Workspace, host: str = "127.0.0.1") -> web.Application:
    """The aiohttp application: Web API, Socket Mode, RTM, control API and chat page,
    answering only requests that name `host`, loopback or `allowed_hosts` (guard.py)."""
    names = host_names(host, ws.config.allowed_hosts)
    app = web.Application(client_max_size=1024**2, middlewares=[guard(names)])
    app[WORKSPACE_KEY] = ws
    for part in (webapi, socketmode, rtm, control, page):
        part.setup(app, ws)

    async def _close(_app: web.Application) -> None:
        await ws.hub.close()
        ws.store.close()

    app.on_shutdown.append(_close)
    return app


async def start(ws: Workspace, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (call .cleanup() to stop) and the bound port.

    Raises UnsafeBindError for an address other than loopback while the config uses any
    of the demo's tokens: they are published, so anyone who reached it could act as them.
    Only a workspace file that names the hosts it serves (`allowed_hosts`, e.g. the
    compose network's service name) may do so: the built-in demo never can.
    """
    if host not in LOOPBACK and uses_demo_tokens(ws.config) and not ws.config.allowed_hosts:
        raise UnsafeBindError(
            f"the workspace uses the demo's published tokens, so it serves only 127.0.0.1 "
            f"and not {host}; bind 127.0.0.1, or give every person and app its own token "
            "in a workspace file"
        )
    if host not in LOOPBACK:
        log.warning(
            "WARNING: the workspace is bound to %s, so anyone who can reach this address and "
            "knows a token can read and post; bind 127.0.0.1 unless you mean it (clients must "
            "name it in Host: list other names they use in allowed_hosts).",
            host,
        )
    runner = web.AppRunner(
        build_app(ws, host),
        access_log=None,
        handle_signals=False,
        max_line_size=65536,
        max_field_size=65536,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


def tokens(config: WorkspaceConfig) -> set[str]:
    """Every token a workspace config hands out."""
    found = {h.token for h in config.humans} | {a.bot_token for a in config.apps}
    return found | {a.app_token for a in config.apps if a.app_token}


def uses_demo_tokens(config: WorkspaceConfig) -> bool:
    """Whether the config hands out any token of the demo workspace (they are public)."""
    return bool(tokens(config) & tokens(demo_config()))
