"""troupe/plugin.py: the @command decorator, drivers, loading plugins from the file's list,
the built-ins and entry points, slackbot's decorators, and each load error as a sentence."""

from __future__ import annotations

import itertools
import re
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import troupe.plugin
from troupe.plugin import (
    BUILTIN_PLUGINS,
    ENTRY_POINT_GROUP,
    CommandSpec,
    DeviceState,
    PluginError,
    PluginSet,
    command,
    describe,
    describe_setting,
    load_plugins,
)

_names = itertools.count()

TROUPE_PLUGIN = '''\
"""A plugin on troupe's API."""
from troupe.plugin import Driver, DeviceState, command


@command(r"water the (?P<plant>\\w+)", each=True)
async def water(ctx):
    """Water a plant.

    More words that are not the help line.
    """


@command(r"reboot", admin=True)
async def reboot(ctx):
    """Restart the Pi."""


class Sprinkler(Driver):
    name = "sprinkler"

    async def act(self, device, action):
        return "sprinkled"

    async def state(self, device):
        return DeviceState(on=False)
'''

SLACKBOT_PLUGIN = '''\
from slackbot.bot import listen_to, respond_to


@listen_to("hello")
def hello(message):
    """Say hello back."""
    message.send("hi")


@respond_to("secret")
def secret(message):
    message.reply("only when asked")
'''


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> str:
    """Write `text` as a module of its own (a fresh name each time) on sys.path."""
    name = f"plugin_under_test_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _no_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> None:
    monkeypatch.setattr(
        troupe.plugin, "entry_points", lambda group: list(eps) if group == ENTRY_POINT_GROUP else []
    )


def test_command_declares_one_spec_with_the_docstrings_first_line_as_help() -> None:
    @command(r"feed the (?P<pet>cat|dog)", admin=True)
    async def feed(ctx) -> None:
        """Feed a pet.

        Not help."""

    spec = feed.__troupe_command__
    assert isinstance(spec, CommandSpec)
    assert (spec.name, spec.help, spec.plugin) == ("feed", "Feed a pet.", __name__)
    assert (spec.admin, spec.each, spec.style) == (True, False, "troupe")
    assert spec.pattern.flags & re.IGNORECASE


def test_a_command_that_is_not_async_is_refused_with_its_name() -> None:
    with pytest.raises(PluginError, match=r"command .*shout must be an async function"):

        @command(r"shout")
        def shout(ctx) -> None:
            """Not async."""


def test_a_configured_module_brings_its_commands_and_drivers(tmp_path, monkeypatch) -> None:
    _no_entry_points(monkeypatch)
    name = _module(tmp_path, monkeypatch, TROUPE_PLUGIN)
    plugins = load_plugins([name], drivers=())
    assert plugins.modules == [*BUILTIN_PLUGINS, name]
    mine = {s.name: s for s in plugins.commands if s.plugin == name}
    assert set(mine) == {"water", "reboot"}
    assert mine["water"].each and mine["water"].help == "Water a plant."
    assert mine["reboot"].admin
    assert set(plugins.drivers) == {"sprinkler"}  # no built-in driver was asked for
    found = plugins.match("  Water the FERN!  ")
    assert found is not None and found[0].name == "water" and found[1]["plant"] == "FERN"
    assert plugins.match("please water the fern") is None  # troupe commands match whole


def test_without_builtins_only_the_listed_modules_load(tmp_path, monkeypatch) -> None:
    _no_entry_points(monkeypatch)
    name = _module(tmp_path, monkeypatch, TROUPE_PLUGIN)
    plugins = load_plugins([name], builtins=False)
    assert plugins.modules == [name]
    assert {s.plugin for s in plugins.commands} == {name}


def test_only_the_drivers_asked_for_are_imported(monkeypatch) -> None:
    _no_entry_points(monkeypatch)
    plugins = load_plugins(drivers={"counter"})
    assert set(plugins.drivers) == {"counter"}
    assert plugins.modules == [*BUILTIN_PLUGINS, "troupe.plugins.counter"]


def test_a_module_that_does_not_import_is_one_sentence_naming_it(monkeypatch) -> None:
    _no_entry_points(monkeypatch)
    with pytest.raises(PluginError) as err:
        load_plugins(["no_such_troupe_plugin"], builtins=False)
    message = str(err.value)
    assert message.startswith("cannot import the plugin 'no_such_troupe_plugin'")
    assert "check the plugins list in the federation file" in message
    assert isinstance(err.value, ImportError)


def test_two_plugins_declaring_one_driver_name_are_refused(tmp_path, monkeypatch) -> None:
    _no_entry_points(monkeypatch)
    first = _module(tmp_path, monkeypatch, TROUPE_PLUGIN)
    second = _module(tmp_path, monkeypatch, TROUPE_PLUGIN)
    with pytest.raises(
        PluginError, match=f"two plugins declare the driver 'sprinkler': {first} and {second}"
    ):
        load_plugins([first, second], builtins=False)


def test_imported_and_abstract_drivers_are_not_declared_again(tmp_path, monkeypatch) -> None:
    _no_entry_points(monkeypatch)
    base = _module(tmp_path, monkeypatch, TROUPE_PLUGIN)
    user = _module(
        tmp_path,
        monkeypatch,
        f"import abc\nfrom {base} import Sprinkler, water\nfrom troupe.plugin import Driver\n\n"
        "class Half(Driver):\n    name = 'half'\n",
    )
    plugins = load_plugins([user], builtins=False)
    assert plugins.drivers == {} and plugins.commands == []


def test_an_entry_point_is_loaded_once_and_a_broken_one_is_named(tmp_path, monkeypatch) -> None:
    name = _module(tmp_path, monkeypatch, TROUPE_PLUGIN)
    ep = EntryPoint("sprinklers", name, ENTRY_POINT_GROUP)
    _no_entry_points(monkeypatch, ep)
    plugins = load_plugins(builtins=False)
    assert plugins.modules == [name] and "sprinkler" in plugins.drivers
    again = load_plugins([name], builtins=False)  # listed and installed: loaded once
    assert again.modules == [name] and len(again.commands) == 2
    broken = EntryPoint("broken", "no_such_troupe_plugin", ENTRY_POINT_GROUP)
    _no_entry_points(monkeypatch, broken)
    with pytest.raises(PluginError, match="cannot load the plugin entry point 'broken'"):
        load_plugins(builtins=False)


def test_slackbot_decorators_become_slackbot_style_commands(tmp_path, monkeypatch) -> None:
    _no_entry_points(monkeypatch)
    name = _module(tmp_path, monkeypatch, SLACKBOT_PLUGIN)
    plugins = load_plugins([name], builtins=False)
    specs = {s.name: s for s in plugins.commands}
    assert set(specs) == {"hello", "secret"}
    assert {s.style for s in specs.values()} == {"slackbot"}
    assert (specs["hello"].addressed, specs["secret"].addressed) == (False, True)
    assert specs["hello"].help == "Say hello back."
    found = plugins.match("well hello there")  # slackbot's patterns search, as slackbot does
    assert found is not None and found[0].name == "hello"


def test_help_lines_read_the_pattern_and_skip_commands_without_help() -> None:
    @command(r"water the (?P<plant>\w+)")
    async def water(ctx) -> None:
        """Water a plant."""

    @command(r"roll ?call|who is there")
    async def roll(ctx) -> None:
        """Every bot answers."""

    @command(r"secret")
    async def secret(ctx) -> None:
        pass

    specs = [s.__troupe_command__ for s in (water, roll, secret)]
    assert describe(specs) == [
        "• `water the <plant>` — Water a plant.",
        "• `roll call / who is there` — Every bot answers.",
    ]


def test_match_tries_commands_in_order() -> None:
    @command(r"status")
    async def first(ctx) -> None:
        """First."""

    @command(r"stat\w*")
    async def second(ctx) -> None:
        """Second."""

    plugins = PluginSet(commands=[first.__troupe_command__, second.__troupe_command__])
    assert plugins.match("status?")[0].name == "first"  # type: ignore[index]
    assert plugins.match("stats")[0].name == "second"  # type: ignore[index]


def test_device_states_and_settings_read_as_words() -> None:
    assert DeviceState(on=True, brightness=40, color="red").describe() == "on, 40%, red"
    assert DeviceState(on=False, brightness=40).describe() == "off"
    assert DeviceState(online=False, on=True).describe() == "offline"
    assert DeviceState(detail="driven by hall-pi").describe() == "driven by hall-pi"
    assert DeviceState().describe() == "unknown"
    assert describe_setting({"brightness": 30, "temperature": 2700}) == "30%, 2700 K"
    assert describe_setting({}) == "the same"
