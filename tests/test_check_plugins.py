"""`troupe check` loads the plugins as a bot does: each broken thing is one `file:line: key:`."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from test_config import EXAMPLE, edit, line_of, write

import troupe.plugincheck
from troupe.config import Problem, check

pytestmark = pytest.mark.compat


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path for plugin modules; each test's modules forgotten afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("checkme_"):
            del sys.modules[name]


def only(path: Path) -> Problem:
    problems = check(path)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def with_plugins(plugins: str) -> str:
    return edit(EXAMPLE, "plugins: []", f"plugins: {plugins}")


def test_a_plugin_that_needs_a_missing_module_is_one_line_with_the_fix(
    tmp_path: Path, plugin_dir: Path
) -> None:
    (plugin_dir / "checkme_needs.py").write_text("import checkme_not_installed_anywhere\n")
    text = with_plugins("[checkme_needs]")
    problem = only(write(tmp_path, text))
    assert (problem.line, problem.key) == (line_of(text, "plugins:"), "plugins[0]")
    assert "'checkme_not_installed_anywhere', which is not installed" in problem.message
    assert "pip install" in problem.message


def test_a_plugin_that_is_not_there_is_named(tmp_path: Path, plugin_dir: Path) -> None:
    (plugin_dir / "checkme_fine.py").write_text("X = 1\n")
    problem = only(write(tmp_path, with_plugins("[checkme_fine, checkme_absent]")))
    assert problem.key == "plugins[1]"
    assert "no module 'checkme_absent' here" in problem.message


def test_a_plugin_with_a_syntax_error_names_its_file_and_line(
    tmp_path: Path, plugin_dir: Path
) -> None:
    (plugin_dir / "checkme_broken.py").write_text("x = 1\ndef (:\n")
    problem = only(write(tmp_path, with_plugins("[checkme_broken]")))
    assert problem.key == "plugins[0]"
    assert f"{plugin_dir / 'checkme_broken.py'}:2" in problem.message


def test_a_plugin_that_raises_on_import_is_one_line(tmp_path: Path, plugin_dir: Path) -> None:
    (plugin_dir / "checkme_raises.py").write_text("raise RuntimeError('no config here')\n")
    problem = only(write(tmp_path, with_plugins("[checkme_raises]")))
    assert problem.message.startswith("cannot import 'checkme_raises': RuntimeError: no config")


def test_the_seed_slackbot_plugin_passes(tmp_path: Path, plugin_dir: Path) -> None:
    (plugin_dir / "checkme_seed.py").write_text(
        "from troupe.slackmq import slackmq\n"
        "from slackbot.bot import listen_to\n\n"
        "@listen_to('hello')\n"
        "def helloworld(message):\n"
        "    message.send('Hello')\n"
    )
    assert check(write(tmp_path, with_plugins("[checkme_seed]"))) == []
    assert "checkme_seed" in sys.modules  # imported, as the Pi will import it


def test_a_broken_entry_point_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint("lights", "checkme_ep_missing:plugin", "troupe.plugins")
    monkeypatch.setattr(troupe.plugincheck, "entry_points", lambda group: [broken])
    problem = only(write(tmp_path, EXAMPLE))
    assert problem.key == "plugins"
    assert "entry point 'lights'" in problem.message
    assert "'checkme_ep_missing'" in problem.message


def test_a_misspelt_driver_is_one_line_with_a_suggestion(tmp_path: Path) -> None:
    text = edit(
        EXAMPLE,
        "driver: gpio_relay, owner: kitchen-pi, pin: 27",
        "driver: gpio_rely, owner: kitchen-pi, pin: 27",
    )
    problem = only(write(tmp_path, text))
    assert (problem.line, problem.key) == (
        line_of(text, "kitchen fan:"),
        "devices.kitchen fan.driver",
    )
    assert problem.message == (
        "'gpio_rely' is not a driver of the plugins loaded (counter, gpio_relay, hue, mqtt); "
        "did you mean 'gpio_relay'?"
    )


@pytest.mark.parametrize(
    ("old", "new", "device", "key", "words"),
    [
        ("pin: 27}", "pni: 27}", "kitchen fan:", "devices.kitchen fan.pni",
         "'pni' is not an option of the gpio_relay driver; did you mean 'pin'?"),
        ("light: 3}", "lihgt: 3}", "hall light:", "devices.hall light.lihgt",
         "'lihgt' is not an option of the hue driver; did you mean 'light'?"),
        ("topic: porch}", "topik: porch}", "porch switch:", "devices.porch switch.topik",
         "'topik' is not an option of the mqtt driver; did you mean 'topic'?"),
        ("protocol: tasmota,", "protocol: tasmotta,", "porch switch:",
         "devices.porch switch.protocol", "'tasmotta' is not allowed; use one of tasmota, "
         "zigbee2mqtt, shelly, generic; did you mean 'tasmota'?"),
        ("protocol: tasmota,", "", "porch switch:", "devices.porch switch.protocol",
         "is required; use one of tasmota, zigbee2mqtt, shelly, generic."),
        ("pin: 27}", "pin: 40}", "kitchen fan:", "devices.kitchen fan.pin",
         "input should be less than or equal to 27."),
    ],
)  # fmt: skip
def test_a_bad_device_option_is_one_line(
    tmp_path: Path, old: str, new: str, device: str, key: str, words: str
) -> None:
    text = edit(EXAMPLE, old, new)
    problem = only(write(tmp_path, text))
    assert (problem.line, problem.key) == (line_of(text, device), key)
    assert problem.message == words if words.endswith(".") else words in problem.message


@pytest.mark.parametrize(
    ("section", "device", "driver"),
    [
        ("hue:  {bridge: 127.0.0.1:8000, username: env:HUE_USER}\n", "hall light:", "hue"),
        (
            "mqtt: {host: 127.0.0.1, port: 1883, username: null, password: null, "
            "tls: false, bus: true, bus_key: env:TROUPE_BUS_KEY}\n",
            "porch switch:",
            "mqtt",
        ),
    ],
)
def test_a_missing_section_a_driver_needs_is_one_line(
    tmp_path: Path, section: str, device: str, driver: str
) -> None:
    text = edit(EXAMPLE, section, "")
    problem = only(write(tmp_path, text))
    assert (problem.line, problem.key) == (line_of(text, device), f"devices.{device[:-1]}.driver")
    assert f"needs a {driver}: section" in problem.message


def test_a_section_the_driver_refuses_is_one_line(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "username: null, password: null,", "password: env:MQTT_PASSWORD,")
    problem = only(write(tmp_path, text))
    assert (problem.line, problem.key) == (line_of(text, "mqtt:"), "mqtt")
    assert "password needs a username" in problem.message


def test_the_wrong_mqtt_protocol_version_is_one_line(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "bus: true,", "bus: true, protocol: 3,")
    problem = only(write(tmp_path, text))
    assert (problem.line, problem.key) == (line_of(text, "mqtt:"), "mqtt.protocol")
    assert "'3' is not allowed; use one of 5, 3.1.1" in problem.message
