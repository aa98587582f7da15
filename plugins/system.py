"""Built-in commands, written on the public plugin API: help, devices, status, roll call,
history."""

from __future__ import annotations

from troupe.plugin import command, describe


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@command(r"help")
async def help_(ctx) -> None:
    """List what I understand: commands, devices, areas and scenes."""
    bot = ctx.bot
    lines = [
        "*Say things like* “lights on”, “turn off the kitchen fan”, “set the hall light to 30%”,"
        " “turn on the kitchen lamp and the hall light”, “turn off everything”,"
        " “dim the hall light”, “a bit warmer”, “is the porch switch on?”; in a command's"
        " thread: “turn it off”, “and the hall light too”, “make it 50%”. Covers, locks and"
        " doors wait for a 👍 from whoever asked."
    ]
    lines += describe(bot.plugins.commands)
    if bot.devices:
        lines.append("*Devices:* " + ", ".join(sorted(bot.devices)))
    areas = sorted({d.area for d in bot.devices.values() if d.area})
    if areas:
        lines.append("*Areas:* " + ", ".join(areas))
    if bot.scenes:
        lines.append("*Scenes:* " + ", ".join(sorted(bot.scenes)))
    await ctx.say("\n".join(lines))


@command(r"devices|list devices")
async def devices(ctx) -> None:
    """List every device, its area and which bot drives it."""
    rows = []
    for d in sorted(ctx.bot.devices.values(), key=lambda d: (d.area or "", d.name)):
        who = d.owner or "any bot"
        rows.append(f"• {d.name} ({d.kind}, {d.area or 'no area'}) — {d.driver}, {who}")
    await ctx.say("\n".join(rows) or "No devices are configured.")


@command(r"roll ?call", each=True)
async def roll_call(ctx) -> None:
    """Every live bot answers once: name, host, version, uptime and devices."""
    bot = ctx.bot
    info = bot.info
    mine = sorted(d.name for d in bot.devices.values() if d.owner == bot.name)
    owned = ", ".join(mine) if mine else "no devices of its own"
    await ctx.say(
        f"{info.name} on {info.host}: troupe {info.version}, {info.mode}, "
        f"up {_ago(info.uptime_s)}, {owned}; {bot.clock.describe()}"
    )


@command(r"history(?: (?:of |for )?(?P<device>.+))?")
async def history(ctx) -> None:
    """What the federation did to a device, newest first, and who asked."""
    from troupe import history as fleet_history

    spoken = ctx.match.group("device")
    device = fleet_history.device_named(ctx.bot, spoken)
    if spoken and device is None:
        await ctx.say(f"I don't know a device called “{spoken}” — try `devices`.")
        return
    found = await fleet_history.entries(ctx.bot, device)
    await ctx.say(fleet_history.lines(ctx.bot, device, found))
