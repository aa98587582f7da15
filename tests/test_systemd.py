"""`troupe run` as a systemd service: start errors exit 2 in one sentence, journald gets
priority prefixes and no second timestamp, READY=1 and watchdog pings reach $NOTIFY_SOCKET."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetkit import write_federation

from troupe.cli import main
from troupe.devkit.workspace.config import demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace
from troupe.systemd import JournalFormatter, log_level, notify, under_journald, watchdog_interval

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture(scope="module")
def ws() -> Iterator[RunningWorkspace]:
    with running_workspace(demo_config()) as running:
        yield running


def _run(config: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """`python -m troupe run` for kitchen-pi, as the unit starts it."""
    base = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
    return subprocess.Popen(
        [sys.executable, "-m", "troupe", "run", "--config", str(config), "--bot", "kitchen-pi"],
        env=base | {"PYTHONUNBUFFERED": "1"} | (env or {}),
        text=True,
        **kwargs,
    )


def _broken(tmp_path: Path, ws: RunningWorkspace, what: str) -> Path:
    """A federation file with one thing wrong that only the start can find."""
    access = '{admins: ["@nobody-here"], users: ["*"]}' if what == "user" else None
    plugins = "[troupe.plugins.no_such_plugin]" if what == "plugin" else "[]"
    config = write_federation(
        tmp_path, ws.api_url, plugins=plugins, **({"access": access} if access else {})
    )
    text = config.read_text()
    if what == "channel":
        text = text.replace("channels: {'#kitchen': kitchen}", "channels: {'#attic': hall}")
    if what == "driver":
        text = text.replace(
            "devices:\n", "devices:\n  attic fan: {kind: fan, area: hall, driver: warp-drive}\n"
        )
    config.write_text(text)
    if what == "token":
        (tmp_path / "kitchen-bot.token").write_text("xoxb-0000-0000-not-a-real-token\n")
    return config


EXPECTED = {
    "token": "Slack refused kitchen-pi's token (invalid_auth); put the bot's current xoxb- token",
    "channel": "the channel #attic does not exist in this Slack workspace",
    "user": "no user named @nobody-here in this Slack workspace",
    "driver": "warp-drive",
    "plugin": "no_such_plugin",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("what", list(EXPECTED))
def test_a_start_error_exits_2_with_one_sentence(
    tmp_path: Path, ws: RunningWorkspace, what: str
) -> None:
    proc = _run(_broken(tmp_path, ws, what), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "not-a-real-token" not in err
    problems = [line for line in err.splitlines() if line.startswith("troupe run:")]
    assert len(problems) == 1, err
    assert EXPECTED[what] in problems[0], err
    assert problems[0].endswith(("run install.sh again", ")")) or problems[0].count(". ") == 0
    assert "ready" not in out


@pytest.mark.timeout(120)
def test_under_journald_lines_carry_priorities_and_no_timestamp(
    tmp_path: Path, ws: RunningWorkspace
) -> None:
    log = tmp_path / "journal.stream"
    with log.open("w") as stream:
        info = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}", "TROUPE_LOG_LEVEL": "debug"}
        proc = _run(_broken(tmp_path, ws, "token"), env, stdout=stream, stderr=stream)
        assert proc.wait(timeout=90) == 2
    lines = log.read_text().splitlines()
    assert lines[-1].startswith("<3>troupe run: Slack refused kitchen-pi's token"), lines
    assert any(line.startswith("<7>") for line in lines), lines  # TROUPE_LOG_LEVEL=debug
    assert all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert not any(TIMESTAMP.search(line) for line in lines), lines


def test_the_journal_formatter_prefixes_every_line_of_a_record() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JournalFormatter())
    log = logging.getLogger("troupe.test_systemd.journal")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        log.debug("d")
        log.info("i")
        log.warning("w")
        try:
            raise OSError("broker gone")
        except OSError:
            log.exception("e")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "<7>troupe.test_systemd.journal: d",
        "<6>troupe.test_systemd.journal: i",
        "<4>troupe.test_systemd.journal: w",
        "<3>troupe.test_systemd.journal: e",
    ]
    assert lines[-1] == "<3>OSError: broker gone"
    assert all(line.startswith("<3>") for line in lines[3:])


def test_journal_stream_is_matched_against_the_stream_itself(tmp_path: Path) -> None:
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        info = os.fstat(a.fileno())
        env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert under_journald(a, env)
        assert not under_journald(b, env)  # inherited by a child whose output went elsewhere
        assert not under_journald(a, {})


def test_troupe_log_level_sets_the_level_and_a_wrong_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert log_level(False, {}) == logging.INFO
    assert log_level(False, {"TROUPE_LOG_LEVEL": "warning"}) == logging.WARNING
    assert log_level(True, {"TROUPE_LOG_LEVEL": "ERROR"}) == logging.DEBUG
    monkeypatch.setenv("TROUPE_LOG_LEVEL", "LOUD")
    assert main(["check", "--config", "/nonexistent.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "troupe: TROUPE_LOG_LEVEL=LOUD is not a log level; use one of DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL\n"
    )


# --- sd_notify ----------------------------------------------------------------------------


def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    return sock


def test_notify_sends_one_datagram_and_the_watchdog_interval_is_half(tmp_path: Path) -> None:
    with _listen(tmp_path / "n.sock") as sock:
        assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
        assert sock.recv(4096) == b"READY=1"
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


@pytest.mark.timeout(120)
def test_the_bot_says_ready_then_pings_the_watchdog_then_stopping(
    tmp_path: Path, ws: RunningWorkspace
) -> None:
    config = write_federation(tmp_path, ws.api_url)
    path = tmp_path / "notify.sock"
    with _listen(path) as sock:
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
        proc = _run(config, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            seen: list[str] = []
            while "READY=1" not in seen or seen[seen.index("READY=1") :].count("WATCHDOG=1") < 2:
                seen.append(sock.recv(4096).decode())
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert seen.count("READY=1") == 1, seen
            assert set(seen) == {"READY=1", "WATCHDOG=1"}, seen
            proc.send_signal(signal.SIGTERM)
            while (message := sock.recv(4096).decode()) == "WATCHDOG=1":
                pass
            assert message == "STOPPING=1"
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, out
    assert "kitchen-pi ready (app-per-bot" in out
