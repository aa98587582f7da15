"""slack_sdk's WebClient and AsyncWebClient against the workspace's Web API, over HTTP.

Every test runs twice, once per client, and checks Slack's answers on the success and
the error paths (error codes as slack_sdk reports them in SlackApiError.response).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from troupe.devkit.workspace.config import App, Channel, WorkspaceConfig, demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace

KITCHEN, HALL, CLASSIC = "xoxb-kitchen", "xoxb-hall", "xoxb-classic"
ALICE, BOB = "xoxp-alice", "xoxp-bob"


def _config() -> WorkspaceConfig:
    """The demo workspace plus a members-only channel and a private one, 3 pins a channel."""
    channels = [
        *demo_config().channels,
        Channel(id="C0ATTIC", name="attic", members=["U0ALICE"]),
        Channel(id="C0SAFE", name="safe", members=["U0ALICE", "U0KITCHEN"], is_private=True),
    ]
    return demo_config().model_copy(update={"channels": channels, "pin_limit": 3})


@pytest.fixture
def running() -> Iterator[RunningWorkspace]:
    with running_workspace(_config()) as running:
        yield running


Call = Callable[..., Awaitable[Any]]


class Slack:
    """One client kind (sync or async) behind the same awaitable calls."""

    def __init__(self, kind: str, api_url: str) -> None:
        self.kind = kind
        self.api_url = api_url

    async def __call__(self, method: str, token: str | None = KITCHEN, **kwargs: Any) -> Any:
        if self.kind == "sync":
            client = WebClient(token=token, base_url=self.api_url, timeout=10)
            return (await asyncio.to_thread(getattr(client, method), **kwargs)).data
        aclient = AsyncWebClient(token=token, base_url=self.api_url, timeout=10)
        return (await getattr(aclient, method)(**kwargs)).data

    async def error(self, method: str, token: str | None = KITCHEN, **kwargs: Any) -> str:
        with pytest.raises(SlackApiError) as caught:
            await self(method, token, **kwargs)
        assert caught.value.response["ok"] is False
        return caught.value.response["error"]


@pytest.fixture(params=["sync", "async"])
def slack(request: pytest.FixtureRequest, running: RunningWorkspace) -> Slack:
    return Slack(request.param, running.api_url)


async def test_api_test_echoes_and_forces_errors(slack: Slack) -> None:
    assert (await slack("api_test", foo="bar"))["args"] == {"foo": "bar"}
    assert (await slack("api_test", token=None))["ok"] is True
    assert await slack.error("api_test", error="my_error") == "my_error"


async def test_auth_test_for_each_kind_of_token(slack: Slack, running: RunningWorkspace) -> None:
    bot = await slack("auth_test")
    assert bot["user_id"] == "U0KITCHEN" and bot["bot_id"] == "B0KITCHEN"
    assert bot["team_id"] == "T0HOME" and bot["team"] == "Home" and bot["user"] == "kitchen-pi"
    assert bot["url"] == running.url and bot["is_enterprise_install"] is False
    human = await slack("auth_test", token=ALICE)
    assert human["user_id"] == "U0ALICE" and "bot_id" not in human
    assert await slack.error("auth_test", token=None) == "not_authed"
    assert await slack.error("auth_test", token="xoxb-nobody") == "invalid_auth"
    assert await slack.error("auth_test", token="xapp-kitchen") == "not_allowed_token_type"


async def test_apps_connections_open_needs_an_app_token(
    slack: Slack, running: RunningWorkspace
) -> None:
    opened = await slack("apps_connections_open", token=None, app_token="xapp-hall")
    prefix = f"ws://127.0.0.1:{running.port}/link/?ticket="
    assert opened["url"].startswith(prefix) and opened["url"].endswith("&app_id=A0HALL")
    assert await slack.error("apps_connections_open", app_token=KITCHEN) == "not_allowed_token_type"
    assert await slack.error("apps_connections_open", app_token=ALICE) == "not_allowed_token_type"
    assert await slack.error("apps_connections_open", app_token="xapp-x") == "invalid_auth"


async def test_rtm_for_classic_bots_and_humans_only(
    slack: Slack, running: RunningWorkspace
) -> None:
    connect = await slack("rtm_connect", token=CLASSIC)
    assert connect["url"].startswith(f"ws://127.0.0.1:{running.port}/websocket/")
    assert connect["self"] == {"id": "U0CLASSIC", "name": "troupe-classic"}
    assert connect["team"] == {"id": "T0HOME", "name": "Home", "domain": "home"}
    start = await slack("rtm_start", token=ALICE)
    assert start["self"] == {"id": "U0ALICE", "name": "alice"}
    assert start["warning"] == "method_deprecated"
    assert "users" not in start and "channels" not in start
    assert connect["url"] != start["url"]
    assert await slack.error("rtm_connect", token=KITCHEN) == "not_allowed_token_type"
    assert await slack.error("rtm_start", token=KITCHEN) == "not_allowed_token_type"
    assert await slack.error("rtm_start", token="xapp-kitchen") == "not_allowed_token_type"


async def test_rtm_start_as_slack_serves_it_since_its_retirement(slack: Slack) -> None:
    """A classic app made on or after 30 Nov 2021 (or of unknown age) must use rtm.connect;
    an older one gets rtm.connect's answer, flagged deprecated."""
    assert await slack.error("rtm_start", token=CLASSIC) == "rtm_connect_required"


def test_rtm_start_for_a_classic_app_from_before_november_2021() -> None:
    apps = [
        a.model_copy(update={"created": date(2021, 11, 29) if a.classic else None})
        for a in demo_config().apps
    ]
    with running_workspace(demo_config().model_copy(update={"apps": apps})) as rw:
        client = WebClient(token=CLASSIC, base_url=rw.api_url)
        start = client.rtm_start().data
        assert isinstance(start, dict)
        assert start["self"] == {"id": "U0CLASSIC", "name": "troupe-classic"}
        assert start["team"]["domain"] == "home" and start["url"].startswith("ws://")
        assert start["response_metadata"] == {"warnings": ["method_deprecated"]}


def test_a_classic_app_cannot_be_younger_than_june_2024() -> None:
    app = demo_config().apps[-1].model_dump() | {"created": "2024-06-05"}
    with pytest.raises(ValueError, match="classic"):
        App.model_validate(app)


async def test_post_message_shapes_and_errors(slack: Slack) -> None:
    posted = await slack("chat_postMessage", channel="#home", text="lights on")
    assert posted["channel"] == "C0HOME" and posted["ts"] == posted["message"]["ts"]
    message = posted["message"]
    assert message["user"] == "U0KITCHEN" and message["bot_id"] == "B0KITCHEN"
    assert message["app_id"] == "A0KITCHEN" and message["bot_profile"]["name"] == "kitchen-pi"
    assert message["text"] == "lights on" and message["type"] == "message"
    by_human = await slack("chat_postMessage", token=ALICE, channel="C0HOME", text="hi")
    assert "bot_id" not in by_human["message"] and by_human["ts"] > posted["ts"]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*bold*"}}]
    with_blocks = await slack("chat_postMessage", channel="C0HOME", blocks=blocks)
    assert with_blocks["message"]["blocks"] == blocks
    assert await slack.error("chat_postMessage", channel="C0HOME", text="x" * 40_001) == (
        "msg_too_long"
    )
    assert await slack.error("chat_postMessage", channel="C0HOME", text="") == "no_text"
    assert await slack.error("chat_postMessage", channel="C0NOPE", text="hi") == (
        "channel_not_found"
    )
    assert await slack.error("chat_postMessage", channel="#attic", text="hi") == "not_in_channel"
    assert await slack.error("chat_postMessage", channel="C0SAFE", token=HALL, text="hi") == (
        "channel_not_found"
    )
    assert await slack.error("chat_postMessage", channel="C0HOME", blocks="[oops") == (
        "invalid_blocks"
    )
    assert await slack.error(
        "chat_postMessage", channel="C0HOME", text="hi", thread_ts="1.000001"
    ) == ("thread_not_found")


async def test_threads_replies_and_broadcasts(slack: Slack) -> None:
    parent = (await slack("chat_postMessage", channel="C0HOME", text="parent"))["ts"]
    first = await slack(
        "chat_postMessage", token=ALICE, channel="C0HOME", text="a", thread_ts=parent
    )
    assert first["message"]["thread_ts"] == parent
    assert first["message"]["parent_user_id"] == "U0KITCHEN"
    shout = await slack(
        "chat_postMessage",
        token=BOB,
        channel="C0HOME",
        text="b",
        thread_ts=parent,
        reply_broadcast=True,
    )
    assert shout["message"]["subtype"] == "thread_broadcast"
    thread = await slack("conversations_replies", channel="C0HOME", ts=parent)
    assert [m["text"] for m in thread["messages"]] == ["parent", "a", "b"]
    head = thread["messages"][0]
    assert head["reply_count"] == 2 and head["reply_users"] == ["U0ALICE", "U0BOB"]
    assert head["latest_reply"] == shout["ts"] and head["thread_ts"] == parent
    history = await slack("conversations_history", channel="C0HOME")
    assert [m["text"] for m in history["messages"]] == ["b", "parent"]
    paged = await slack("conversations_replies", channel="C0HOME", ts=parent, limit=2)
    assert [m["text"] for m in paged["messages"]] == ["parent", "a"] and paged["has_more"]
    cursor = paged["response_metadata"]["next_cursor"]
    rest = await slack("conversations_replies", channel="C0HOME", ts=parent, limit=2, cursor=cursor)
    assert [m["text"] for m in rest["messages"]] == ["parent", "b"] and not rest["has_more"]
    assert await slack.error("conversations_replies", channel="C0HOME", ts="1.000001") == (
        "thread_not_found"
    )


async def test_the_control_apis_threads_read_back_what_conversations_replies_pages_through(
    slack: Slack, running: RunningWorkspace
) -> None:
    """The bench reads every command's answers at once (control/threads); it must be what
    Slack's conversations.replies would give, thread by thread, deleted replies left out."""
    parents = [(await slack("chat_postMessage", channel="C0HOME", text=t))["ts"] for t in "pq"]
    replies = {p: [] for p in parents}
    for i in range(5):
        parent = parents[i % 2]
        token = (ALICE, BOB, KITCHEN)[i % 3]
        sent = await slack(
            "chat_postMessage", token=token, channel="C0HOME", text=f"r{i}", thread_ts=parent
        )
        replies[parent].append(sent["ts"])
    await slack("chat_delete", channel="C0HOME", ts=replies[parents[0]][1])  # kitchen's
    await slack("chat_postMessage", channel="C0HOME", text="no thread")
    threads = (await asyncio.to_thread(running.control, "threads", channel="#home"))["threads"]
    for parent in parents:
        thread = await slack("conversations_replies", channel="C0HOME", ts=parent)
        expected = [(m["ts"], m["text"], m["user"]) for m in thread["messages"][1:]]
        assert [(m["ts"], m["text"], m["user"]) for m in threads[parent]] == expected
    assert sorted(threads) == sorted(parents)
    assert len(threads[parents[0]]) == 2 and len(threads[parents[1]]) == 2


async def test_update_and_delete(slack: Slack) -> None:
    ts = (await slack("chat_postMessage", channel="C0HOME", text="draft"))["ts"]
    updated = await slack("chat_update", channel="C0HOME", ts=ts, text="final")
    assert updated["text"] == "final" and updated["message"]["edited"]["user"] == "U0KITCHEN"
    assert updated["channel"] == "C0HOME" and updated["ts"] == ts
    assert await slack.error("chat_update", token=HALL, channel="C0HOME", ts=ts, text="x") == (
        "cant_update_message"
    )
    assert await slack.error("chat_update", channel="C0HOME", ts="1.000001", text="x") == (
        "message_not_found"
    )
    assert await slack.error("chat_delete", token=BOB, channel="C0HOME", ts=ts) == (
        "cant_delete_message"
    )
    deleted = await slack("chat_delete", channel="C0HOME", ts=ts)
    assert deleted == {"ok": True, "channel": "C0HOME", "ts": ts}
    assert await slack.error("chat_delete", channel="C0HOME", ts=ts) == "message_not_found"
    other = (await slack("chat_postMessage", token=BOB, channel="C0HOME", text="bob's"))["ts"]
    assert (await slack("chat_delete", token=ALICE, channel="C0HOME", ts=other))["ok"]
    history = await slack("conversations_history", channel="C0HOME")
    assert history["messages"] == []


async def test_history_pages_and_bounds(slack: Slack) -> None:
    stamps = [
        (await slack("chat_postMessage", channel="C0KITCHEN", text=str(i)))["ts"] for i in range(5)
    ]
    first = await slack("conversations_history", channel="C0KITCHEN", limit=2)
    assert [m["text"] for m in first["messages"]] == ["4", "3"] and first["has_more"]
    cursor = first["response_metadata"]["next_cursor"]
    second = await slack("conversations_history", channel="C0KITCHEN", limit=2, cursor=cursor)
    assert [m["text"] for m in second["messages"]] == ["2", "1"]
    bounded = await slack(
        "conversations_history", channel="C0KITCHEN", oldest=stamps[1], latest=stamps[3]
    )
    assert [m["text"] for m in bounded["messages"]] == ["2"]
    inclusive = await slack(
        "conversations_history",
        channel="C0KITCHEN",
        oldest=stamps[1],
        latest=stamps[3],
        inclusive=True,
    )
    assert [m["text"] for m in inclusive["messages"]] == ["3", "2", "1"]
    assert await slack.error("conversations_history", channel="C0KITCHEN", cursor="junk!") == (
        "invalid_cursor"
    )
    assert await slack.error("conversations_history", channel="C0ATTIC") == "not_in_channel"
    assert (await slack("conversations_history", token=BOB, channel="C0ATTIC"))["ok"]
    assert await slack.error("conversations_history", channel="C0NOPE") == "channel_not_found"


async def test_conversations_list_info_join_members(slack: Slack) -> None:
    listed = await slack("conversations_list")
    assert {c["id"] for c in listed["channels"]} == {"C0HOME", "C0KITCHEN", "C0RANDOM", "C0ATTIC"}
    both = await slack("conversations_list", types="public_channel,private_channel")
    assert "C0SAFE" in {c["id"] for c in both["channels"]}
    hall = await slack("conversations_list", token=HALL, types="private_channel")
    assert hall["channels"] == []
    page = await slack("conversations_list", limit=1)
    assert len(page["channels"]) == 1 and page["response_metadata"]["next_cursor"]
    assert await slack.error("conversations_list", types="rooms") == "invalid_types"

    info = (await slack("conversations_info", channel="C0ATTIC"))["channel"]
    assert info["name"] == "attic" and info["is_channel"] and info["is_member"] is False
    assert await slack.error("conversations_info", token=HALL, channel="C0SAFE") == (
        "channel_not_found"
    )
    assert (await slack("conversations_members", channel="C0ATTIC"))["members"] == ["U0ALICE"]
    joined = await slack("conversations_join", channel="C0ATTIC")
    assert joined["channel"]["is_member"] is True and "warning" not in joined
    again = await slack("conversations_join", channel="C0ATTIC")
    assert again["warning"] == "already_in_channel"
    members = (await slack("conversations_members", channel="C0ATTIC"))["members"]
    assert members == ["U0ALICE", "U0KITCHEN"]
    assert (await slack("chat_postMessage", channel="C0ATTIC", text="moved in"))["ok"]
    assert await slack.error("conversations_join", channel="C0NOPE") == "channel_not_found"


async def test_conversations_open_gives_a_dm(slack: Slack) -> None:
    opened = await slack("conversations_open", users="U0ALICE")
    dm = opened["channel"]["id"]
    assert dm.startswith("D") and "already_open" not in opened
    again = await slack("conversations_open", users="U0ALICE", return_im=True)
    assert again["already_open"] is True and again["channel"]["is_im"] is True
    assert again["channel"]["user"] == "U0ALICE" and again["channel"]["id"] == dm
    assert (await slack("chat_postMessage", channel=dm, text="psst"))["channel"] == dm
    alice_view = await slack("conversations_history", token=ALICE, channel=dm)
    assert [m["text"] for m in alice_view["messages"]] == ["psst"]
    assert await slack.error("conversations_history", token=BOB, channel=dm) == (
        "channel_not_found"
    )
    assert await slack.error("conversations_open", users="U0NOBODY") == "user_not_found"


async def test_users_and_bots(slack: Slack) -> None:
    members = (await slack("users_list"))["members"]
    by_id = {u["id"]: u for u in members}
    assert by_id["U0ALICE"]["is_bot"] is False and by_id["U0ALICE"]["real_name"] == "Alice"
    bot = by_id["U0HALL"]
    assert bot["is_bot"] is True and bot["profile"]["bot_id"] == "B0HALL"
    assert bot["profile"]["api_app_id"] == "A0HALL"
    paged = await slack("users_list", limit=2)
    assert len(paged["members"]) == 2 and paged["response_metadata"]["next_cursor"]
    assert (await slack("users_info", user="U0BOB"))["user"]["name"] == "bob"
    assert await slack.error("users_info", user="U0NOBODY") == "user_not_found"
    assert (await slack("users_getPresence", user="U0BOB"))["presence"] in ("active", "away")
    info = (await slack("bots_info", bot="B0GARAGE"))["bot"]
    assert info["app_id"] == "A0GARAGE" and info["user_id"] == "U0GARAGE"
    assert await slack.error("bots_info", bot="B0NOPE") == "bot_not_found"


async def test_pins(slack: Slack) -> None:
    stamps = [
        (await slack("chat_postMessage", channel="C0HOME", text=f"job {i}"))["ts"] for i in range(4)
    ]
    assert (await slack("pins_add", channel="C0HOME", timestamp=stamps[0]))["ok"]
    assert await slack.error("pins_add", channel="C0HOME", timestamp=stamps[0]) == (
        "already_pinned"
    )
    items = (await slack("pins_list", channel="C0HOME"))["items"]
    assert len(items) == 1 and items[0]["message"]["ts"] == stamps[0]
    assert items[0]["created_by"] == "U0KITCHEN" and items[0]["type"] == "message"
    assert items[0]["message"]["pinned_to"] == ["C0HOME"]
    for ts in stamps[1:3]:
        await slack("pins_add", token=HALL, channel="C0HOME", timestamp=ts)
    assert await slack.error("pins_add", channel="C0HOME", timestamp=stamps[3]) == "too_many_pins"
    assert (await slack("pins_remove", channel="C0HOME", timestamp=stamps[0]))["ok"]
    assert await slack.error("pins_remove", channel="C0HOME", timestamp=stamps[0]) == "no_pin"
    assert len((await slack("pins_list", channel="C0HOME"))["items"]) == 2
    assert await slack.error("pins_add", channel="C0HOME", timestamp="1.000001") == (
        "message_not_found"
    )
    assert await slack.error("pins_add", channel="C0HOME", timestamp="yesterday") == (
        "bad_timestamp"
    )
    assert await slack.error("pins_add", channel="C0NOPE", timestamp=stamps[3]) == (
        "channel_not_found"
    )
    assert await slack.error("pins_add", channel="C0HOME") == "no_item_specified"
    attic = (await slack("chat_postMessage", token=ALICE, channel="C0ATTIC", text="x"))["ts"]
    assert await slack.error("pins_add", channel="C0ATTIC", timestamp=attic) == "not_in_channel"


async def test_reactions(slack: Slack) -> None:
    ts = (await slack("chat_postMessage", token=ALICE, channel="C0HOME", text="lights?"))["ts"]
    await slack("reactions_add", channel="C0HOME", timestamp=ts, name="thumbsup")
    await slack("reactions_add", token=HALL, channel="C0HOME", timestamp=ts, name="+1")
    await slack("reactions_add", channel="C0HOME", timestamp=ts, name="eyes")
    await slack("reactions_add", channel="C0HOME", timestamp=ts, name="wave::skin-tone-3")
    got = await slack("reactions_get", channel="C0HOME", timestamp=ts)
    assert got["type"] == "message" and got["channel"] == "C0HOME"
    reactions = {r["name"]: r for r in got["message"]["reactions"]}
    assert reactions["+1"] == {"name": "+1", "users": ["U0KITCHEN", "U0HALL"], "count": 2}
    assert set(reactions) == {"+1", "eyes", "wave::skin-tone-3"}
    assert await slack.error("reactions_add", channel="C0HOME", timestamp=ts, name="+1") == (
        "already_reacted"
    )
    assert await slack.error("reactions_add", channel="C0HOME", timestamp=ts, name="nope_x") == (
        "invalid_name"
    )
    assert await slack.error("reactions_add", channel="C0HOME", timestamp=ts, name="Bad Name") == (
        "invalid_name"
    )
    await slack("reactions_remove", channel="C0HOME", timestamp=ts, name="thumbsup")
    assert await slack.error("reactions_remove", channel="C0HOME", timestamp=ts, name="+1") == (
        "no_reaction"
    )
    after = (await slack("reactions_get", channel="C0HOME", timestamp=ts))["message"]["reactions"]
    assert {r["name"]: r["users"] for r in after}["+1"] == ["U0HALL"]
    assert await slack.error("reactions_add", channel="C0HOME", timestamp="1.000001", name="x") == (
        "message_not_found"
    )
    assert await slack.error("reactions_get", channel="C0HOME") == "no_item_specified"


async def test_unknown_method(slack: Slack) -> None:
    assert await slack.error("api_call", api_method="chat.teleport") == "unknown_method"


async def test_calls_are_counted_per_app_and_human(slack: Slack, running: RunningWorkspace) -> None:
    await slack("auth_test")
    await slack("auth_test")
    await slack("auth_test", token=ALICE)
    counters = running.control("counters")
    assert counters["calls"]["A0KITCHEN"]["auth.test"] == 2
    assert counters["calls"]["U0ALICE"]["auth.test"] == 1
    running.control("counters/reset")
    assert running.control("counters")["calls"] == {}
