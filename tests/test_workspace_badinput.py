"""Whatever a client sends, the Web API answers a Slack-style error and keeps serving.

Raw HTTP (urllib, and hypothesis for random junk) so nothing tidies the request first.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from troupe.devkit.workspace import server
from troupe.devkit.workspace.config import WorkspaceConfig, demo_config
from troupe.devkit.workspace.testing import RunningWorkspace

BOT = {"Authorization": "Bearer xoxb-kitchen"}


def _send(
    running: RunningWorkspace,
    path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        running.url + path, data=data, headers=headers or {}, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw)


def _still_serving(running: RunningWorkspace) -> None:
    status, body = _send(running, "api/api.test?ping=1", method="GET")
    assert (status, body) == (200, {"ok": True, "args": {"ping": "1"}})


@pytest.mark.parametrize(
    ("path", "data", "headers", "error"),
    [
        ("api/chat.teleport", b"", BOT, "unknown_method"),
        ("api/", None, BOT, "unknown_method"),
        ("api/chat.postMessage", b"channel=C0HOME&text=hi", {}, "not_authed"),
        (
            "api/chat.postMessage",
            b"channel=C0HOME&text=hi",
            {"Authorization": "Bearer xoxb-stolen"},
            "invalid_auth",
        ),
        ("api/auth.test", b"{not json", BOT | {"Content-Type": "application/json"}, "invalid_json"),
        ("api/auth.test", b"[1, 2]", BOT | {"Content-Type": "application/json"}, "json_not_object"),
        (
            "api/chat.postMessage",
            b'{"channel": "C0HOME", "text": "\xff\xfe"}',
            BOT | {"Content-Type": "application/json"},
            "invalid_json",
        ),
        (
            "api/chat.postMessage",
            b"channel=C0HOME&text=%FF%FE",
            BOT | {"Content-Type": "application/x-www-form-urlencoded"},
            "invalid_form_data",
        ),
        (
            "api/chat.postMessage",
            b"channel=C0HOME&text=\xff",
            BOT | {"Content-Type": "application/x-www-form-urlencoded"},
            "invalid_form_data",
        ),
        (
            "api/auth.test",
            b"a=b",
            BOT | {"Content-Type": "application/x-www-form-urlencoded; charset=klingon"},
            "invalid_charset",
        ),
        (
            "api/auth.test",
            b"<xml/>",
            BOT | {"Content-Type": "application/xml"},
            "invalid_post_type",
        ),
        (
            "api/auth.test",
            b"--x\r\nbroken",
            BOT | {"Content-Type": "multipart/form-data; boundary=x"},
            "invalid_form_data",
        ),
        (
            "api/chat.postMessage",
            json.dumps({"channel": {"id": "C0HOME"}, "text": "hi"}).encode(),
            BOT | {"Content-Type": "application/json"},
            "invalid_arguments",
        ),
        (
            "api/chat.postMessage",
            json.dumps({"channel": "C0HOME", "text": ["hi"]}).encode(),
            BOT | {"Content-Type": "application/json"},
            "invalid_arguments",
        ),
        (
            "api/conversations.history",
            b"channel=C0HOME&limit=lots",
            BOT | {"Content-Type": "application/x-www-form-urlencoded"},
            "invalid_arguments",
        ),
        (
            "api/conversations.history",
            b"channel=C0HOME&latest=tomorrow",
            BOT | {"Content-Type": "application/x-www-form-urlencoded"},
            "invalid_ts_latest",
        ),
        (
            "api/chat.postMessage",
            b"text=hi",
            BOT | {"Content-Type": "application/x-www-form-urlencoded"},
            "channel_not_found",
        ),
        (
            "api/reactions.add",
            b"channel=C0HOME&timestamp=1.000001",
            BOT | {"Content-Type": "application/x-www-form-urlencoded"},
            "invalid_name",
        ),
        (
            "api/chat.postMessage",
            b'{"channel": "C0HOME", "attachments": "{nope"}',
            BOT | {"Content-Type": "application/json"},
            "invalid_attachments",
        ),
    ],
)
def test_bad_requests_get_slack_errors(
    workspace: RunningWorkspace, path: str, data: bytes | None, headers: dict, error: str
) -> None:
    status, body = _send(workspace, path, data, headers)
    assert (status, body["ok"], body["error"]) == (200, False, error)
    _still_serving(workspace)


def test_every_way_of_passing_arguments(workspace: RunningWorkspace) -> None:
    form = b"channel=C0HOME&text=form&token=xoxb-kitchen"
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _send(workspace, "api/chat.postMessage", form, ctype)[1]["ok"]
    query = "api/chat.postMessage?channel=C0HOME&text=query"
    assert _send(workspace, query, b"", BOT)[1]["ok"]
    as_json = json.dumps({"channel": "C0HOME", "text": "json", "reply_broadcast": False}).encode()
    assert _send(
        workspace, "api/chat.postMessage", as_json, BOT | {"Content-Type": "application/json"}
    )[1]["ok"]
    boundary = "b0undary"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="channel"\r\n\r\nC0HOME\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\nmultipart\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    mp = BOT | {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert _send(workspace, "api/chat.postMessage", multipart, mp)[1]["ok"]
    latin = "caf\u00e9".encode("iso-8859-1")
    latin_form = b"channel=C0HOME&text=" + latin
    latin_type = BOT | {"Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1"}
    assert _send(workspace, "api/chat.postMessage", latin_form, latin_type)[1]["ok"]
    status, history = _send(
        workspace, "api/conversations.history?channel=C0HOME", method="GET", headers=BOT
    )
    assert status == 200
    assert [m["text"] for m in history["messages"]] == [
        "caf\u00e9",
        "multipart",
        "json",
        "query",
        "form",
    ]


def test_huge_body_is_refused_with_json(workspace: RunningWorkspace) -> None:
    huge = b"channel=C0HOME&text=" + b"x" * (2 * 1024 * 1024)
    status, body = _send(
        workspace,
        "api/chat.postMessage",
        huge,
        BOT | {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 413 and body == {"ok": False, "error": "request_too_large"}
    _still_serving(workspace)


def test_control_api_needs_its_token_and_json(workspace: RunningWorkspace) -> None:
    assert _send(workspace, "control/latency", b"{}", {})[0:2] == (
        401,
        {"ok": False, "error": "not_authed"},
    )
    wrong = {"Authorization": "Bearer nope"}
    assert _send(workspace, "control/latency", b"{}", wrong)[1]["error"] == "invalid_auth"
    ctl = {"Authorization": f"Bearer {workspace.workspace.config.control_token}"}
    status, body = _send(workspace, "control/latency", b"{oops", ctl)
    assert (status, body["error"]) == (400, "invalid_arguments")
    status, body = _send(workspace, "control/fail", json.dumps({"method": "x"}).encode(), ctl)
    assert (status, body["error"]) == (400, "invalid_arguments")
    bad_status = {"method": "auth.test", "status": 418, "count": 1}
    assert _send(workspace, "control/fail", json.dumps(bad_status).encode(), ctl)[0] == 400
    backwards = {"method": "auth.test", "seconds": -1, "count": 1}
    assert _send(workspace, "control/stall", json.dumps(backwards).encode(), ctl)[0] == 400
    unknown = {"app": "toaster", "paused": True}
    assert _send(workspace, "control/pause", json.dumps(unknown).encode(), ctl)[0] == 400
    post = {"user": "alice", "channel": "#nowhere", "text": "hi"}
    status, body = _send(workspace, "control/post", json.dumps(post).encode(), ctl)
    assert (status, body["error"]) == (400, "channel_not_found")
    assert _send(workspace, "control/teleport", b"{}", ctl)[0] == 404
    _still_serving(workspace)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(["chat.postMessage", "pins.add", "reactions.add", "auth.test", "x.y"]),
    body=st.binary(max_size=300),
    ctype=st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=zz",
            "text/plain",
            "application/octet-stream",
        ]
    ),
)
def test_random_junk_never_breaks_the_server(
    workspace: RunningWorkspace, method: str, body: bytes, ctype: str
) -> None:
    status, answer = _send(workspace, f"api/{method}", body, BOT | {"Content-Type": ctype})
    assert status == 200 and isinstance(answer["ok"], bool)
    if not answer["ok"]:
        assert answer["error"] != "internal_error"
    _still_serving(workspace)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    args=st.dictionaries(
        st.sampled_from(
            ["channel", "text", "ts", "timestamp", "name", "limit", "cursor", "blocks"]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=20),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        ),
    ),
    method=st.sampled_from(
        [
            "chat.postMessage",
            "chat.update",
            "conversations.history",
            "conversations.replies",
            "pins.add",
            "reactions.add",
            "reactions.get",
            "users.info",
            "conversations.list",
        ]
    ),
)
def test_random_json_arguments_get_slack_answers(
    workspace: RunningWorkspace, method: str, args: dict[str, Any]
) -> None:
    data = json.dumps(args).encode()
    status, answer = _send(
        workspace, f"api/{method}", data, BOT | {"Content-Type": "application/json"}
    )
    assert status == 200 and isinstance(answer["ok"], bool)
    if not answer["ok"]:
        assert answer["error"] != "internal_error"


# --- where it listens -------------------------------------------------------------------


async def test_it_binds_loopback_by_default_and_says_nothing(tmp_path, caplog) -> None:
    runner, port = await server.start(
        server.build_workspace(demo_config(), tmp_path / "ws.sqlite3"), port=0
    )
    try:
        hosts = {s.getsockname()[0] for site in runner.sites for s in site._server.sockets}
        assert hosts == {"127.0.0.1"} and port > 0
        assert "WARNING" not in caplog.text
    finally:
        await runner.cleanup()


async def test_any_other_address_is_warned_about_loudly(tmp_path, caplog, monkeypatch) -> None:
    """Checked without binding anywhere but loopback: the site is a stand-in."""
    bound: list[str] = []

    class Site:
        _server = None

        def __init__(self, runner: object, host: str, port: int, **_: object) -> None:
            bound.append(host)

        async def start(self) -> None:
            return None

    monkeypatch.setattr(server.web, "TCPSite", Site)
    ws = server.build_workspace(own_tokens(demo_config()), tmp_path / "ws.sqlite3")
    runner, _port = await server.start(ws, host="192.0.2.10", port=8080)
    await runner.cleanup()
    assert bound == ["192.0.2.10"]
    assert "the workspace is bound to 192.0.2.10" in caplog.text
    assert "bind 127.0.0.1 unless you mean it" in caplog.text
    demo = server.build_workspace(demo_config(), tmp_path / "demo.sqlite3")
    with pytest.raises(server.UnsafeBindError, match="demo's published tokens"):
        await server.start(demo, host="192.0.2.10", port=8080)
    assert bound == ["192.0.2.10"], "the demo workspace never reached bind"
    named = demo_config().model_copy(update={"allowed_hosts": ["workspace"]})
    private = server.build_workspace(named, tmp_path / "private.sqlite3")
    runner, _port = await server.start(private, host="0.0.0.0", port=3000)
    await runner.cleanup()
    assert bound == ["192.0.2.10", "0.0.0.0"], "a file naming its hosts (compose) may"


def own_tokens(config: WorkspaceConfig) -> WorkspaceConfig:
    """The config with tokens of its own instead of the demo's published ones."""
    humans = [h.model_copy(update={"token": h.token + "-own"}) for h in config.humans]
    apps = [
        a.model_copy(
            update={
                "bot_token": a.bot_token + "-own",
                "app_token": a.app_token and a.app_token + "-own",
            }
        )
        for a in config.apps
    ]
    return config.model_copy(update={"humans": humans, "apps": apps})
