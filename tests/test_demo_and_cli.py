"""The README's demo command and the command line's answers to bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest
from slack_sdk import WebClient

from troupe.devkit.workspace.config import demo_config


@pytest.mark.compat
@pytest.mark.timeout(180)
def test_demo_starts_three_bots_and_lights_on_acts_once(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "troupe.devkit", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path)},
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("demo ready"):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(120), "".join(lines)
        url = re.search(r"open (http://\S+/)", lines[-1]).group(1)
        assert sum(" ready (app-per-bot" in line for line in lines) == 3
        alice = WebClient("xoxp-alice", base_url=url + "api/")
        ts = alice.chat_postMessage(channel="#home", text="lights on")["ts"]
        channel = next(c.id for c in demo_config().channels if c.name == "home")

        def replies() -> list[dict]:
            msgs = alice.conversations_replies(channel=channel, ts=ts)["messages"]
            return [m for m in msgs if m["ts"] != ts]

        deadline = time.monotonic() + 30
        while not replies() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        assert [r["text"] for r in replies()] == ["Turned on the living room lamp."]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


@pytest.mark.compat
def test_check_refuses_a_malformed_federation_file_with_file_line_and_key(tmp_path):
    bad = tmp_path / "federation.yaml"
    bad.write_text(
        "federation: home\n"
        "slack: {mode: app-per-bot, channel: '#home'}\n"
        "bots:\n"
        "  kitchen-pi: {bot_token: 'env:K_BOT', app_token: 'env:K_APP'}\n"
        "devices:\n"
        "  kitchen fan: {kind: fan, driver: counter, owner: kitchn-pi}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "troupe", "check", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{bad}:6: devices.kitchen fan.owner:" in result.stderr
    assert "kitchen-pi" in result.stderr


def test_run_with_an_unknown_bot_name_says_which_bots_exist(tmp_path):
    fed = tmp_path / "federation.yaml"
    fed.write_text(
        "federation: home\n"
        "slack: {mode: app-per-bot, channel: '#home'}\n"
        "bots:\n"
        "  kitchen-pi: {bot_token: 'env:K_BOT', app_token: 'env:K_APP'}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "troupe", "run", "--config", str(fed), "--bot", "attic-pi"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "attic-pi" in result.stderr and "kitchen-pi" in result.stderr
    assert "Traceback" not in result.stderr


def _troupe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "troupe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.compat
def test_check_reports_a_misspelt_driver_as_one_line(tmp_path):
    fed = tmp_path / "federation.yaml"
    fed.write_text(
        "federation: home\n"
        "slack: {mode: app-per-bot, channel: '#home'}\n"
        "bots:\n"
        "  kitchen-pi: {bot_token: 'env:K_BOT', app_token: 'env:K_APP'}\n"
        "devices:\n"
        "  kitchen fan: {kind: fan, driver: countr}\n"
    )
    result = _troupe("check", "--config", str(fed))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{fed}:6: devices.kitchen fan.driver: 'countr' is not a driver of the plugins loaded "
        "(counter, gpio_relay, hue, mqtt); did you mean 'counter'?"
    ]


def test_check_reads_troupe_federation_and_takes_v_after_the_subcommand(tmp_path):
    fed = tmp_path / "federation.yaml"
    fed.write_text(
        "federation: home\n"
        "slack: {mode: app-per-bot, channel: '#home'}\n"
        "bots:\n"
        "  kitchen-pi: {bot_token: 'env:K_BOT', app_token: 'env:K_APP'}\n"
    )
    result = _troupe("check", "-v", env={"TROUPE_FEDERATION": str(fed)})
    assert (result.returncode, result.stdout) == (0, f"{fed}: ok\n")


@pytest.mark.parametrize("command", ["check", "run"])
def test_without_any_federation_file_it_says_where_it_looked(monkeypatch, capsys, command):
    import troupe.cli

    monkeypatch.delenv("TROUPE_FEDERATION", raising=False)
    monkeypatch.setattr("troupe.config.DEFAULT_PATH", "/nonexistent/troupe/federation.yaml")
    assert troupe.cli.main([command]) == 2
    assert capsys.readouterr().err == (
        f"troupe {command}: no federation file: pass --config FILE, set TROUPE_FEDERATION, "
        "or create /nonexistent/troupe/federation.yaml\n"
    )
