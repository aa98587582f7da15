"""The Slack Web API at /api/{method}: tokens, arguments, limits, faults and the methods.

Every answer is Slack's: HTTP 200 with {"ok": false, "error": code} for errors (also for
unknown methods and malformed bodies), 429 with Retry-After when rate limited, and never
a 500 or a traceback, whatever a client sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from troupe.devkit.workspace.core import Caller, Workspace
from troupe.devkit.workspace.errors import SlackError
from troupe.devkit.workspace.ratelimit import METHOD_TIERS
from troupe.devkit.workspace.store import decode_cursor, encode_cursor
from troupe.manifest import BOT_SCOPES

log = logging.getLogger(__name__)

Args = dict[str, Any]

STATUS_ERRORS = {
    429: "ratelimited",
    500: "internal_error",
    502: "fatal_error",
    503: "service_unavailable",
    504: "request_timeout",
}
_CHARSETS = {"utf-8", "utf8", "iso-8859-1", "latin-1", "latin1"}


@dataclass(frozen=True)
class Call:
    """One Web API call: who makes it, with which arguments, over which request."""

    ws: Workspace
    caller: Caller | None
    args: Args
    request: web.Request

    @property
    def who(self) -> Caller:
        if self.caller is None:
            raise SlackError("not_authed")
        return self.caller

    @property
    def user(self) -> str:
        return self.who.user_id

    def string(self, name: str, *, required: str | None = None) -> str | None:
        """A string argument; `required` is the error code when it is missing or empty."""
        value = self.args.get(name)
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif value is not None and not isinstance(value, str):
            raise SlackError("invalid_arguments")
        if required and not value:
            raise SlackError(required)
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        """Slack's booleans: true/1 (any case) are true, anything else false."""
        value = self.args.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value != 0
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1")
        raise SlackError("invalid_arguments")

    def integer(self, name: str, default: int, *, low: int = 0, high: int = 1000) -> int:
        """An integer argument clamped to [low, high]; invalid_arguments if not a number."""
        value = self.args.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            raise SlackError("invalid_arguments")
        try:
            number = int(value)
        except (TypeError, ValueError) as err:
            raise SlackError("invalid_arguments") from err
        return min(max(number, low), high)

    def json_list(self, name: str, error: str) -> list[Any] | None:
        """blocks/attachments: a JSON array, given as such or as a JSON string."""
        value = self.args.get(name)
        if value is None or value == "" or value == []:
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as err:
                raise SlackError(error) from err
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise SlackError(error)
        return value or None

    def channel(self, name: str = "channel") -> str:
        """The conversation id named by an argument; channel_not_found."""
        ref = self.string(name, required="channel_not_found")
        assert ref is not None
        return self.ws.store.resolve_channel(ref)

    def visible_channel(self, name: str = "channel") -> str:
        """Like channel(), but a private channel or DM the caller is not in is not found."""
        channel = self.channel(name)
        self.ws.store.channel(channel, for_user=self.user)
        return channel

    def readable_channel(self) -> str:
        """A channel whose messages the caller may read: bots must be members (Slack's
        not_in_channel), humans may read any public channel."""
        channel = self.visible_channel()
        if self.who.kind == "bot" and not self.ws.store.is_member(self.user, channel):
            raise SlackError("not_in_channel")
        return channel


Handler = Callable[[Call], Awaitable[dict[str, Any]]]
METHODS: dict[str, Handler] = {}
TOKEN_KINDS: dict[str, frozenset[str]] = {}
DEFAULT_KINDS = frozenset({"bot", "user"})


def method(name: str, kinds: frozenset[str] = DEFAULT_KINDS) -> Callable[[Handler], Handler]:
    """Register a Web API method and the token kinds it accepts."""

    def register(fn: Handler) -> Handler:
        METHODS[name] = fn
        TOKEN_KINDS[name] = kinds
        return fn

    return register


def _page(
    items: list[Any], key: Callable[[Any], str], call: Call, kind: str, default: int
) -> tuple[list[Any], str]:
    """Cursor pagination over a stable list: (page, next_cursor)."""
    limit = call.integer("limit", default, high=1000) or len(items) or 1
    start = decode_cursor(call.string("cursor"), kind)
    if start is not None:
        ids = [key(i) for i in items]
        if start not in ids:
            raise SlackError("invalid_cursor")
        items = items[ids.index(start) :]
    page, rest = items[:limit], items[limit:]
    return page, (encode_cursor(kind, key(rest[0])) if rest else "")


def _meta(next_cursor: str | None) -> dict[str, Any]:
    return {"response_metadata": {"next_cursor": next_cursor or ""}}


# --- api, auth, connections ---------------------------------------------------------


@method("api.test", frozenset({"bot", "user", "app", "none"}))
async def api_test(call: Call) -> dict[str, Any]:
    args = {k: v for k, v in call.args.items() if k != "token"}
    error = args.get("error")
    if error:
        raise SlackError(str(error), args=args)
    return {"ok": True, "args": args}


@method("auth.test")
async def auth_test(call: Call) -> dict[str, Any]:
    ws, who = call.ws, call.who
    user = ws.store.user(who.user_id)
    out: dict[str, Any] = {
        "ok": True,
        "url": f"http://{call.request.host}/",
        "team": ws.config.team.name,
        "user": user["name"],
        "team_id": ws.config.team.id,
        "user_id": who.user_id,
    }
    app = ws.store.app_for_user(who.user_id)
    if who.kind == "bot" and app is not None:
        out["bot_id"] = app.bot_id
    out["is_enterprise_install"] = False
    return out


def _hub_call(ws: Workspace, name: str, *args: Any) -> Any:
    fn = getattr(ws.hub, name, None)
    if fn is None:
        raise SlackError("fatal_error")
    return fn(*args)


@method("apps.connections.open", frozenset({"app"}))
async def apps_connections_open(call: Call) -> dict[str, Any]:
    app_id = call.who.app_id
    ticket = _hub_call(call.ws, "new_socket_ticket", app_id)
    return {"ok": True, "url": f"ws://{call.request.host}/link/?ticket={ticket}&app_id={app_id}"}


def _rtm_allowed(call: Call) -> None:
    """RTM is for people and classic apps' bots: Slack refuses it to new apps' tokens."""
    who = call.who
    if who.kind == "bot":
        app = call.ws.store.app_for_user(who.user_id)
        if app is None or not app.classic:
            raise SlackError("not_allowed_token_type")


def _rtm_url(call: Call) -> tuple[str, dict[str, Any]]:
    _rtm_allowed(call)
    who = call.who
    ticket = _hub_call(call.ws, "new_rtm_ticket", who.user_id, who.app_id)
    user = call.ws.store.user(who.user_id)
    return f"ws://{call.request.host}/websocket/{ticket}", user


def _team(call: Call) -> dict[str, Any]:
    team = call.ws.config.team
    return {"id": team.id, "name": team.name, "domain": team.domain}


@method("rtm.connect")
async def rtm_connect(call: Call) -> dict[str, Any]:
    url, user = _rtm_url(call)
    return {
        "ok": True,
        "url": url,
        "team": _team(call),
        "self": {"id": user["id"], "name": user["name"]},
    }


@method("rtm.start")
async def rtm_start(call: Call) -> dict[str, Any]:
    """rtm.start as Slack serves it since its retirement (27 September 2022): apps created
    from 30 November 2021 get rtm_connect_required, everyone else rtm.connect's answer with
    a method_deprecated warning (https://api.slack.com/changelog/2021-10-rtm-start-to-stop
    and the errors and warnings listed on the method's reference page)."""
    if call.who.kind == "bot" and not call.who.rtm_start_allowed:
        _rtm_allowed(call)  # a new app's token is refused first, as by rtm.connect
        raise SlackError("rtm_connect_required")
    answer = await rtm_connect(call)
    return answer | {
        "warning": "method_deprecated",
        "response_metadata": {"warnings": ["method_deprecated"]},
    }


# --- chat ---------------------------------------------------------------------------


def _bot_ids(call: Call) -> dict[str, Any]:
    who = call.who
    if who.kind != "bot":
        return {}
    app = call.ws.store.app_for_user(who.user_id)
    return {"app_id": who.app_id, "bot_id": app.bot_id if app else None}


@method("chat.postMessage")
async def chat_post_message(call: Call) -> dict[str, Any]:
    ref = call.string("channel", required="channel_not_found")
    assert ref is not None
    channel = call.ws.store.resolve_channel(ref, user=call.user)
    call.ws.store.channel(channel, for_user=call.user)
    thread_ts = call.string("thread_ts") or None
    message = call.ws.store.post_message(
        user=call.user,
        channel=channel,
        text=call.string("text"),
        thread_ts=thread_ts,
        reply_broadcast=call.flag("reply_broadcast"),
        blocks=call.json_list("blocks", "invalid_blocks"),
        attachments=call.json_list("attachments", "invalid_attachments"),
        **_bot_ids(call),
    )
    return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}


@method("chat.update")
async def chat_update(call: Call) -> dict[str, Any]:
    channel = call.visible_channel()
    ts = call.string("ts", required="message_not_found")
    assert ts is not None
    message = call.ws.store.update_message(
        user=call.user,
        channel=channel,
        ts=ts,
        text=call.string("text"),
        blocks=call.json_list("blocks", "invalid_blocks"),
        attachments=call.json_list("attachments", "invalid_attachments"),
    )
    return {"ok": True, "channel": channel, "ts": ts, "text": message["text"], "message": message}


@method("chat.delete")
async def chat_delete(call: Call) -> dict[str, Any]:
    channel = call.visible_channel()
    ts = call.string("ts", required="message_not_found")
    assert ts is not None
    admin = call.who.kind == "user" and any(
        h.id == call.user and h.is_admin for h in call.ws.config.humans
    )
    call.ws.store.delete_message(user=call.user, channel=channel, ts=ts, as_admin=admin)
    return {"ok": True, "channel": channel, "ts": ts}


# --- conversations ------------------------------------------------------------------


@method("conversations.history")
async def conversations_history(call: Call) -> dict[str, Any]:
    channel = call.readable_channel()
    messages, next_cursor = call.ws.store.history(
        channel,
        latest=call.string("latest"),
        oldest=call.string("oldest"),
        inclusive=call.flag("inclusive"),
        limit=call.integer("limit", 100, low=1, high=999),
        cursor=call.string("cursor"),
    )
    return {
        "ok": True,
        "messages": messages,
        "has_more": bool(next_cursor),
        "pin_count": len(call.ws.store.pins(channel)),
        "channel_actions_ts": None,
        "channel_actions_count": 0,
        **_meta(next_cursor),
    }


@method("conversations.replies")
async def conversations_replies(call: Call) -> dict[str, Any]:
    channel = call.readable_channel()
    ts = call.string("ts", required="thread_not_found")
    assert ts is not None
    messages, next_cursor = call.ws.store.replies(
        channel,
        ts,
        latest=call.string("latest"),
        oldest=call.string("oldest"),
        inclusive=call.flag("inclusive"),
        limit=call.integer("limit", 1000, low=1, high=1000),
        cursor=call.string("cursor"),
    )
    return {"ok": True, "messages": messages, "has_more": bool(next_cursor), **_meta(next_cursor)}


_CONV_TYPES = {"public_channel", "private_channel", "im", "mpim"}


def _conv_type(conv: dict[str, Any]) -> str:
    if conv.get("is_im"):
        return "im"
    return "private_channel" if conv.get("is_private") else "public_channel"


@method("conversations.list")
async def conversations_list(call: Call) -> dict[str, Any]:
    raw = call.string("types") or "public_channel"
    types = {t.strip() for t in raw.split(",") if t.strip()}
    if not types or not types <= _CONV_TYPES:
        raise SlackError("invalid_types")
    convs = [c for c in call.ws.store.channels(for_user=call.user) if _conv_type(c) in types]
    page, next_cursor = _page(convs, lambda c: c["id"], call, "team", 100)
    return {"ok": True, "channels": page, **_meta(next_cursor)}


@method("conversations.info")
async def conversations_info(call: Call) -> dict[str, Any]:
    channel = call.channel()
    return {"ok": True, "channel": call.ws.store.channel(channel, for_user=call.user)}


@method("conversations.join")
async def conversations_join(call: Call) -> dict[str, Any]:
    channel = call.visible_channel()
    joined = call.ws.store.join(call.user, channel)
    out: dict[str, Any] = {
        "ok": True,
        "channel": call.ws.store.channel(channel, for_user=call.user),
    }
    if not joined:
        out["warning"] = "already_in_channel"
        out["response_metadata"] = {"warnings": ["already_in_channel"]}
    return out


@method("conversations.members")
async def conversations_members(call: Call) -> dict[str, Any]:
    channel = call.visible_channel()
    members = call.ws.store.channel_members(channel)
    page, next_cursor = _page(members, lambda u: u, call, "user", 100)
    return {"ok": True, "members": page, **_meta(next_cursor)}


@method("conversations.open")
async def conversations_open(call: Call) -> dict[str, Any]:
    store = call.ws.store
    existing = call.string("channel")
    if existing:
        if not store.has_im(existing):
            raise SlackError("channel_not_found")
        im_id, already = existing, True
    else:
        raw = call.string("users", required="users_list_not_supplied") or ""
        users = [u.strip() for u in raw.split(",") if u.strip()]
        if not users:
            raise SlackError("users_list_not_supplied")
        others = [u for u in dict.fromkeys(users) if u != call.user] or [call.user]
        if len(others) > 1:
            raise SlackError("method_not_supported_for_channel_type")
        already = store.has_im(store.im_id(call.user, others[0]))
        im_id = store.open_im(call.user, others[0])
    conv = store.channel(im_id, for_user=call.user)
    out: dict[str, Any] = {"ok": True}
    if already:
        out.update(no_op=True, already_open=True)
    out["channel"] = conv if call.flag("return_im") else {"id": im_id}
    return out


# --- users and bots -----------------------------------------------------------------


@method("users.list")
async def users_list(call: Call) -> dict[str, Any]:
    users = call.ws.store.users()
    page, next_cursor = _page(users, lambda u: u["id"], call, "user", 0)
    return {
        "ok": True,
        "members": page,
        "cache_ts": int(float(call.ws.store.next_ts())),
        **_meta(next_cursor),
    }


@method("users.info")
async def users_info(call: Call) -> dict[str, Any]:
    user = call.string("user", required="user_not_found")
    assert user is not None
    return {"ok": True, "user": call.ws.store.user(user)}


@method("users.getPresence")
async def users_get_presence(call: Call) -> dict[str, Any]:
    user = call.string("user") or call.user
    call.ws.store.user(user)
    return {"ok": True, "presence": "active"}


@method("bots.info")
async def bots_info(call: Call) -> dict[str, Any]:
    bot = call.string("bot", required="bot_not_found")
    assert bot is not None
    return {"ok": True, "bot": call.ws.store.bot(bot)}


# --- pins and reactions -------------------------------------------------------------


def _item_ts(call: Call) -> str:
    ts = call.string("timestamp")
    if not ts:
        raise SlackError("no_item_specified")
    return ts


@method("pins.add")
async def pins_add(call: Call) -> dict[str, Any]:
    channel = call.visible_channel()
    call.ws.store.pin(call.user, channel, _item_ts(call))
    return {"ok": True}


@method("pins.remove")
async def pins_remove(call: Call) -> dict[str, Any]:
    channel = call.visible_channel()
    call.ws.store.unpin(call.user, channel, _item_ts(call))
    return {"ok": True}


@method("pins.list")
async def pins_list(call: Call) -> dict[str, Any]:
    channel = call.visible_channel()
    return {"ok": True, "items": call.ws.store.pins(channel)}


def _reaction_target(call: Call) -> tuple[str, str, str]:
    name = call.string("name", required="invalid_name")
    assert name is not None
    if not call.string("channel") or not call.string("timestamp"):
        raise SlackError("no_item_specified")
    return call.visible_channel(), _item_ts(call), name


@method("reactions.add")
async def reactions_add(call: Call) -> dict[str, Any]:
    channel, ts, name = _reaction_target(call)
    call.ws.store.react(call.user, channel, ts, name)
    return {"ok": True}


@method("reactions.remove")
async def reactions_remove(call: Call) -> dict[str, Any]:
    channel, ts, name = _reaction_target(call)
    call.ws.store.unreact(call.user, channel, ts, name)
    return {"ok": True}


@method("reactions.get")
async def reactions_get(call: Call) -> dict[str, Any]:
    if not call.string("channel") or not call.string("timestamp"):
        raise SlackError("no_item_specified")
    channel = call.visible_channel()
    message = call.ws.store.reactions(channel, _item_ts(call))
    return {"ok": True, "type": "message", "channel": channel, "message": message}


# --- the HTTP side ------------------------------------------------------------------


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _error(code: str, status: int = 200, **extra: Any) -> web.Response:
    headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else None
    return _json({"ok": False, "error": code, **extra}, status, headers)


def _charset(request: web.Request) -> str:
    charset = (request.charset or "utf-8").lower()
    if charset not in _CHARSETS:
        raise SlackError("invalid_charset")
    return "utf-8" if charset.startswith("utf") else "iso-8859-1"


async def _body_args(request: web.Request) -> tuple[Args, str]:
    """The arguments in a POST body as Slack reads them, and the body's kind: "form"
    (urlencoded or multipart), "json", "text" (text/plain, read like a form) or ""."""
    if request.method != "POST" or not request.body_exists:
        return {}, ""
    if hdrs.CONTENT_TYPE not in request.headers:
        data = await request.read()
        if data:
            raise SlackError("missing_post_type")
        return {}, ""
    ctype = request.content_type
    if ctype == "multipart/form-data":
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise
        except (ValueError, UnicodeError, LookupError, TypeError, HttpProcessingError) as err:
            log.debug("malformed multipart body: %s", err)
            raise SlackError("invalid_form_data") from err
        return {k: v for k, v in form.items() if isinstance(v, str)}, "form"
    charset = _charset(request)
    data = await request.read()
    if ctype == "application/json":
        try:
            value = json.loads(data.decode(charset)) if data.strip() else {}
        except (UnicodeDecodeError, ValueError) as err:
            raise SlackError("invalid_json") from err
        if not isinstance(value, dict):
            raise SlackError("json_not_object")
        return value, "json"
    if ctype in ("application/x-www-form-urlencoded", "text/plain"):
        try:
            text = data.decode(charset)
            pairs = urllib.parse.parse_qsl(
                text, keep_blank_values=True, errors="strict", encoding=charset
            )
        except (UnicodeDecodeError, ValueError) as err:
            raise SlackError("invalid_form_data") from err
        return dict(pairs), "form" if ctype != "text/plain" else "text"
    raise SlackError("invalid_post_type")


def _token(request: web.Request, query: Args, body: Args, kind: str) -> tuple[str | None, str]:
    """The request's token and where it came from: "header", "form", "text" or "query".

    A JSON body's token is not read: Slack takes JSON only with the token in the
    Authorization header (https://api.slack.com/changelog/2017-10-keeping-up-with-the-jsons).
    """
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None, "header"
    for source, args in ((kind, body if kind != "json" else {}), ("query", query)):
        token = args.get("token")
        if isinstance(token, str) and token:
            return token, source
    return None, ""


QUERY_LIKE = {"query", "text"}
"""Where a token counts as sent in the URL: Slack accepts tokens of apps created since 24
February 2021 only in the Authorization header or a URL-encoded POST body
(https://api.slack.com/changelog/2020-11-no-more-tokens-in-querystrings-for-newly-created-apps);
a text/plain body is neither, and a web page can send one cross-site without asking."""


def _query_args(request: web.Request) -> Args:
    try:
        return {k: v for k, v in request.query.items()}
    except UnicodeDecodeError as err:
        raise SlackError("invalid_arguments") from err


async def _call(ws: Workspace, request: web.Request) -> web.Response:
    name = request.match_info.get("method", "")
    handler = METHODS.get(name)
    if handler is None:
        return _error("unknown_method")
    query = _query_args(request)
    body, kind = await _body_args(request)
    args = query | body
    token, source = _token(request, query, body, kind)
    kinds = TOKEN_KINDS[name]
    caller = ws.caller_for(token) if token else None
    if caller is None and "none" not in kinds:
        raise SlackError("invalid_auth" if token else "not_authed")
    if caller is not None and source in QUERY_LIKE and not caller.query_tokens_allowed:
        # Slack's answer to such a token is HTTP 200 {"ok": false, "error": "invalid_auth"}
        # (its changelog names no code; clients that hit it report invalid_auth:
        # HubSpot/slack-client#215, palanik/slack-php#9, jamietsao/slack-multi-channel-invite#6).
        ws.query_tokens[(caller.counter_key, name)] += 1
        raise SlackError("invalid_auth")
    if caller is not None and caller.kind not in kinds:
        raise SlackError("not_allowed_token_type")
    delay_ms = ws.faults.latency_ms + random.uniform(0, ws.faults.jitter_ms)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    if caller is not None:
        key = (caller.counter_key, name)
        ws.calls[key] += 1
        rule = ws.faults.take_failure(name, caller.app_id)
        if rule is not None and rule.after:
            await handler(Call(ws, caller, args, request))
            return _error(STATUS_ERRORS.get(rule.status, "fatal_error"), rule.status)
        if rule is not None:
            if rule.status == 429:
                ws.http_429[key] += 1
                return _error("ratelimited", 429, retry_after=max(1, int(rule.retry_after)))
            return _error(STATUS_ERRORS.get(rule.status, "fatal_error"), rule.status)
        channel = args.get("channel") if isinstance(args.get("channel"), str) else None
        retry_after = ws.limiter.hit(caller.budget_key, name, channel=channel)
        if retry_after is not None:
            ws.http_429[key] += 1
            return _error("ratelimited", 429, retry_after=retry_after)
        stalled = ws.faults.take_stall(name, caller.app_id)
        if stalled is not None:
            answer = await handler(Call(ws, caller, args, request))
            await asyncio.sleep(stalled.seconds)
            return _json(answer, headers=_scopes(ws, caller))
    return _json(await handler(Call(ws, caller, args, request)), headers=_scopes(ws, caller))


def _scopes(ws: Workspace, caller: Caller | None) -> dict[str, str] | None:
    """Slack's `x-oauth-scopes` header: the scopes granted to a bot token."""
    app = ws.store.app_for_user(caller.user_id) if caller and caller.kind == "bot" else None
    if app is None:
        return None
    return {"x-oauth-scopes": ",".join(BOT_SCOPES if app.scopes is None else app.scopes)}


def setup(app: web.Application, ws: Workspace) -> None:
    """Serve /api/{method} (GET and POST) for every method in METHODS."""
    missing = set(METHODS) - set(METHOD_TIERS)
    assert not missing, f"methods without a rate-limit tier: {missing}"

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await _call(ws, request)
        except SlackError as err:
            return _error(err.code, err.status, **err.extra)
        except web.HTTPRequestEntityTooLarge:
            return _error("request_too_large", 413)
        except Exception:
            log.exception("bug in the Web API answering %s", request.path)
            return _error("internal_error")

    app.router.add_route("GET", r"/api/{method:[\s\S]*}", handle)
    app.router.add_route("POST", r"/api/{method:[\s\S]*}", handle)
