"""The one error type of the workspace: a Slack error code, answered as `{"ok": false}`."""

from __future__ import annotations


class SlackError(Exception):
    """A Slack Web API error, e.g. SlackError("already_pinned").

    `status` is the HTTP status Slack answers with (200 for nearly every error);
    `extra` is merged into the JSON answer (e.g. {"needed": "pins:write"}).
    """

    def __init__(self, code: str, *, status: int = 200, **extra: object) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.extra = extra
