"""The shared state of one running workspace: config, store, event hub, limits and faults.

Every part of the server (Web API, Socket Mode, RTM, control API, chat page) is handed
this one object; none of them reaches for globals.
"""

from __future__ import annotations

import hmac
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from aiohttp import web

from troupe.devkit.workspace.config import WorkspaceConfig

if TYPE_CHECKING:
    from troupe.devkit.workspace.events import EventHub
    from troupe.devkit.workspace.ratelimit import RateLimiter
    from troupe.devkit.workspace.store import Store


@dataclass(frozen=True)
class Caller:
    """Who a token belongs to.

    kind is "bot" for an app's xoxb token, "user" for a human's xoxp token and "app" for an
    app-level xapp token (which only apps.connections.open accepts). `app_id` is set for
    bot and app tokens; `user_id` is the bot user or the human. `query_tokens_allowed` and
    `rtm_start_allowed` carry what Slack lets the token's app do, by the app's age.
    """

    kind: Literal["bot", "user", "app"]
    user_id: str
    app_id: str | None
    token: str
    query_tokens_allowed: bool = False
    rtm_start_allowed: bool = True

    @property
    def budget_key(self) -> str | None:
        """The key rate limits are counted under: the app; humans have no app limit."""
        return self.app_id if self.kind != "user" else None

    @property
    def counter_key(self) -> str:
        """The key Web API calls are counted under: the app, or the human's user id."""
        return self.app_id or self.user_id


@dataclass
class FailRule:
    """Make the next `count` calls of a method answer with an HTTP error (control API)."""

    status: int
    count: int
    retry_after: int = 1
    app_id: str | None = None
    after: bool = False
    """Carry the call out, then answer with the error: Slack acted but the answer was lost
    on the way (Wi-Fi), as a client sees it after a gateway error."""


@dataclass
class StallRule:
    """Carry the next `count` calls of a method out at once and answer them `seconds` later
    (control API): a slow network, where a client whose timeout is shorter lost the answer
    of a call Slack carried out."""

    seconds: float
    count: int
    app_id: str | None = None


@dataclass
class Faults:
    """What the control API injects: latency, failures, delayed or paused event delivery."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail: dict[str, list[FailRule]] = field(default_factory=dict)
    stall: dict[str, list[StallRule]] = field(default_factory=dict)
    event_delay_s: dict[str, float] = field(default_factory=dict)
    paused_apps: set[str] = field(default_factory=set)

    def take_failure(self, method: str, app_id: str | None) -> FailRule | None:
        """Consume and return the failure rule that applies to this call, if any."""
        return _take(self.fail.get(method, []), app_id)

    def take_stall(self, method: str, app_id: str | None) -> StallRule | None:
        """Consume and return the stall rule that applies to this call, if any."""
        return _take(self.stall.get(method, []), app_id)


_Rule = TypeVar("_Rule", FailRule, StallRule)


def _take(rules: list[_Rule], app_id: str | None) -> _Rule | None:
    for rule in rules:
        if rule.count > 0 and (rule.app_id is None or rule.app_id == app_id):
            rule.count -= 1
            return rule
    return None


@dataclass
class Workspace:
    """One running workspace. Built by `troupe.devkit.workspace.server.build_workspace`."""

    config: WorkspaceConfig
    store: Store
    hub: EventHub
    limiter: RateLimiter
    faults: Faults
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Web API calls by (app id or human id, method)."""
    http_429: Counter[tuple[str, str]] = field(default_factory=Counter)
    """429 answers by (app id or human id, method)."""
    query_tokens: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Calls refused because the token came in the query string, by (app or human, method)."""

    def caller_for(self, token: str) -> Caller | None:
        """Resolve a token to its owner, or None when no one has it (invalid_auth).

        Every known token is compared in constant time, so the answer's timing tells
        nothing about how much of a guess was right.
        """
        given = token.encode()
        found: Caller | None = None
        for human in self.config.humans:
            if hmac.compare_digest(human.token.encode(), given):
                found = Caller("user", human.id, None, token, human.legacy_query_tokens)
        for app in self.config.apps:
            allowed = app.query_tokens_allowed, app.rtm_start_allowed
            if hmac.compare_digest(app.bot_token.encode(), given):
                found = Caller("bot", app.bot_user_id, app.id, token, *allowed)
            if app.app_token and hmac.compare_digest(app.app_token.encode(), given):
                found = Caller("app", app.bot_user_id, app.id, token, *allowed)
        return found


WORKSPACE_KEY: web.AppKey[Workspace] = web.AppKey("workspace", Workspace)
"""Where the aiohttp application keeps its Workspace."""
