"""Where a token may travel: Slack's rule for apps created since 24 February 2021.

Raw HTTP (urllib), so the test decides exactly where the token goes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from troupe.devkit.workspace.config import demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace

NEW, OLD, ALICE = "xoxb-kitchen", "xoxb-hall", "xoxp-alice"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def running() -> Iterator[RunningWorkspace]:
    """kitchen-pi is a new app; hall-pi was created in 2020, garage-pi is marked legacy."""
    apps = []
    for app in demo_config().apps:
        if app.name == "hall-pi":
            app = app.model_copy(update={"created": date(2020, 6, 1)})
        elif app.name == "garage-pi":
            app = app.model_copy(update={"created": date(2023, 1, 1), "legacy_query_tokens": True})
        apps.append(app)
    with running_workspace(demo_config().model_copy(update={"apps": apps})) as rw:
        yield rw


def call(
    rw: RunningWorkspace,
    method: str,
    *,
    query: str = "",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    url = f"{rw.api_url}{method}" + (f"?{query}" if query else "")
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def refused(rw: RunningWorkspace) -> dict[str, dict[str, int]]:
    return rw.control("counters")["query_tokens"]


def test_a_new_apps_query_string_token_is_refused_as_slack_refuses_it(
    running: RunningWorkspace,
) -> None:
    status, body = call(running, "auth.test", query=f"token={NEW}")
    assert (status, body) == (200, {"ok": False, "error": "invalid_auth"})
    status, body = call(running, "chat.postMessage", query=f"token={NEW}&channel=C0HOME&text=x")
    assert (status, body) == (200, {"ok": False, "error": "invalid_auth"})
    assert refused(running) == {"A0KITCHEN": {"auth.test": 1, "chat.postMessage": 1}}
    assert "A0KITCHEN" not in running.control("counters")["calls"]
    status, body = call(running, "auth.test", query=f"token={ALICE}")
    assert body == {"ok": False, "error": "invalid_auth"}, "people's tokens follow the rule too"
    assert refused(running)["U0ALICE"] == {"auth.test": 1}


def test_an_old_or_legacy_marked_apps_query_string_token_is_accepted(
    running: RunningWorkspace,
) -> None:
    assert call(running, "auth.test", query=f"token={OLD}")[1]["user_id"] == "U0HALL"
    assert call(running, "auth.test", query="token=xoxb-garage")[1]["user_id"] == "U0GARAGE"
    assert refused(running) == {}


@pytest.mark.parametrize("token", [NEW, OLD, ALICE])
def test_header_and_form_body_tokens_work_for_every_app(
    running: RunningWorkspace, token: str
) -> None:
    header = {"Authorization": f"Bearer {token}"}
    assert call(running, "auth.test", headers=header)[1]["ok"] is True
    assert call(running, "auth.test", query="foo=1", headers=header)[1]["ok"] is True
    form = f"token={token}".encode()
    assert call(running, "auth.test", body=form, headers=FORM)[1]["ok"] is True
    boundary = "b0undary"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="token"\r\n\r\n{token}\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    mp = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert call(running, "auth.test", body=multipart, headers=mp)[1]["ok"] is True
    assert refused(running) == {}


def test_text_plain_and_json_bodies_do_not_carry_a_new_apps_token(
    running: RunningWorkspace,
) -> None:
    """A text/plain body is what a web page can send cross-site without asking; Slack takes
    tokens of new apps only in the header or a URL-encoded body, and never from JSON."""
    plain = {"Content-Type": "text/plain"}
    text = f"token={NEW}&channel=C0HOME&text=from a web page".encode()
    assert call(running, "chat.postMessage", body=text, headers=plain)[1] == {
        "ok": False,
        "error": "invalid_auth",
    }
    assert call(running, "auth.test", body=f"token={OLD}".encode(), headers=plain)[1]["ok"]
    as_json = json.dumps({"token": NEW, "channel": "C0HOME", "text": "x"}).encode()
    jtype = {"Content-Type": "application/json"}
    assert call(running, "chat.postMessage", body=as_json, headers=jtype)[1]["error"] == (
        "not_authed"
    )
    assert refused(running) == {"A0KITCHEN": {"chat.postMessage": 1}}
