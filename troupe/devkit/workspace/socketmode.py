"""Socket Mode: the app-level WebSocket at /link/ that apps.connections.open points to."""

from __future__ import annotations

import json
import logging

from aiohttp import WSMsgType, web

from troupe.devkit.workspace.core import WORKSPACE_KEY, Workspace
from troupe.devkit.workspace.events import (
    CLOSE_TIMEOUT_S,
    HEARTBEAT_S,
    MAX_SOCKET_CONNECTIONS,
    Connection,
    EventHub,
)

log = logging.getLogger(__name__)


def setup(app: web.Application, ws: Workspace) -> None:
    """Register GET /link/ (the URL apps.connections.open returns)."""
    app.router.add_get("/link/", _link)
    app.router.add_get("/link", _link)


async def _link(request: web.Request) -> web.StreamResponse:
    ws: Workspace = request.app[WORKSPACE_KEY]
    resp = web.WebSocketResponse(heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S)
    if not resp.can_prepare(request).ok:
        return web.json_response({"ok": False, "error": "websocket_required"}, status=400)
    ticket = ws.hub.take_ticket(request.query.get("ticket", ""), "socket_mode")
    if ticket is None or ticket.app_id is None or ticket.app_id != request.query.get("app_id"):
        return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
    await resp.prepare(request)
    app_id = ticket.app_id
    conn = Connection(
        resp, request.transport, kind="socket_mode", user_id=ticket.user_id, app_id=app_id
    )
    if len(ws.hub.connections("socket_mode", app_id=app_id)) >= MAX_SOCKET_CONNECTIONS:
        conn.send(
            {
                "type": "disconnect",
                "reason": "too_many_websockets",
                "debug_info": {"host": conn.host},
            }
        )
        await conn.close()
        return resp
    ws.hub.attach(conn)
    conn.send(ws.hub.hello(conn))
    try:
        async for msg in resp:
            if msg.type == WSMsgType.TEXT:
                _on_text(ws.hub, conn, msg.data)
    finally:
        ws.hub.detach(conn)
    return resp


def _on_text(hub: EventHub, conn: Connection, text: str) -> None:
    """The only frames an app sends are acks: {"envelope_id": ..., "payload"?: ...}."""
    try:
        frame = json.loads(text)
    except ValueError:
        log.debug("socket mode %s sent a frame that is not JSON: %.80r", conn.app_id, text)
        return
    envelope_id = frame.get("envelope_id") if isinstance(frame, dict) else None
    if isinstance(envelope_id, str):
        hub.ack(conn, envelope_id)
    else:
        log.debug("socket mode %s sent a frame without envelope_id: %.80r", conn.app_id, text)
