"""Slack Web API clients as troupe uses them: retries on 429, 5xx and dropped connections,
an answer marked `doubtful` when a retry may hide an earlier success, and Slack's clock
learned from every answer."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from troupe.slackclock import SlackClock

SLACK_API = "https://slack.com/api/"

RATE_LIMIT_RETRIES = 20
"""A 429 waits Retry-After and tries again: no command is ever dropped for a rate limit."""


_doubt: ContextVar[bool] = ContextVar("troupe_doubt", default=False)
"""Set when a call is retried after a dropped connection, a timeout or a 5xx: Slack may
have carried out the first attempt, so an `already_pinned` may be this bot's own pin."""


class _Doubting:
    """Mixin for retry handlers whose retries may follow an attempt Slack carried out."""

    async def prepare_for_next_attempt_async(self, **kw: Any) -> None:
        _doubt.set(True)
        await super().prepare_for_next_attempt_async(**kw)  # type: ignore[misc]


class _ConnectionRetry(_Doubting, AsyncConnectionErrorRetryHandler):
    pass


class _ServerRetry(_Doubting, AsyncServerErrorRetryHandler):
    """Also retries 502 and 504: a gateway error is as likely to hide a success."""

    async def _can_retry_async(self, *, response: Any = None, **kw: Any) -> bool:
        return response is not None and response.status_code in (500, 502, 503, 504)


class ClockedWebClient(AsyncWebClient):
    """An AsyncWebClient whose answers teach a SlackClock Slack's time and say whether a
    retry may hide an earlier success (`response.doubtful`, also on SlackApiError)."""

    def __init__(self, *args: Any, clock: SlackClock, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.clock = clock

    async def api_call(self, api_method: str, **kw: Any) -> AsyncSlackResponse:
        token = _doubt.set(False)
        sent = self.clock.local()
        try:
            resp = await super().api_call(api_method, **kw)
        except SlackApiError as err:
            self._learn(err.response, sent, api_method)
            err.response.doubtful = _doubt.get()  # type: ignore[union-attr]
            raise
        finally:
            doubtful = _doubt.get()
            _doubt.reset(token)
        self._learn(resp, sent, api_method)
        resp.doubtful = doubtful  # type: ignore[attr-defined]
        return resp

    def _learn(self, resp: Any, sent: float, api_method: str) -> None:
        received = self.clock.local()
        headers = getattr(resp, "headers", None) or {}
        date = headers.get("date") or headers.get("Date")
        self.clock.saw_date(date if isinstance(date, str) else None, sent, received)
        if api_method == "chat.postMessage" and not _doubt.get():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.clock.saw_stamp(float(resp["ts"]), sent, received)


def doubtful(resp: Any) -> bool:
    """Whether an answer (or a SlackApiError's response) followed a retry that may hide
    an earlier success."""
    return bool(getattr(resp, "doubtful", False))


def retry_handlers(backoff_s: float = 0.5) -> list[AsyncRetryHandler]:
    """Rate limits are waited out; dropped connections, timeouts and 5xx retried after
    backoff_s, doubling each time (with jitter)."""
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff_s)
    return [
        _ConnectionRetry(max_retry_count=3, interval_calculator=interval),
        AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        _ServerRetry(max_retry_count=3, interval_calculator=interval),
    ]


def lock_client(web: ClockedWebClient, lease_s: float) -> ClockedWebClient:
    """A client for the claim calls: a lost answer costs a fifth of the lease, not the
    usual 15 s, before the retry (whose answer the lock then checks) goes out."""
    return ClockedWebClient(
        token=web.token,
        base_url=web.base_url,
        timeout=max(1, round(lease_s / 5)),
        retry_handlers=retry_handlers(backoff_s=0.1),
        clock=web.clock,
    )


def async_client(
    token: str,
    base_url: str | None = None,
    timeout: int = 15,
    *,
    clock: SlackClock | None = None,
) -> ClockedWebClient:
    """An AsyncWebClient that waits out rate limits, retries transient failures and keeps
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
    return WebClient(
        token=token,
        base_url=base_url or SLACK_API,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=3),
            RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            ServerErrorRetryHandler(max_retry_count=3),
        ],
    )
