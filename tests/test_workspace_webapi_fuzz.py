"""Property tests on Web API calls to the local workspace: a Slack-shaped JSON answer,
never a 500, and it keeps serving. A short budget; it runs in CI."""

from __future__ import annotations

import http.client
import json
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from troupe.devkit.workspace import webapi
from troupe.devkit.workspace.testing import RunningWorkspace

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

TOKENS = [None, "xoxb-kitchen", "xoxp-alice", "xapp-kitchen", "xoxb-classic", "xoxb-stolen", ""]
ARG_NAMES = [
    "channel", "text", "ts", "timestamp", "name", "limit", "cursor", "blocks", "attachments",
    "thread_ts", "users", "user", "bot", "types", "latest", "oldest", "inclusive",
    "reply_broadcast", "return_im", "full", "error", "token",
]  # fmt: skip
MEANINGFUL = [
    "C0HOME", "#home", "home", "C0KITCHEN", "C0NOPE", "U0ALICE", "U0BOB", "U0KITCHEN",
    "B0KITCHEN", "D0NOPE", "white_check_mark", "+1", "::", "1700000000.000100", "0",
    "-1", "9999999999.999999", "nan", "true", "1", "public_channel,im", "bogus",
    "dXNlcjpVMEFMSUNF", "[]", '[{"type": "section"}]', "{", "\x00", "\ud7ff",
]  # fmt: skip
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(MEANINGFUL),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_method_names = (
    st.sampled_from(sorted(webapi.METHODS))
    | st.sampled_from(["", "chat.", "CHAT.POSTMESSAGE", "api.test/x", "..", "x" * 300])
    | st.text(max_size=20)
)
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=klingon",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=iso-8859-1",
    "multipart/form-data; boundary=zz",
    "multipart/form-data",
    "text/plain",
    "application/octet-stream",
    "text/html; charset=",
    "",
    ";;;",
]


def _form_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _surrogate_free(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """(HTTP method, path with query, headers, body) of one Web API call, anything goes."""
    name = _surrogate_free(draw(_method_names))
    args = draw(
        st.dictionaries(st.sampled_from(ARG_NAMES) | st.text(max_size=8), _values, max_size=6)
    )
    args = {_surrogate_free(k): v for k, v in args.items()}
    token = draw(st.sampled_from(TOKENS))
    where = draw(st.sampled_from(["header", "args", "query"]))
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    if token is not None and where == "header":
        headers["Authorization"] = (
            draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", ""])) + token
        )
    elif token is not None and where == "query":
        query["token"] = token
    elif token is not None:
        args["token"] = token
    encoding = draw(st.sampled_from(["json", "form", "multipart", "query", "raw", "none"]))
    body = b""
    if encoding == "json":
        headers["Content-Type"] = "application/json"
        body = json.dumps(args).encode("utf-8", "surrogatepass")
    elif encoding == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        pairs = {k: _surrogate_free(_form_value(v)) for k, v in args.items()}
        body = urllib.parse.urlencode(pairs).encode()
    elif encoding == "multipart":
        headers["Content-Type"] = "multipart/form-data; boundary=fuzzb0undary"
        parts = [
            f'--fuzzb0undary\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
            f"{_surrogate_free(_form_value(v))}\r\n"
            for k, v in args.items()
            if '"' not in k and "\r" not in k and "\n" not in k
        ]
        body = ("".join(parts) + "--fuzzb0undary--\r\n").encode()
    elif encoding == "query":
        query.update({k: _surrogate_free(_form_value(v)) for k, v in args.items()})
    elif encoding == "raw":
        ctype = draw(st.sampled_from(CONTENT_TYPES))
        if ctype:
            headers["Content-Type"] = ctype
        body = draw(st.binary(max_size=200))
    verb = draw(st.sampled_from(["POST", "POST", "GET"]))
    path = "/api/" + urllib.parse.quote(name, safe="./")
    if query:
        path += "?" + urllib.parse.urlencode(query)
    if draw(st.booleans()):
        path += draw(st.sampled_from(["", "&", "?%ZZ", "&a=%ff%fe", "?=", "#frag"]))
    return verb, path, headers, body


def _send(
    running: RunningWorkspace, verb: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(running.host, running.port, timeout=10)
    try:
        conn.request(verb, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture
def open_workspace(workspace: RunningWorkspace) -> RunningWorkspace:
    """The demo workspace with Slack's rate limits off, so calls reach the methods."""
    assert workspace.control("ratelimit", multiplier=None)["ok"]
    return workspace


class _Bugs(logging.Handler):
    """Counts the Web API's 'bug' log records (it logs one for every internal_error)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def bugs() -> Iterator[_Bugs]:
    handler = _Bugs()
    logger = logging.getLogger("troupe.devkit.workspace")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(request=_requests())
def test_any_web_api_call_gets_a_slack_answer_and_the_server_keeps_serving(
    open_workspace: RunningWorkspace, bugs: _Bugs, request: tuple[str, str, dict[str, str], bytes]
) -> None:
    status, headers, raw = _send(open_workspace, *request)
    assert status in (200, 413, 429), (status, raw[:200])
    answer = json.loads(raw)
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
    if not answer["ok"]:
        assert isinstance(answer.get("error"), str) and answer["error"], answer
        assert answer["error"] != "internal_error", (request, answer)
    if status == 429:
        assert int(headers["Retry-After"]) >= 1
    assert bugs.records == [], [r.getMessage() for r in bugs.records]
    ping = _send(open_workspace, "GET", "/api/api.test?still=1", {}, b"")
    assert (ping[0], json.loads(ping[2])) == (200, {"ok": True, "args": {"still": "1"}})


def test_the_fuzzer_reaches_real_methods(open_workspace: RunningWorkspace) -> None:
    """The generator's shapes do get through: a well-formed call of each kind succeeds."""
    bot = {"Authorization": "Bearer xoxb-kitchen"}
    form = bot | {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, raw = _send(
        open_workspace, "POST", "/api/chat.postMessage", form, b"channel=C0HOME&text=hi"
    )
    posted = json.loads(raw)
    assert status == 200 and posted["ok"], posted
    multipart = (
        '--fuzzb0undary\r\nContent-Disposition: form-data; name="channel"\r\n\r\nC0HOME\r\n'
        '--fuzzb0undary\r\nContent-Disposition: form-data; name="timestamp"\r\n\r\n'
        f"{posted['ts']}\r\n--fuzzb0undary--\r\n"
    ).encode()
    mp = bot | {"Content-Type": "multipart/form-data; boundary=fuzzb0undary"}
    assert json.loads(_send(open_workspace, "POST", "/api/pins.add", mp, multipart)[2]) == {
        "ok": True
    }
    # A GET with the token in the header: new apps may not put it in the query string.
    query = "/api/conversations.history?" + urllib.parse.urlencode({"channel": "C0HOME"})
    history = json.loads(_send(open_workspace, "GET", query, bot, b"")[2])
    assert history["ok"] and history["messages"][0]["text"] == "hi"
