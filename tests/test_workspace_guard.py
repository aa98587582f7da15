"""The workspace as an attack surface: Host on every route, Origin on what a browser sends.

A web page the user visits can aim requests at 127.0.0.1 (a form, an image, a fetch) or
at a name of its own that resolves there (DNS rebinding); none of that may act or read.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from troupe.devkit.workspace.config import demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace

ALICE = {"Authorization": "Bearer xoxp-alice"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def send(
    rw: RunningWorkspace, path: str, headers: dict[str, str], data: bytes | None = b""
) -> tuple[int, Any]:
    method = "GET" if data is None else "POST"
    req = urllib.request.Request(rw.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def posted(rw: RunningWorkspace) -> list[str]:
    history = rw.call_soon(rw.workspace.store.history, "C0HOME")[0]
    return [m["text"] for m in history]


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("api/auth.test", b""),
        ("api/chat.postMessage", b"channel=C0HOME&text=rebound"),
        ("control/counters", b"{}"),
        ("page/humans", None),
        ("", None),
        ("websocket/anything", None),
        ("link/?ticket=x&app_id=A0KITCHEN", None),
    ],
)
def test_a_wrong_host_is_refused_on_every_route(
    workspace: RunningWorkspace, path: str, data: bytes | None
) -> None:
    headers = ALICE | FORM | {"Host": f"rebound.example:{workspace.port}"}
    status, body = send(workspace, path, headers, data)
    assert (status, body) == (403, {"ok": False, "error": "invalid_host"})
    assert posted(workspace) == []


def test_loopback_names_and_configured_hosts_are_served() -> None:
    config = demo_config().model_copy(update={"allowed_hosts": ["pi.home.arpa"]})
    with running_workspace(config) as rw:
        for host in ("127.0.0.1", "localhost", "[::1]", "pi.home.arpa", "LOCALHOST"):
            status, body = send(rw, "api/auth.test", ALICE | {"Host": f"{host}:{rw.port}"})
            assert (status, body["ok"]) == (200, True), host
        assert send(rw, "api/auth.test", ALICE | {"Host": "other.home.arpa"})[0] == 403


def test_a_cross_site_write_without_the_right_origin_is_refused(
    workspace: RunningWorkspace,
) -> None:
    text = b"channel=C0HOME&text=from evil.example"
    for origin in ("http://evil.example", "null", f"http://localhost:{workspace.port + 1}"):
        status, body = send(
            workspace, "api/chat.postMessage", ALICE | FORM | {"Origin": origin}, text
        )
        assert (status, body) == (403, {"ok": False, "error": "invalid_origin"}), origin
    ctl = {"Authorization": f"Bearer {workspace.workspace.config.control_token}"}
    status, body = send(workspace, "control/post", ctl | {"Origin": "http://evil.example"}, b"{}")
    assert (status, body["error"]) == (403, "invalid_origin")
    image = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"}
    status, body = send(
        workspace, "api/chat.postMessage?channel=C0HOME&text=img", ALICE | image, None
    )
    assert (status, body["error"]) == (403, "invalid_origin")
    assert posted(workspace) == []


def test_the_chat_pages_own_origin_may_write(workspace: RunningWorkspace) -> None:
    own = {"Origin": f"http://127.0.0.1:{workspace.port}", "Sec-Fetch-Site": "same-origin"}
    status, body = send(
        workspace, "api/chat.postMessage", ALICE | FORM | own, b"channel=C0HOME&text=hi"
    )
    assert (status, body["ok"]) == (200, True)
    assert posted(workspace) == ["hi"]


def test_the_control_token_is_random_unless_configured() -> None:
    first, second = demo_config().control_token, demo_config().control_token
    assert first != second and len(first) >= 32
    assert "ctl-demo" not in {first, second}
