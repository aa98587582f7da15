"""Socket Mode against real slack_sdk clients: one delivery per event, acks, retries, faults."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from slack_sdk import WebClient
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.aiohttp import SocketModeClient as AioSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from troupe.devkit.workspace import events
from troupe.devkit.workspace.config import Channel, WorkspaceConfig, demo_config
from troupe.devkit.workspace.server import build_workspace
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace

APP = "A0KITCHEN"
APP_TOKEN = "xapp-kitchen"
HUMAN_TOKEN = "xoxp-alice"
WAIT_S = 20.0


class Inbox:
    """What the clients received, by connection, with a way to wait for more."""

    def __init__(self) -> None:
        self.items: list[tuple[int, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def add(self, conn: int, envelope: dict[str, Any]) -> None:
        with self._cond:
            self.items.append((conn, envelope))
            self._cond.notify_all()

    def wait_for(self, check: Callable[[list[tuple[int, dict[str, Any]]]], bool]) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: check(self.items), timeout=WAIT_S):
                raise AssertionError(f"not received in time; got {len(self.items)} envelopes")

    def messages(self) -> list[tuple[int, dict[str, Any]]]:
        with self._cond:
            return [(c, e) for c, e in self.items if e["payload"]["event"]["type"] == "message"]


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll server-side state (there is no event to wait on from the test's thread)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def summary(rw: RunningWorkspace, app_id: str = APP) -> dict[str, int]:
    return rw.call_soon(rw.workspace.hub.connections_summary)["apps"][app_id]


def on_server(rw: RunningWorkspace, coro: Any) -> Any:
    """Run a coroutine (e.g. hub.drop) on the workspace's loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, rw.loop).result(timeout=WAIT_S)


def envelope_of(req: SocketModeRequest) -> dict[str, Any]:
    return {
        "envelope_id": req.envelope_id,
        "payload": req.payload,
        "retry_attempt": req.retry_attempt,
        "retry_reason": req.retry_reason,
    }


def unlimited(config: WorkspaceConfig | None = None) -> WorkspaceConfig:
    """apps.connections.open is Tier 1; these tests open many connections on purpose."""
    return (config or demo_config()).model_copy(update={"rate_limits": "off"})


@pytest.fixture
def workspace() -> Iterator[RunningWorkspace]:
    """The demo workspace without rate limits (they are tested with the Web API)."""
    with running_workspace(unlimited()) as running:
        yield running


def close_all(clients: list[SocketModeClient]) -> None:
    """Each builtin client takes seconds to stop its threads: stop them side by side, and
    never wait forever, as slack_sdk's builtin close() can hang joining its reader."""
    closers = [threading.Thread(target=c.close, daemon=True) for c in clients]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(timeout=15)


@pytest.fixture
def builtin_clients(workspace: RunningWorkspace) -> Iterator[tuple[list[SocketModeClient], Inbox]]:
    """Three builtin SocketModeClients of one app that ack everything they get."""
    inbox = Inbox()
    clients = []
    for index in range(3):
        client = SocketModeClient(
            app_token=APP_TOKEN, web_client=WebClient(base_url=workspace.api_url), ping_interval=1
        )

        def listener(c: SocketModeClient, req: SocketModeRequest, index: int = index) -> None:
            c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            inbox.add(index, envelope_of(req))

        client.socket_mode_request_listeners.append(listener)
        clients.append(client)
    try:
        for client in clients:
            client.connect()
        wait_until(lambda: summary(workspace)["socket_mode"] == 3, "3 connections")
        yield clients, inbox
    finally:
        close_all(clients)


def post(rw: RunningWorkspace, text: str, channel: str = "C0HOME") -> str:
    return WebClient(token=HUMAN_TOKEN, base_url=rw.api_url).chat_postMessage(
        channel=channel, text=text
    )["ts"]


def assert_each_once(inbox: Inbox, posted: list[str], connections: int) -> None:
    messages = inbox.messages()
    by_ts = Counter(e["payload"]["event"]["ts"] for _, e in messages)
    assert sorted(by_ts) == sorted(posted)
    assert set(by_ts.values()) == {1}, "an event reached more than one connection"
    assert len({e["payload"]["event_id"] for _, e in messages}) == len(posted)
    assert all(e["retry_attempt"] == 0 for _, e in messages)
    assert {c for c, _ in messages} == set(range(connections)), "every connection gets a share"


def test_builtin_client_three_connections_each_event_once(
    workspace: RunningWorkspace, builtin_clients: tuple[list[SocketModeClient], Inbox]
) -> None:
    _, inbox = builtin_clients
    posted = [post(workspace, f"message {i}") for i in range(100)]
    inbox.wait_for(lambda items: len(items) >= 100)
    wait_until(lambda: summary(workspace)["unacked"] == 0, "every envelope acked")
    assert_each_once(inbox, posted, 3)
    assert len(inbox.items) == 100


async def test_aiohttp_client_three_connections_each_event_once(
    workspace: RunningWorkspace,
) -> None:
    inbox = Inbox()
    clients = []
    for index in range(3):
        client = AioSocketModeClient(
            app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=workspace.api_url)
        )

        async def listener(
            c: AioSocketModeClient, req: SocketModeRequest, index: int = index
        ) -> None:
            await c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            inbox.add(index, envelope_of(req))

        client.socket_mode_request_listeners.append(listener)
        clients.append(client)
    web = AsyncWebClient(token=HUMAN_TOKEN, base_url=workspace.api_url)
    try:
        for client in clients:
            await client.connect()
        await asyncio.to_thread(
            wait_until, lambda: summary(workspace)["socket_mode"] == 3, "3 connections"
        )
        posted = [
            (await web.chat_postMessage(channel="C0HOME", text=f"message {i}"))["ts"]
            for i in range(100)
        ]
        await asyncio.to_thread(inbox.wait_for, lambda items: len(items) >= 100)
        await asyncio.to_thread(
            wait_until, lambda: summary(workspace)["unacked"] == 0, "every envelope acked"
        )
    finally:
        for client in clients:
            await client.close()
    assert_each_once(inbox, posted, 3)
    assert len(inbox.items) == 100


def test_envelope_shape_matches_slack(
    workspace: RunningWorkspace, builtin_clients: tuple[list[SocketModeClient], Inbox]
) -> None:
    _, inbox = builtin_clients
    ts = post(workspace, "shape check")
    inbox.wait_for(lambda items: len(items) >= 1)
    envelope = inbox.items[0][1]
    payload = envelope["payload"]
    assert envelope["retry_reason"] == ""
    assert payload["type"] == "event_callback"
    assert payload["api_app_id"] == APP
    assert payload["team_id"] == "T0HOME"
    assert payload["event_id"].startswith("Ev")
    assert isinstance(payload["event_time"], int)
    assert payload["is_ext_shared_channel"] is False
    assert payload["event_context"].startswith("4-")
    assert payload["authorizations"] == [
        {
            "enterprise_id": None,
            "team_id": "T0HOME",
            "user_id": "U0KITCHEN",
            "is_bot": True,
            "is_enterprise_install": False,
        }
    ]
    event = payload["event"]
    assert (event["type"], event["ts"], event["channel"], event["user"]) == (
        "message",
        ts,
        "C0HOME",
        "U0ALICE",
    )
    assert event["text"] == "shape check"


# -- raw WebSocket clients: for frames the SDK clients hide (hello, retries, disconnects) --


async def open_url(rw: RunningWorkspace, token: str = APP_TOKEN) -> str:
    return (await AsyncWebClient(base_url=rw.api_url).apps_connections_open(app_token=token))["url"]


async def connect(session: aiohttp.ClientSession, rw: RunningWorkspace) -> Any:
    """A raw Socket Mode connection, past its hello frame."""
    sock = await session.ws_connect(await open_url(rw))
    hello = await sock.receive_json(timeout=WAIT_S)
    assert hello["type"] == "hello"
    return sock


async def next_envelope(sock: Any) -> dict[str, Any]:
    frame = await sock.receive_json(timeout=WAIT_S)
    assert frame["type"] == "events_api", frame
    return frame


async def apost(rw: RunningWorkspace, text: str, channel: str = "C0HOME") -> str:
    web = AsyncWebClient(token=HUMAN_TOKEN, base_url=rw.api_url)
    return (await web.chat_postMessage(channel=channel, text=text))["ts"]


async def test_hello_frame(workspace: RunningWorkspace) -> None:
    async with aiohttp.ClientSession() as session:
        first = await session.ws_connect(await open_url(workspace))
        hello = await first.receive_json(timeout=WAIT_S)
        second = await session.ws_connect(await open_url(workspace))
        hello2 = await second.receive_json(timeout=WAIT_S)
    assert hello["type"] == "hello"
    assert hello["num_connections"] == 1
    assert hello2["num_connections"] == 2
    assert hello["connection_info"] == {"app_id": APP}
    assert hello["debug_info"]["approximate_connection_time"] == 18060
    assert hello["debug_info"]["host"].startswith("applink-")


class Frames:
    """Every frame of several raw connections, in one queue tagged by connection index."""

    def __init__(self, socks: list[Any]) -> None:
        self.queue: asyncio.Queue[tuple[int, dict[str, Any] | None]] = asyncio.Queue()
        self._tasks = [asyncio.ensure_future(self._read(i, s)) for i, s in enumerate(socks)]

    async def _read(self, index: int, sock: Any) -> None:
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await self.queue.put((index, msg.json()))
        await self.queue.put((index, None))

    async def next(self) -> tuple[int, dict[str, Any] | None]:
        return await asyncio.wait_for(self.queue.get(), WAIT_S)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()


async def test_unacked_envelope_is_retried_on_another_connection(
    workspace: RunningWorkspace,
) -> None:
    async with aiohttp.ClientSession() as session:
        socks = [await connect(session, workspace), await connect(session, workspace)]
        frames = Frames(socks)
        ts = await apost(workspace, "nobody acks this at first")
        first_on, first = await frames.next()
        assert first is not None and first["retry_attempt"] == 0
        assert first["payload"]["event"]["ts"] == ts
        retry_on, retry = await frames.next()
        assert retry is not None
        assert retry_on != first_on
        assert (retry["retry_attempt"], retry["retry_reason"]) == (1, "timeout")
        assert retry["payload"]["event_id"] == first["payload"]["event_id"]
        assert retry["envelope_id"] != first["envelope_id"]
        await socks[retry_on].send_json({"envelope_id": retry["envelope_id"]})
        await asyncio.to_thread(
            wait_until, lambda: summary(workspace)["unacked"] == 0, "the retry acked"
        )
        frames.stop()


async def test_retries_stop_after_three() -> None:
    """Over real sockets, with the `fast` schedule (every ack timeout) scaled to 0.3 s."""
    with running_workspace(unlimited().model_copy(update={"redelivery": "fast"})) as workspace:
        hub = workspace.workspace.hub
        assert hub.redelivery == events.REDELIVERY["fast"]
        workspace.call_soon(setattr, hub, "redelivery", events.REDELIVERY["fast"].scaled(0.1))
        async with aiohttp.ClientSession() as session:
            frames = Frames([await connect(session, workspace)])
            await apost(workspace, "never acked")
            attempts = []
            for _ in range(4):
                _, frame = await frames.next()
                assert frame is not None
                attempts.append((frame["retry_attempt"], frame["retry_reason"]))
            assert attempts == [(0, ""), (1, "timeout"), (2, "timeout"), (3, "timeout")]
            await asyncio.to_thread(
                wait_until, lambda: summary(workspace)["unacked"] == 0, "the event given up"
            )
            frames.stop()


class ManualClock:
    """A clock the test moves by hand: call_later callbacks run when advance() passes them."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[list[Any]] = []

    class _Handle:
        def __init__(self, entry: list[Any]) -> None:
            self.entry = entry

        def cancel(self) -> None:
            self.entry[2] = None

    def call_later(self, delay: float, callback: Any, *args: Any) -> ManualClock._Handle:
        entry = [self.now + delay, len(self._timers), callback, args]
        self._timers.append(entry)
        return self._Handle(entry)

    def advance(self, to: float) -> None:
        while due := sorted((e for e in self._timers if e[2] and e[0] <= to), key=lambda e: e[:2]):
            entry = due[0]
            self._timers.remove(entry)
            self.now = entry[0]
            entry[2](*entry[3])
        self.now = to


class Recorder:
    """A stand-in Socket Mode connection of kitchen-pi that never acks: it notes each frame."""

    id, kind, user_id, app_id = -1, "socket_mode", "U0KITCHEN", APP

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.frames: list[tuple[float, dict[str, Any]]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.frames.append((self.clock.now, frame))

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("redelivery", "sent_at"),
    [
        ("slack", [0.0, 3.0, 66.0, 369.0]),  # ack timeout, then +1 min, then +5 min
        ("fast", [0.0, 3.0, 6.0, 9.0]),
    ],
)
async def test_unacked_envelopes_come_back_on_the_configured_schedule(
    redelivery: str, sent_at: list[float]
) -> None:
    """No real waiting: the hub runs on a clock the test advances second by second."""
    config = unlimited().model_copy(update={"redelivery": redelivery})
    ws = build_workspace(config)
    clock = ManualClock()
    ws.hub.clock = clock
    conn = Recorder(clock)
    ws.hub.attach(conn)  # type: ignore[arg-type]
    try:
        ws.store.post_message(user="U0ALICE", channel="C0HOME", text="nobody acks this")
        for second in range(int(sent_at[-1]) + 10):
            clock.advance(float(second))
        times = [t for t, _ in conn.frames]
        frames = [f for _, f in conn.frames]
        assert times == sent_at
        assert [(f["retry_attempt"], f["retry_reason"]) for f in frames] == [
            (0, ""),
            (1, "timeout"),
            (2, "timeout"),
            (3, "timeout"),
        ]
        assert len({f["payload"]["event_id"] for f in frames}) == 1
        assert len({f["envelope_id"] for f in frames}) == 4
        assert ws.hub.connections_summary()["apps"][APP]["unacked"] == 0, "given up at the end"
    finally:
        await ws.hub.close()
        ws.store.close()


async def test_an_ack_during_slacks_one_minute_pause_stops_the_retries() -> None:
    ws = build_workspace(unlimited())
    clock = ManualClock()
    ws.hub.clock = clock
    conn = Recorder(clock)
    ws.hub.attach(conn)  # type: ignore[arg-type]
    try:
        ws.store.post_message(user="U0ALICE", channel="C0HOME", text="acked late")
        clock.advance(30.0)
        assert [f["retry_attempt"] for _, f in conn.frames] == [0, 1]
        assert ws.hub.ack(conn, conn.frames[0][1]["envelope_id"])  # type: ignore[arg-type]
        clock.advance(1000.0)
        assert len(conn.frames) == 2
        assert ws.hub.connections_summary()["apps"][APP]["unacked"] == 0
    finally:
        await ws.hub.close()
        ws.store.close()


async def test_late_ack_of_an_earlier_attempt_settles_the_event(
    workspace: RunningWorkspace,
) -> None:
    async with aiohttp.ClientSession() as session:
        sock = await connect(session, workspace)
        frames = Frames([sock])
        await apost(workspace, "acked late")
        _, first = await frames.next()
        _, retry = await frames.next()
        assert first is not None and retry is not None and retry["retry_attempt"] == 1
        await sock.send_json({"envelope_id": first["envelope_id"]})
        await asyncio.to_thread(
            wait_until, lambda: summary(workspace)["unacked"] == 0, "the late ack counted"
        )
        frames.stop()


async def test_eleventh_connection_is_refused_with_too_many_websockets(
    workspace: RunningWorkspace,
) -> None:
    async with aiohttp.ClientSession() as session:
        socks = [await connect(session, workspace) for _ in range(events.MAX_SOCKET_CONNECTIONS)]
        extra = await session.ws_connect(await open_url(workspace))
        frame = await extra.receive_json(timeout=WAIT_S)
        assert frame["type"] == "disconnect"
        assert frame["reason"] == "too_many_websockets"
        closing = await extra.receive(timeout=WAIT_S)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert summary(workspace)["socket_mode"] == 10
        for sock in socks:
            await sock.close()


async def test_ticket_is_single_use_and_bound_to_its_app(workspace: RunningWorkspace) -> None:
    url = await open_url(workspace)
    async with aiohttp.ClientSession() as session:
        sock = await session.ws_connect(url)
        assert (await sock.receive_json(timeout=WAIT_S))["type"] == "hello"
        with pytest.raises(aiohttp.WSServerHandshakeError) as reused:
            await session.ws_connect(url)
        assert reused.value.status == 401
        other = (await open_url(workspace)).replace("app_id=A0KITCHEN", "app_id=A0HALL")
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(other)
        async with session.get(await open_url(workspace)) as plain:
            assert plain.status == 400
            assert (await plain.json())["ok"] is False
        assert summary(workspace)["socket_mode"] == 1


async def test_expired_ticket_is_refused(
    workspace: RunningWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "TICKET_TTL_S", -1.0)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(await open_url(workspace))


async def test_disconnect_frames_on_demand(workspace: RunningWorkspace) -> None:
    async with aiohttp.ClientSession() as session:
        socks = [await connect(session, workspace), await connect(session, workspace)]
        hub = workspace.workspace.hub
        for reason in ("warning", "refresh_requested"):
            assert on_server(workspace, hub.disconnect(APP, reason)) == 2
            for sock in socks:
                frame = await sock.receive_json(timeout=WAIT_S)
                assert frame["type"] == "disconnect"
                assert frame["reason"] == reason
                assert frame["debug_info"]["host"].startswith("applink-")
        assert on_server(workspace, hub.disconnect("A0HALL", "warning")) == 0


def test_sdk_client_reconnects_after_refresh_requested(
    workspace: RunningWorkspace, builtin_clients: tuple[list[SocketModeClient], Inbox]
) -> None:
    _, inbox = builtin_clients
    hub = workspace.workspace.hub
    before = {c.id for c in workspace.call_soon(hub.connections, "socket_mode")}
    assert on_server(workspace, hub.disconnect(APP, "refresh_requested")) == 3

    def renewed() -> bool:
        now = {c.id for c in workspace.call_soon(hub.connections, "socket_mode")}
        return len(now) == 3 and not now & before

    wait_until(renewed, "three fresh connections")
    ts = post(workspace, "after the refresh")
    inbox.wait_for(lambda items: any(e["payload"]["event"]["ts"] == ts for _, e in items))


async def test_drop_cuts_every_connection_of_the_app(workspace: RunningWorkspace) -> None:
    async with aiohttp.ClientSession() as session:
        kitchen = [await connect(session, workspace), await connect(session, workspace)]
        hall = await session.ws_connect(await open_url(workspace, "xapp-hall"))
        assert (await hall.receive_json(timeout=WAIT_S))["type"] == "hello"
        hub = workspace.workspace.hub
        assert on_server(workspace, hub.drop(APP)) == 2
        for sock in kitchen:
            msg = await sock.receive(timeout=WAIT_S)
            assert msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            )
        assert summary(workspace)["socket_mode"] == 0
        assert summary(workspace, "A0HALL")["socket_mode"] == 1


def test_sdk_client_recovers_from_a_drop(
    workspace: RunningWorkspace, builtin_clients: tuple[list[SocketModeClient], Inbox]
) -> None:
    _, inbox = builtin_clients
    assert on_server(workspace, workspace.workspace.hub.drop(APP)) == 3
    wait_until(lambda: summary(workspace)["socket_mode"] == 3, "the clients to reconnect")
    ts = post(workspace, "after the drop")
    inbox.wait_for(lambda items: any(e["payload"]["event"]["ts"] == ts for _, e in items))


async def acked_messages(frames: Frames, sock: Any, count: int) -> list[str]:
    """The ts of the next `count` message events on one connection, acking each."""
    got = []
    while len(got) < count:
        _, frame = await frames.next()
        assert frame is not None and frame["type"] == "events_api"
        await sock.send_json({"envelope_id": frame["envelope_id"]})
        assert frame["retry_attempt"] == 0
        got.append(frame["payload"]["event"]["ts"])
    return got


async def test_delayed_events_are_held_then_delivered_in_order(
    workspace: RunningWorkspace,
) -> None:
    faults = workspace.workspace.faults
    async with aiohttp.ClientSession() as session:
        sock = await connect(session, workspace)
        frames = Frames([sock])
        workspace.call_soon(faults.event_delay_s.__setitem__, APP, 2.0)
        posted = [await apost(workspace, f"late {i}") for i in range(3)]
        assert summary(workspace)["held"] == 3
        assert frames.queue.empty()
        assert await acked_messages(frames, sock, 3) == posted
        assert summary(workspace)["held"] == 0
        frames.stop()


async def test_paused_events_wait_for_unpause_and_keep_their_order(
    workspace: RunningWorkspace,
) -> None:
    faults = workspace.workspace.faults
    async with aiohttp.ClientSession() as session:
        sock = await connect(session, workspace)
        frames = Frames([sock])
        workspace.call_soon(faults.paused_apps.add, APP)
        posted = [await apost(workspace, f"paused {i}") for i in range(5)]
        assert summary(workspace)["held"] == 5
        assert summary(workspace, "A0HALL")["held"] == 0
        assert frames.queue.empty()
        workspace.call_soon(faults.paused_apps.discard, APP)
        workspace.call_soon(workspace.workspace.hub.wake)
        assert await acked_messages(frames, sock, 5) == posted
        workspace.call_soon(faults.paused_apps.add, APP)
        again = await apost(workspace, "paused again")
        assert summary(workspace)["held"] == 1
        workspace.call_soon(faults.paused_apps.discard, APP)
        assert await acked_messages(frames, sock, 1) == [again], "unpaused without wake()"
        frames.stop()


def test_app_mention_goes_only_to_the_mentioned_app(
    workspace: RunningWorkspace, builtin_clients: tuple[list[SocketModeClient], Inbox]
) -> None:
    _, inbox = builtin_clients
    hall = Inbox()
    client = SocketModeClient(
        app_token="xapp-hall", web_client=WebClient(base_url=workspace.api_url)
    )

    def listener(c: SocketModeClient, req: SocketModeRequest) -> None:
        c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        hall.add(0, envelope_of(req))

    client.socket_mode_request_listeners.append(listener)
    client.connect()
    try:
        ts = post(workspace, "<@U0KITCHEN> lights on")
        inbox.wait_for(lambda items: len(items) >= 2)
        hall.wait_for(lambda items: len(items) >= 1)
        kinds = sorted(e["payload"]["event"]["type"] for _, e in inbox.items)
        assert kinds == ["app_mention", "message"]
        mention = next(e for _, e in inbox.items if e["payload"]["event"]["type"] == "app_mention")
        assert mention["payload"]["event"]["ts"] == ts
        assert mention["payload"]["event"]["text"] == "<@U0KITCHEN> lights on"
        follow = post(workspace, "plain")
        hall.wait_for(lambda items: len(items) >= 2)
        assert [e["payload"]["event"]["type"] for _, e in hall.items] == ["message", "message"]
        assert [e["payload"]["event"]["ts"] for _, e in hall.items] == [ts, follow]
    finally:
        close_all([client])


def test_only_apps_in_the_channel_hear_it() -> None:
    base = demo_config()
    config = WorkspaceConfig.model_validate(
        {
            **base.model_dump(),
            "channels": [
                *[c.model_dump() for c in base.channels],
                Channel(id="C0SHED", name="shed", members=["U0ALICE", "U0HALL"]).model_dump(),
            ],
        }
    )
    with running_workspace(unlimited(config)) as rw:
        kitchen = Inbox()
        client = SocketModeClient(app_token=APP_TOKEN, web_client=WebClient(base_url=rw.api_url))

        def listener(c: SocketModeClient, req: SocketModeRequest) -> None:
            c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            kitchen.add(0, envelope_of(req))

        client.socket_mode_request_listeners.append(listener)
        client.connect()
        try:
            wait_until(lambda: summary(rw)["socket_mode"] == 1, "the connection")
            post(rw, "in the shed", channel="C0SHED")
            home = post(rw, "at home")
            kitchen.wait_for(lambda items: len(items) >= 1)
            assert [e["payload"]["event"]["ts"] for _, e in kitchen.items] == [home]
        finally:
            close_all([client])


def test_bot_receives_its_own_messages(
    workspace: RunningWorkspace, builtin_clients: tuple[list[SocketModeClient], Inbox]
) -> None:
    _, inbox = builtin_clients
    bot = WebClient(token="xoxb-kitchen", base_url=workspace.api_url)
    ts = bot.chat_postMessage(channel="C0HOME", text="I said this")["ts"]
    inbox.wait_for(lambda items: len(items) >= 1)
    event = inbox.items[0][1]["payload"]["event"]
    assert (event["ts"], event["user"], event["bot_id"]) == (ts, "U0KITCHEN", "B0KITCHEN")


async def test_bad_frames_from_the_client_are_ignored(workspace: RunningWorkspace) -> None:
    async with aiohttp.ClientSession() as session:
        sock = await connect(session, workspace)
        for junk in ("not json", "[1, 2]", '{"envelope_id": 5}', '{"envelope_id": "nope"}'):
            await sock.send_str(junk)
        await sock.send_bytes(b"\x00\x01")
        ts = await apost(workspace, "still alive")
        frame = await next_envelope(sock)
        assert frame["payload"]["event"]["ts"] == ts
        await sock.send_json({"envelope_id": frame["envelope_id"]})
        await asyncio.to_thread(wait_until, lambda: summary(workspace)["unacked"] == 0, "ack")


async def test_control_api_drives_the_hub(workspace: RunningWorkspace) -> None:
    async with aiohttp.ClientSession() as session:
        sock = await connect(session, workspace)
        answer = await asyncio.to_thread(
            workspace.control, "disconnect", app=APP, reason="refresh_requested"
        )
        assert answer == {"ok": True, "disconnected": 1}
        frame = await sock.receive_json(timeout=WAIT_S)
        assert (frame["type"], frame["reason"]) == ("disconnect", "refresh_requested")
        listing = await asyncio.to_thread(workspace.control, "connections")
        assert listing["apps"][APP]["socket_mode"] == 1
        assert listing["humans"]["U0ALICE"] == {"rtm": 0}
        await asyncio.to_thread(workspace.control, "pause", app=APP, paused=True)
        ts = await apost(workspace, "held by the control API")
        assert summary(workspace)["held"] == 1
        await asyncio.to_thread(workspace.control, "pause", app=APP, paused=False)
        envelope = await next_envelope(sock)
        assert envelope["payload"]["event"]["ts"] == ts
        await sock.send_json({"envelope_id": envelope["envelope_id"]})
        second = await connect(session, workspace)  # a fleet sharing one app: two Pis
        answer = await asyncio.to_thread(workspace.control, "drop", app=APP, one=True)
        assert answer == {"ok": True, "dropped": 1}  # one Pi's Wi-Fi: the oldest goes
        assert summary(workspace)["socket_mode"] == 1
        assert (await sock.receive()).type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert not second.closed
        answer = await asyncio.to_thread(workspace.control, "drop", app=APP)
        assert answer == {"ok": True, "dropped": 1}
        assert summary(workspace)["socket_mode"] == 0
