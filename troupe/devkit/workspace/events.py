"""The event hub: fan each workspace event out to Socket Mode and RTM connections.

The store publishes every change once; the hub decides who hears it the way Slack does
(apps whose bot user is in the channel, humans in the channel), hands each Socket Mode
event to exactly one of the app's connections and redelivers it when it is not acked,
sends RTM events to every connection of a user, and honours the control API's delayed
and paused delivery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import re
import secrets
import string
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiohttp import WSCloseCode, web

from troupe.devkit.workspace.errors import SlackError

if TYPE_CHECKING:
    from troupe.devkit.workspace.config import App
    from troupe.devkit.workspace.core import Workspace

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 3.0
"""Slack redelivers an events_api envelope that is not acked within 3 seconds."""
MAX_SOCKET_CONNECTIONS = 10
"""Slack allows at most 10 simultaneous Socket Mode connections per app."""
TICKET_TTL_S = 30.0
HEARTBEAT_S = 30.0
PAUSE_POLL_S = 0.05
"""How often a paused app is re-checked when the control API does not call wake()."""
CLOSE_FLUSH_S = 5.0
CLOSE_TIMEOUT_S = 2.0
"""How long a closing socket waits for the client's close frame (a stalled client, e.g.
slackbot's abandoned first socket, must not hold up shutdown)."""

MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
MENTIONABLE_SUBTYPES = {None, "bot_message", "thread_broadcast", "file_share", "me_message"}
_EVENT_ID_CHARS = string.ascii_uppercase + string.digits

Kind = Literal["socket_mode", "rtm"]


@dataclass(frozen=True)
class Redelivery:
    """When an envelope that is not acknowledged is sent again, and when it is given up.

    Attempt n+1 goes out `ack_timeout_s + retry_delays_s[n]` after attempt n; after the
    last retry's ack timeout the event is dropped. Slack retries three times: as soon as
    the 3 s ack timeout passes, then after about one minute, then after about five (the
    Events API's documented retry schedule, which Socket Mode envelopes share; summarised
    with its retry reasons in Classmethod's "Slack Events APIの再送仕様と回避方法まとめ").
    """

    ack_timeout_s: float
    retry_delays_s: tuple[float, ...]

    def scaled(self, factor: float) -> Redelivery:
        """The same schedule, every interval multiplied by `factor` (for tests)."""
        return Redelivery(
            self.ack_timeout_s * factor, tuple(d * factor for d in self.retry_delays_s)
        )


REDELIVERY = {
    "slack": Redelivery(ACK_TIMEOUT_S, (0.0, 60.0, 300.0)),
    "fast": Redelivery(ACK_TIMEOUT_S, (0.0, 0.0, 0.0)),
}
"""The workspace file's `redelivery:` choices; `fast` retries every 3 s, for tests."""


class Handle(Protocol):
    """A scheduled call that can be called off (asyncio.TimerHandle is one)."""

    def cancel(self) -> None: ...


class Timer(Protocol):
    """What the hub needs of a clock: asyncio's loop.call_later, or a test's own clock."""

    def call_later(self, delay: float, callback: Any, *args: Any) -> Handle: ...


@dataclass(frozen=True)
class Ticket:
    """A single-use permission to open one WebSocket, valid for 30 seconds."""

    kind: Kind
    user_id: str
    app_id: str | None
    expires: float


class Connection:
    """One open WebSocket whose frames are written in order by a single writer task.

    `send` never blocks, so the store's synchronous publish can fan out to slow clients
    without waiting for any of them.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        *,
        kind: Kind,
        user_id: str,
        app_id: str | None,
    ) -> None:
        self.id = next(self._ids)
        self.ws = ws
        self.kind = kind
        self.user_id = user_id
        self.app_id = app_id
        self.host = f"applink-{secrets.token_hex(5)}"
        self._transport = transport
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write())
        self.detached = asyncio.Event()

    def send(self, frame: dict[str, Any]) -> None:
        """Queue one JSON frame; dropped silently once the connection is going away."""
        if not self._writer.done():
            self._queue.put_nowait(json.dumps(frame, separators=(",", ":")))

    async def _write(self) -> None:
        while (text := await self._queue.get()) is not None:
            try:
                await self.ws.send_str(text)
            except ConnectionError:
                return

    async def close(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Flush what is queued, then close with a close frame."""
        self._queue.put_nowait(None)
        if not self._writer.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_FLUSH_S)
            except TimeoutError:
                self._writer.cancel()
        await self.ws.close(code=code)

    def abort(self) -> None:
        """Cut the TCP connection without a close frame, as a network failure would."""
        self._writer.cancel()
        if self._transport is not None:
            self._transport.abort()

    def stop(self) -> None:
        """Stop writing: the peer is gone."""
        self._writer.cancel()


@dataclass
class _Held:
    """One event on its way to one app, waiting for its turn, delay or unpause."""

    event: dict[str, Any]
    channel: str
    mentioned: bool
    event_time: int
    due: float


@dataclass
class _Pending:
    """An events_api payload not yet acked by any of the app's connections."""

    app_id: str
    payload: dict[str, Any]
    attempt: int = 0
    envelope_ids: set[str] = field(default_factory=set)
    timer: Handle | None = None


class EventHub:
    """Every open Socket Mode and RTM connection, and the delivery of events to them."""

    def __init__(self, ws: Workspace, clock: Timer | None = None) -> None:
        self.ws = ws
        self.redelivery = REDELIVERY[ws.config.redelivery]
        self.clock = clock
        """Schedules ack timeouts and retries; None means the running event loop."""
        self._tickets: dict[str, Ticket] = {}
        self._connections: dict[int, Connection] = {}
        self._round_robin: dict[str, int] = {}
        self._pending: dict[str, _Pending] = {}
        self._lanes: dict[str, deque[_Held]] = {}
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._closed = False

    # -- tickets -----------------------------------------------------------------------

    def new_socket_ticket(self, app_id: str) -> str:
        """A ticket for apps.connections.open: ws://<host>/link/?ticket=<t>&app_id=<id>."""
        return self._new_ticket("socket_mode", self._app(app_id).bot_user_id, app_id)

    def new_rtm_ticket(self, user_id: str, app_id: str | None) -> str:
        """A ticket for rtm.connect / rtm.start: ws://<host>/websocket/<t>."""
        return self._new_ticket("rtm", user_id, app_id)

    def _new_ticket(self, kind: Kind, user_id: str, app_id: str | None) -> str:
        now = time.monotonic()
        for stale in [t for t, v in self._tickets.items() if v.expires <= now]:
            del self._tickets[stale]
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = Ticket(kind, user_id, app_id, now + TICKET_TTL_S)
        return ticket

    def take_ticket(self, ticket: str, kind: Kind) -> Ticket | None:
        """Use up a ticket; None when it is unknown, already used, expired or of the other kind."""
        given = ticket.encode()
        key = next((k for k in self._tickets if hmac.compare_digest(k.encode(), given)), None)
        found = self._tickets.pop(key) if key is not None else None
        if found is None or found.kind != kind or found.expires <= time.monotonic():
            return None
        return found

    # -- connections -------------------------------------------------------------------

    def connections(
        self, kind: Kind, *, app_id: str | None = None, user_id: str | None = None
    ) -> list[Connection]:
        """Open connections of one kind, oldest first, optionally of one app or user."""
        return [
            c
            for c in self._connections.values()
            if c.kind == kind
            and (app_id is None or c.app_id == app_id)
            and (user_id is None or c.user_id == user_id)
        ]

    def attach(self, conn: Connection) -> None:
        """Start delivering to a connection that has just been opened."""
        self._connections[conn.id] = conn
        log.debug("connection %d (%s of %s) attached", conn.id, conn.kind, conn.app_id)

    def detach(self, conn: Connection) -> None:
        """Forget a connection whose WebSocket has ended; its unacked envelopes go elsewhere."""
        self._connections.pop(conn.id, None)
        conn.stop()
        conn.detached.set()
        log.debug("connection %d detached", conn.id)

    def hello(self, conn: Connection) -> dict[str, Any]:
        """Socket Mode's first frame on a new connection."""
        return {
            "type": "hello",
            "num_connections": len(self.connections("socket_mode", app_id=conn.app_id)),
            "debug_info": {
                "host": conn.host,
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": conn.app_id},
        }

    async def drop(self, app_id: str, one: bool = False) -> int:
        """Cut every connection of an app (or a human's RTM connections) abruptly; `one`:
        only its oldest (one Pi's Wi-Fi, where the fleet shares one app)."""
        doomed = [c for c in self._connections.values() if app_id in (c.app_id, c.user_id)]
        doomed = doomed[:1] if one else doomed
        for conn in doomed:
            conn.abort()
        if doomed:
            waits = [asyncio.ensure_future(c.detached.wait()) for c in doomed]
            _, late = await asyncio.wait(waits, timeout=CLOSE_FLUSH_S)
            for wait in late:
                wait.cancel()
        return len(doomed)

    async def disconnect(self, app_id: str, reason: str) -> int:
        """Send a Socket Mode disconnect frame ("warning", "refresh_requested"...) to an app."""
        conns = self.connections("socket_mode", app_id=app_id)
        for conn in conns:
            conn.send({"type": "disconnect", "reason": reason, "debug_info": {"host": conn.host}})
        return len(conns)

    def connections_summary(self) -> dict[str, Any]:
        """Open connections per app and per human, with events held or awaiting an ack."""
        apps: dict[str, Any] = {}
        for app in self.ws.config.apps:
            apps[app.id] = {
                "socket_mode": len(self.connections("socket_mode", app_id=app.id)),
                "rtm": len(self.connections("rtm", app_id=app.id)),
                "unacked": len({id(p) for p in self._pending.values() if p.app_id == app.id}),
                "held": len(self._lanes.get(app.id, ())),
            }
        humans = {
            h.id: {"rtm": len(self.connections("rtm", user_id=h.id))} for h in self.ws.config.humans
        }
        return {"apps": apps, "humans": humans}

    # -- publishing --------------------------------------------------------------------

    def publish(self, event: dict[str, Any], *, channel: str) -> None:
        """Deliver one Slack event (the inner event dict) to everyone who may see the channel.

        Called synchronously from the server loop by the store; nothing here waits.
        """
        if self._closed:
            return
        try:
            members = set(self.ws.store.channel_members(channel))
        except (SlackError, KeyError) as err:
            log.warning("event for unknown channel %s not delivered: %s", channel, err)
            return
        mentioned = _mentions(event)
        event_time = int(time.time())
        loop = asyncio.get_running_loop()
        apps_by_user = {a.bot_user_id: a for a in self.ws.config.apps}
        for user_id in members:
            app = apps_by_user.get(user_id)
            if app is None:
                for conn in self.connections("rtm", user_id=user_id):
                    conn.send(event)
                continue
            delay = self.ws.faults.event_delay_s.get(app.id, 0.0)
            held = _Held(
                event, channel, app.bot_user_id in mentioned, event_time, loop.time() + delay
            )
            self._enqueue(app, held)

    def wake(self) -> None:
        """Tell paused lanes the faults changed (the control API calls this after unpausing)."""
        self._wake.set()

    def _enqueue(self, app: App, held: _Held) -> None:
        lane = self._lanes.setdefault(app.id, deque())
        if (
            not lane
            and app.id not in self.ws.faults.paused_apps
            and held.due <= asyncio.get_running_loop().time()
        ):
            self._dispatch(app, held)
            return
        lane.append(held)
        if app.id not in self._lane_tasks:
            self._lane_tasks[app.id] = asyncio.get_running_loop().create_task(self._drain(app))

    async def _drain(self, app: App) -> None:
        """Deliver an app's held events in order once each is due and the app is not paused."""
        lane = self._lanes[app.id]
        loop = asyncio.get_running_loop()
        try:
            while lane:
                if app.id in self.ws.faults.paused_apps:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), PAUSE_POLL_S)
                    continue
                wait = lane[0].due - loop.time()
                if wait > 0:
                    await asyncio.sleep(min(wait, PAUSE_POLL_S * 10))
                    continue
                self._dispatch(app, lane.popleft())
        finally:
            self._lane_tasks.pop(app.id, None)

    def _dispatch(self, app: App, held: _Held) -> None:
        if app.app_token:
            self._deliver(app, held.event, held)
            if held.mentioned:
                self._deliver(app, _app_mention(held.event), held)
        for conn in self.connections("rtm", user_id=app.bot_user_id):
            conn.send(held.event)

    # -- Socket Mode envelopes and acks ----------------------------------------------

    def _deliver(self, app: App, event: dict[str, Any], held: _Held) -> None:
        team_id = self.ws.config.team.id
        payload = {
            "token": _verification_token(team_id, app.id),
            "team_id": team_id,
            "context_team_id": team_id,
            "context_enterprise_id": None,
            "api_app_id": app.id,
            "event": event,
            "type": "event_callback",
            "event_id": "Ev" + "".join(secrets.choice(_EVENT_ID_CHARS) for _ in range(9)),
            "event_time": held.event_time,
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": team_id,
                    "user_id": app.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": _event_context(event, team_id, app.id, held.channel),
        }
        self._send_envelope(_Pending(app.id, payload))

    def _send_envelope(self, pending: _Pending) -> None:
        envelope_id = str(uuid.uuid4())
        pending.envelope_ids.add(envelope_id)
        self._pending[envelope_id] = pending
        conns = self.connections("socket_mode", app_id=pending.app_id)
        if conns:
            turn = self._round_robin.get(pending.app_id, 0)
            self._round_robin[pending.app_id] = turn + 1
            conn = conns[turn % len(conns)]
            event = pending.payload["event"]
            log.debug(
                "envelope %s (%s %s) attempt %d to connection %d",
                envelope_id[:8],
                event.get("type"),
                event.get("ts") or event.get("item", {}).get("ts"),
                pending.attempt,
                conn.id,
            )
            conn.send(
                {
                    "envelope_id": envelope_id,
                    "payload": pending.payload,
                    "type": "events_api",
                    "accepts_response_payload": False,
                    "retry_attempt": pending.attempt,
                    "retry_reason": "timeout" if pending.attempt else "",
                }
            )
        pending.timer = self._later(self.redelivery.ack_timeout_s, self._expired, pending)

    def _later(self, delay: float, callback: Any, *args: Any) -> Handle:
        return (self.clock or asyncio.get_running_loop()).call_later(delay, callback, *args)

    def _expired(self, pending: _Pending) -> None:
        """The ack timeout passed: retry now or after the schedule's pause, or give up."""
        if self._closed or pending.timer is None:
            return
        delays = self.redelivery.retry_delays_s
        if pending.attempt >= len(delays):
            self._settle(pending)
            log.info(
                "event %s to %s given up after %d retries",
                pending.payload["event_id"],
                pending.app_id,
                len(delays),
            )
            return
        pause = delays[pending.attempt]
        if pause > 0:
            pending.timer = self._later(pause, self._retry, pending)
        else:
            self._retry(pending)

    def _retry(self, pending: _Pending) -> None:
        if self._closed or pending.timer is None:
            return
        pending.attempt += 1
        self._send_envelope(pending)

    def ack(self, conn: Connection, envelope_id: str) -> bool:
        """A client acked an envelope; True when it was awaiting an ack from that app."""
        pending = self._pending.get(envelope_id)
        if pending is None or pending.app_id != conn.app_id:
            return False
        log.debug("envelope %s acked on connection %d", envelope_id[:8], conn.id)
        self._settle(pending)
        return True

    def _settle(self, pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        for envelope_id in pending.envelope_ids:
            self._pending.pop(envelope_id, None)

    # -- shutdown ----------------------------------------------------------------------

    async def close(self) -> None:
        """Close every connection and stop every timer (server shutdown)."""
        self._closed = True
        for pending in list(self._pending.values()):
            self._settle(pending)
        for task in list(self._lane_tasks.values()):
            task.cancel()
        conns = list(self._connections.values())
        if conns:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    def _app(self, app_id: str) -> App:
        for app in self.ws.config.apps:
            if app.id == app_id:
                return app
        raise KeyError(app_id)


def _mentions(event: dict[str, Any]) -> set[str]:
    """User ids mentioned as <@U…> in a plain message (what triggers app_mention)."""
    if event.get("type") != "message" or event.get("subtype") not in MENTIONABLE_SUBTYPES:
        return set()
    text = event.get("text")
    return set(MENTION.findall(text)) if isinstance(text, str) else set()


def _app_mention(message: dict[str, Any]) -> dict[str, Any]:
    mention = {k: v for k, v in message.items() if k not in ("channel_type", "subtype")}
    mention["type"] = "app_mention"
    return mention


def _verification_token(team_id: str, app_id: str) -> str:
    """A stable stand-in for the app's (deprecated) verification token."""
    return hashlib.sha256(f"{team_id}:{app_id}".encode()).hexdigest()[:24]


def _event_context(event: dict[str, Any], team_id: str, app_id: str, channel: str) -> str:
    """Slack's opaque event_context: "4-" and base64url JSON naming the event's place."""
    body = {"et": event.get("type"), "tid": team_id, "aid": app_id, "cid": channel}
    raw = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
    return "4-" + raw.rstrip("=")
