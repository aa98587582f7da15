"""RTM: the user/bot WebSocket at /websocket/{ticket} that rtm.connect and rtm.start point to."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from troupe.devkit.workspace.core import WORKSPACE_KEY, Workspace
from troupe.devkit.workspace.errors import SlackError
from troupe.devkit.workspace.events import CLOSE_TIMEOUT_S, HEARTBEAT_S, Connection

log = logging.getLogger(__name__)

EXPIRED = 1
SEND_FAILED = 2
UNKNOWN_TYPE = 3
BAD_FRAME = 4
ERROR_TEXT = {"no_text": "message text is missing", "channel_not_found": "channel not found"}
"""Slack's own wording for the common send failures; other codes are passed as they are."""
SILENTLY_ACCEPTED = {"typing", "presence_sub", "presence_query", "pong"}
"""Frames Slack accepts without an answer (this workspace does not track presence)."""


def setup(app: web.Application, ws: Workspace) -> None:
    """Register GET /websocket/{ticket} (the URL rtm.connect returns)."""
    app.router.add_get("/websocket/{ticket}", _websocket)


async def _websocket(request: web.Request) -> web.StreamResponse:
    ws: Workspace = request.app[WORKSPACE_KEY]
    resp = web.WebSocketResponse(heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S)
    if not resp.can_prepare(request).ok:
        return web.json_response({"ok": False, "error": "websocket_required"}, status=400)
    await resp.prepare(request)
    ticket = ws.hub.take_ticket(request.match_info["ticket"], "rtm")
    if ticket is None:
        await resp.send_json(_error(EXPIRED, "Socket URL has expired"))
        await resp.close(code=WSCloseCode.POLICY_VIOLATION)
        return resp
    conn = Connection(
        resp, request.transport, kind="rtm", user_id=ticket.user_id, app_id=ticket.app_id
    )
    ws.hub.attach(conn)
    conn.send({"type": "hello"})
    try:
        async for msg in resp:
            if msg.type == WSMsgType.TEXT:
                _on_text(ws, conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.send(_error(BAD_FRAME, "binary frames are not supported"))
    finally:
        ws.hub.detach(conn)
    return resp


def _error(code: int, msg: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "msg": msg}}


def _on_text(ws: Workspace, conn: Connection, text: str) -> None:
    """Answer one client frame; a bad frame gets an error frame, never a dropped socket."""
    try:
        frame = json.loads(text)
    except ValueError:
        conn.send(_error(BAD_FRAME, "invalid JSON"))
        return
    if not isinstance(frame, dict):
        conn.send(_error(BAD_FRAME, "a frame must be a JSON object"))
        return
    kind = frame.get("type")
    if kind == "ping":
        pong = {k: v for k, v in frame.items() if k != "id"}
        pong["type"] = "pong"
        if "id" in frame:
            pong["reply_to"] = frame["id"]
        conn.send(pong)
    elif kind == "message":
        _send_message(ws, conn, frame)
    elif kind in SILENTLY_ACCEPTED:
        return
    else:
        conn.send(_reply_error(frame, UNKNOWN_TYPE, f"unsupported type: {kind!r:.40}"))


def _reply_error(frame: dict[str, Any], code: int, msg: str) -> dict[str, Any]:
    """The error answer to a frame: tied to its id when it has one, as Slack does."""
    if "id" in frame:
        return {"ok": False, "reply_to": frame["id"], "error": {"code": code, "msg": msg}}
    return _error(code, msg)


def _send_message(ws: Workspace, conn: Connection, frame: dict[str, Any]) -> None:
    """Post a message typed into the socket as the connection's user (or bot)."""
    channel, text, thread_ts = frame.get("channel"), frame.get("text"), frame.get("thread_ts")
    if not isinstance(channel, str) or not channel:
        conn.send(_reply_error(frame, SEND_FAILED, "channel not found"))
        return
    if not isinstance(text, str) or not text:
        conn.send(_reply_error(frame, SEND_FAILED, ERROR_TEXT["no_text"]))
        return
    if thread_ts is not None and not isinstance(thread_ts, str):
        conn.send(_reply_error(frame, SEND_FAILED, "invalid thread_ts"))
        return
    bot_id = None
    if conn.app_id is not None:
        bot_id = next((a.bot_id for a in ws.config.apps if a.id == conn.app_id), None)
    try:
        message = ws.store.post_message(
            user=conn.user_id,
            channel=channel,
            text=text,
            thread_ts=thread_ts or None,
            reply_broadcast=frame.get("reply_broadcast") is True,
            app_id=conn.app_id,
            bot_id=bot_id,
        )
    except SlackError as err:
        conn.send(_reply_error(frame, SEND_FAILED, ERROR_TEXT.get(err.code, err.code)))
        return
    if "id" in frame:
        conn.send(
            {"ok": True, "reply_to": frame["id"], "ts": message["ts"], "text": message["text"]}
        )
