"""Built-in commands, written on the public plugin API: help, devices, status, roll call,
history."""

from __future__ import annotations

from troupe.plugin import Context, command, describe


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@command(r"help")
async def help_(ctx: Context) -> None:
    """List what I understand: commands, devices, areas and scenes."""
    lines = [
        "*Say things like* “lights on”, “turn off the kitchen fan”, “set the hall light to 30%”,"
        " “turn on the kitchen lamp and the hall light”, “turn off everything”,"
        " “dim the hall light”, “a bit warmer”, “is the porch switch on?”; in a command's"
        " thread: “turn it off”, “and the hall light too”, “make it 50%”. Covers, locks and"
        " doors wait for a 👍 from whoever asked."
    ]
    lines += describe(ctx.commands)
    if ctx.devices:
        lines.append("*Devices:* " + ", ".join(sorted(ctx.devices)))
    areas = sorted({d.area for d in ctx.devices.values() if d.area})
    if areas:
        lines.append("*Areas:* " + ", ".join(areas))
    if ctx.scenes:
        lines.append("*Scenes:* " + ", ".join(ctx.scenes))
    await ctx.say("\n".join(lines))


@command(r"devices|list devices")
async def devices(ctx: Context) -> None:
    """List every device, its area and which bot drives it."""
    rows = []
    for d in sorted(ctx.devices.values(), key=lambda d: (d.area or "", d.name)):
        who = d.owner or "any bot"
        rows.append(f"• {d.name} ({d.kind}, {d.area or 'no area'}) — {d.driver}, {who}")
    await ctx.say("\n".join(rows) or "No devices are configured.")


@command(r"roll ?call", each=True)
async def roll_call(ctx: Context) -> None:
    """Every live bot answers once: name, host, version, uptime and devices."""
    me = ctx.me
    mine = sorted(d.name for d in ctx.devices.values() if d.owner == me.name)
    owned = ", ".join(mine) if mine else "no devices of its own"
    await ctx.say(
        f"{me.name} on {me.host}: troupe {me.version}, {me.mode}, "
        f"up {_ago(me.uptime_s)}, {owned}; {me.clock}"
    )


@command(r"history(?: (?:of |for )?(?P<device>.+))?")
async def history(ctx: Context) -> None:
    """What the federation did to a device, newest first, and who asked."""
    await ctx.say(await ctx.fleet_history(ctx.match.group("device")))
