"""Slack Web API clients as troupe uses them: retries on 429, 5xx and dropped connections."""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.http_retry import RateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

SLACK_API = "https://slack.com/api/"

RATE_LIMIT_RETRIES = 20
"""A 429 waits Retry-After and tries again: no command is ever dropped for a rate limit."""


def async_client(token: str, base_url: str | None = None, timeout: int = 15) -> AsyncWebClient:
    """An AsyncWebClient that waits out rate limits and retries transient failures."""
    return AsyncWebClient(
        token=token,
        base_url=base_url or SLACK_API,
        timeout=timeout,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=3),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=3),
        ],
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
