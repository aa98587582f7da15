"""Run plugins written for slackbot: its Message object, backed by troupe's Slack client.

slackbot plugins are synchronous, so each runs in a worker thread; the message's methods
post through slack_sdk's blocking client with the bot's own token and base URL.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from typing import TYPE_CHECKING, Any

from troupe.slackapi import sync_client

if TYPE_CHECKING:
    from troupe.bot import Bot
    from troupe.plugin import CommandSpec
    from troupe.transports.base import Event


class SlackbotMessage:
    """The parts of slackbot.dispatcher.Message that plugins use."""

    def __init__(self, bot: Bot, event: Event) -> None:
        self._bot = bot
        self._body = dict(event.raw) or {
            "channel": event.channel,
            "ts": event.ts,
            "text": event.text,
            "user": event.user,
        }
        web = bot.web
        self._client = sync_client(web.token or "", web.base_url)

    @property
    def body(self) -> dict[str, Any]:
        return self._body

    @property
    def thread_ts(self) -> str | None:
        return self._body.get("thread_ts")

    @property
    def channel(self) -> dict[str, Any]:
        return {"id": self._body["channel"]}

    @property
    def user(self) -> dict[str, Any]:
        return {"id": self._body.get("user"), "name": self._body.get("user")}

    def send(self, text: str, thread_ts: str | None = None) -> None:
        self.send_webapi(text, thread_ts=thread_ts or self.thread_ts)

    def send_webapi(
        self,
        text: str,
        attachments: Any = None,
        as_user: bool = True,
        thread_ts: str | None = None,
    ) -> None:
        self._client.chat_postMessage(
            channel=self._body["channel"], text=text, attachments=attachments, thread_ts=thread_ts
        )

    def reply(self, text: str, in_thread: bool | None = None) -> None:
        if in_thread:
            self.send(text, thread_ts=self._body["ts"])
        else:
            self.send(f"<@{self._body.get('user')}>: {text}")

    def reply_webapi(
        self,
        text: str,
        attachments: Any = None,
        as_user: bool = True,
        in_thread: bool | None = None,
    ) -> None:
        thread = self._body["ts"] if in_thread else None
        self.send_webapi(text, attachments, as_user, thread_ts=thread)

    def react(self, emojiname: str) -> None:
        self._client.reactions_add(
            channel=self._body["channel"], timestamp=self._body["ts"], name=emojiname
        )

    def docs_reply(self) -> str:
        return "\n".join(spec.help for spec in self._bot.plugins.commands if spec.help)


async def call_slackbot_plugin(
    bot: Bot, spec: CommandSpec, event: Event, match: re.Match[str]
) -> None:
    """Call a slackbot plugin function in a thread, with troupe's claim context."""
    message = SlackbotMessage(bot, event)
    ctx = contextvars.copy_context()
    await asyncio.to_thread(ctx.run, spec.func, message, *match.groups())
