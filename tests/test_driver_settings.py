"""Every driver owns its settings: a third-party package (found through the `troupe.plugins`
entry point) adds a driver with its own section and options; `troupe check` and a bot's
start validate them with the driver's models, each problem one `file:line: key:` line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pipekit import fleet
from test_config import EXAMPLE, edit, line_of, write

from troupe.config import Problem, check, load
from troupe.runner import StartError, build_bot

PUMP = '''\
"""A third-party driver: garden pumps behind a gateway, with a section of its own."""

from pydantic import BaseModel, ConfigDict, Field

from troupe.plugin import DeviceState, Driver
from troupe.services import service


class PumpSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway: str
    speed: int = Field(default=1, ge=1, le=3)


class PumpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    valve: int


class PumpDriver(Driver):
    name = "pump"
    section_model = PumpSection
    options_model = PumpOptions

    async def start(self, devices):
        self.valves = {name: options["valve"] for name, options in devices.items()}
        self.on = {name: False for name in devices}

    async def act(self, device, action):
        self.on[device] = action.op == "on"
        return DeviceState(on=self.on[device])

    async def state(self, device):
        return DeviceState(on=self.on[device])


@service(section="pump")
class PumpWatch:
    """A service the plugin declares, made with the pump section."""

    def __init__(self, settings):
        self.settings = settings
        self.started = False

    async def start(self, bot):
        self.started = True

    async def stop(self):
        self.started = False
'''

SECTION = "pump: {gateway: 127.0.0.1:9}\n"
DEVICE = "  garden pump: {kind: switch, area: porch, driver: pump, valve: 2}\n"


@pytest.fixture
def pump_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution in a folder on sys.path: its module and a dist-info whose
    entry point names it in the `troupe.plugins` group, as pip would leave it."""
    site = tmp_path / "site"
    (site / "troupe_pump").mkdir(parents=True)
    (site / "troupe_pump" / "__init__.py").write_text(PUMP)
    info = site / "troupe_pump-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: troupe-pump\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[troupe.plugins]\npump = troupe_pump\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("troupe_pump", None)


def with_pump(section: str = SECTION, device: str = DEVICE) -> str:
    text = edit(EXAMPLE, "slackmq:", f"{section}slackmq:")
    return edit(text, "scenes:", f"{device}scenes:")


def only(path: Path) -> Problem:
    problems = check(path)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def test_a_third_party_driver_with_its_own_section_passes_check(
    tmp_path: Path, pump_package: Path
) -> None:
    assert check(write(tmp_path, with_pump())) == []


@pytest.mark.parametrize(
    ("section", "device", "at", "key", "words"),
    [
        (SECTION, DEVICE.replace("valve", "valv"), "garden pump:", "devices.garden pump.valv",
         "'valv' is not an option of the pump driver; did you mean 'valve'?"),
        (SECTION.replace("}", ", sped: 2}"), DEVICE, "pump:", "pump.sped",
         "'sped' is not a key troupe knows here; did you mean 'speed'?"),
        (SECTION.replace("}", ", speed: 5}"), DEVICE, "pump:", "pump.speed",
         "input should be less than or equal to 3 (got 5)."),
        ("", DEVICE, "garden pump:", "devices.garden pump.driver",
         "the pump driver (used by garden pump) needs a pump: section at the top level of "
         "the file, and there is none; add it."),
        (SECTION.replace("pump:", "pmup:"), DEVICE, "pmup:", "pmup",
         "'pmup' is not a key troupe knows at the top level; did you mean 'pump'?"),
        (SECTION, DEVICE.replace("driver: pump", "driver: pmup"), "garden pump:",
         "devices.garden pump.driver", "did you mean 'pump'?"),
    ],
)  # fmt: skip
def test_each_broken_pump_setting_is_one_line(
    tmp_path: Path, pump_package: Path, section: str, device: str, at: str, key: str, words: str
) -> None:
    text = with_pump(section, device)
    problem = only(write(tmp_path, text))
    assert (problem.line, problem.key) == (line_of(text, at), key)
    assert (
        problem.message == words if words[0] == "'" or words[0] == "t" else words in problem.message
    )


def test_a_section_no_driver_owns_is_one_line_without_any_plugin(tmp_path: Path) -> None:
    text = edit(EXAMPLE, "slackmq:", "heu: {bridge: 127.0.0.1:8000}\nslackmq:")
    problem = only(write(tmp_path, text))
    assert (problem.line, problem.key) == (line_of(text, "heu:"), "heu")
    assert (
        problem.message == "'heu' is not a key troupe knows at the top level; did you mean 'hue'?"
    )


def test_a_bot_refuses_to_start_on_what_check_reports(
    tmp_path: Path, pump_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GARAGE_PI_BOT_TOKEN", "xoxb-garage")
    monkeypatch.setenv("GARAGE_PI_APP_TOKEN", "xapp-garage")
    text = with_pump(SECTION.replace("}", ", speed: 5}"))
    path = write(tmp_path, text)
    with pytest.raises(StartError) as err:
        build_bot(load(path), "garage-pi", journal_path=tmp_path / "garage.sqlite3")
    assert str(err.value) == str(only(path))  # the same line, before any driver starts


async def test_a_third_party_driver_with_its_own_section_runs(
    tmp_path: Path, pump_package: Path
) -> None:
    devices = (
        "devices:\n  garden pump: {kind: switch, area: porch, driver: pump, valve: 2}\n"
        "areas: {kitchen: [], porch: []}\n"
    )
    async with fleet(tmp_path, start=("kitchen-pi",), devices=devices, extra=SECTION) as f:
        bot = f.bots["kitchen-pi"]
        driver = bot.drivers["pump"]
        assert driver.options == {"gateway": "127.0.0.1:9", "speed": 1}  # validated, defaults in
        (watch,) = [s for s in bot.services if type(s).__name__ == "PumpWatch"]
        assert watch.started and watch.settings.gateway == "127.0.0.1:9"
        ts = await f.say("turn on the garden pump")
        assert await f.answered(ts) == ["Turned on the garden pump."]
        assert driver.on == {"garden pump": True}
