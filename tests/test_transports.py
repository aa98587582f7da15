"""troupe/transports: Slack's events read into the one Event, Socket Mode's envelopes
acknowledged once (when the bot is done, or at the deadline), RTM's frames crossing from
its reader thread into the loop, and the reconnect backoff. No sockets (the clients'
callbacks are called as slack_sdk and slackbot call them), but for the last two tests:
Socket Mode's connection opening, reopening and stopping, against the local workspace."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import pytest
from slack_sdk.socket_mode.request import SocketModeRequest
from virtualtime import run

from troupe.slackapi import async_client
from troupe.transports.base import Backoff, Event
from troupe.transports.rtm import RtmTransport
from troupe.transports.socketmode import ACK_DEADLINE_S, SocketModeTransport

MESSAGE = {"type": "message", "channel": "C0HOME", "ts": "1.000100", "user": "U0ALICE"}


# --- Event.from_slack ----------------------------------------------------------------------


def test_a_message_keeps_what_the_pipeline_reads() -> None:
    raw = {**MESSAGE, "text": "lights on", "thread_ts": "0.5", "bot_id": "B1", "subtype": None}
    event = Event.from_slack(raw, retry_attempt=2)
    assert event == Event(
        "message", "C0HOME", "1.000100", "U0ALICE", "lights on", "B1", "0.5", None, None, 2
    )
    assert event.raw is raw and event.from_bot
    mention = Event.from_slack({**MESSAGE, "type": "app_mention", "text": None})
    assert mention is not None and (mention.kind, mention.text) == ("app_mention", "")
    assert Event.from_slack({**MESSAGE, "subtype": "bot_message"}).from_bot  # type: ignore[union-attr]
    assert not Event.from_slack(MESSAGE).from_bot  # type: ignore[union-attr]


def test_edits_deletions_unknown_kinds_and_junk_are_none() -> None:
    for subtype in ("message_changed", "message_deleted"):
        assert Event.from_slack({**MESSAGE, "subtype": subtype}) is None
    assert Event.from_slack({"type": "user_typing", "channel": "C0HOME"}) is None
    assert Event.from_slack({"type": "message", "ts": "1.0"}) is None  # no channel
    assert Event.from_slack({"type": "reaction_added", "item": None}) is None
    assert Event.from_slack({"type": "pin_added", "user": "U0ALICE"}) is None
    assert Event.from_slack({}) is None


def test_pins_and_reactions_are_about_the_message_they_mark() -> None:
    pin = Event.from_slack(
        {
            "type": "pin_added",
            "user": "U0HALL",
            "channel_id": "C0HOME",
            "item": {"type": "message", "channel": "C0OTHER", "message": {"ts": "5.5"}},
        }
    )
    assert pin == Event("pin_added", "C0HOME", "5.5", "U0HALL")
    # RTM's pin events name the channel in the item and may carry the ts there.
    rtm_pin = Event.from_slack(
        {"type": "pin_removed", "user": "U0HALL", "item": {"channel": "C0HOME", "ts": "6.5"}}
    )
    assert rtm_pin == Event("pin_removed", "C0HOME", "6.5", "U0HALL")
    reaction = Event.from_slack(
        {
            "type": "reaction_removed",
            "user": "U0HALL",
            "reaction": "white_check_mark",
            "item": {"type": "message", "channel": "C0HOME", "ts": "7.5"},
        },
        retry_attempt=1,
    )
    assert reaction == Event(
        "reaction_removed", "C0HOME", "7.5", "U0HALL", reaction="white_check_mark", retry_attempt=1
    )


# --- Socket Mode -----------------------------------------------------------------------


class _Client:
    """Where the transport sends acknowledgements: those sent, at the loop's time."""

    def __init__(self) -> None:
        self.acked: list[tuple[str, float]] = []

    async def send_socket_mode_response(self, response) -> None:
        self.acked.append((response.envelope_id, asyncio.get_running_loop().time()))


def _envelope(envelope_id: str, event: dict, kind: str = "events_api", retry: int | None = None):
    return SocketModeRequest(kind, envelope_id, {"event": event}, retry_attempt=retry)


def test_an_envelope_is_acked_once_when_the_handler_is_done() -> None:
    async def main(loop):
        transport = SocketModeTransport("xapp-test", web_client=None)  # type: ignore[arg-type]
        client = _Client()
        seen: list[Event] = []

        async def handler(event: Event, ack) -> None:
            seen.append(event)
            await asyncio.sleep(1.0)  # claimed and acted within the deadline
            await ack()
            await ack()  # a second ack is not sent again

        transport._handler = handler
        transport._received(_envelope("e1", MESSAGE, retry=2), client.send_socket_mode_response)
        assert client.acked == []  # not before the bot has done its part
        await asyncio.sleep(5)
        assert client.acked == [("e1", 1.0)]
        assert [(e.ts, e.retry_attempt) for e in seen] == [("1.000100", 2)]
        await transport.stop()

    run(main)


def test_a_slow_handler_is_acked_at_the_deadline_and_not_again() -> None:
    async def main(loop):
        transport = SocketModeTransport("xapp-test", web_client=None)  # type: ignore[arg-type]
        client = _Client()

        async def handler(event: Event, ack) -> None:
            await asyncio.sleep(20)  # a slow device: Slack must not redeliver meanwhile

        transport._handler = handler
        transport._received(_envelope("e2", MESSAGE), client.send_socket_mode_response)
        await asyncio.sleep(30)
        assert client.acked == [("e2", ACK_DEADLINE_S)]
        await transport.stop()

    run(main)


def test_a_failed_handler_is_logged_and_its_envelope_acked(caplog) -> None:
    async def main(loop):
        transport = SocketModeTransport("xapp-test", web_client=None)  # type: ignore[arg-type]
        client = _Client()

        async def handler(event: Event, ack) -> None:
            raise RuntimeError("a bug in the pipeline")

        transport._handler = handler
        transport._received(_envelope("e3", MESSAGE), client.send_socket_mode_response)
        await asyncio.sleep(1)
        assert [e for e, _ in client.acked] == ["e3"]
        await transport.stop()

    with caplog.at_level(logging.ERROR):
        run(main)
    assert "event handler failed" in caplog.text and "a bug in the pipeline" in caplog.text


def test_envelopes_troupe_does_not_use_are_acked_at_once_unhandled() -> None:
    async def main(loop):
        transport = SocketModeTransport("xapp-test", web_client=None)  # type: ignore[arg-type]
        client = _Client()
        seen: list[Event] = []

        async def handler(event: Event, ack) -> None:
            seen.append(event)

        transport._handler = handler
        typing = {"type": "user_typing", "channel": "C0HOME"}
        transport._received(_envelope("e4", typing), client.send_socket_mode_response)
        transport._received(
            _envelope("e5", MESSAGE, kind="slash_commands"), client.send_socket_mode_response
        )
        await asyncio.sleep(0)
        assert [e for e, _ in client.acked] == ["e4", "e5"]
        assert seen == []

    run(main)


async def test_socket_mode_envelopes_cross_from_slack_sdks_threads_and_acks_leave_in_one():
    """slack_sdk's builtin client calls its listeners in its own threads and sends on a
    blocking socket: the event reaches the loop, the ack is sent off the loop."""
    transport = SocketModeTransport("xapp-test", web_client=None)  # type: ignore[arg-type]
    transport._loop = asyncio.get_running_loop()
    loop_thread = threading.current_thread()
    handled = asyncio.Event()
    seen: list[tuple[str, bool]] = []

    class BlockingClient:
        sent: list[tuple[str, str]] = []

        def send_socket_mode_response(self, response) -> None:
            self.sent.append((response.envelope_id, threading.current_thread().name))

    async def handler(event: Event, ack) -> None:
        seen.append((event.ts, threading.current_thread() is loop_thread))
        await ack()
        handled.set()

    transport._handler = handler
    client = BlockingClient()
    reader = threading.Thread(
        target=transport._on_request, args=(client, _envelope("e6", MESSAGE)), name="sdk"
    )
    reader.start()
    reader.join()
    await asyncio.wait_for(handled.wait(), 10)
    await transport.stop()
    assert seen == [("1.000100", True)]
    assert [envelope for envelope, _ in client.sent] == ["e6"]
    assert client.sent[0][1].startswith("troupe-slack-")


# --- RTM -------------------------------------------------------------------------------


async def test_rtm_frames_cross_from_the_reader_thread_into_the_loop(caplog) -> None:
    transport = RtmTransport("xoxb-classic")
    seen: list[tuple[Event, object]] = []
    done = asyncio.Event()

    async def handler(event: Event, ack) -> None:
        await ack()  # RTM wants no ack: a no-op
        seen.append((event.kind, event.ts, event.text))
        done.set()

    transport._handler = handler
    transport._loop = asyncio.get_running_loop()
    frames = [
        "not json",
        json.dumps(["a", "list"]),
        json.dumps({"type": "hello"}),
        json.dumps({**MESSAGE, "text": "lights on"}),
    ]
    reader = threading.Thread(target=lambda: [transport._dispatch(f) for f in frames])
    with caplog.at_level(logging.WARNING):
        reader.start()
        reader.join()
        await asyncio.wait_for(done.wait(), 10)
    await transport.stop()
    assert seen == [("message", "1.000100", "lights on")]
    assert "RTM: ignoring a frame that is not JSON" in caplog.text
    assert not transport.connected


# --- backoff ---------------------------------------------------------------------------


def test_backoff_starts_at_once_grows_with_jitter_within_the_cap_and_resets(monkeypatch) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)  # the jitter's top
    backoff = Backoff(base=0.5, cap=4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.0, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.0
    monkeypatch.setattr("random.uniform", lambda low, high: low)
    assert Backoff().next_delay() == 0.0 and Backoff().attempt == 0


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9/api", "http://127.0.0.1:9/api/"])
def test_slacker_is_pointed_at_the_configured_web_api(monkeypatch, base_url) -> None:
    import slacker

    from troupe.transports.rtm import point_slacker_at

    monkeypatch.setattr(slacker, "get_api_url", slacker.get_api_url)
    point_slacker_at(base_url)
    assert slacker.get_api_url("rtm.connect") == "http://127.0.0.1:9/api/rtm.connect"


async def test_socket_mode_says_when_its_connection_opened_and_reopened(workspace, caplog) -> None:
    """Bot._look_back reads the channel back for a while after each connection opens:
    the transport stamps the open from Slack's hello, and again after a drop. Which thread
    finds the drop first is a race (slack_sdk's reader at EOF, its monitor, or ours at the
    first ping that cannot be sent, where slack_sdk alone waits for five); any of them
    reconnects, and the new hello moves the stamp."""
    caplog.set_level(logging.INFO)
    web = async_client("xoxb-kitchen", base_url=workspace.api_url)
    transport = SocketModeTransport("xapp-kitchen", web_client=web, ping_interval=0.5)

    async def ignore(_event: Event, ack: Any = None) -> None:
        if ack is not None:
            await ack()

    before = time.monotonic()
    await transport.start(ignore)
    try:
        for _ in range(100):
            if transport.connected_since is not None:
                break
            await asyncio.sleep(0.05)
        first = transport.connected_since
        assert first is not None and first >= before
        await asyncio.to_thread(workspace.control, "drop", app="A0KITCHEN")
        for _ in range(200):
            if (transport.connected_since or 0) > first:
                break
            await asyncio.sleep(0.05)
        assert (transport.connected_since or 0) > first
        reconnects = (
            "Socket Mode: a ping could not be sent; reconnecting now",
            "Received CLOSE event. Reconnecting...",
            "The session seems to be already closed. Reconnecting...",
        )
        assert any(m.startswith(reconnects) for m in caplog.messages), caplog.messages
    finally:
        await transport.stop()


async def test_socket_mode_stops_with_its_threads_and_its_connection_closed(workspace) -> None:
    """A stopping bot's timers and drivers wait on the transport's stop: slack_sdk's threads
    are woken (the reader from its socket, the message thread from its queue), not waited
    out."""
    transport = SocketModeTransport("xapp-kitchen", async_client("xoxb-kitchen", workspace.api_url))

    async def handler(event: Event, ack) -> None:
        await ack()

    await transport.start(handler)
    client = transport._client
    assert client is not None and transport.connected
    runners = [client.current_session_runner, client.message_processor, client.current_app_monitor]
    threads = [runner.thread for runner in runners]
    await transport.stop()
    assert not transport.connected
    assert [thread.is_alive() for thread in threads] == [False, False, False]
    summary = workspace.control("connections")
    assert summary["apps"]["A0KITCHEN"]["socket_mode"] == 0
