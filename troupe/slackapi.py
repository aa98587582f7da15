"""Slack Web API clients as troupe uses them: retries on 429, 5xx and dropped connections,
an answer marked `doubtful` when a retry may hide an earlier success, and Slack's clock
learned from every answer.

The bot's client is slack_sdk's blocking WebClient (urllib) behind awaitable methods, each
call in a thread of its own: the bot process never loads aiohttp, which costs a Pi Zero
about 9 MB and a tenth of a CPU-second at start (bench/reports/footprint.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import os
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, Future
from contextvars import ContextVar
from http.client import RemoteDisconnected
from typing import Any, TypeVar
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.web import SlackResponse

from troupe.slackclock import SlackClock

SLACK_API = "https://slack.com/api/"

RATE_LIMIT_RETRIES = 20
"""A 429 waits Retry-After and tries again: no command is ever dropped for a rate limit."""

T = TypeVar("T")

_doubt: ContextVar[bool] = ContextVar("troupe_doubt", default=False)
"""Set when a call is retried after a dropped connection or a 5xx: Slack may have carried
out the first attempt, so an `already_pinned` may be this bot's own pin. Set and read in
the thread the call runs in (the retry handlers run there)."""


_sent: ContextVar[float] = ContextVar("troupe_sent", default=0.0)
"""When (time.monotonic) the attempt Slack may have carried out was sent: the first one,
or the one after the last 429 while no earlier attempt is in doubt, since Slack carries
out no call it answers 429. A claim held up by rate limits counts from that attempt."""


class _Doubting:
    """Mixin for retry handlers whose retries may follow an attempt Slack carried out."""

    def prepare_for_next_attempt(self, **kw: Any) -> None:
        _doubt.set(True)
        super().prepare_for_next_attempt(**kw)  # type: ignore[misc]


class _ConnectionRetry(_Doubting, ConnectionErrorRetryHandler):
    pass


class _RateLimitRetry(RateLimitErrorRetryHandler):
    """Waits out Retry-After; the next attempt is then the one Slack may carry out."""

    limited_at: float | None = None
    """When (time.monotonic) Slack last answered one of its client's calls 429."""

    def prepare_for_next_attempt(self, **kw: Any) -> None:
        self.limited_at = time.monotonic()
        super().prepare_for_next_attempt(**kw)
        if not _doubt.get():
            _sent.set(time.monotonic())


class _ServerRetry(_Doubting, ServerErrorRetryHandler):
    """Also retries 502 and 504: a gateway error is as likely to hide a success."""

    def _can_retry(self, *, response: Any = None, **kw: Any) -> bool:
        return response is not None and response.status_code in (500, 502, 503, 504)


class DoubtingWebClient(WebClient):
    """slack_sdk's blocking WebClient whose answers (and SlackApiError responses) say
    whether a retry may hide an earlier success (`doubtful`) and when the attempt Slack
    may have carried out was sent (`sent_at`, time.monotonic)."""

    def api_call(self, api_method: str, **kw: Any) -> SlackResponse:  # type: ignore[override]
        token = _doubt.set(False)
        sent = _sent.set(time.monotonic())
        try:
            resp = super().api_call(api_method, **kw)
        except SlackApiError as err:
            err.response.doubtful = _doubt.get()  # type: ignore[union-attr]
            err.response.sent_at = _sent.get()  # type: ignore[union-attr]
            raise
        finally:
            doubtful, sent_at = _doubt.get(), _sent.get()
            _doubt.reset(token)
            _sent.reset(sent)
        resp.doubtful = doubtful  # type: ignore[attr-defined]
        resp.sent_at = sent_at  # type: ignore[attr-defined]
        return resp


class _DaemonThreads(Executor):
    """Runs each call in a new daemon thread.

    Not a ThreadPoolExecutor: its workers are joined at interpreter exit, so a call
    waiting out a 429's Retry-After (or a slow answer) would hold a stopping bot up; and
    no fixed number of workers can be both small and never starved by such waits. A
    thread per call costs well under a millisecond next to the call itself.
    """

    _ids = itertools.count(1)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        name = f"troupe-slack-{next(self._ids)}"
        threading.Thread(target=run, name=name, daemon=True).start()
        return future


_THREADS = _DaemonThreads()


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in a thread of its own (with this task's context variables),
    awaited. Cancelling the await does not stop a call already under way."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_THREADS, call)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verified TLS context every client of the process shares (loading the CA
    store again for each call or connection would cost memory and CPU on a Pi).

    Where the system keeps its CA certificates in a hashed directory (Debian, Raspberry
    Pi OS: /etc/ssl/certs), OpenSSL is pointed at that directory alone and reads the one
    root a handshake needs when it needs it, instead of parsing all ~150 at start (1.5 MB
    and 0.02 CPU-seconds on this machine): the same roots, verified the same way.
    Anywhere else, or where SSL_CERT_FILE names another bundle than the system's, Python's
    default context."""
    paths = ssl.get_default_verify_paths()  # SSL_CERT_FILE and SSL_CERT_DIR included
    system_file = os.path.realpath(paths.openssl_cafile)
    own_file = paths.cafile is not None and os.path.realpath(paths.cafile) != system_file
    if paths.capath and not own_file and _hashed(paths.capath):
        return ssl.create_default_context(capath=paths.capath)
    return ssl.create_default_context()


def _hashed(folder: str) -> bool:
    """Whether `folder` holds CA certificates under OpenSSL's hash names (c_rehash)."""
    try:
        return any(_HASH_NAME.fullmatch(name) for name in os.listdir(folder))
    except OSError:
        return False


_HASH_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")


class ClockedWebClient:
    """The bot's Web API client: `await web.chat_postMessage(...)`, `await
    web.api_call(...)`, as slack_sdk's AsyncWebClient, on a blocking WebClient (`sync`)
    whose calls each run in a thread. Its answers teach `clock` Slack's time (on the event
    loop, so the clock is never fed from two threads) and say whether a retry may hide an
    earlier success (`response.doubtful`, also on SlackApiError)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        base_url: str = SLACK_API,
        timeout: int = 15,
        retry_handlers: list[RetryHandler] | None = None,
        clock: SlackClock,
    ) -> None:
        self.sync = DoubtingWebClient(
            token=token,
            base_url=base_url,
            timeout=timeout,
            ssl=tls_context(),
            retry_handlers=retry_handlers,
        )
        self.clock = clock

    @property
    def token(self) -> str | None:
        return self.sync.token

    @property
    def base_url(self) -> str:
        return self.sync.base_url

    @property
    def timeout(self) -> int:
        return self.sync.timeout

    async def api_call(self, api_method: str, **kw: Any) -> SlackResponse:
        return await self._call(self.sync.api_call, api_method, **kw)

    def limited_within(self, seconds: float) -> bool:
        """Whether Slack answered one of this client's calls 429 in the last `seconds`."""
        now = time.monotonic()
        return any(
            isinstance(h, _RateLimitRetry)
            and h.limited_at is not None
            and now - h.limited_at < seconds
            for h in self.sync.retry_handlers
        )

    def __getattr__(self, name: str) -> Any:
        """Every Web API method of WebClient (`chat_postMessage`, ...), awaitable."""
        if name.startswith("_") or name in ("sync", "clock"):  # not set up (yet): no recursion
            raise AttributeError(name)
        method = getattr(self.sync, name)
        if not callable(method):
            return method

        async def call(*args: Any, **kw: Any) -> Any:
            return await self._call(method, *args, **kw)

        call.__name__ = name
        return call

    async def _call(self, fn: Callable[..., SlackResponse], *args: Any, **kw: Any) -> Any:
        sent = self.clock.local()
        try:
            resp = await in_thread(fn, *args, **kw)
        except SlackApiError as err:
            self._learn(err.response, sent)
            raise
        self._learn(resp, sent)
        return resp

    def _learn(self, resp: Any, sent: float) -> None:
        received = self.clock.local()
        headers = getattr(resp, "headers", None) or {}
        date = headers.get("date") or headers.get("Date")
        self.clock.saw_date(date if isinstance(date, str) else None, sent, received)
        api_url = str(getattr(resp, "api_url", ""))
        if api_url.endswith("/chat.postMessage") and not doubtful(resp):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.clock.saw_stamp(float(resp["ts"]), sent, received)


def doubtful(resp: Any) -> bool:
    """Whether an answer (or a SlackApiError's response) followed a retry that may hide
    an earlier success."""
    return bool(getattr(resp, "doubtful", False))


def sent_at(resp: Any) -> float | None:
    """When (time.monotonic) the attempt behind an answer that Slack may have carried out
    was sent; None when not known (an answer from another client)."""
    at = getattr(resp, "sent_at", None)
    return float(at) if at is not None else None


def retry_handlers(backoff_s: float = 0.5, *, timeouts: bool = False) -> list[RetryHandler]:
    """Rate limits are waited out; dropped connections and 5xx retried after backoff_s,
    doubling each time (with jitter); with `timeouts`, calls whose answer did not come in
    time too (each retry is doubtful: Slack may have carried the first attempt out)."""
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff_s)
    errors: list[type[Exception]] = [URLError, ConnectionResetError, RemoteDisconnected]
    if timeouts:
        errors.append(TimeoutError)
    return [
        _ConnectionRetry(max_retry_count=3, interval_calculator=interval, error_types=errors),
        _RateLimitRetry(max_retry_count=RATE_LIMIT_RETRIES),
        _ServerRetry(max_retry_count=3, interval_calculator=interval),
    ]


def lock_client(web: ClockedWebClient, lease_s: float) -> ClockedWebClient:
    """A client for the claim calls: a lost answer costs a fifth of the lease, not the
    usual 15 s, and the call is tried again (its answer doubtful, so checked: a claim
    whose answer was slow on a busy Pi or Wi-Fi had the command answered as failed)."""
    return ClockedWebClient(
        token=web.token,
        base_url=web.base_url,
        timeout=max(1, round(lease_s / 5)),
        retry_handlers=retry_handlers(backoff_s=0.1, timeouts=True),
        clock=web.clock,
    )


def async_client(
    token: str,
    base_url: str | None = None,
    timeout: int = 15,
    *,
    clock: SlackClock | None = None,
) -> ClockedWebClient:
    """The bot's client: waits out rate limits, retries transient failures and keeps
    `clock` (a new SlackClock on the local clock by default) set to Slack's time."""
    return ClockedWebClient(
        token=token,
        base_url=base_url or SLACK_API,
        timeout=timeout,
        retry_handlers=retry_handlers(),
        clock=clock or SlackClock(),
    )


def sync_client(token: str, base_url: str | None = None, timeout: int = 15) -> WebClient:
    """The blocking twin, for the seed's slackmq API and plugins that run in threads."""
    return DoubtingWebClient(
        token=token,
        base_url=base_url or SLACK_API,
        timeout=timeout,
        ssl=tls_context(),
        retry_handlers=retry_handlers(),
    )


async def paged(method: Callable[..., Awaitable[Any]], key: str, **args: Any) -> AsyncIterator[Any]:
    """Every item of a cursor-paginated Web API list method, page after page."""
    cursor = None
    while True:
        resp = await method(limit=200, cursor=cursor, **args)
        for item in resp.get(key, []):
            yield item
        cursor = (resp.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return
