"""A secret rotated while the bot runs is redacted like the one it read at start."""

from __future__ import annotations

import io
import logging
import sys
import threading
from pathlib import Path

import pytest

from troupe import redact
from troupe.redact import REDACTED, install
from troupe.secrets import Secret

FIRST = "mqtt-pass-first-1f2e3d"
ROTATED = "mqtt-pass-rotated-9a8b7c"


def test_a_rotated_secret_never_appears_in_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(redact, "_hooked", None)
    monkeypatch.setattr(redact, "_revealed", set(), raising=False)
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("troupe.test_secret_rotation")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        path = tmp_path / "mqtt.password"
        path.write_text(FIRST + "\n")
        path.chmod(0o600)
        secret = Secret(f"file:{path}")
        install(logger=log)  # what build_bot does before reading any secret
        log.info("login with %s", secret.reveal())
        path.write_text(ROTATED + "\n")  # rotated in its file while the bot runs
        log.info("login again with %s", secret.reveal())
        try:
            raise ConnectionRefusedError(f"broker refused {ROTATED}")
        except ConnectionRefusedError:
            log.exception("reconnect failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert FIRST not in text and ROTATED not in text
    assert text.startswith(f"login with {REDACTED}\nlogin again with {REDACTED}\n")
    assert f"ConnectionRefusedError: broker refused {REDACTED}" in text


def test_a_secret_read_before_the_redactor_is_installed_is_still_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redact, "_hooked", None)
    monkeypatch.setattr(redact, "_revealed", set(), raising=False)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setenv("TROUPE_TEST_HUE", "hue-user-abcdef123456")
    value = Secret("env:TROUPE_TEST_HUE").reveal()
    log = logging.getLogger("troupe.test_secret_rotation.early")
    log.propagate = False
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log.addHandler(handler)
    try:
        install(logger=log)
        log.warning("hue user %s", value)
    finally:
        log.removeHandler(handler)
    assert out.getvalue() == f"hue user {REDACTED}\n"
