"""RTM against real clients: slackbot 1.0.5, slack_sdk's RTMClient and a raw WebSocket."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import slacker
from slack_sdk import WebClient
from slack_sdk.rtm_v2 import RTMClient
from slack_sdk.web.async_client import AsyncWebClient
from slackbot import settings as slackbot_settings
from slackbot.bot import Bot
from slackbot.manager import PluginsManager

from troupe.devkit.workspace import events
from troupe.devkit.workspace.config import Channel, WorkspaceConfig, demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, legacy_apps, running_workspace

CLASSIC = "A0CLASSIC"
CLASSIC_TOKEN = "xoxb-classic"
WAIT_S = 20.0


def unlimited(config: WorkspaceConfig | None = None) -> WorkspaceConfig:
    """rtm.connect is Tier 1; these tests open many connections on purpose."""
    return (config or demo_config()).model_copy(update={"rate_limits": "off"})


@pytest.fixture
def workspace() -> Iterator[RunningWorkspace]:
    """The demo workspace without rate limits (they are tested with the Web API)."""
    with running_workspace(unlimited()) as running:
        yield running


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll state that offers no event to wait on from the test's thread."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def summary(rw: RunningWorkspace) -> dict[str, Any]:
    return rw.call_soon(rw.workspace.hub.connections_summary)


def on_server(rw: RunningWorkspace, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, rw.loop).result(timeout=WAIT_S)


def post(rw: RunningWorkspace, text: str, token: str = "xoxp-bob", channel: str = "C0HOME") -> str:
    return WebClient(token=token, base_url=rw.api_url).chat_postMessage(channel=channel, text=text)[
        "ts"
    ]


class Socket:
    """A raw RTM connection: every frame it got, and a way to wait for the next ones."""

    def __init__(self, sock: aiohttp.ClientWebSocketResponse) -> None:
        self.sock = sock

    async def next(self) -> dict[str, Any]:
        frame = await self.sock.receive_json(timeout=WAIT_S)
        assert isinstance(frame, dict)
        return frame

    async def next_message(self) -> dict[str, Any]:
        while (frame := await self.next()).get("type") != "message":
            continue
        return frame

    async def send(self, frame: dict[str, Any] | str) -> None:
        if isinstance(frame, str):
            await self.sock.send_str(frame)
        else:
            await self.sock.send_json(frame)


async def rtm(session: aiohttp.ClientSession, rw: RunningWorkspace, token: str) -> Socket:
    """Open an RTM connection the documented way: rtm.connect, then the URL, then hello."""
    answer = await AsyncWebClient(token=token, base_url=rw.api_url).rtm_connect()
    sock = Socket(await session.ws_connect(answer["url"]))
    assert await sock.next() == {"type": "hello"}
    return sock


# -- slackbot 1.0.5 ---------------------------------------------------------------------


class _StopBot(BaseException):
    """Raised inside slackbot's endless dispatcher loop to end its thread."""


@pytest.fixture
def old_workspace() -> Iterator[RunningWorkspace]:
    """Apps created in 2020: unmodified slackbot 1.0.5 sends tokens in the query string."""
    with running_workspace(unlimited(legacy_apps())) as running:
        yield running


@pytest.mark.compat
def test_slackbot_answers_a_listen_to_plugin(
    old_workspace: RunningWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = old_workspace
    monkeypatch.setattr(slacker, "get_api_url", lambda method: f"{workspace.api_url}{method}")
    monkeypatch.setattr(slackbot_settings, "API_TOKEN", CLASSIC_TOKEN, raising=False)
    monkeypatch.setattr(slackbot_settings, "PLUGINS", [])
    heard: list[str] = []

    def answer(message: Any, number: str) -> None:
        heard.append(number)
        message.send(f"pong {number}")

    monkeypatch.setitem(
        PluginsManager.commands["listen_to"], re.compile(r"^ping-bot (\d+)$"), answer
    )
    box: dict[str, Any] = {}
    reading, stopping = threading.Event(), threading.Event()

    def run() -> None:
        try:
            bot = box["bot"] = Bot()
            read = bot._client.rtm_read

            def rtm_read() -> list[dict[str, Any]]:
                if stopping.is_set():
                    raise _StopBot
                reading.set()
                return read()

            bot._client.rtm_read = rtm_read
            bot.run()
        except _StopBot:
            return

    thread = threading.Thread(target=run, name="slackbot", daemon=True)
    thread.start()
    try:
        # slackbot 1.0.5 calls rtm.start twice (in SlackClient() and again in Bot.run())
        # and reads only the second socket: it is listening once its loop reads.
        assert reading.wait(timeout=WAIT_S), "slackbot never started reading RTM"

        async def converse() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session:
                alice = await rtm(session, workspace, "xoxp-alice")
                ts = await asyncio.to_thread(post, workspace, "ping-bot 42", "xoxp-alice")
                mine = await alice.next_message()
                assert mine["ts"] == ts
                return await alice.next_message()

        reply = asyncio.run(converse())
    finally:
        stopping.set()
        thread.join(timeout=WAIT_S)
        if "bot" in box:
            box["bot"]._client.websocket.close()
    assert not thread.is_alive()
    assert heard == ["42"]
    assert reply["text"] == "pong 42"
    assert reply["user"] == "U0CLASSIC"
    assert reply["bot_id"] == "B0CLASSIC"
    assert reply["channel"] == "C0HOME"


# -- slack_sdk RTMClient: every connection of the bot user gets every event --------------


def record_into(
    got: list[str], done: threading.Condition
) -> Callable[[RTMClient, dict[str, Any]], None]:
    """An RTMClient listener (it must take exactly client and event) that keeps each ts."""

    def on_message(client: RTMClient, event: dict[str, Any]) -> None:
        with done:
            got.append(event["ts"])
            done.notify_all()

    return on_message


def close_rtm_client(client: RTMClient) -> None:
    """RTMClient.close() leaves its monitor running, which would reconnect; stop it all."""
    client.auto_reconnect_enabled = False
    client.close()
    client.current_session_state.terminated = True
    for runner in (client.current_app_monitor, client.current_session_runner):
        if runner.is_alive():
            runner.shutdown()
    if client.message_processor.is_alive():
        client.message_processor.shutdown()
    client.message_workers.shutdown()


def test_three_rtm_connections_each_receive_every_message(workspace: RunningWorkspace) -> None:
    received: list[list[str]] = [[], [], []]
    done = threading.Condition()
    clients = []
    for index in range(3):
        client = RTMClient(
            web_client=WebClient(token=CLASSIC_TOKEN, base_url=workspace.api_url),
            ping_interval=1,
        )

        client.on("message")(record_into(received[index], done))
        clients.append(client)
    try:
        for client in clients:
            client.connect()
        wait_until(lambda: summary(workspace)["apps"][CLASSIC]["rtm"] == 3, "3 RTM connections")
        posted = [post(workspace, f"to everyone {i}") for i in range(30)]
        with done:
            assert done.wait_for(lambda: all(len(r) >= 30 for r in received), timeout=WAIT_S)
    finally:
        for client in clients:
            close_rtm_client(client)
    for got in received:
        assert sorted(got) == sorted(posted)


# -- the raw protocol --------------------------------------------------------------------


async def test_message_sent_over_rtm_is_posted_acked_and_echoed(
    workspace: RunningWorkspace,
) -> None:
    async with aiohttp.ClientSession() as session:
        alice = await rtm(session, workspace, "xoxp-alice")
        bob = await rtm(session, workspace, "xoxp-bob")
        await alice.send({"id": 1, "type": "message", "channel": "C0HOME", "text": "hi bob"})
        frames = [await alice.next(), await alice.next()]
        ack = next(f for f in frames if "reply_to" in f)
        echo = next(f for f in frames if f.get("type") == "message")
        assert ack == {"ok": True, "reply_to": 1, "ts": echo["ts"], "text": "hi bob"}
        seen = await bob.next_message()
        assert (seen["ts"], seen["user"], seen["text"], seen["channel"]) == (
            ack["ts"],
            "U0ALICE",
            "hi bob",
            "C0HOME",
        )
        await alice.send({"type": "message", "channel": "C0HOME", "text": "no id, no ack"})
        quiet = await bob.next_message()
        assert quiet["text"] == "no id, no ack"
        assert (await alice.next())["text"] == "no id, no ack"
        await alice.send(
            {
                "id": 2,
                "type": "message",
                "channel": "C0HOME",
                "text": "in thread",
                "thread_ts": ack["ts"],
            }
        )
        reply = await bob.next_message()
        assert (reply["thread_ts"], reply["parent_user_id"]) == (ack["ts"], "U0ALICE")


async def test_bot_posts_over_rtm_as_its_bot_user(workspace: RunningWorkspace) -> None:
    async with aiohttp.ClientSession() as session:
        bot = await rtm(session, workspace, CLASSIC_TOKEN)
        bob = await rtm(session, workspace, "xoxp-bob")
        await bot.send({"id": 9, "type": "message", "channel": "C0HOME", "text": "beep"})
        seen = await bob.next_message()
        assert (seen["user"], seen["bot_id"], seen["app_id"]) == ("U0CLASSIC", "B0CLASSIC", CLASSIC)


async def test_ping_is_answered_with_pong(workspace: RunningWorkspace) -> None:
    async with aiohttp.ClientSession() as session:
        alice = await rtm(session, workspace, "xoxp-alice")
        await alice.send({"id": 1234, "type": "ping", "time": 1403299273342})
        assert await alice.next() == {"type": "pong", "reply_to": 1234, "time": 1403299273342}
        await alice.send({"type": "ping"})
        assert await alice.next() == {"type": "pong"}


async def test_bad_frames_get_error_frames_and_the_socket_lives_on(
    workspace: RunningWorkspace,
) -> None:
    async with aiohttp.ClientSession() as session:
        alice = await rtm(session, workspace, "xoxp-alice")
        await alice.send("{not json")
        assert (await alice.next())["type"] == "error"
        await alice.send("[1, 2, 3]")
        assert (await alice.next())["type"] == "error"
        await alice.sock.send_bytes(b"\x00")
        assert (await alice.next())["type"] == "error"
        await alice.send({"id": 5, "type": "dance"})
        unknown = await alice.next()
        assert (unknown["ok"], unknown["reply_to"]) == (False, 5)
        await alice.send({"id": 6, "type": "message", "channel": "C0HOME"})
        assert await alice.next() == {
            "ok": False,
            "reply_to": 6,
            "error": {"code": 2, "msg": "message text is missing"},
        }
        await alice.send({"id": 7, "type": "message", "channel": "C0NOWHERE", "text": "x"})
        missing = await alice.next()
        assert (missing["ok"], missing["reply_to"], missing["error"]["code"]) == (False, 7, 2)
        await alice.send({"id": 8, "type": "message", "channel": "C0HOME", "text": 5})
        assert (await alice.next())["ok"] is False
        await alice.send({"type": "message", "text": "no channel"})
        assert (await alice.next())["type"] == "error"
        await alice.send({"type": "typing", "channel": "C0HOME"})
        await alice.send({"id": 10, "type": "ping"})
        assert await alice.next() == {"type": "pong", "reply_to": 10}


async def test_url_is_single_use(workspace: RunningWorkspace) -> None:
    answer = await AsyncWebClient(token="xoxp-alice", base_url=workspace.api_url).rtm_connect()
    async with aiohttp.ClientSession() as session:
        first = Socket(await session.ws_connect(answer["url"]))
        assert await first.next() == {"type": "hello"}
        again = Socket(await session.ws_connect(answer["url"]))
        assert await again.next() == {
            "type": "error",
            "error": {"code": 1, "msg": "Socket URL has expired"},
        }
        closing = await again.sock.receive(timeout=WAIT_S)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert summary(workspace)["humans"]["U0ALICE"]["rtm"] == 1


async def test_expired_url_is_refused(
    workspace: RunningWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "TICKET_TTL_S", -1.0)
    answer = await AsyncWebClient(token="xoxp-alice", base_url=workspace.api_url).rtm_connect()
    async with aiohttp.ClientSession() as session:
        sock = Socket(await session.ws_connect(answer["url"]))
        assert (await sock.next())["error"]["code"] == 1


def test_humans_hear_only_their_channels() -> None:
    base = demo_config()
    shed = Channel(id="C0SHED", name="shed", members=["U0ALICE", "U0CLASSIC"])
    config = WorkspaceConfig.model_validate(
        {
            **base.model_dump(),
            "channels": [*[c.model_dump() for c in base.channels], shed.model_dump()],
        }
    )
    with running_workspace(unlimited(config)) as rw:

        async def check() -> None:
            async with aiohttp.ClientSession() as session:
                bob = await rtm(session, rw, "xoxp-bob")
                bot = await rtm(session, rw, CLASSIC_TOKEN)
                secret = await asyncio.to_thread(post, rw, "in the shed", "xoxp-alice", "C0SHED")
                public = await asyncio.to_thread(post, rw, "at home", "xoxp-alice")
                assert (await bob.next_message())["ts"] == public
                assert (await bot.next_message())["ts"] == secret
                assert (await bot.next_message())["ts"] == public

        asyncio.run(check())


async def test_drop_and_pause_apply_to_a_bots_rtm(workspace: RunningWorkspace) -> None:
    faults = workspace.workspace.faults
    hub = workspace.workspace.hub
    async with aiohttp.ClientSession() as session:
        bot = await rtm(session, workspace, CLASSIC_TOKEN)
        alice = await rtm(session, workspace, "xoxp-alice")
        workspace.call_soon(faults.paused_apps.add, CLASSIC)
        posted = [await asyncio.to_thread(post, workspace, f"held {i}") for i in range(3)]
        assert summary(workspace)["apps"][CLASSIC]["held"] == 3
        for ts in posted:
            assert (await alice.next_message())["ts"] == ts, "humans are not paused"
        workspace.call_soon(faults.paused_apps.discard, CLASSIC)
        workspace.call_soon(hub.wake)
        assert [(await bot.next_message())["ts"] for _ in posted] == posted
        workspace.call_soon(faults.event_delay_s.__setitem__, CLASSIC, 1.0)
        late = await asyncio.to_thread(post, workspace, "late")
        assert summary(workspace)["apps"][CLASSIC]["held"] == 1
        assert (await bot.next_message())["ts"] == late
        assert on_server(workspace, hub.drop(CLASSIC)) == 1
        gone = await bot.sock.receive(timeout=WAIT_S)
        assert gone.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )
        assert summary(workspace)["apps"][CLASSIC]["rtm"] == 0
        assert summary(workspace)["humans"]["U0ALICE"]["rtm"] == 1
        assert on_server(workspace, hub.drop("U0ALICE")) == 1
        assert summary(workspace)["humans"]["U0ALICE"]["rtm"] == 0


# -- troupe's rtm transport: today's rules -----------------------------------------------


async def test_troupes_rtm_transport_works_for_a_classic_app_refused_query_tokens(
    workspace: RunningWorkspace,
) -> None:
    """The demo's classic app may not send query-string tokens nor call rtm.start, as
    Slack holds every app created since 2021: the transport needs neither."""
    from troupe.transports.rtm import RtmTransport

    assert not workspace.workspace.config.apps[-1].query_tokens_allowed
    heard: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(event: Any, ack: Any) -> None:
        await ack()
        await heard.put(event)

    transport = RtmTransport(CLASSIC_TOKEN, workspace.api_url)
    await transport.start(handler)
    try:
        assert transport.connected
        ts = await asyncio.to_thread(post, workspace, "lights on")
        event = await asyncio.wait_for(heard.get(), WAIT_S)
        assert (event.ts, event.text) == (ts, "lights on")
    finally:
        await transport.stop()
    counters = workspace.control("counters")
    assert counters["query_tokens"] == {}
    calls = counters["calls"]["A0CLASSIC"]
    assert calls["rtm.connect"] == 1 and "rtm.start" not in calls
    assert calls["users.list"] >= 1 and calls["conversations.list"] >= 1
