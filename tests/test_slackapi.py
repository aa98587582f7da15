"""troupe.slackapi against the workspace over HTTP: the bot's client is slack_sdk's blocking
WebClient behind awaitable calls; answers say when a retry may hide an earlier success,
teach the bot Slack's clock, and one call waiting out a rate limit holds up no other."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from troupe import slackapi
from troupe.plugin import SlackPoster
from troupe.slackapi import (
    ClockedWebClient,
    async_client,
    doubtful,
    in_thread,
    lock_client,
    sent_at,
)
from troupe.slackclock import SlackClock


@pytest.fixture
def posted(workspace):
    alice = WebClient("xoxp-alice", base_url=workspace.api_url)
    msg = alice.chat_postMessage(channel="#home", text="lights on")
    return workspace, msg["channel"], msg["ts"]


async def test_a_retry_after_a_lost_answer_makes_the_next_answer_doubtful(posted):
    ws, channel, ts = posted
    web = async_client("xoxb-kitchen", ws.api_url)
    ws.control("fail", method="pins.add", status=503, count=1, after=True, app="A0KITCHEN")
    with pytest.raises(SlackApiError) as lost:
        await web.pins_add(channel=channel, timestamp=ts)
    # Slack pinned it the first time; the retry meets the pin, and says it may be ours.
    assert lost.value.response["error"] == "already_pinned" and doubtful(lost.value.response)
    ws.control("fail", method="reactions.add", status=502, count=1, app="A0KITCHEN")
    retried = await web.reactions_add(channel=channel, timestamp=ts, name="eyes")
    assert retried["ok"] and doubtful(retried)
    plain = await web.reactions_add(channel=channel, timestamp=ts, name="tada")
    assert plain["ok"] and not doubtful(plain)
    calls = ws.control("counters")["calls"]["A0KITCHEN"]
    assert (calls["pins.add"], calls["reactions.add"]) == (2, 3)


async def test_doubt_belongs_to_its_own_call_when_calls_overlap(posted):
    ws, channel, ts = posted
    web = async_client("xoxb-kitchen", ws.api_url)
    ws.control("fail", method="reactions.add", status=503, count=1, app="A0KITCHEN")
    retried, *plain = await asyncio.gather(
        web.reactions_add(channel=channel, timestamp=ts, name="eyes"),
        *(web.conversations_info(channel=channel) for _ in range(4)),
    )
    assert doubtful(retried)
    assert [doubtful(answer) for answer in plain] == [False] * 4


async def test_answers_teach_the_clock_slacks_time(workspace):
    pi_ahead = SlackClock(local=lambda: time.time() + 60)
    web = async_client("xoxb-kitchen", workspace.api_url, clock=pi_ahead)
    assert not pi_ahead.known
    await web.auth_test()  # the Date header: whole seconds
    assert pi_ahead.offset is not None and abs(pi_ahead.offset + 60) < 2
    posted = await web.chat_postMessage(channel="#home", text="the clock")
    assert abs(float(posted["ts"]) - pi_ahead.now()) < 1
    assert pi_ahead.uncertainty < 0.5  # the posted ts narrows the Date header's second
    # The claim calls' client keeps teaching the bot's own clock.
    short = lock_client(web, lease_s=4)
    assert short.clock is pi_ahead and short.timeout == 1 and short.token == "xoxb-kitchen"


async def test_a_call_waiting_out_a_rate_limit_holds_up_no_other(workspace):
    web = async_client("xoxb-kitchen", workspace.api_url)
    workspace.control(
        "fail", method="chat.postMessage", status=429, retry_after=2, count=1, app="A0KITCHEN"
    )
    finished: list[str] = []

    async def call(name: str, method, **kw) -> None:
        await method(**kw)
        finished.append(name)

    waiting = asyncio.ensure_future(
        call("rate-limited post", web.chat_postMessage, channel="#home", text="later")
    )
    others = [call(f"auth {i}", web.auth_test) for i in range(12)]
    await asyncio.gather(waiting, *others)
    assert finished[-1] == "rate-limited post" and len(finished) == 13
    calls = workspace.control("counters")["calls"]["A0KITCHEN"]
    assert (calls["chat.postMessage"], calls["auth.test"]) == (2, 12)


async def test_an_answer_says_when_the_attempt_slack_carried_out_was_sent(workspace):
    """Slack carries out no call it answers 429: a claim held up by rate limits is as old
    as its last attempt, and the client remembers that it met a limit (the bot's claims
    then leave the first-ranked bot the budget)."""
    web = async_client("xoxb-kitchen", workspace.api_url)
    before = time.monotonic()
    plain = await web.auth_test()
    assert before <= sent_at(plain) <= time.monotonic() and not web.limited_within(60)
    workspace.control(
        "fail", method="reactions.add", status=429, retry_after=1, count=1, app="A0KITCHEN"
    )
    posted = await web.chat_postMessage(channel="#home", text="mark me")
    mark = {"channel": posted["channel"], "timestamp": posted["ts"], "name": "eyes"}
    before = time.monotonic()
    added = await web.reactions_add(**mark)
    assert sent_at(added) - before >= 1.0  # Retry-After 1 s, then the attempt Slack made
    assert web.limited_within(60) and not web.limited_within(0)
    with pytest.raises(SlackApiError) as refused:  # the same user's second 👀
        await web.reactions_add(**mark)
    assert refused.value.response["error"] == "already_reacted"
    assert sent_at(refused.value.response) is not None


async def test_calls_run_off_the_loop_with_the_callers_context_variables():
    import contextvars

    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    who.set("kitchen-pi")

    def blocking() -> tuple[str, str, bool]:
        thread = threading.current_thread()
        return who.get(), thread.name, thread.daemon

    name, thread, daemon = await in_thread(blocking)
    assert name == "kitchen-pi" and daemon and thread.startswith("troupe-slack-")
    assert thread != threading.current_thread().name


async def test_a_plugin_posts_through_the_bots_client(workspace):
    web = async_client("xoxb-kitchen", workspace.api_url)
    assert isinstance(web, ClockedWebClient)
    slack = SlackPoster(web)
    ts = await slack.post("#home", "from a plugin")
    dm = await slack.direct_message("U0ALICE", "psst")
    alice = WebClient("xoxp-alice", base_url=workspace.api_url)
    texts = [m["text"] for m in alice.conversations_history(channel="C0HOME")["messages"]]
    assert "from a plugin" in texts and float(ts) > 0 and float(dm) > 0
    calls = workspace.control("counters")["calls"]["A0KITCHEN"]
    assert (calls["chat.postMessage"], calls["conversations.open"]) == (2, 1)


def _openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def hashed_roots(tmp_path, monkeypatch):
    """A CA (its certificate alone in a folder, under OpenSSL's hash name, as in
    /etc/ssl/certs) and a server certificate for localhost it signed; tls_context() looks
    in that folder."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=troupe test CA", cwd=tmp_path)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
             cwd=tmp_path)  # fmt: skip
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
             cwd=tmp_path)  # fmt: skip
    roots = tmp_path / "certs"
    roots.mkdir()
    name = _openssl("x509", "-hash", "-noout", "-in", "ca.pem", cwd=tmp_path)
    shutil.copy(tmp_path / "ca.pem", roots / f"{name}.0")
    system = ssl.get_default_verify_paths()
    paths = system._replace(cafile=None, capath=str(roots))
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)
    slackapi.tls_context.cache_clear()
    yield tmp_path
    slackapi.tls_context.cache_clear()


def _handshake(context: ssl.SSLContext, folder: Path) -> bytes:
    """Connect to a TLS server on 127.0.0.1 that shows server.pem; what it said."""
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(folder / "server.pem", folder / "server.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with (
                contextlib.suppress(OSError),
                server_side.wrap_socket(conn, server_side=True) as tls,
            ):
                tls.sendall(b"hello")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                return tls.recv(5)
        finally:
            thread.join(timeout=10)


def test_tls_reads_from_a_hashed_folder_only_the_root_a_handshake_needs(hashed_roots):
    context = slackapi.tls_context()
    assert context is slackapi.tls_context()  # one for the whole process
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509"] == 0  # nothing parsed at start
    assert _handshake(context, hashed_roots) == b"hello"
    assert context.cert_store_stats()["x509"] == 1  # the one root the chain needed


def test_tls_still_refuses_a_certificate_no_root_in_the_folder_signed(hashed_roots):
    for name in (hashed_roots / "certs").iterdir():
        name.unlink()
    (hashed_roots / "certs" / "0badc0de.0").write_text("not a certificate\n")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(slackapi.tls_context(), hashed_roots)


def test_tls_without_a_hashed_folder_or_with_its_own_bundle_loads_every_root(
    hashed_roots, monkeypatch
):
    created: list[dict[str, object]] = []
    original = ssl.create_default_context

    def spy(**kw: object) -> ssl.SSLContext:
        created.append(kw)
        return original(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", spy)
    system = ssl.get_default_verify_paths()
    for paths in (
        system._replace(capath=str(hashed_roots)),  # no hash names there
        system._replace(cafile=str(hashed_roots / "ca.pem")),  # SSL_CERT_FILE: another bundle
    ):
        monkeypatch.setattr(ssl, "get_default_verify_paths", lambda paths=paths: paths)
        slackapi.tls_context.cache_clear()
        slackapi.tls_context()
    assert created == [{}, {}]  # Python's default both times: every system root loaded


async def test_a_claim_call_whose_answer_was_slow_is_tried_again_and_doubted(posted):
    """A busy Pi or Wi-Fi: Slack carried the claim's 👀 out, its answer came after the
    lock client's timeout. The lock client tries again (already_reacted: checked by the
    lock as maybe its own) instead of failing the command; the bot's own client leaves
    a slow answer alone, since a retried chat.postMessage would answer twice."""
    ws, channel, ts = posted
    lock = lock_client(async_client("xoxb-kitchen", ws.api_url), lease_s=4.0)
    ws.control("stall", method="reactions.add", seconds=2.5, count=1, app="A0KITCHEN")
    with pytest.raises(SlackApiError) as again:
        await lock.reactions_add(channel=channel, timestamp=ts, name="eyes")
    assert again.value.response["error"] == "already_reacted" and doubtful(again.value.response)
    web = async_client("xoxb-kitchen", ws.api_url, timeout=1)
    ws.control("stall", method="chat.postMessage", seconds=2.5, count=1, app="A0KITCHEN")
    with pytest.raises(TimeoutError):
        await web.chat_postMessage(channel=channel, text="done", thread_ts=ts)
    calls = ws.control("counters")["calls"]["A0KITCHEN"]
    assert (calls["reactions.add"], calls["chat.postMessage"]) == (2, 1)
