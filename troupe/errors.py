"""troupe's exceptions: one root, each also the builtin it resembles (as gpiozero does)."""

from __future__ import annotations


class TroupeError(Exception):
    """The root of every error troupe raises on purpose."""


class ClaimError(TroupeError, RuntimeError):
    """Slack answered a claim call with something other than success or already_pinned.

    Never read as "a peer has it": the caller retries or reports.
    """

    def __init__(self, method: str, code: str) -> None:
        super().__init__(f"Slack refused {method}: {code}")
        self.method = method
        self.code = code
