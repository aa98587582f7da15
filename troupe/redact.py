"""Keep secrets out of logs and tracebacks: a logging filter that blanks them."""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

REDACTED = "[redacted]"

SLACK_TOKEN = re.compile(r"\bx(?:ox[abposre](?:\.xox[a-z])?|app)-[0-9A-Za-z-]+")
"""Slack's token shapes (xoxb-, xoxp-, xoxa-, xoxo-, xoxs-, xoxr-, rotating xoxe-, xapp-):
blanked even when troupe was never told the value, e.g. a token pasted into a command."""


def _variants(value: str) -> set[str]:
    """The ways a value shows up in text: as is, escaped by repr, percent-encoded in a URL."""
    forms = {value, repr(value)[1:-1], urllib.parse.quote(value), urllib.parse.quote_plus(value)}
    return {form for form in forms if form}


class Redactor(logging.Filter):
    """Replaces every registered secret and every Slack token in a record with [redacted].

    It formats the message (msg % args) and renders the traceback itself, so what a handler
    writes is already clean: the raw args and exc_info are dropped from the record.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._forms: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Register more secret values (empty and None are ignored)."""
        with self._lock:
            forms = set(self._forms)
            for secret in secrets:
                if secret:
                    forms |= _variants(secret)
            # Longest first, so a secret that contains another is blanked whole.
            self._forms = tuple(sorted(forms, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return SLACK_TOKEN.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string or a broken __str__: show what is safe
            message = f"{record.msg!s} (its arguments could not be formatted)"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            if not record.exc_text:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install(secrets: Iterable[str | None] = (), logger: logging.Logger | None = None) -> Redactor:
    """Redact `secrets` and Slack tokens in everything the root logger's handlers write,
    and in tracebacks of uncaught exceptions; calling it again adds to the same redactor.

    For the root logger (the default) every record is also redacted as it is made, so a
    handler added later (a plugin's, a test's) never sees a secret either.
    """
    global _hooked
    root = logger is None
    logger = logger or logging.getLogger()
    redactor = next(
        (f for h in logger.handlers for f in h.filters if isinstance(f, Redactor)), None
    )
    if redactor is None:
        redactor = Redactor()
    redactor.add(*_revealed, *secrets)
    for handler in logger.handlers:
        if redactor not in handler.filters:
            handler.addFilter(redactor)
    if _hooked is None:
        sys.excepthook = _excepthook
        threading.excepthook = _thread_excepthook
    _hooked = redactor
    factory = logging.getLogRecordFactory()
    if root and not getattr(factory, "redacts", False):
        logging.setLogRecordFactory(_redacting(factory))
    return redactor


def _redacting(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if _hooked is not None:
            _hooked.filter(record)
        return record

    make.redacts = True  # type: ignore[attr-defined]
    return make


_hooked: Redactor | None = None
"""The redactor uncaught exceptions go through, once install() has run."""

_revealed: set[str] = set()
"""Every secret value read so far, for a redactor installed later."""


def remember(*secrets: str | None) -> None:
    """Register secret values as they are read (troupe.secrets calls this on every
    reveal), so a token or password rotated in its file or variable while the bot runs
    is blanked as surely as the one read at start."""
    values = [secret for secret in secrets if secret]
    _revealed.update(values)
    if _hooked is not None:
        _hooked.add(*values)


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """Uncaught exceptions print their traceback outside logging: redact those too."""
    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(_hooked.redact(text) if _hooked else text)


def _thread_excepthook(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    text = f"Exception in thread {name}:\n{text}"
    sys.stderr.write(_hooked.redact(text) if _hooked else text)
