"""Secrets never reach a log line or a traceback once the redaction filter is installed."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
import threading
import urllib.parse
from collections.abc import Iterator

import pytest

from troupe import redact
from troupe.redact import REDACTED, Redactor, install
from troupe.secrets import Secret

BOT_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
APP_TOKEN = "xapp-1-A0KITCHEN-1234567890-abcdef0123456789"
HUE_USER = "f3Ae9bQx7Lw2Kz0Hue1Usr"
MQTT_PASSWORD = "p@ss w0rd/with'quote\\"


@pytest.fixture
def logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing to a string, with the redactor installed on its handler."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(redact, "_hooked", None)
    _restore_factory(monkeypatch)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"troupe.test_redact.{id(out)}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    install([BOT_TOKEN, APP_TOKEN, HUE_USER, MQTT_PASSWORD, None, ""], logger=log)
    yield log, out
    log.removeHandler(handler)


def _restore_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(logging, "_logRecordFactory", factory)


def _clean(text: str) -> None:
    for secret in (BOT_TOKEN, APP_TOKEN, HUE_USER, MQTT_PASSWORD, "p@ss", "AbCdEfGh"):
        assert secret not in text


def test_a_token_logged_directly_never_appears(logger) -> None:
    log, out = logger
    log.info("connecting with " + BOT_TOKEN + " and " + APP_TOKEN)
    text = out.getvalue()
    _clean(text)
    assert text == f"INFO connecting with {REDACTED} and {REDACTED}\n"


def test_secrets_in_args_never_appear(logger) -> None:
    log, out = logger
    log.warning("hue user %s, mqtt %r, dict %s", HUE_USER, MQTT_PASSWORD, {"t": BOT_TOKEN})
    text = out.getvalue()
    _clean(text)
    assert text.count(REDACTED) == 3
    assert text == "WARNING hue user [redacted], mqtt \"[redacted]\", dict {'t': '[redacted]'}\n"


def test_a_secret_inside_an_exception_traceback_never_appears(logger) -> None:
    log, out = logger

    def connect(token: str) -> None:
        raise ConnectionError(f"refused: https://slack.com/api/auth.test?token={token}")

    try:
        connect(BOT_TOKEN)
    except ConnectionError:
        log.exception("auth failed for %s", HUE_USER)
    text = out.getvalue()
    _clean(text)
    assert "Traceback (most recent call last)" in text
    assert "ConnectionError: refused: https://slack.com/api/auth.test?token=[redacted]" in text
    assert text.startswith("ERROR auth failed for [redacted]\n")


def test_chained_exceptions_and_stack_info_are_redacted(logger) -> None:
    log, out = logger
    try:
        try:
            raise KeyError(MQTT_PASSWORD)
        except KeyError as err:
            raise RuntimeError(f"mqtt login with {HUE_USER} failed") from err
    except RuntimeError:
        log.error("broker said no to %s", APP_TOKEN, exc_info=True, stack_info=True)
    text = out.getvalue()
    _clean(text)
    assert "The above exception was the direct cause" in text
    assert "Stack (most recent call last)" in text
    assert 'KeyError: "[redacted]"' in text


def test_encoded_forms_of_a_secret_are_redacted(logger) -> None:
    log, out = logger
    log.info("url %s", "mqtt://troupe:" + urllib.parse.quote(MQTT_PASSWORD) + "@broker")
    log.info("form %s", urllib.parse.urlencode({"password": MQTT_PASSWORD}))
    log.info("repr %r", [MQTT_PASSWORD])
    text = out.getvalue()
    _clean(text)
    assert text.count(REDACTED) == 3


@pytest.mark.parametrize(
    "token",
    [
        "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
        "xoxp-2-2-2-abc",
        "xoxa-2-abc",
        "xoxo-abc",
        "xoxs-abc-def",
        "xoxr-abc",
        "xoxe.xoxp-1-Mi0yLTE3",
        "xoxe-1-My0xLTE3",
        "xapp-1-A111-222-abc",
        "xoxb-kitchen",
    ],
)
def test_unregistered_slack_tokens_are_redacted_by_shape(token: str) -> None:
    assert Redactor().redact(f"token={token}&x=1") == "token=[redacted]&x=1"


def test_ordinary_text_is_untouched() -> None:
    redactor = Redactor([HUE_USER])
    text = "turn on the xoxo lamp; see xapp docs; hue bridge at 10.0.0.2"
    assert redactor.redact(text) == text


def test_a_secret_containing_another_is_blanked_whole() -> None:
    redactor = Redactor(["abc", "xxabcxx"])
    assert redactor.redact("1 xxabcxx 2 abc") == "1 [redacted] 2 [redacted]"


def test_a_broken_format_string_still_logs_redacted(logger) -> None:
    log, out = logger
    log.info("two args %s %s for " + BOT_TOKEN, HUE_USER)
    text = out.getvalue()
    _clean(text)
    assert "could not be formatted" in text


def test_install_adds_one_filter_to_every_root_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(redact, "_hooked", None)
    _restore_factory(monkeypatch)
    root = logging.getLogger()
    outs = [io.StringIO(), io.StringIO()]
    handlers = [logging.StreamHandler(o) for o in outs]
    for handler in handlers:
        root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        first = install([HUE_USER])
        second = install([MQTT_PASSWORD])
        assert first is second
        for handler in handlers:
            assert sum(isinstance(f, Redactor) for f in handler.filters) == 1
        logging.getLogger("troupe.somewhere.deep").info(
            "%s %s %s", HUE_USER, MQTT_PASSWORD, BOT_TOKEN
        )
        for out in outs:
            assert out.getvalue() == "[redacted] [redacted] [redacted]\n"
        later = io.StringIO()
        handlers.append(logging.StreamHandler(later))
        root.addHandler(handlers[-1])
        try:
            raise OSError(f"mqtt refused {MQTT_PASSWORD}")
        except OSError:
            logging.getLogger("troupe.plugin").exception("hue %s", HUE_USER)
        assert later.getvalue().startswith("hue [redacted]\nTraceback")
        _clean(later.getvalue())
        assert install() is first
        make = logging.getLogRecordFactory()
        assert make("x", logging.INFO, "f", 1, HUE_USER, None, None).getMessage() == REDACTED
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(level)


def test_a_revealed_secret_is_redacted(logger, monkeypatch: pytest.MonkeyPatch) -> None:
    log, out = logger
    monkeypatch.setenv("TROUPE_TEST_PASSWORD", "hunter2-but-longer")
    value = Secret("env:TROUPE_TEST_PASSWORD").reveal()
    install([value], logger=log)
    log.info("mqtt password is %s", value)
    assert out.getvalue() == "INFO mqtt password is [redacted]\n"


def test_an_uncaught_exception_traceback_is_redacted() -> None:
    """The traceback Python prints on its own (outside logging), in the main thread and
    in another thread."""
    script = textwrap.dedent(
        f"""
        import logging, threading
        from troupe.redact import install
        logging.basicConfig(level=logging.INFO)
        install([{HUE_USER!r}])
        def boom():
            raise ValueError("hue said no to " + {HUE_USER!r} + " " + {BOT_TOKEN!r})
        t = threading.Thread(target=boom, name="worker")
        t.start(); t.join()
        boom()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    _clean(proc.stderr)
    assert proc.stderr.count("ValueError: hue said no to [redacted] [redacted]") == 2
    assert "Exception in thread worker" in proc.stderr
