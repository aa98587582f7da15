"""Read what Home Assistant's sentences leave out: lists of devices, "everything", relative
changes ("a bit brighter"), slang and short names, by turning them into plain commands."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

import yaml

from troupe.intents import Command, DeviceInfo

SWITCHABLE = frozenset({"light", "fan", "switch", "outlet"})
"""Kinds "everything" means: covers, sensors (and anything asking for confirmation) only
when named."""
SWITCH_INTENTS = frozenset({"HassTurnOn", "HassTurnOff", "HassToggle"})
BRIGHTNESS_STEP = 25
"""Percentage points of one "brighter"/"darker"; "a bit" is SMALL_BRIGHTNESS_STEP."""
SMALL_BRIGHTNESS_STEP = 10
TEMPERATURE_STEP = 500
"""Kelvin of one "warmer"/"cooler"; "a bit" is half of it."""

Understand = Callable[[str], Command | None]
"""The plain recognizer: one sentence -> its command (None for chatter)."""


@dataclass(frozen=True)
class _Relative:
    words: Mapping[str, tuple[str, ...]]
    small: tuple[str, ...]
    filler: tuple[str, ...]
    probe: tuple[str, ...]


@dataclass(frozen=True)
class Phrasing:
    """How one language says lists, "everything", relative changes and slang
    (intents_data/phrases_<language>.yaml)."""

    rewrites: tuple[tuple[re.Pattern[str], str], ...]
    joiners: tuple[str, ...]
    everything: tuple[str, ...]
    articles: tuple[str, ...]
    relative: _Relative | None


@cache
def phrasing(language: str) -> Phrasing | None:
    """The language's phrasing, read once; None for a language without a file."""
    resource = resources.files("troupe").joinpath("intents_data", f"phrases_{language}.yaml")
    if not resource.is_file():
        return None
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    relative = data.get("relative")
    return Phrasing(
        rewrites=tuple((re.compile(p), r) for p, r in data.get("rewrites", ())),
        joiners=tuple(data.get("joiners", ())),
        everything=tuple(data.get("everything", ())),
        articles=tuple(data.get("articles", ())),
        relative=None
        if relative is None
        else _Relative(
            words={d: tuple(relative[d]) for d in ("brighter", "darker", "warmer", "cooler")},
            small=tuple(relative.get("small", ())),
            filler=tuple(relative.get("filler", ())),
            probe=tuple(relative.get("probe", ())),
        ),
    )


def _alternation(phrases: Iterable[str]) -> str:
    return "|".join(
        r"\s+".join(re.escape(w) for w in p.split())
        for p in sorted(set(phrases), key=len, reverse=True)
    )


def _plain_text(text: str) -> str:
    """Lower case, single spaces, no closing punctuation: what the patterns read."""
    return " ".join(text.casefold().split()).rstrip(".!?… ").strip()


def understood(command: Command | None) -> bool:
    """A command with devices (or a scene) and nothing unknown or impossible."""
    return command is not None and not command.unknown and bool(command.devices or command.scene)


class Reader:
    """Rereads a message the plain recognizer did not understand, for one house."""

    def __init__(
        self,
        language: str,
        devices: Mapping[str, DeviceInfo],
        device_phrases: Mapping[str, str],
        area_phrases: Mapping[str, str],
    ) -> None:
        self.words = phrasing(language)
        self.devices = devices
        self.device_phrases = device_phrases
        self.area_phrases = area_phrases
        self._list: re.Pattern[str] | None = None
        self._everything: re.Pattern[str] | None = None
        self._area: re.Pattern[str] | None = None
        words = self.words
        if words is None:
            return
        names = _alternation([*device_phrases, *area_phrases])
        if names:
            article = _alternation(words.articles)
            item = rf"(?:(?:{article})\s+)?(?:{names})"
            joiner = _alternation(w for w in words.joiners if w != ",")
            sep = rf"(?:\s*,\s*(?:(?:{joiner})\s+)?|\s+(?:{joiner})\s+)"
            self._item = re.compile(rf"(?<!\w){item}(?!\w)")
            self._list = re.compile(rf"(?<!\w){item}(?:{sep}{item})+(?!\w)")
            areas = _alternation(area_phrases)
            self._area = re.compile(
                rf"\s*(?<!\w)(?:in|im|in der|in the)\s+(?:the\s+)?({areas})(?!\w)"
            )
        if words.everything:
            self._everything = re.compile(rf"(?<!\w)(?:{_alternation(words.everything)})(?!\w)")

    def reread(self, text: str, first: Command | None, understand: Understand) -> Command | None:
        """`first` (the plain reading of `text`), or a better reading of it."""
        if self.words is None or understood(first):
            return first
        plain = _plain_text(text)
        for reading in (self._listed, self._everything_of, self._rewritten, self._relative):
            command = reading(plain, understand)
            if command is not None:
                return replace(command, text=text)
        return self._short_name(first) or first

    # lists ---------------------------------------------------------------------------

    def _listed(self, plain: str, understand: Understand) -> Command | None:
        """ "the kitchen lamp and the hall light": each item read in the list's place."""
        if self._list is None:
            return None
        for found in self._list.finditer(plain):
            items = self._item.findall(found.group())
            readings = [
                self._reread_once(
                    f"{plain[: found.start()]}{item}{plain[found.end() :]}", understand
                )
                for item in items
            ]
            if not all(understood(c) for c in readings):
                continue
            first = readings[0]
            assert first is not None
            if any(c is None or c.intent != first.intent for c in readings):
                continue
            devices = sorted({d for c in readings if c is not None for d in c.devices})
            return replace(first, devices=tuple(devices))
        return None

    def _reread_once(self, text: str, understand: Understand) -> Command | None:
        """One list item's sentence, slang included (no nested lists)."""
        command = understand(text)
        if understood(command):
            return command
        return self._rewritten(text, understand) or self._relative(text, understand)

    # everything ------------------------------------------------------------------------

    def _everything_of(self, plain: str, understand: Understand) -> Command | None:
        """ "turn off everything [in the kitchen]": every switchable device (of the area)."""
        if self._everything is None:
            return None
        found = self._everything.search(plain)
        if found is None:
            return None
        switchable = [d for d in self.devices.values() if d.kind in SWITCHABLE]
        if not switchable:
            return None
        rest = plain[: found.start()] + "{}" + plain[found.end() :]
        area = None
        if self._area is not None:
            in_area = self._area.search(rest)
            if in_area is not None:
                area = self.area_phrases[in_area.group(1)]
                rest = rest[: in_area.start()] + rest[in_area.end() :]
        stand_in = switchable[0].name
        command = self._reread_once(rest.format(stand_in), understand)
        if not understood(command) or command is None or command.intent not in SWITCH_INTENTS:
            return None
        if command.devices != (stand_in,):
            return None
        devices = sorted(d.name for d in switchable if area is None or d.area == area)
        return replace(command, devices=tuple(devices)) if devices else None

    # slang -----------------------------------------------------------------------------

    def _rewritten(self, plain: str, understand: Understand) -> Command | None:
        """Slang and other verbs, each rewrite applied on top of the ones before."""
        assert self.words is not None
        text = plain
        for pattern, plain_form in self.words.rewrites:
            changed = pattern.sub(plain_form, text, count=1).strip()
            if changed == text:
                continue
            text = changed
            command = understand(text)
            if understood(command):
                return command
            shorter = self._short_name(command)
            if shorter is not None:
                return shorter
        return None

    # relative changes ------------------------------------------------------------------

    def _relative(self, plain: str, understand: Understand) -> Command | None:
        """ "make the hall light a bit brighter": a step from the lights' current state."""
        assert self.words is not None
        relative = self.words.relative
        if relative is None:
            return None
        best = None
        for direction, phrases in relative.words.items():
            for found in re.finditer(rf"(?<!\w)(?:{_alternation(phrases)})(?!\w)", plain):
                if best is None or len(found.group()) > len(best[1].group()):
                    best = (direction, found)
        if best is None:
            return None
        direction, found = best
        rest = f"{plain[: found.start()]} {plain[found.end() :]}"
        small = re.search(rf"(?<!\w)(?:{_alternation(relative.small)})(?!\w)", rest)
        if small is not None:
            rest = rest[: small.start()] + rest[small.end() :]
        rest = re.sub(rf"(?<!\w)(?:{_alternation(relative.filler)})(?!\w)", " ", rest)
        rest = " ".join(rest.split())
        for probe in relative.probe:
            command = understand(probe.format(rest=rest).strip())
            if not understood(command) or command is None or command.intent != "HassTurnOn":
                continue
            lights = tuple(d for d in command.devices if self.devices[d].kind == "light")
            if not lights:
                continue
            step = _step(direction, small is not None)
            return Command(intent="HassLightSet", devices=lights, text=plain, **step)
        return None

    # short names -----------------------------------------------------------------------

    def _short_name(self, command: Command | None) -> Command | None:
        """An unknown name that is part of exactly one switchable device's name or area
        ("the pump", "porch on"). Covers and sensors only by their names: "open the garage"
        stays a question ("did you mean the garage door?")."""
        if command is None or not command.unknown or command.problem:
            return None
        words = [w for w in _plain_text(command.unknown).split() if w not in self.words_articles]
        if not words:
            return None
        if command.suggestion in self.devices:
            device = self.devices[command.suggestion]
            known = set(device.name.split()) | set((device.area or "").split())
            if set(words) <= known and device.kind in SWITCHABLE:
                return replace(command, devices=(device.name,), unknown=None, suggestion=None)
            return None  # the suggestion stays the answer
        if " ".join(words) in self.area_phrases:
            return None  # a room holds many devices: "turn on the garage" asks which
        kinds = SWITCHABLE if command.intent in SWITCH_INTENTS else None
        matching = [
            d.name
            for d in self.devices.values()
            if set(words) <= set(d.name.split()) and (kinds is None or d.kind in kinds)
        ]
        if len(matching) == 1:
            return replace(command, devices=tuple(matching), unknown=None, suggestion=None)
        return None

    @property
    def words_articles(self) -> frozenset[str]:
        return frozenset(self.words.articles) if self.words else frozenset()


def _step(direction: str, small: bool) -> dict[str, int]:
    if direction in ("brighter", "darker"):
        size = SMALL_BRIGHTNESS_STEP if small else BRIGHTNESS_STEP
        return {"brightness_step": size if direction == "brighter" else -size}
    size = TEMPERATURE_STEP // 2 if small else TEMPERATURE_STEP
    return {"temperature_step": -size if direction == "warmer" else size}


def stepped(value: int | None, step: int, low: int, high: int, start: int) -> int:
    """`value` moved by `step` within [low, high]; `start` when the value is unknown."""
    base = start if value is None else value
    return max(low, min(high, base + step))


__all__: Sequence[str] = ("Reader", "phrasing", "stepped", "understood")
