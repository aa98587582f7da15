"""The plugin API: the Context a command gets, its declared capabilities, slackbot's
respond_to, and drivers found in a package plugin's modules."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
from pipekit import fleet

from troupe.plugin import (
    CommandSpec,
    DeviceState,
    PluginError,
    PluginSet,
    command,
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
