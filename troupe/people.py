"""Who sent a message, as access decisions need it: guest or member, which team (cached)."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError

from troupe.access import Person
from troupe.transports.base import Event

log = logging.getLogger(__name__)

TTL_S = 600.0
"""How long a user's facts are trusted before users.info is asked again (a member made a
guest, or deactivated, is seen within this time)."""


class People:
    """Person facts from the event (Slack Connect messages carry `user_team`) and from
    users.info (is_restricted, is_ultra_restricted, team_id), each user looked up once
    per TTL_S. A user Slack will not describe counts as a guest: let in only if listed."""

    def __init__(self, web: Any, ttl_s: float = TTL_S) -> None:
        self.web = web
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[float, Person]] = {}

    async def person(self, event: Event) -> Person | None:
        """The sender of `event`, or None for a message without a user."""
        if not event.user:
            return None
        found = await self.lookup(event.user)
        team = event.raw.get("user_team") or event.raw.get("source_team")
        if team and team != found.team:
            return Person(found.id, found.guest, str(team))
        return found

    async def lookup(self, user: str) -> Person:
        cached = self._known.get(user)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        try:
            resp = await self.web.users_info(user=user)
        except SlackApiError as err:
            log.warning(
                "cannot look up %s (%s): treated as a guest until Slack answers",
                user,
                err.response.get("error"),
            )
            return Person(user, guest=True)
        info = resp.get("user") or {}
        person = Person(
            user,
            guest=bool(info.get("is_restricted") or info.get("is_ultra_restricted")),
            team=info.get("team_id") or None,
        )
        self._known[user] = (time.monotonic(), person)
        return person
