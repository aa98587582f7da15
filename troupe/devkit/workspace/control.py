"""The control API: what tests, the benchmark and the demo use to steer the workspace.

Not part of Slack. Every route needs `Authorization: Bearer <config.control_token>`
(missing or wrong: 401 {"ok": false, "error": "not_authed" | "invalid_auth"}). JSON in,
JSON out; bad input answers 400 {"ok": false, "error": "invalid_arguments", "detail"}.
`app` arguments take an app id ("A0KITCHEN") or name ("kitchen-pi").

POST /control/post        {user, channel, text, thread_ts?, reply_broadcast?}
                          Post as a human or an app's bot user (id or name) into a
                          channel (id, "#name" or name) -> {ok, channel, ts, message}.
                          Slack's errors (not_in_channel, ...) answer 400.
POST /control/latency     {latency_ms, jitter_ms?} -> added to every Web API call.
POST /control/fail        {method, status: 429|500|502|503, count, retry_after?, app?}
                          The next `count` calls of `method` (by `app`, or by anyone)
                          answer that HTTP status.
POST /control/stall       {method, seconds, count, app?} The next `count` calls of
                          `method` are carried out at once and answered `seconds` later
                          (a client with a shorter timeout lost the answer).
POST /control/ratelimit   {window_s?, multiplier?} Shorten the limiter's window (so a
                          test gets Retry-After of seconds) and/or set the multiplier
                          (null = off); forgets counted calls -> {ok, window_s, multiplier}.
POST /control/drop        {app, one?} Cut every WebSocket of the app (or a human's RTM);
                          one: true cuts only its oldest.
POST /control/disconnect  {app, reason: "warning"|"refresh_requested"} Send Slack's
                          Socket Mode disconnect frame to the app's connections.
POST /control/delay       {app, seconds} Delay the app's events (0 removes the delay).
POST /control/pause       {app, paused} Hold the app's events until unpaused.
GET  /control/counters    (or POST) -> {ok, calls: {key: {method: n}}, http_429: {...},
                          query_tokens: {...}} key: an app id, or a human's user id;
                          query_tokens counts calls refused for a token in the query string.
POST /control/counters/reset  Zero the counters.
GET  /control/connections (or POST) -> the event hub's summary of open connections.
POST /control/threads     {channel} -> {ok, threads: {parent ts: [reply, ...]}} Every
                          thread's replies at once (what a run's observer reads back).
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from troupe.devkit.workspace.core import FailRule, StallRule, Workspace
from troupe.devkit.workspace.errors import SlackError

log = logging.getLogger(__name__)

Body = dict[str, Any]
Route = Callable[[Workspace, Body], Awaitable[Body]]

FAIL_STATUSES = {429, 500, 502, 503}
DISCONNECT_REASONS = {"warning", "refresh_requested", "too_many_websockets"}


class BadInput(ValueError):
    """The control request's JSON is not what the endpoint takes (answered 400)."""


def _field(body: Body, name: str, kind: type | tuple[type, ...], *, default: Any = ...) -> Any:
    value = body.get(name, default)
    if value is ...:
        raise BadInput(f"missing {name}")
    if value is default and default is not ...:
        return value
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadInput(f"{name} must be {kind}")
    if not isinstance(value, kind):
        raise BadInput(f"{name} has the wrong type")
    return value


def _number(body: Body, name: str, *, default: Any = ..., low: float = 0) -> float:
    value = _field(body, name, (int, float), default=default)
    if value is None or value < low:
        raise BadInput(f"{name} must be a number >= {low}")
    return float(value)


def _app_id(ws: Workspace, body: Body, *, humans: bool = False) -> str:
    ref = _field(body, "app", str)
    for app in ws.config.apps:
        if ref in (app.id, app.name):
            return app.id
    if humans:
        for human in ws.config.humans:
            if ref in (human.id, human.name):
                return human.id
    raise BadInput(f"unknown app {ref!r}")


async def _hub(ws: Workspace, name: str, *args: Any) -> Any:
    fn = getattr(ws.hub, name, None)
    if fn is None:
        return {"ok": False, "error": "not_available"}
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


async def post(ws: Workspace, body: Body) -> Body:
    user = ws.store.resolve_user(_field(body, "user", str))
    channel = ws.store.resolve_channel(_field(body, "channel", str), user=user)
    app = ws.store.app_for_user(user)
    message = ws.store.post_message(
        user=user,
        channel=channel,
        text=_field(body, "text", str),
        thread_ts=_field(body, "thread_ts", str, default=None),
        reply_broadcast=_field(body, "reply_broadcast", bool, default=False),
        app_id=app.id if app else None,
        bot_id=app.bot_id if app else None,
    )
    return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}


async def latency(ws: Workspace, body: Body) -> Body:
    ws.faults.latency_ms = _number(body, "latency_ms")
    ws.faults.jitter_ms = _number(body, "jitter_ms", default=0)
    return {"ok": True, "latency_ms": ws.faults.latency_ms, "jitter_ms": ws.faults.jitter_ms}


async def fail(ws: Workspace, body: Body) -> Body:
    method = _field(body, "method", str)
    status = _field(body, "status", int)
    if status not in FAIL_STATUSES:
        raise BadInput(f"status must be one of {sorted(FAIL_STATUSES)}")
    count = int(_number(body, "count", low=1))
    retry_after = int(_number(body, "retry_after", default=1, low=1))
    app_id = _app_id(ws, body) if body.get("app") is not None else None
    after = bool(_field(body, "after", bool, default=False))
    if after and status == 429:
        raise BadInput("a 429 means Slack did not carry the call out: after must be false")
    rule = FailRule(status, count, retry_after, app_id, after)
    ws.faults.fail.setdefault(method, []).append(rule)
    return {"ok": True}


async def stall(ws: Workspace, body: Body) -> Body:
    method = _field(body, "method", str)
    seconds = _number(body, "seconds", low=0)
    count = int(_number(body, "count", low=1))
    app_id = _app_id(ws, body) if body.get("app") is not None else None
    ws.faults.stall.setdefault(method, []).append(StallRule(seconds, count, app_id))
    return {"ok": True}


async def ratelimit(ws: Workspace, body: Body) -> Body:
    window_s = _number(body, "window_s", default=None, low=0.1) if "window_s" in body else None
    multiplier: float | str | None = ""
    if "multiplier" in body:
        multiplier = None if body["multiplier"] is None else _number(body, "multiplier", low=1e-6)
    ws.limiter.configure(window_s=window_s, multiplier=multiplier)
    return {"ok": True, "window_s": ws.limiter.window_s, "multiplier": ws.limiter.multiplier}


async def drop(ws: Workspace, body: Body) -> Body:
    one = _field(body, "one", bool, default=False)
    result = await _hub(ws, "drop", _app_id(ws, body, humans=True), one)
    return result if isinstance(result, dict) else {"ok": True, "dropped": result}


async def disconnect(ws: Workspace, body: Body) -> Body:
    reason = _field(body, "reason", str, default="warning")
    if reason not in DISCONNECT_REASONS:
        raise BadInput(f"reason must be one of {sorted(DISCONNECT_REASONS)}")
    result = await _hub(ws, "disconnect", _app_id(ws, body), reason)
    return result if isinstance(result, dict) else {"ok": True, "disconnected": result}


async def delay(ws: Workspace, body: Body) -> Body:
    app_id = _app_id(ws, body)
    seconds = _number(body, "seconds")
    if seconds:
        ws.faults.event_delay_s[app_id] = seconds
    else:
        ws.faults.event_delay_s.pop(app_id, None)
    return {"ok": True}


async def pause(ws: Workspace, body: Body) -> Body:
    app_id = _app_id(ws, body)
    if _field(body, "paused", bool):
        ws.faults.paused_apps.add(app_id)
    else:
        ws.faults.paused_apps.discard(app_id)
        wake = getattr(ws.hub, "wake", None)
        if wake is not None:
            wake()
    return {"ok": True, "paused": sorted(ws.faults.paused_apps)}


def _nested(counter: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (key, method), n in sorted(counter.items()):
        out.setdefault(key, {})[method] = n
    return out


async def counters(ws: Workspace, body: Body) -> Body:
    return {
        "ok": True,
        "calls": _nested(ws.calls),
        "http_429": _nested(ws.http_429),
        "query_tokens": _nested(ws.query_tokens),
    }


async def counters_reset(ws: Workspace, body: Body) -> Body:
    ws.calls.clear()
    ws.http_429.clear()
    ws.query_tokens.clear()
    return {"ok": True}


async def connections(ws: Workspace, body: Body) -> Body:
    result = await _hub(ws, "connections_summary")
    return result if isinstance(result, dict) and "ok" in result else {"ok": True, **result}


async def threads(ws: Workspace, body: Body) -> Body:
    channel = ws.store.resolve_channel(_field(body, "channel", str))
    return {"ok": True, "threads": ws.store.threads(channel)}


ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "post"): post,
    ("POST", "latency"): latency,
    ("POST", "fail"): fail,
    ("POST", "stall"): stall,
    ("POST", "ratelimit"): ratelimit,
    ("POST", "drop"): drop,
    ("POST", "disconnect"): disconnect,
    ("POST", "delay"): delay,
    ("POST", "pause"): pause,
    ("GET", "counters"): counters,
    ("POST", "counters"): counters,
    ("POST", "counters/reset"): counters_reset,
    ("GET", "connections"): connections,
    ("POST", "connections"): connections,
    ("POST", "threads"): threads,
}
"""Reads also answer POST, so RunningWorkspace.control("counters") works."""


def _authorized(ws: Workspace, request: web.Request) -> str | None:
    """None when the control token is right, else the error code to answer."""
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        return "not_authed"
    given = auth[7:].strip().encode()
    return None if hmac.compare_digest(given, ws.config.control_token.encode()) else "invalid_auth"


async def _body(request: web.Request) -> Body:
    if request.method != "POST" or not request.body_exists:
        return {}
    data = await request.read()
    if not data.strip():
        return {}
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise BadInput("the body must be a JSON object") from err
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def setup(app: web.Application, ws: Workspace) -> None:
    """Register /control/* (see the module docstring)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        route = ROUTES.get((request.method, request.match_info["action"]))
        if route is None:
            return web.json_response({"ok": False, "error": "unknown_control"}, status=404)
        denied = _authorized(ws, request)
        if denied:
            return web.json_response({"ok": False, "error": denied}, status=401)
        try:
            return web.json_response(await route(ws, await _body(request)))
        except BadInput as err:
            detail = str(err)
            return web.json_response(
                {"ok": False, "error": "invalid_arguments", "detail": detail}, status=400
            )
        except SlackError as err:
            return web.json_response({"ok": False, "error": err.code}, status=400)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"ok": False, "error": "request_too_large"}, status=413)
        except Exception:
            log.exception("bug in the control API answering %s", request.path)
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)

    app.router.add_route("*", "/control/{action:.+}", handle)
