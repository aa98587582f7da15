"""troupe/runner.py: what build_bot makes of a federation file for one bot (transport,
bus, settings, channels, access, drivers) and why a start fails, each as one StartError
sentence. Nothing connects: building a bot makes no call."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from fleetkit import bus_section, write_federation
from slack_sdk.errors import SlackApiError

from troupe.bus import Bus
from troupe.config import load
from troupe.federation import Settings
from troupe.runner import StartError, build_bot, run_bot
from troupe.transports.rtm import RtmTransport
from troupe.transports.socketmode import SocketModeTransport

API = "http://127.0.0.1:9/api/"
SCENES = "scenes:\n  movie: {hall light: off, porch switch: {on: true, brightness: 20}}\n"


def _fed(tmp_path: Path, mode: str = "app-per-bot", **kw):
    return load(write_federation(tmp_path, API, mode, **kw))


def test_an_app_per_bot_bot_is_built_from_its_file(tmp_path: Path) -> None:
    access = '{admins: [U0ALICE], users: ["*"], bots: [U0TROUPE], max_duration_s: 3600}'
    fed = _fed(tmp_path, access=access, extra=SCENES)
    bot = build_bot(fed, "hall-pi", journal_path=tmp_path / "hall.sqlite3")
    assert isinstance(bot.transport, SocketModeTransport)
    assert bot.transport.app_token == "xapp-hall"
    assert bot.web.token == "xoxb-hall" and bot.web.base_url == API
    assert bot.bus is None and bot.info.mode == "app-per-bot"
    assert bot.roster == ("kitchen-pi", "hall-pi", "garage-pi")
    assert bot.settings == Settings(stale_s=30, lease_s=4, stagger_s=0.3, linger_s=45)
    assert bot.channel_names == {"#home": None, "#kitchen": "kitchen"}
    assert bot.allowed_bots == {"U0TROUPE"} and bot.max_duration_s == 3600
    assert bot.access.is_admin("U0ALICE") and not bot.access.is_admin("U0BOB")
    assert bot.scenes == {
        "movie": {"hall light": {"on": False}, "porch switch": {"on": True, "brightness": 20}}
    }
    assert bot.devices["kitchen lamp"].owner == "kitchen-pi"
    # Only the drivers its devices use are loaded (a Pi Zero's memory), and no sections.
    assert set(bot.plugins.drivers) == {"counter"} and bot.driver_options == {}
    # Every bot runs the fleet's schedules and announces device events; nothing else here.
    assert sorted(type(s).__name__ for s in bot.services) == ["Announcer", "Scheduler"]
    bot.journal.close()


def test_rtm_mode_reads_over_rtm_with_the_classic_token(tmp_path: Path) -> None:
    bot = build_bot(_fed(tmp_path, "rtm"), "garage-pi", journal_path=":memory:")
    assert isinstance(bot.transport, RtmTransport)
    assert bot.transport.token == "xoxb-classic" and bot.transport.base_url == API
    assert bot.bus is None and bot.info.mode == "rtm"


def test_shared_app_relays_over_the_bus_only_when_the_file_has_one(tmp_path: Path) -> None:
    shared = "devices:\n  hall light: {kind: light, driver: counter}\nareas: {kitchen: []}\n"
    plain = build_bot(
        _fed(tmp_path, "shared-app", devices=shared), "hall-pi", journal_path=":memory:"
    )
    assert plain.bus is None and plain.transport.app_token == "xapp-troupe"
    fed = _fed(tmp_path, "shared-app", mqtt=bus_section(tmp_path, 1883))
    bot = build_bot(fed, "hall-pi", journal_path=":memory:")
    assert isinstance(bot.bus, Bus)
    assert bot.bus.inbox("hall-pi").startswith("troupe/test/")
    assert "mqtt" in bot.driver_options and "mqtt" in bot.plugins.drivers


def test_a_missing_token_file_stops_the_start_naming_the_file(tmp_path: Path) -> None:
    fed = _fed(tmp_path)
    (tmp_path / "hall-app.token").unlink()
    with pytest.raises(StartError) as err:
        build_bot(fed, "hall-pi", journal_path=":memory:")
    assert "hall-app.token" in str(err.value) and "xapp" not in str(err.value)
    build_bot(fed, "kitchen-pi", journal_path=":memory:").journal.close()  # its own are there


def test_a_plugin_that_does_not_import_stops_the_start(tmp_path: Path) -> None:
    fed = _fed(tmp_path, plugins="[no_such_troupe_plugin]")
    with pytest.raises(StartError, match="cannot import the plugin 'no_such_troupe_plugin'"):
        build_bot(fed, "hall-pi", journal_path=":memory:")


def test_an_app_token_not_in_the_file_is_read_from_the_bots_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_federation(tmp_path, API)
    bot_token = f"file:{tmp_path / 'hall-bot.token'}"
    text = path.read_text()
    start = text.index("  hall-pi: {")
    end = text.index("\n", start)
    path.write_text(f"{text[:start]}  hall-pi: {{bot_token: '{bot_token}'}}{text[end:]}")
    monkeypatch.delenv("HALL_PI_APP_TOKEN", raising=False)
    with pytest.raises(StartError) as err:
        build_bot(load(path), "hall-pi", journal_path=":memory:")
    assert (
        str(err.value)
        == "environment variable HALL_PI_APP_TOKEN is not set (env:HALL_PI_APP_TOKEN); set it in"
        " the bot's environment (the unit's EnvironmentFile) or name a file:PATH instead"
    )
    monkeypatch.setenv("HALL_PI_APP_TOKEN", "xapp-from-env")
    bot = build_bot(load(path), "hall-pi", journal_path=":memory:")
    assert bot.transport.app_token == "xapp-from-env"


class _Bot:
    """What run_bot needs of a bot: a name, start() and stop()."""

    def __init__(self, error: Exception | None = None) -> None:
        self.name = "hall-pi"
        self.error = error
        self.stopped = False

    async def start(self) -> None:
        if self.error is not None:
            raise self.error

    async def stop(self) -> None:
        self.stopped = True


def _refused(code: str) -> SlackApiError:
    return SlackApiError(
        f"The request to the Slack API failed: {code}", {"ok": False, "error": code}
    )


@pytest.fixture
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            _refused("invalid_auth"),
            "Slack refused hall-pi's token (invalid_auth); put the bot's current xoxb- token "
            "(and its xapp- token for Socket Mode) where the federation file's bot_token and "
            "app_token point",
        ),
        (
            _refused("missing_scope"),
            "Slack refused to start hall-pi (missing_scope); fix the app's setup or the "
            "federation file",
        ),
        (ValueError("the channel #attic does not exist"), "the channel #attic does not exist"),
    ],
)
async def test_a_start_slack_or_the_file_refuses_is_one_start_error(
    no_systemd, error, said
) -> None:
    bot = _Bot(error)
    with pytest.raises(StartError) as err:
        await run_bot(bot)  # type: ignore[arg-type]
    assert str(err.value) == said
    assert not bot.stopped


async def test_sigterm_stops_a_running_bot_cleanly(no_systemd) -> None:
    bot = _Bot()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    try:
        await asyncio.wait_for(run_bot(bot), 10)  # type: ignore[arg-type]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    assert bot.stopped
