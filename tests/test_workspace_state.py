"""The store: Slack's event shapes, its rules and errors, and persistence across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from troupe.devkit.workspace import store as store_module
from troupe.devkit.workspace.config import Channel, WorkspaceConfig, demo_config
from troupe.devkit.workspace.errors import SlackError
from troupe.devkit.workspace.store import Store, reaction_name
from troupe.devkit.workspace.testing import running_workspace


class Events:
    """Records what the store publishes, as the event hub would receive it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: dict[str, Any], *, channel: str) -> None:
        self.seen.append((channel, event))

    def last(self) -> dict[str, Any]:
        return self.seen[-1][1]


def _config(**update: Any) -> WorkspaceConfig:
    channels = [
        *demo_config().channels,
        Channel(id="C0ATTIC", name="attic", members=["U0ALICE"]),
        Channel(id="C0SAFE", name="safe", members=["U0ALICE"], is_private=True),
    ]
    return demo_config().model_copy(update={"channels": channels, **update})


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def store(events: Events) -> Store:
    return Store(_config(pin_limit=2), publish=events)


def _code(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(SlackError) as caught:
        fn(*args, **kwargs)
    return caught.value.code


def test_ts_strictly_increase_even_when_the_clock_stands_still(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    stamps = [store.next_ts() for _ in range(3)]
    assert stamps == ["1700000000.000000", "1700000000.000001", "1700000000.000002"]
    posted = store.post_message(user="U0ALICE", channel="C0HOME", text="hi")
    assert posted["ts"] == "1700000000.000003"


def test_message_events(store: Store, events: Events) -> None:
    human = store.post_message(user="U0ALICE", channel="C0HOME", text="lights on")
    channel, event = events.seen[-1]
    assert channel == "C0HOME"
    assert event == {
        "user": "U0ALICE",
        "type": "message",
        "ts": human["ts"],
        "text": "lights on",
        "team": "T0HOME",
        "channel": "C0HOME",
        "event_ts": human["ts"],
        "channel_type": "channel",
    }
    bot = store.post_message(
        user="U0KITCHEN", channel="C0HOME", text="done", thread_ts=human["ts"], app_id="A0KITCHEN"
    )
    event = events.last()
    assert event["bot_id"] == "B0KITCHEN" and event["app_id"] == "A0KITCHEN"
    assert event["bot_profile"]["app_id"] == "A0KITCHEN"
    assert event["thread_ts"] == human["ts"] and event["parent_user_id"] == "U0ALICE"
    assert "subtype" not in event
    store.post_message(
        user="U0BOB", channel="C0HOME", text="all", thread_ts=bot["ts"], reply_broadcast=True
    )
    event = events.last()
    assert event["subtype"] == "thread_broadcast" and event["thread_ts"] == human["ts"]
    assert event["root"]["ts"] == human["ts"]
    parent = store.message("C0HOME", human["ts"])
    assert parent["reply_count"] == 2 and parent["reply_users"] == ["U0KITCHEN", "U0BOB"]
    assert parent["reply_users_count"] == 2 and parent["latest_reply"] == event["ts"]


def test_update_and_delete_events(store: Store, events: Events) -> None:
    ts = store.post_message(user="U0ALICE", channel="C0HOME", text="draft")["ts"]
    store.update_message(user="U0ALICE", channel="C0HOME", ts=ts, text="final")
    changed = events.last()
    assert changed["subtype"] == "message_changed" and changed["hidden"] is True
    assert changed["message"]["text"] == "final" and changed["previous_message"]["text"] == "draft"
    assert changed["message"]["edited"] == {"user": "U0ALICE", "ts": changed["event_ts"]}
    assert changed["channel"] == "C0HOME" and changed["ts"] > ts
    assert _code(store.update_message, user="U0BOB", channel="C0HOME", ts=ts, text="x") == (
        "cant_update_message"
    )
    assert _code(store.delete_message, user="U0BOB", channel="C0HOME", ts=ts) == (
        "cant_delete_message"
    )
    store.delete_message(user="U0ALICE", channel="C0HOME", ts=ts)
    deleted = events.last()
    assert deleted["subtype"] == "message_deleted" and deleted["deleted_ts"] == ts
    assert deleted["hidden"] is True and deleted["previous_message"]["text"] == "final"
    assert store.history("C0HOME") == ([], None)


def test_deleting_a_reply_updates_its_parent(store: Store) -> None:
    parent = store.post_message(user="U0ALICE", channel="C0HOME", text="p")["ts"]
    reply = store.post_message(user="U0BOB", channel="C0HOME", text="r", thread_ts=parent)["ts"]
    assert store.message("C0HOME", parent)["reply_count"] == 1
    store.delete_message(user="U0BOB", channel="C0HOME", ts=reply)
    assert "reply_count" not in store.message("C0HOME", parent)
    assert [m["ts"] for m in store.replies("C0HOME", parent)[0]] == [parent]


def test_pins_and_their_events(store: Store, events: Events) -> None:
    stamps = [
        store.post_message(user="U0BOB", channel="C0HOME", text=str(i))["ts"] for i in range(3)
    ]
    item = store.pin("U0KITCHEN", "C0HOME", stamps[0])
    assert item["created_by"] == "U0KITCHEN" and item["message"]["pinned_to"] == ["C0HOME"]
    added = events.last()
    assert added["type"] == "pin_added" and added["channel_id"] == "C0HOME"
    assert added["user"] == "U0KITCHEN" and added["item_user"] == "U0BOB"
    assert added["pin_count"] == 1 and added["item"]["message"]["ts"] == stamps[0]
    assert added["pinned_info"] == {
        "channel": "C0HOME",
        "pinned_by": "U0KITCHEN",
        "pinned_ts": item["created"],
    }
    assert _code(store.pin, "U0HALL", "C0HOME", stamps[0]) == "already_pinned"
    store.pin("U0HALL", "C0HOME", stamps[1])
    assert _code(store.pin, "U0HALL", "C0HOME", stamps[2]) == "too_many_pins"
    assert [p["message"]["ts"] for p in store.pins("C0HOME")] == [stamps[1], stamps[0]]
    store.unpin("U0HALL", "C0HOME", stamps[0])
    removed = events.last()
    assert removed["type"] == "pin_removed" and removed["pin_count"] == 1
    assert removed["has_pins"] is True
    assert _code(store.unpin, "U0HALL", "C0HOME", stamps[0]) == "no_pin"
    assert _code(store.pin, "U0HALL", "C0HOME", "1.000001") == "message_not_found"
    assert _code(store.pin, "U0HALL", "C0NOPE", stamps[0]) == "channel_not_found"
    attic = store.post_message(user="U0ALICE", channel="C0ATTIC", text="x")["ts"]
    assert _code(store.pin, "U0HALL", "C0ATTIC", attic) == "not_in_channel"


def test_reactions_and_their_events(store: Store, events: Events) -> None:
    ts = store.post_message(user="U0ALICE", channel="C0HOME", text="go")["ts"]
    store.react("U0KITCHEN", "C0HOME", ts, "thumbsup")
    assert events.last() == {
        "type": "reaction_added",
        "user": "U0KITCHEN",
        "reaction": "+1",
        "item_user": "U0ALICE",
        "item": {"type": "message", "channel": "C0HOME", "ts": ts},
        "event_ts": events.last()["event_ts"],
    }
    assert _code(store.react, "U0KITCHEN", "C0HOME", ts, "+1") == "already_reacted"
    store.react("U0HALL", "C0HOME", ts, "+1")
    assert store.reactions("C0HOME", ts)["reactions"] == [
        {"name": "+1", "users": ["U0KITCHEN", "U0HALL"], "count": 2}
    ]
    store.unreact("U0KITCHEN", "C0HOME", ts, "+1")
    assert events.last()["type"] == "reaction_removed"
    store.unreact("U0HALL", "C0HOME", ts, "thumbsup")
    assert "reactions" not in store.reactions("C0HOME", ts)
    assert _code(store.unreact, "U0HALL", "C0HOME", ts, "+1") == "no_reaction"


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("white_check_mark", "white_check_mark"),
        (":eyes:", "eyes"),
        ("thumbsup", "+1"),
        ("thumbsdown::skin-tone-4", "-1::skin-tone-4"),
        ("hourglass", "hourglass"),
        ("warning", "warning"),
        ("robot_face", "robot_face"),
        ("x", "x"),
    ],
)
def test_reaction_names(given: str, canonical: str) -> None:
    assert reaction_name(given) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Eyes",
        "eyes!",
        "no such emoji",
        "not_an_emoji_at_all",
        "eyes::skin-tone-9",
        "skin-tone-2",
    ],
)
def test_invalid_reaction_names(bad: str) -> None:
    assert _code(reaction_name, bad) == "invalid_name"


def test_membership(store: Store, events: Events) -> None:
    assert store.channel_members("C0ATTIC") == ["U0ALICE"]
    assert "U0KITCHEN" in store.channel_members("C0HOME")
    assert _code(store.post_message, user="U0BOB", channel="C0ATTIC", text="hi") == (
        "not_in_channel"
    )
    assert store.join("U0BOB", "C0ATTIC") is True
    assert events.last()["type"] == "member_joined_channel"
    assert store.join("U0BOB", "C0ATTIC") is False
    assert store.is_member("U0BOB", "C0ATTIC")
    assert _code(store.join, "U0BOB", "C0SAFE") == "method_not_supported_for_channel_type"
    assert _code(store.channel, "C0SAFE", for_user="U0BOB") == "channel_not_found"
    assert "C0SAFE" not in {c["id"] for c in store.channels(for_user="U0BOB")}
    assert store.channel("C0SAFE", for_user="U0ALICE")["is_private"] is True


def test_users_and_bots(store: Store) -> None:
    users = {u["id"]: u for u in store.users()}
    assert set(users) == {
        "U0ALICE",
        "U0BOB",
        "U0KITCHEN",
        "U0HALL",
        "U0GARAGE",
        "U0TROUPE",
        "U0CLASSIC",
    }
    assert users["U0ALICE"]["is_admin"] is True and users["U0BOB"]["is_bot"] is False
    assert users["U0GARAGE"]["profile"]["bot_id"] == "B0GARAGE"
    assert users["U0GARAGE"]["profile"]["api_app_id"] == "A0GARAGE"
    assert store.resolve_user("bob") == "U0BOB" and store.resolve_user("hall-pi") == "U0HALL"
    assert _code(store.user, "U0NOBODY") == "user_not_found"


def test_state_file_keeps_messages_pins_reactions(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    first = Store(_config(), state_path=path)
    parent = first.post_message(user="U0ALICE", channel="C0HOME", text="lights on")["ts"]
    reply = first.post_message(
        user="U0KITCHEN", channel="C0HOME", text="done", thread_ts=parent, app_id="A0KITCHEN"
    )["ts"]
    gone = first.post_message(user="U0BOB", channel="C0HOME", text="oops")["ts"]
    first.delete_message(user="U0BOB", channel="C0HOME", ts=gone)
    first.pin("U0KITCHEN", "C0HOME", parent)
    first.react("U0HALL", "C0HOME", parent, "eyes")
    first.join("U0BOB", "C0ATTIC")
    dm = first.open_im("U0KITCHEN", "U0ALICE")
    first.post_message(user="U0KITCHEN", channel=dm, text="psst")
    first.close()

    again = Store(_config(), state_path=path)
    messages, _ = again.history("C0HOME")
    assert [m["ts"] for m in messages] == [parent]
    head = messages[0]
    assert head["pinned_to"] == ["C0HOME"] and head["reply_count"] == 1
    assert head["reactions"] == [{"name": "eyes", "users": ["U0HALL"], "count": 1}]
    assert [m["ts"] for m in again.replies("C0HOME", parent)[0]] == [parent, reply]
    assert [p["message"]["ts"] for p in again.pins("C0HOME")] == [parent]
    assert again.is_member("U0BOB", "C0ATTIC")
    assert [m["text"] for m in again.history(dm)[0]] == ["psst"]
    assert again.next_ts() > reply
    assert _code(again.pin, "U0HALL", "C0HOME", parent) == "already_pinned"
    again.close()


def test_restarted_workspace_keeps_its_state(tmp_path: Path) -> None:
    path = tmp_path / "workspace.sqlite"
    with running_workspace(state_path=path) as running:
        client = WebClient(token="xoxb-kitchen", base_url=running.api_url)
        ts = client.chat_postMessage(channel="C0HOME", text="remember me")["ts"]
        client.pins_add(channel="C0HOME", timestamp=ts)
    with running_workspace(state_path=path) as running:
        client = WebClient(token="xoxb-hall", base_url=running.api_url)
        messages = client.conversations_history(channel="C0HOME")["messages"]
        assert [(m["ts"], m["text"]) for m in messages] == [(ts, "remember me")]
        items = client.pins_list(channel="C0HOME")["items"]
        assert [i["message"]["ts"] for i in items] == [ts]
        assert client.chat_postMessage(channel="C0HOME", text="later")["ts"] > ts


def test_history_and_replies_windows_match_slacks_rules_on_every_bound(store: Store) -> None:
    """conversations.history and .replies are bisected over the channel's ts; every page,
    bound and cursor gives what a plain reading of Slack's rules gives."""
    top: list[str] = []
    replies: list[str] = []
    for i in range(12):
        ts = store.post_message(user="U0ALICE", channel="C0HOME", text=f"m{i}")["ts"]
        top.append(ts)
        if i % 3 == 0:
            replies.append(
                store.post_message(user="U0ALICE", channel="C0HOME", text="r", thread_ts=top[0])[
                    "ts"
                ]
            )
        if i == 7:  # a reply also sent to the channel is listed, as Slack lists it
            sent = store.post_message(
                user="U0ALICE", channel="C0HOME", text="b", thread_ts=top[0], reply_broadcast=True
            )["ts"]
            top.append(sent)
            replies.append(sent)
    gone = top.pop(5)
    store.delete_message(user="U0ALICE", channel="C0HOME", ts=gone)

    def expected(ts_list: list[str], lo: str | None, hi: str | None, inclusive: bool) -> list[str]:
        def keep(ts: str) -> bool:
            above = lo is None or float(ts) > float(lo) or (inclusive and ts == lo)
            below = hi is None or float(ts) < float(hi) or (inclusive and ts == hi)
            return above and below

        return [ts for ts in ts_list if keep(ts)]

    bounds = [None, top[2], top[6], replies[1]]
    for lo in bounds:
        for hi in bounds:
            for inclusive in (False, True):
                for limit in (1, 2, 5, 100):
                    want = expected(top, lo, hi, inclusive)[::-1]
                    got, cursor = [], None
                    while True:
                        page, cursor = store.history(
                            "C0HOME", oldest=lo, latest=hi, inclusive=inclusive,
                            limit=limit, cursor=cursor,
                        )  # fmt: skip
                        got += [m["ts"] for m in page]
                        if cursor is None:
                            break
                    assert got == want, (lo, hi, inclusive, limit)
                    want = expected(replies, lo, hi, inclusive)
                    got, cursor = [], None
                    while True:
                        page, cursor = store.replies(
                            "C0HOME", top[0], oldest=lo, latest=hi, inclusive=inclusive,
                            limit=limit + 1, cursor=cursor,
                        )  # fmt: skip
                        assert page[0]["ts"] == top[0]
                        got += [m["ts"] for m in page[1:]]
                        if cursor is None:
                            break
                    assert got == want, ("replies", lo, hi, inclusive, limit)
