"""Rate limits (per app, per method, Slack's tiers) and injected faults.

The limiter is checked with a fake clock; over HTTP, the control API shortens the window
to 2 s so that slack_sdk's RateLimitErrorRetryHandler gets through within seconds.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from troupe.devkit.workspace.config import demo_config
from troupe.devkit.workspace.ratelimit import METHOD_TIERS, RateLimiter
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace
from troupe.devkit.workspace.webapi import METHODS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_method_has_a_tier() -> None:
    assert set(METHODS) <= set(METHOD_TIERS)
    assert METHOD_TIERS["pins.add"] == 2 and METHOD_TIERS["reactions.add"] == 3
    assert METHOD_TIERS["conversations.history"] == 3 and METHOD_TIERS["users.info"] == 4
    assert METHOD_TIERS["apps.connections.open"] == 1 and METHOD_TIERS["rtm.connect"] == 1


def test_sliding_window_per_app_and_method() -> None:
    clock = Clock()
    limiter = RateLimiter(0.1, clock=clock)
    assert limiter.limit("pins.add") == 2
    assert limiter.hit("A1", "pins.add") is None
    clock.now += 10
    assert limiter.hit("A1", "pins.add") is None
    assert limiter.hit("A1", "pins.add") == 50  # the first call leaves the window in 50 s
    assert limiter.hit("A2", "pins.add") is None  # another app has its own budget
    assert limiter.hit("A1", "pins.list") is None  # and so has another method
    clock.now += 50
    assert limiter.hit("A1", "pins.add") is None
    assert limiter.hit("A1", "pins.add") == 10


def test_humans_and_off_are_not_limited() -> None:
    limiter = RateLimiter(0.01, clock=Clock())
    assert all(limiter.hit(None, "pins.add") is None for _ in range(100))
    off = RateLimiter(None, clock=Clock())
    assert off.limit("pins.add") is None
    assert all(off.hit("A1", "pins.add") is None for _ in range(100))


def test_post_message_is_limited_per_channel() -> None:
    clock = Clock()
    limiter = RateLimiter(0.05, clock=clock)  # 3 messages per channel per window
    assert [limiter.hit("A1", "chat.postMessage", channel="C1") for _ in range(4)][-1] == 60
    assert limiter.hit("A1", "chat.postMessage", channel="C2") is None


def test_tier_1_allows_a_burst_of_ten_at_slack_rates() -> None:
    limiter = RateLimiter(1.0, clock=Clock())
    assert [limiter.hit("A1", "rtm.connect") for _ in range(10)] == [None] * 10
    assert limiter.hit("A1", "rtm.connect") is not None


def test_retry_after_is_at_least_one_second() -> None:
    clock = Clock()
    limiter = RateLimiter(0.05, window_s=1.0, clock=clock)
    assert limiter.hit("A1", "pins.add") is None
    clock.now += 0.999
    assert limiter.hit("A1", "pins.add") == 1


@pytest.fixture
def limited() -> Iterator[RunningWorkspace]:
    """A workspace at a tenth of Slack's limits (pins.add: 2 per window), window 2 s."""
    config = demo_config().model_copy(update={"rate_limits": 0.1})
    with running_workspace(config) as running:
        answer = running.control("ratelimit", window_s=2)
        assert answer == {"ok": True, "window_s": 2.0, "multiplier": 0.1}
        yield running


def _post(running: RunningWorkspace, n: int) -> list[str]:
    return [
        running.control("post", user="alice", channel="#home", text=f"job {i}")["ts"]
        for i in range(n)
    ]


def _raw_pin(running: RunningWorkspace, token: str, ts: str) -> tuple[int, dict, str | None]:
    req = urllib.request.Request(
        f"{running.api_url}pins.add",
        data=f"channel=C0HOME&timestamp={ts}".encode(),
        headers={"Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get("Retry-After")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers.get("Retry-After")


def test_pins_add_over_tier_2_gets_429_then_retry_handler_gets_through(
    limited: RunningWorkspace,
) -> None:
    stamps = _post(limited, 4)
    assert _raw_pin(limited, "xoxb-kitchen", stamps[0])[0] == 200
    assert _raw_pin(limited, "xoxb-kitchen", stamps[1])[0] == 200
    status, body, retry_after = _raw_pin(limited, "xoxb-kitchen", stamps[2])
    assert (status, body) == (429, {"ok": False, "error": "ratelimited"})
    assert retry_after is not None and 1 <= int(retry_after) <= 2

    plain = WebClient(token="xoxb-kitchen", base_url=limited.api_url, retry_handlers=[])
    with pytest.raises(SlackApiError) as caught:
        plain.pins_add(channel="C0HOME", timestamp=stamps[2])
    assert caught.value.response.status_code == 429
    assert caught.value.response["error"] == "ratelimited"

    patient = WebClient(
        token="xoxb-kitchen",
        base_url=limited.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=3)],
    )
    assert patient.pins_add(channel="C0HOME", timestamp=stamps[2])["ok"] is True

    counters = limited.control("counters")
    assert counters["http_429"]["A0KITCHEN"]["pins.add"] >= 2
    calls = counters["calls"]["A0KITCHEN"]["pins.add"]
    assert calls == 3 + counters["http_429"]["A0KITCHEN"]["pins.add"]
    pins = limited.call_soon(limited.workspace.store.pins, "C0HOME")
    assert {p["message"]["ts"] for p in pins} == set(stamps[:3])


def test_other_apps_and_humans_keep_their_budget(limited: RunningWorkspace) -> None:
    stamps = _post(limited, 6)
    kitchen = [_raw_pin(limited, "xoxb-kitchen", ts)[0] for ts in stamps[:3]]
    assert kitchen == [200, 200, 429]
    assert _raw_pin(limited, "xoxb-hall", stamps[3])[0] == 200
    assert [_raw_pin(limited, "xoxp-alice", ts)[0] for ts in stamps[4:]] == [200, 200]
    alice = WebClient(token="xoxp-alice", base_url=limited.api_url)
    for ts in stamps[4:]:
        assert alice.pins_remove(channel="C0HOME", timestamp=ts)["ok"]
    assert "U0ALICE" not in limited.control("counters")["http_429"]


def test_classic_app_can_open_several_rtm_connections_at_once(
    workspace: RunningWorkspace,
) -> None:
    client = WebClient(token="xoxb-classic", base_url=workspace.api_url)
    urls = {client.rtm_connect()["url"] for _ in range(5)}
    assert len(urls) == 5


def test_injected_failures(workspace: RunningWorkspace) -> None:
    assert workspace.control("fail", method="auth.test", status=503, count=1, app="kitchen-pi")
    assert workspace.control("fail", method="chat.postMessage", status=429, count=1, retry_after=7)
    kitchen = WebClient(token="xoxb-kitchen", base_url=workspace.api_url, retry_handlers=[])
    hall = WebClient(token="xoxb-hall", base_url=workspace.api_url, retry_handlers=[])
    assert hall.auth_test()["ok"]  # the failure is for the kitchen app only
    with pytest.raises(SlackApiError) as caught:
        kitchen.auth_test()
    assert caught.value.response.status_code == 503
    assert caught.value.response["error"] == "service_unavailable"
    assert kitchen.auth_test()["ok"]
    with pytest.raises(SlackApiError) as caught:
        hall.chat_postMessage(channel="C0HOME", text="hi")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["retry-after"] in ("7", ["7"])
    assert hall.chat_postMessage(channel="C0HOME", text="hi")["ok"]
    assert workspace.control("counters")["http_429"] == {"A0HALL": {"chat.postMessage": 1}}


def test_latency_and_rate_limit_controls(workspace: RunningWorkspace) -> None:
    assert workspace.control("latency", latency_ms=5, jitter_ms=5) == {
        "ok": True,
        "latency_ms": 5.0,
        "jitter_ms": 5.0,
    }
    assert WebClient(token="xoxb-kitchen", base_url=workspace.api_url).auth_test()["ok"]
    assert workspace.workspace.faults.latency_ms == 5.0
    off = workspace.control("ratelimit", multiplier=None)
    assert off["multiplier"] is None and workspace.workspace.limiter.limit("pins.add") is None
