"""Whether a message relayed over the bus is one Slack really has, before a bot acts on it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError

from troupe.bus import Confirm

log = logging.getLogger(__name__)


def in_slack(web: Any) -> Confirm:
    """A `confirm` for Bus.start: the relayed event's message is read back from Slack
    with the bot's own token and must have the same author and text.

    The bus key proves a relay comes from a bot of the federation; this proves the
    command came from Slack, so a leaked key alone moves nothing that Slack has no
    trace of.
    """

    async def confirm(body: Mapping[str, Any]) -> bool:
        event = body.get("event")
        if not isinstance(event, Mapping):
            return False
        channel, ts, thread = event.get("channel"), event.get("ts"), event.get("thread_ts")
        if not channel or not ts:
            return False
        window = {"oldest": ts, "latest": ts, "inclusive": True}
        try:
            if thread and thread != ts:
                # Slack lists a thread's parent first whatever the window: no limit here.
                resp = await web.conversations_replies(channel=channel, ts=thread, **window)
            else:
                resp = await web.conversations_history(channel=channel, limit=1, **window)
        except SlackApiError as err:
            log.warning(
                "bus: cannot read %s/%s back from Slack (%s), so the relay is not acted on",
                channel,
                ts,
                err.response.get("error"),
            )
            return False
        found = next((m for m in resp.get("messages", []) if m.get("ts") == ts), None)
        return (
            found is not None
            and found.get("user") == event.get("user")
            and (found.get("text") or "") == (event.get("text") or "")
        )

    return confirm
