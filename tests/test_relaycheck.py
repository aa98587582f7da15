"""A relayed message counts only if Slack has it, by the same person, with the same text."""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.web.async_client import AsyncWebClient

from troupe.devkit.workspace.testing import running_workspace
from troupe.relaycheck import in_slack


def _event(message: dict, channel: str = "C0HOME") -> dict:
    return {"type": "message", "channel": channel, **message}


async def test_only_messages_slack_has_are_confirmed():
    with running_workspace() as ws:
        alice = WebClient("xoxp-alice", base_url=ws.api_url)
        root = alice.chat_postMessage(channel="C0HOME", text="turn on the garage light")
        reply = alice.chat_postMessage(channel="C0HOME", text="and the hall", thread_ts=root["ts"])
        alice.chat_postMessage(channel="C0HOME", text="a later message")
        confirm = in_slack(AsyncWebClient("xoxb-kitchen", base_url=ws.api_url))

        said = _event(root["message"])
        assert await confirm({"kind": "owned", "event": said})
        assert await confirm({"kind": "owned", "event": _event(reply["message"])})
        assert not await confirm({"kind": "owned", "event": {**said, "text": "open the garage"}})
        assert not await confirm({"kind": "owned", "event": {**said, "user": "U0BOB"}})
        assert not await confirm({"kind": "owned", "event": {**said, "ts": "1700000000.000100"}})
        assert not await confirm({"kind": "owned", "event": {**said, "channel": "C0NOWHERE"}})
        assert not await confirm({"kind": "owned"})
