"""`troupe doctor` against the local workspace, mosquitto, the Hue simulator and the mock GPIO:
everything sound is all `ok`; each thing broken on purpose is one `fail` line saying what to do."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleetkit import write_federation
from mqttkit import mosquitto_broker

from troupe.devkit.workspace.config import WorkspaceConfig, demo_config
from troupe.devkit.workspace.testing import RunningWorkspace, running_workspace
from troupe.doctor import Finding, diagnose
from troupe.hardware.broker import Broker
from troupe.hardware.gpio import GpioBoard, Wire, forget, register
from troupe.hardware.hue import RunningBridge, running_bridge

BOT = "kitchen-pi"
HUE_USER = "doctor-hue-user"
DEVICES = (
    "  hall lamp: {kind: light, area: hall, driver: hue, light: 1}\n"
    "  kitchen fan: {kind: fan, area: kitchen, driver: gpio_relay, owner: kitchen-pi, pin: 17}\n"
)


@dataclass
class Setup:
    ws: RunningWorkspace
    broker: Broker
    bridge: RunningBridge
    tmp: Path

    def federation(
        self,
        mode: str = "app-per-bot",
        *,
        password: str = "secret",
        hue_user: str = HUE_USER,
        channels: str = "",
        light: str = "1",
    ) -> Path:
        password_file = self.tmp / "mqtt.password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        hue_file = self.tmp / "hue.username"
        hue_file.write_text(hue_user + "\n")
        hue_file.chmod(0o600)
        mqtt = (
            f"mqtt: {{host: 127.0.0.1, port: {self.broker.port}, username: troupe, "
            f"password: 'file:{password_file}'}}\n"
            f"hue: {{bridge: '{self.bridge.address}', username: 'file:{hue_file}'}}\n"
        )
        path = write_federation(self.tmp, self.ws.api_url, mode, mqtt=mqtt)
        text = path.read_text().replace("devices:\n", "devices:\n" + DEVICES, 1)
        text = text.replace("light: 1}", f"light: {light}}}")
        if channels:
            text = text.replace("channels: {'#kitchen': kitchen}", channels)
        path.write_text(text)
        return path


def make_setup(tmp: Path, config: WorkspaceConfig | None = None) -> Iterator[Setup]:
    broker = mosquitto_broker(users={"troupe": "secret"})
    try:
        with running_workspace(config) as ws, running_bridge(2, usernames=[HUE_USER]) as bridge:
            yield Setup(ws, broker, bridge, tmp)
    finally:
        broker.stop()


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    register(BOT, GpioBoard())
    try:
        yield from make_setup(tmp_path)
    finally:
        forget(BOT)


def levels(findings: list[Finding]) -> dict[str, str]:
    return {f.subject: f.level for f in findings}


def failing(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level != "ok"]


def only_failure(findings: list[Finding]) -> Finding:
    bad = failing(findings)
    assert len(bad) == 1, "\n".join(map(str, findings))
    assert bad[0].level == "fail"
    return bad[0]


async def test_a_sound_setup_is_all_ok(setup: Setup) -> None:
    findings = await diagnose(setup.federation(), BOT)
    assert failing(findings) == [], "\n".join(map(str, findings))
    assert set(levels(findings)) == {
        "federation file",
        "bot token",
        "clock",
        "scopes",
        "channel #home",
        "channel #kitchen",
        "socket mode",
        "mqtt",
        "hue hall lamp",
        "gpio",
        "gpio 17",
    }


async def test_a_bad_bot_token_is_one_failure(setup: Setup) -> None:
    path = setup.federation()
    (setup.tmp / "kitchen-bot.token").write_text("xoxb-wrong\n")
    finding = only_failure(await diagnose(path, BOT))
    assert finding.subject == "bot token"
    assert "invalid_auth" in finding.message and "Install App" in finding.message


async def test_fewer_scopes_than_the_manifest_asks_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    config = demo_config()
    apps = [
        a.model_copy(update={"scopes": ("chat:write", "channels:read", "groups:read")})
        if a.name == BOT
        else a
        for a in config.apps
    ]
    try:
        for setup in make_setup(tmp_path, config.model_copy(update={"apps": apps})):
            finding = only_failure(await diagnose(setup.federation(), BOT))
    finally:
        forget(BOT)
    assert finding.subject == "scopes"
    assert finding.message.startswith("the bot token lacks ")
    assert "pins:read, pins:write" in finding.message and "chat:write" not in finding.message


async def test_a_channel_the_bot_cannot_see_or_is_not_in(setup: Setup) -> None:
    missing = await diagnose(setup.federation(channels="channels: {'#attic': kitchen}"), BOT)
    finding = only_failure(missing)
    assert finding.subject == "channel #attic"
    assert "cannot see it" in finding.message


async def test_a_bad_app_token_fails_socket_mode(setup: Setup) -> None:
    path = setup.federation()
    (setup.tmp / "kitchen-app.token").write_text("xapp-wrong\n")
    finding = only_failure(await diagnose(path, BOT))
    assert finding.subject == "socket mode"
    assert "connections:write" in finding.message


async def test_a_clock_a_minute_off_is_a_warning(setup: Setup) -> None:
    findings = await diagnose(setup.federation(), BOT, clock=lambda: time.time() + 60)
    (finding,) = [f for f in findings if f.subject == "clock"]
    assert finding.level == "warn"  # commands run on Slack's clock; logs read this one
    assert re.search(r"\b(59|60|61) s ahead of Slack's", finding.message), finding.message
    assert "timedatectl" in finding.message


async def test_rtm_mode_connects_with_the_classic_app(setup: Setup) -> None:
    findings = await diagnose(setup.federation("rtm"), BOT)
    assert failing(findings) == [], "\n".join(map(str, findings))
    assert "rtm" in levels(findings) and "scopes" not in levels(findings)


async def test_a_wrong_mqtt_password_is_refused(setup: Setup) -> None:
    finding = only_failure(await diagnose(setup.federation(password="wrong"), BOT))
    assert finding.subject == "mqtt"
    assert "refuses the login" in finding.message


async def test_a_wrong_hue_username_fails(setup: Setup) -> None:
    finding = only_failure(await diagnose(setup.federation(hue_user="nobody"), BOT))
    assert finding.subject.startswith("hue")
    assert "pair" in finding.message


async def test_a_light_the_bridge_lacks_fails(setup: Setup) -> None:
    finding = only_failure(await diagnose(setup.federation(light="9"), BOT))
    assert finding.subject == "hue hall lamp"


async def test_a_pin_in_use_fails(setup: Setup) -> None:
    from troupe.hardware.gpio import board_for

    board = board_for(BOT)
    assert board is not None
    board.wire(Wire("doorbell", "relay", 17))
    finding = only_failure(await diagnose(setup.federation(), BOT))
    assert finding.subject == "gpio 17"
    assert "in use by doorbell" in finding.message


async def test_no_gpio_chip_fails(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY")
    path = setup.federation()
    finding = only_failure(await diagnose(path, BOT, gpio_chip=setup.tmp / "gpiochip9"))
    assert finding.subject == "gpio"
    assert "does not exist" in finding.message


def test_the_command_line_prints_one_line_each_and_exits_1_on_a_failure(setup: Setup) -> None:
    path = setup.federation(password="wrong")
    result = subprocess.run(
        [sys.executable, "-m", "troupe", "doctor", "--config", str(path), "--bot", BOT],
        capture_output=True,
        text=True,
        timeout=120,
        env={"GPIOZERO_PIN_FACTORY": "mock", "PATH": "/usr/bin:/bin"},
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stderr
    assert [line.split()[0] for line in lines].count("fail") == 1
    assert any(line.startswith("fail mqtt: the broker at 127.0.0.1:") for line in lines)
