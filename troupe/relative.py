"""Relative changes ("a bit brighter", "warmer") as the absolute "set" a driver knows,
computed from the device's current state at the moment the bot acts."""

from __future__ import annotations

from troupe.federation import Action
from troupe.intents import BRIGHTNESS_RANGE
from troupe.plugin import DeviceState

STEP = "step"
"""The op of a relative change until it is made absolute: never repeated by a taker (the
holder may have stepped already)."""
STEP_KEYS = ("brightness_step", "temperature_step")
TEMPERATURES = (2000, 6500)
"""Kelvin a step stays within: from candle-warm to daylight, what bulbs do."""
WHITE = 4000
"""Kelvin assumed for a light whose colour temperature is not known."""


def absolute(action: Action, state: DeviceState) -> Action:
    """The "set" that moves the device one step from `state`.

    An off light brightens from nothing (it comes on at the step) and darkens to off; a
    light whose brightness is unknown counts as full, as most bulbs come on at full.
    """
    args = action.kwargs
    out: dict[str, int] = {}
    if args.get("brightness_step") is not None:
        step = int(args["brightness_step"])
        low, high = BRIGHTNESS_RANGE
        now = (
            0 if state.on is False else (state.brightness if state.brightness is not None else high)
        )
        target = max(low, min(high, now + step))
        if target <= low:
            return Action(action.device, "off")
        out["brightness"] = max(1, target)
    if args.get("temperature_step") is not None:
        now = state.temperature if state.temperature is not None else WHITE
        low, high = TEMPERATURES
        out["temperature"] = max(low, min(high, now + int(args["temperature_step"])))
    rest = {k: v for k, v in args.items() if k not in STEP_KEYS}
    return Action(action.device, "set", tuple(sorted({**rest, **out}.items())))
