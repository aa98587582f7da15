"""Colour names, sRGB <-> CIE xy, whites by colour temperature, and Hue gamut fitting.

One table for every driver and simulator, so "green" is the same green on a Hue bulb and
on a Zigbee one. The names and their sRGB values are CSS Color Module Level 4's (the
same table Home Assistant's `color_name` uses): "green" is CSS green (0, 128, 0), which
has the chromaticity of "lime" (0, 255, 0) since a light's xy carries no brightness.
"white" and the other whites are colour temperatures (WHITES), not sRGB white: a white
light is set by its colour temperature where it takes one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from troupe.plugin import DriverError

XY = tuple[float, float]

CSS_COLOURS: Mapping[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "orange": (255, 165, 0),
    "gold": (255, 215, 0),
    "yellow": (255, 255, 0),
    "green": (0, 128, 0),
    "lime": (0, 255, 0),
    "turquoise": (64, 224, 208),
    "cyan": (0, 255, 255),
    "blue": (0, 0, 255),
    "purple": (128, 0, 128),
    "violet": (238, 130, 238),
    "magenta": (255, 0, 255),
    "pink": (255, 192, 203),
    "brown": (165, 42, 42),
}
"""The colour names a light takes, with their CSS sRGB values. They cover the colours
home-assistant-intents knows (its `color` list gives English names in every language)."""

WHITES: Mapping[str, int] = {
    "candle light": 1900,
    "warm white": 2700,
    "white": 4000,
    "cool white": 5000,
    "daylight": 6500,
}
"""Whites by colour temperature in kelvin."""

_ALIASES = {
    "candlelight": "candle light",
    "soft white": "warm white",
    "cold white": "cool white",
    "day light": "daylight",
    "fuchsia": "magenta",
    "aqua": "cyan",
}

CT_RANGE = (153, 500)
"""The colour temperatures most lights take, in mireds (6500 K to 2000 K)."""

Gamut = tuple[XY, XY, XY]
GAMUT_C: Gamut = ((0.6915, 0.3083), (0.17, 0.7), (0.1532, 0.0475))
"""The colour gamut of current Hue colour lights (red, green, blue corners)."""

NAME_TOLERANCE = 0.02
"""How far (in xy) a light's colour may be from a named one and still be called by it."""
WHITE_TOLERANCE_MIREDS = 40


class ColourError(DriverError):
    """A colour no light can show, or a name this module does not know."""


@dataclass(frozen=True)
class Colour:
    """A named colour, resolved: its xy, and its kelvin if it is a white."""

    name: str
    xy: XY
    kelvin: int | None = None
    """Set for a white: a light that takes a colour temperature is given that instead."""


def known_names() -> list[str]:
    return [*CSS_COLOURS, *WHITES]


def named(text: str) -> Colour:
    """The colour a name means ("Red", "Warm  White", "candlelight"...).

    Raises ColourError (one sentence for the chat) for black or an unknown name.
    """
    name = " ".join(text.lower().split())
    name = _ALIASES.get(name, name)
    if name == "black":
        raise ColourError("a light cannot shine black; turn it off instead")
    if name in WHITES:
        return Colour(name, xy_of_kelvin(WHITES[name]), WHITES[name])
    if name in CSS_COLOURS:
        return Colour(name, xy_of_rgb(*CSS_COLOURS[name]))
    raise ColourError(f"I don't know the colour “{text}”; I know {', '.join(known_names())}")


def _linear(channel: float) -> float:
    return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4


def xy_of_rgb(red: int, green: int, blue: int) -> XY:
    """The CIE 1931 xy chromaticity of an sRGB colour (0-255 per channel, D65 white).

    Black has no chromaticity: it gives the white point."""
    r, g, b = (_linear(c / 255) for c in (red, green, blue))
    x = r * 0.4124 + g * 0.3576 + b * 0.1805
    y = r * 0.2126 + g * 0.7152 + b * 0.0722
    z = r * 0.0193 + g * 0.1192 + b * 0.9505
    total = x + y + z
    if math.isclose(total, 0.0):
        return (0.3127, 0.329)
    return (round(x / total, 4), round(y / total, 4))


def xy_of_hex(text: str) -> XY:
    """The xy of "#rrggbb" (Zigbee2MQTT's {"hex": ...}); ValueError if it is not that."""
    digits = text.strip().removeprefix("#")
    if len(digits) != 6:
        raise ValueError(f"{text!r} is not #rrggbb")
    red, green, blue = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return xy_of_rgb(red, green, blue)


def xy_of_kelvin(kelvin: float) -> XY:
    """The xy of a white of this colour temperature (Kim et al.'s Planckian locus fit),
    for colour lights that take no colour temperature."""
    t = min(25000.0, max(1667.0, float(kelvin)))
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    return round(x, 4), round(y, 4)


def mireds(kelvin: float, limits: tuple[int, int] = CT_RANGE) -> int:
    """Kelvin -> mireds, clamped to what the light takes."""
    low, high = limits
    return min(high, max(low, round(1_000_000 / max(kelvin, 1))))


def _closest_on_segment(p: XY, a: XY, b: XY) -> XY:
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    t = ((p[0] - ax) * dx + (p[1] - ay) * dy) / (dx * dx + dy * dy)
    t = min(1.0, max(0.0, t))
    return (ax + t * dx, ay + t * dy)


def _inside(p: XY, gamut: Gamut) -> bool:
    def side(a: XY, b: XY) -> float:
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    r, g, b = gamut
    signs = [side(r, g), side(g, b), side(b, r)]
    return all(s >= 0 for s in signs) or all(s <= 0 for s in signs)


def fit_gamut(xy: Sequence[float], gamut: Gamut = GAMUT_C) -> XY:
    """The xy itself if the light can show it, else the nearest xy on the gamut's edge
    (what a Hue bridge does, so what it reports back is what troupe asked for)."""
    point = (float(xy[0]), float(xy[1]))
    if _inside(point, gamut):
        return point
    r, g, b = gamut
    edges = [_closest_on_segment(point, r, g), _closest_on_segment(point, g, b)]
    edges.append(_closest_on_segment(point, b, r))
    nearest = min(edges, key=lambda q: math.dist(q, point))
    return (round(nearest[0], 4), round(nearest[1], 4))


def gamut_of(capabilities: object) -> Gamut:
    """A Hue light's gamut from its capabilities.control.colorgamut; gamut C if it
    reports none (or something unreadable)."""
    if not isinstance(capabilities, Mapping):
        return GAMUT_C
    corners = (capabilities.get("control") or {}).get("colorgamut")
    try:
        red, green, blue = ((float(c[0]), float(c[1])) for c in corners)  # type: ignore[union-attr]
    except (TypeError, ValueError, IndexError):
        return GAMUT_C
    return (red, green, blue)


def name_of_xy(
    xy: Sequence[float], tolerance: float = NAME_TOLERANCE, gamut: Gamut = GAMUT_C
) -> str | None:
    """The colour name closest to an xy (whites included), if one is close enough. A
    light shows a colour outside its gamut fitted to it: each name is compared both as
    itself and as fitted to `gamut`."""
    point = (float(xy[0]), float(xy[1]))
    candidates = [(name, xy_of_rgb(*rgb)) for name, rgb in CSS_COLOURS.items()]
    candidates += [(name, xy_of_kelvin(k)) for name, k in WHITES.items()]

    def distance(where: XY) -> float:
        return min(math.dist(where, point), math.dist(fit_gamut(where, gamut), point))

    name, where = min(candidates, key=lambda c: distance(c[1]))
    return name if distance(where) <= tolerance else None


def name_of_mireds(ct: float) -> str | None:
    """The named white closest to a colour temperature in mireds, if close enough."""
    name, kelvin = min(WHITES.items(), key=lambda item: abs(mireds(item[1]) - ct))
    return name if abs(mireds(kelvin) - ct) <= WHITE_TOLERANCE_MIREDS else None
