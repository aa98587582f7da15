"""The plugin API: the Context a command gets, its declared capabilities, slackbot's
decorators, drivers found in a package plugin's modules; loading plugins from the file's
list, the built-ins and entry points, and each load error as a sentence."""

from __future__ import annotations

import itertools
import re
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pipekit import fleet

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
    load_plugins,
)
from troupe.plugincontext import context_for_test
from troupe.plugins.mqtt import MqttDriver

PLUGIN = '''
"""A test plugin that shows what its Context holds."""

from troupe.plugin import Context, command


@command(r"who are you")
async def who(ctx: Context) -> None:
    """Say what the context tells."""
    state = await ctx.state("hall light")
    await ctx.say(
        f"{ctx.me.name} of {len(ctx.me.roster)}, asked by {ctx.user}, "
        f"{len(ctx.devices)} devices, hall light {state.describe()}, "
        f"bot attribute: {hasattr(ctx, 'bot')}"
    )


@command(r"whisper (?P<word>\\w+)", needs=("slack",))
async def whisper(ctx: Context) -> None:
    """Post a word in the bot's main channel through the declared Slack client."""
    await ctx.slack.post(ctx.message.channel, ctx.match["word"])
    await ctx.say("whispered")
'''


async def test_a_command_gets_a_context_not_the_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tp_context.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    async with fleet(tmp_path, start=("kitchen-pi",), plugins="[tp_context]") as f:
        ts = await f.say("who are you")
        answer = await f.answered(ts)
        assert answer == [
            "kitchen-pi of 3, asked by U0ALICE, 4 devices, hall light off, bot attribute: False"
        ]
        ts = await f.say("whisper psst")
        assert await f.answered(ts) == ["whispered"]
        history = await f.alice.conversations_history(channel=f.home, limit=5)
        assert "psst" in [m["text"] for m in history["messages"]]
    sys.modules.pop("tp_context", None)


async def test_a_capability_is_only_there_when_declared() -> None:
    @command(r"peek")
    async def peek(ctx) -> None:
        """Use Slack without saying so."""
        await ctx.slack.post("C1", "boo")

    ctx, heard = context_for_test(peek, "peek", slack=object())
    with pytest.raises(PluginError, match=r"without declaring it: @command\(\.\.\., needs="):
        await peek(ctx)
    with pytest.raises(PluginError, match="did not declare needs=\\('slack',\\)"):
        ctx.ports.slack()  # nor through the runtime's side
    assert heard.said == []

    with pytest.raises(PluginError, match=r"needs=\['root'\] names no capability"):
        command(r"x", needs=("root",))


async def test_context_for_test_runs_a_command_without_a_bot() -> None:
    @command(r"how is the (?P<device>.+)", each=True)
    async def how(ctx) -> None:
        """Answer once for the whole fleet."""
        state = await ctx.state(ctx.match["device"])
        await ctx.answer_once(f"The {ctx.match['device']} is {state.describe()}.")

    ctx, heard = context_for_test(how, "how is the lamp?", states={"lamp": DeviceState(on=True)})
    await how(ctx)
    assert heard.said == ["The lamp is on."]
    with pytest.raises(ValueError, match="does not match the command how"):
        context_for_test(how, "hello")


def _spec(name: str, pattern: str, addressed: bool) -> CommandSpec:
    async def func(*_args: object) -> None:
        return None

    return CommandSpec(
        name, re.compile(pattern), func, "", "tp", style="slackbot", addressed=addressed
    )


def test_respond_to_commands_need_a_mention_or_a_direct_message() -> None:
    plugins = PluginSet(
        commands=[_spec("ping", r"^ping$", addressed=True), _spec("hi", r"hello", False)]
    )
    assert plugins.match("ping", addressed=False) is None
    found = plugins.match("ping", addressed=True)
    assert found is not None and found[0].name == "ping"
    found = plugins.match("well hello there", addressed=False)
    assert found is not None and found[0].name == "hi"


def test_a_package_plugin_declares_drivers_in_its_modules(tmp_path: Path) -> None:
    plugins = load_plugins(["troupe.plugins.mqtt"], builtins=False, entry_points_too=False)
    assert plugins.drivers == {"mqtt": MqttDriver}
    # A module that only imports a driver does not declare it.
    (tmp_path / "tp_reexport.py").write_text(
        textwrap.dedent("""
            from troupe.plugins.mqtt import MqttDriver
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        assert load_plugins(["tp_reexport"], builtins=False, entry_points_too=False).drivers == {}
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tp_reexport", None)


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


@pytest.mark.parametrize(
    ("state", "op", "args", "shows"),
    [
        (DeviceState(on=True), "on", {}, True),
        (DeviceState(on=False), "on", {}, False),
        (DeviceState(on=False), "off", {}, True),
        (DeviceState(on=True, brightness=40), "set", {"brightness": 40}, True),
        (DeviceState(on=True, brightness=40), "set", {"brightness": 60}, False),
        (DeviceState(on=False, brightness=40), "set", {"brightness": 40}, False),
        (DeviceState(on=True, color="red"), "set", {"color": "red", "brightness": 5}, False),
        (DeviceState(on=True), "toggle", {}, False),
        (DeviceState(on=None), "off", {}, False),
        (DeviceState(on=False, online=False), "off", {}, False),
    ],
)
def test_a_state_shows_only_what_an_idempotent_action_would_leave(state, op, args, shows) -> None:
    assert state.shows(op, args) is shows
