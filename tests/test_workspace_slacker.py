"""slacker 0.14 and the original slackmq 0.1.2 against the workspace, over HTTP.

slacker sends its token as a query parameter and its arguments as form data (Python
booleans as "True"); slackmq acks a message by pinning it, so a second ack fails. Slack
takes query-string tokens only from apps created before 24 February 2021, so these run
against a workspace whose apps are that old (legacy_apps); troupe's rtm transport gives
slacker the token in the Authorization header instead, which works for any app.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import slacker
from slackmq import slackmq

from troupe.devkit.workspace.testing import RunningWorkspace, legacy_apps, running_workspace
from troupe.transports.rtm import header_auth_slacker


@pytest.fixture
def workspace() -> Iterator[RunningWorkspace]:
    """The demo workspace with every app created in 2020, when slacker's way still worked."""
    with running_workspace(legacy_apps()) as running:
        yield running


@pytest.fixture
def api(workspace: RunningWorkspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Send slacker's (and so slackmq's) requests to the workspace instead of slack.com."""
    monkeypatch.setattr(slacker, "get_api_url", lambda method: workspace.api_url + method)
    yield workspace.api_url


def test_slacker_methods(api: str) -> None:
    slack = slacker.Slacker("xoxb-kitchen")
    assert slack.api.test(foo="bar").body["args"] == {"foo": "bar"}
    assert slack.auth.test().body["user_id"] == "U0KITCHEN"
    posted = slack.chat.post_message("#home", "hello", as_user=True, attachments=[{"text": "a"}])
    ts = posted.body["ts"]
    assert posted.body["message"]["attachments"] == [{"text": "a"}]
    history = slack.conversations.history("C0HOME").body["messages"]
    assert [m["ts"] for m in history] == [ts]
    slack.reactions.add("white_check_mark", channel="C0HOME", timestamp=ts)
    got = slack.reactions.get(channel="C0HOME", timestamp=ts).body["message"]["reactions"]
    assert got == [{"name": "white_check_mark", "users": ["U0KITCHEN"], "count": 1}]
    slack.pins.add("C0HOME", timestamp=ts)
    assert [i["message"]["ts"] for i in slack.pins.list("C0HOME").body["items"]] == [ts]
    users = slack.users.list().body["members"]
    assert "U0ALICE" in {u["id"] for u in users}
    channels = slack.conversations.list(types="public_channel,im").body["channels"]
    assert "C0HOME" in {c["id"] for c in channels}
    dm = slack.conversations.open(users="U0ALICE").body["channel"]["id"]
    assert dm.startswith("D")


def test_slacker_errors(api: str) -> None:
    with pytest.raises(slacker.Error, match="invalid_auth"):
        slacker.Slacker("xoxb-nobody").auth.test()
    slack = slacker.Slacker("xoxb-kitchen")
    with pytest.raises(slacker.Error, match="channel_not_found"):
        slack.chat.post_message("#nowhere", "hello")
    with pytest.raises(slacker.Error, match="no_pin"):
        ts = slack.chat.post_message("C0HOME", "x").body["ts"]
        slack.pins.remove("C0HOME", timestamp=ts)


def test_slacker_rtm_start_for_a_classic_app(api: str, workspace: RunningWorkspace) -> None:
    body = slacker.Slacker("xoxb-classic").rtm.start().body
    assert body["url"].startswith(f"ws://127.0.0.1:{workspace.port}/websocket/")
    assert body["team"]["domain"] == "home" and body["self"]["name"] == "troupe-classic"
    with pytest.raises(slacker.Error, match="not_allowed_token_type"):
        slacker.Slacker("xoxb-kitchen").rtm.connect()


def test_slacker_against_apps_held_to_todays_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's apps are of unknown age, so recent: slacker's own way is refused (and
    counted), the header-token slacker troupe's rtm transport uses works, rtm.connect too."""
    with running_workspace() as rw:
        monkeypatch.setattr(slacker, "get_api_url", lambda method: rw.api_url + method)
        with pytest.raises(slacker.Error, match="invalid_auth"):
            slacker.Slacker("xoxb-classic").auth.test()
        ts = rw.control("post", user="alice", channel="#home", text="lights on")["ts"]
        assert slackmq("xoxb-kitchen", "C0HOME", ts).ack() is False, "SlackMQ 0.1.2 cannot ack"
        refused = rw.control("counters")["query_tokens"]
        assert refused == {"A0CLASSIC": {"auth.test": 1}, "A0KITCHEN": {"pins.add": 1}}
        client = header_auth_slacker("xoxb-classic")
        assert client.auth.test().body["user_id"] == "U0CLASSIC"
        assert client.rtm.connect().body["self"]["name"] == "troupe-classic"
        with pytest.raises(slacker.Error, match="rtm_connect_required"):
            client.rtm.start()
        posted = client.chat.post_message("C0HOME", "via the header", as_user=True).body
        assert posted["message"]["user"] == "U0CLASSIC"


def test_slackmq_ack_is_exclusive(api: str, workspace: RunningWorkspace) -> None:
    ts = workspace.control("post", user="alice", channel="#home", text="lights on")["ts"]
    kitchen = slackmq("xoxb-kitchen", "C0HOME", ts)
    hall = slackmq("xoxb-hall", "C0HOME", ts)
    assert kitchen.ack() is True
    assert hall.ack() is False
    assert kitchen.unack() is not False  # slackmq's unack returns None on success
    assert hall.ack() is True
    pins = workspace.call_soon(workspace.workspace.store.pins, "C0HOME")
    assert [p["created_by"] for p in pins] == ["U0HALL"]
