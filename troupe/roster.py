"""The fleet's own Slack bot users: which user ids speak for the roster's bots."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

RECHECK_S = 60.0
"""An unknown bot user id makes the fleet be looked up again, at most this often."""


async def fleet_user_ids(
    web: Any, roster: Sequence[str], own_user_id: str, mode: str
) -> frozenset[str]:
    """The Slack user ids of the roster's bots, this bot's own included.

    In modes shared-app and rtm every bot uses the same token, so the fleet is one Slack
    user: this bot's. In app-per-bot each bot is its own Slack app whose bot user is
    named like the bot (`troupe manifest BOT` sets it); Slack keeps a user's `name`
    unique in a workspace, so the name is what is matched, never the display name,
    which anyone's app may copy.
    """
    ids = {own_user_id} if own_user_id else set()
    if mode != "app-per-bot":
        return frozenset(ids)
    wanted = {name.lower() for name in roster}
    found: set[str] = set()
    cursor = None
    while True:
        try:
            resp = await web.users_list(limit=200, cursor=cursor)
        except SlackApiError as err:
            log.warning(
                "cannot list the workspace's users (%s): only this bot's own messages count "
                "as the fleet's until the next look-up",
                err.response.get("error"),
            )
            return frozenset(ids)
        for member in resp.get("members", []):
            name = str(member.get("name") or "").lower()
            if member.get("is_bot") and not member.get("deleted") and name in wanted:
                ids.add(member["id"])
                found.add(name)
        cursor = (resp.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            break
    missing = sorted(wanted - found)
    if missing:
        log.warning(
            "no Slack bot user named %s: that bot's rollout messages do not count until its "
            "app is installed under that name",
            ", ".join(missing),
        )
    return frozenset(ids)


class FleetUsers:
    """A bot's view of the fleet's user ids, looked up again (rarely) when a bot user
    the view does not know speaks: a bot whose app was installed after this one started."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self._last = 0.0

    @property
    def ids(self) -> frozenset[str]:
        known = getattr(self.bot, "fleet_user_ids", None)
        return frozenset(known) if known else frozenset({self.bot.user_id})

    async def recheck(self, unknown: set[str]) -> frozenset[str]:
        """Look the fleet up again if `unknown` holds ids it lacks (at most every RECHECK_S)."""
        if not unknown - self.ids or time.monotonic() - self._last < RECHECK_S:
            return self.ids
        self._last = time.monotonic()
        mode = getattr(getattr(self.bot, "info", None), "mode", "app-per-bot")
        self.bot.fleet_user_ids = await fleet_user_ids(
            self.bot.web, self.bot.roster, self.bot.user_id, mode
        )
        return self.ids
