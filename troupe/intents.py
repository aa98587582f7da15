"""Turn chat text into home commands with hassil and Home Assistant's intent sentences."""

from __future__ import annotations

import copy
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from difflib import get_close_matches
from functools import cache
from importlib import resources
from typing import Any

import yaml
from hassil import Intents, TextSlotList, TextSlotValue, filter_intents, recognize_all
from hassil.expression import TextChunk
from hassil.intents import SlotList
from hassil.models import UnmatchedRangeEntity, UnmatchedTextEntity
from hassil.numbers import get_rbnf_engine
from hassil.recognize import MISSING_ENTITY, RecognizeResult
from hassil.util import merge_dict, normalize_text, remove_punctuation
from home_assistant_intents import get_intents, get_languages

_LOGGER = logging.getLogger(__name__)

SUPPORTED_INTENTS = frozenset(
    {"HassTurnOn", "HassTurnOff", "HassToggle", "HassLightSet", "HassGetState"}
)
SCENE_INTENT = "Scene"

KIND_DOMAINS: Mapping[str, str] = {
    "light": "light",
    "fan": "fan",
    "switch": "switch",
    "outlet": "switch",
    "cover": "cover",
    "sensor": "sensor",
}
"""Home Assistant domain of each device kind: HA's sentences are written per domain."""

KIND_DEVICE_CLASSES: Mapping[str, str] = {"outlet": "outlet"}

MAX_SPOKEN = 300
"""Characters: longer text is not taken for a spoken command. hassil's matching grows with
the text, and a pasted paragraph could keep a bot busy for seconds."""
SUGGEST_CUTOFF = 0.8
"""difflib ratio from which a known name is offered as "did you mean": close enough for
a typo or two ("kitchn fan", "hal light"), far from a different word ("garage heater")."""
BRIGHTNESS_RANGE = (0, 100)
TEMPERATURE_RANGE = (1000, 10000)

_EVERYWHERE = "*everywhere*"
"""Stands in for the channel's area when it has none, so "lights on" means every light."""

_SCENE_DOMAIN = "scene"
_PLACES = ("name", "area")
_VALUES = ("brightness", "temperature")
_SCENE_VERBS = re.compile(r"^(?:(?:activate|start|run|enable|turn on)\s+)?(?:the\s+)?(?P<rest>.+)$")
_SCENE_SUFFIX = re.compile(r"\s+scene$")
_POSSESSIVE = re.compile(r"\w(?:'s|s')$")
_EMOJI = re.compile(r":[a-z0-9_+'-]+:|[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]")
"""Slack's emoji codes (":bulb:") and emoji characters: decoration, never part of a name."""
_LAST_WORD = re.compile(r"(\w+)\W*$")
_TIMELIKE = re.compile(r"\d+(?::\d+|am|pm|h|st|nd|rd|th|%)")


@dataclass(frozen=True)
class _DurationWords:
    """How one language says "for N minutes"."""

    preposition: str
    units: Mapping[str, float]
    fixed: Mapping[str, float]


@dataclass(frozen=True)
class _ChatWords:
    """Words that tell a command naming an unknown device apart from family chatter.

    A near miss needs one of the `verbs` or `states` among the template's own words
    ("turn on …", "is … on", "… status") and one of the `nouns` (things a home
    automates) in its unknown name, unless the name is a typo of a known one; `chatter`
    words (pronouns, auxiliaries, prepositions, time words) never occur in a device or
    area name, so a phrase holding one is a sentence ("turn your phone on", "the porch
    light was on all night"), not a name; leading `articles` are not part of a name;
    `to` leads to a value ("to red", "auf rot"); `courtesy` phrases around a command
    ("please", "thanks") are not part of it.
    """

    verbs: frozenset[str]
    states: frozenset[str]
    nouns: frozenset[str]
    chatter: frozenset[str]
    articles: frozenset[str]
    to: str
    courtesy: tuple[str, ...] = ()
    questions: frozenset[str] = frozenset()
    """Words that open a question ("is", "are"): without one, and without a "?", a state
    read as a question ("all lights off") is an order."""


@dataclass(frozen=True)
class _LanguageData:
    """What troupe adds to Home Assistant's intents for one language (intents_data/*.yaml).

    `supplements` are sentences in home-assistant-intents' own format, merged into its
    data. A language without a file gets HA's sentences alone: no durations, and unknown
    names stay silent as chatter cannot be told from a command without `chat` words.
    """

    supplements: Mapping[str, Any]
    durations: _DurationWords | None
    one_words: tuple[str, ...]
    chat: _ChatWords | None


_CHAT_WORD_KEYS = ("verbs", "states", "nouns", "chatter", "articles")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML has it: it reads a language's file ten times faster."""


@cache
def _language_data(language: str) -> _LanguageData:
    """troupe's additions for `language`, read once from the package's intents_data/."""
    resource = resources.files("troupe").joinpath("intents_data", f"{language}.yaml")
    if not resource.is_file():
        return _LanguageData(supplements={}, durations=None, one_words=(), chat=None)
    data = yaml.load(resource.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    durations = data.get("durations")
    chat = data.get("chat")
    return _LanguageData(
        supplements=data.get("supplements", {}),
        durations=None if durations is None else _DurationWords(**durations),
        one_words=tuple(str(data.get("one_words", "")).split()),
        chat=None
        if chat is None
        else _ChatWords(
            **{key: frozenset(chat[key].split()) for key in _CHAT_WORD_KEYS},
            to=chat["to"],
            courtesy=tuple(chat.get("courtesy", ())),
            questions=frozenset(str(chat.get("questions", "")).split()),
        ),
    )


@dataclass(frozen=True)
class DeviceInfo:
    """One device of the federation, as the config module describes it."""

    name: str
    kind: str
    area: str | None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """What a chat message asks the home to do, with every device name resolved.

    `unknown` names the phrase that matched no device or area, so the bot can say
    "I don't know a device called X"; `suggestion` is then the known device or area
    spelt most like it, if any ("did you mean the kitchen fan?"); `problem` says why a
    recognised value cannot be applied (e.g. brightness 150) so a validator need not
    re-parse the text.
    """

    intent: str
    devices: tuple[str, ...]
    text: str
    brightness: int | None = None
    color: str | None = None
    temperature: int | None = None
    duration_s: float | None = None
    scene: str | None = None
    query: str | None = None
    brightness_step: int | None = None
    """A relative change ("a bit brighter"): percentage points from the current state."""
    temperature_step: int | None = None
    """A relative change of colour temperature in kelvin ("warmer" is negative)."""
    unknown: str | None = None
    suggestion: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class _Named:
    """Value of the {name} slot: the devices (or one scene) a spoken name stands for."""

    devices: tuple[str, ...] = ()
    scene: str | None = None


def _clean(text: str) -> str:
    """Casefolded, punctuation-free, single-spaced text for exact phrase lookups."""
    return " ".join(remove_punctuation(normalize_text(text)).casefold().split())


def available_languages() -> list[str]:
    """Languages home-assistant-intents ships sentences for."""
    return list(get_languages())


class Recognizer:
    """Recognises home commands in one language for one federation's devices.

    Loading and indexing Home Assistant's sentences takes seconds, so `warm()` does it
    once at bot start; `recognize()` then only matches.
    """

    def __init__(
        self,
        devices: Iterable[DeviceInfo],
        areas: Mapping[str, Sequence[str]],
        language: str = "en",
        aliases: Mapping[str, str] | None = None,
        scenes: Sequence[str] = (),
    ) -> None:
        languages = available_languages()
        if language not in languages:
            raise ValueError(
                f"unknown language {language!r}; available languages: {', '.join(languages)}"
            )
        self.language = language
        self._devices: dict[str, DeviceInfo] = {}
        for device in devices:
            if device.kind not in KIND_DOMAINS:
                raise ValueError(
                    f"device {device.name!r} has unknown kind {device.kind!r}; "
                    f"known kinds: {', '.join(KIND_DOMAINS)}"
                )
            self._devices[device.name] = device
        self._area_phrases: dict[str, str] = {}
        for area, area_aliases in areas.items():
            for phrase in (area, *area_aliases):
                self._area_phrases[_clean(phrase)] = area
        for device in self._devices.values():
            if device.area is not None:
                self._area_phrases.setdefault(_clean(device.area), device.area)
        self._device_names = {
            _clean(phrase): d.name
            for d in self._devices.values()
            for phrase in (d.name, *d.aliases)
        }
        self._aliases = {_clean(phrase): command for phrase, command in (aliases or {}).items()}
        self._scenes = {_clean(scene): scene for scene in scenes}
        self._full: Intents | None = None
        self._supported: Intents | None = None
        self._slot_lists: dict[str, SlotList] = {}
        self._duration: re.Pattern[str] | None = None
        self._colours: frozenset[str] = frozenset()
        self.warm_seconds: float | None = None
        from troupe.phrases import Reader  # it builds on this module's Command

        self._reader = Reader(language, self._devices, self._device_names, self._area_phrases)

    @property
    def devices(self) -> Mapping[str, DeviceInfo]:
        return self._devices

    def warm(self) -> float:
        """Load the language's intents and build the matcher; returns seconds taken.

        Parsing the sentence templates of the intents troupe acts on and indexing the
        slot lists here keeps the first chat command as fast as the rest. The other
        intents (timers, weather, media...) only keep chatter that names them silent:
        their templates, two thirds of the memory and time, are parsed the first time
        a near miss needs them.
        """
        if self.warm_seconds is not None:
            return self.warm_seconds
        started = time.perf_counter()
        data = get_intents(self.language)
        if data is None:
            raise ValueError(f"no intents shipped for language {self.language!r}")
        supplement = copy.deepcopy(dict(_language_data(self.language).supplements))
        data.setdefault("lists", {}).update(supplement.pop("lists", {}))
        merge_dict(data, supplement)
        full = Intents.from_dict(data)
        domains = {KIND_DOMAINS[d.kind] for d in self._devices.values()}
        if self._scenes:
            domains.add(_SCENE_DOMAIN)
        supported = filter_intents(full, intent_names=SUPPORTED_INTENTS, domains=domains)
        for intent in supported.intents.values():
            for intent_data in intent.data:
                rules = {**full.expansion_rules, **intent_data.expansion_rules}
                for sentence in intent_data.sentences:
                    sentence.get_required_clauses(rules)
        self._slot_lists = self._build_slot_lists(full)
        for slot_list in self._slot_lists.values():
            if isinstance(slot_list, TextSlotList):
                slot_list.get_candidates("")
        self._duration = _duration_pattern(self.language)
        colours = full.slot_lists.get("color")
        if isinstance(colours, TextSlotList):
            self._colours = frozenset(
                v.text_in.text.casefold()
                for v in colours.values
                if isinstance(v.text_in, TextChunk)
            )
        self._full, self._supported = full, supported
        # One miss through every pass fills hassil's lazy caches (number words, regexes).
        self._recognize("hello there", None, expand_alias=False)
        self.warm_seconds = time.perf_counter() - started
        _LOGGER.info(
            "intents %s: %d intents (%d used), %d devices, warmed in %.2fs",
            self.language,
            len(full.intents),
            len(supported.intents),
            len(self._devices),
            self.warm_seconds,
        )
        return self.warm_seconds

    def recognize(self, text: str, *, area: str | None = None) -> Command | None:
        """The command `text` asks for, or None if it is not a home command.

        `area` is the channel's default area: "lights on" acts on its lights, or on
        every light when the channel has none.
        """
        if self.warm_seconds is None:
            self.warm()
        started = time.perf_counter()
        command = self._ordered(text, self._recognize(text, area, expand_alias=True))
        _LOGGER.debug(
            "recognized %r in %.1fms: %s", text, (time.perf_counter() - started) * 1000, command
        )
        return command

    def _ordered(self, text: str, command: Command | None) -> Command | None:
        """Home Assistant reads "all lights off" as "are all lights off?"; typed to a house
        without a question word or a "?", it is an order."""
        words = _language_data(self.language).chat
        if (
            command is None
            or command.intent != "HassGetState"
            or command.query not in ("on", "off")
            or words is None
            or not words.questions
            or "?" in text
        ):
            return command
        first = _clean(self._polish(text)).split()[:1]
        if not first or first[0] in words.questions:
            return command
        intent = "HassTurnOn" if command.query == "on" else "HassTurnOff"
        return replace(command, intent=intent, query=None)

    def _recognize(self, text: str, area: str | None, *, expand_alias: bool) -> Command | None:
        """Home Assistant's sentences first; then lists, "everything", slang and relative
        changes (troupe.phrases), each read back through those sentences."""
        command = self._plain(text, area, expand_alias=expand_alias)
        if len(text) > MAX_SPOKEN:
            return command
        said = self._polish(text)
        return self._reader.reread(
            said, command, lambda plain: self._plain(plain, area, expand_alias=False)
        )

    def _plain(self, text: str, area: str | None, *, expand_alias: bool) -> Command | None:
        cleaned = _clean(text)
        if not cleaned or len(cleaned) > MAX_SPOKEN:
            return None
        said = self._polish(text)
        cleaned = _clean(said)
        if not cleaned:
            return None
        if expand_alias and cleaned in self._aliases:
            command = self._recognize(self._aliases[cleaned], area, expand_alias=False)
            return None if command is None else replace(command, text=text)
        scene = self._scene(cleaned)
        if scene is not None:
            return Command(intent=SCENE_INTENT, devices=(), text=text, scene=scene)
        stripped, duration_s = self._strip_duration(said)
        channel_area = self._area_phrases.get(_clean(area), area) if area else None
        context = {"area": channel_area or _EVERYWHERE}
        assert self._supported is not None and self._full is not None
        result = self._best(self._strict(stripped, self._supported, context))
        if result is not None:
            return self._command(result, stripped, text, channel_area, duration_s)
        unpadded = stripped
        result = self._best(self._unmatched(stripped, context))
        padded = self._before_trailing_colour(stripped) if result is None else None
        if padded is not None:
            stripped, result = padded, self._best(self._unmatched(padded, context))
        if result is None:
            return None
        # A near miss that another Home Assistant intent matches exactly ("set a timer for
        # 7") is chatter. Asked last: only then are those intents' sentences parsed.
        if next(self._strict(unpadded, self._full, context), None) is not None:
            return None
        return self._command(result, stripped, text, channel_area, duration_s)

    def _polish(self, text: str) -> str:
        """`text` without emoji and the courtesy around a command: "💡 lamp on, thanks!"
        reads as "lamp on", and a lone "thanks!" as nothing."""
        text = _EMOJI.sub(" ", text)
        words = _language_data(self.language).chat
        if words is None or not words.courtesy:
            return text
        return _courtesy_pattern(self.language).sub(" ", text).strip()

    def _before_trailing_colour(self, text: str) -> str | None:
        """`text` with "to" before its closing colour word: "licht im bad rot" -> "... auf rot".

        hassil cannot end an unknown phrase right before a list value (it drops the
        skipped words), so "mach das Licht im Bad rot" finds no near miss although
        "mach das Licht im Bad auf rot" does.
        """
        words = _language_data(self.language).chat
        match = _LAST_WORD.search(text)
        if words is None or match is None or match[1].casefold() not in self._colours:
            return None
        return f"{text[: match.start(1)]}{words.to} {text[match.start(1) :]}"

    def _scene(self, cleaned: str) -> str | None:
        if cleaned in self._scenes:
            return self._scenes[cleaned]
        if self.language != "en":
            return None
        match = _SCENE_VERBS.match(cleaned)
        if match is None:
            return None
        rest = match["rest"]
        return self._scenes.get(rest) or self._scenes.get(_SCENE_SUFFIX.sub("", rest))

    def _strip_duration(self, text: str) -> tuple[str, float | None]:
        if self._duration is None:
            return text, None
        match = self._duration.search(text)
        if match is None:
            return text, None
        words = _language_data(self.language).durations
        if words is None:
            return text, None
        if match["fixed"]:
            seconds = words.fixed[" ".join(match["fixed"].casefold().split())]
        else:
            amount = _amount(match["amount"], self.language)
            seconds = amount * words.units[match["unit"].casefold()]
        return f"{text[: match.start()]} {text[match.end() :]}".strip(), float(seconds)

    def _strict(
        self, text: str, intents: Intents, context: dict[str, Any]
    ) -> Iterable[RecognizeResult]:
        for result in recognize_all(
            text,
            intents,
            slot_lists=self._slot_lists,
            intent_context=context,
            language=self.language,
        ):
            if self._plausible(result, intents):
                yield result

    def _unmatched(self, text: str, context: dict[str, Any]) -> Iterable[RecognizeResult]:
        """Near misses that name an unknown device/area or an out-of-range value."""
        assert self._supported is not None
        for result in recognize_all(
            text,
            self._supported,
            slot_lists=self._slot_lists,
            intent_context=context,
            language=self.language,
            allow_unmatched_entities=True,
        ):
            if result.unmatched_entities_list and self._acceptable_miss(result, text):
                yield result

    def _plausible(self, result: RecognizeResult, intents: Intents) -> bool:
        """Reject a bare "[the] {name}" unless the name is a scene.

        Home Assistant turns a device on when only its name is said; in a chat channel
        people mention devices in passing, so a command needs a literal word or a value
        (a brightness, a colour) besides the device and area.
        """
        named = result.entities.get("name")
        if named is not None and isinstance(named.value, _Named) and named.value.scene:
            return True
        sentence = result.intent_sentence
        if sentence is None:
            return False
        rules = {**intents.expansion_rules, **result.intent_data.expansion_rules}
        if sentence.get_required_clauses(rules):
            return True
        spoken = {e.name for e in result.entities_list if e.text} | {
            m.name for m in result.unmatched_entities_list
        }
        return not spoken <= {"name", "area", "domain"}

    def _acceptable_miss(self, result: RecognizeResult, text: str) -> bool:
        """A miss worth one answer: a home command naming an unknown device/area, or a
        value out of range.

        hassil's unmatched slots swallow any words, so "hi mom, dinner at 7" fits
        "{name} at {area}". A family channel is mostly such chatter and must stay
        silent, so the template's own words must hold a command verb or a state
        ("turn", "set", "on", "status"), and each unknown phrase must read as the name
        of a thing in a home: short, no pronouns, auxiliaries or times ("turn your
        phone on"), and either holding a device word ("gazebo lights", "sprinkler") or
        spelt like a known name ("kitchn fan"), so "turn on the news" stays chatter.
        """
        assert self._supported is not None
        if not self._plausible(result, self._supported):
            return False
        named = result.entities.get("name")
        if named is not None and isinstance(named.value, _Named) and named.value.scene:
            return False
        missed_slots = {m.name for m in result.unmatched_entities_list}
        phrases: list[str] = []
        for missed in result.unmatched_entities_list:
            if isinstance(missed, UnmatchedRangeEntity):
                if missed.name not in _VALUES:
                    return False
            elif isinstance(missed, UnmatchedTextEntity):
                if missed.text == MISSING_ENTITY:
                    # An unknown name cannot say which domain it belongs to.
                    if missed.name != "domain" or "name" not in missed_slots:
                        return False
                elif missed.name in _PLACES:
                    phrases.append(missed.text)
                else:
                    return False
            else:
                return False
        if not phrases:
            return True
        words = _language_data(self.language).chat
        if words is None:
            # Without words to tell a name from a sentence, an unknown name stays silent.
            return False
        if any(isinstance(m, UnmatchedRangeEntity) for m in result.unmatched_entities_list):
            # An unknown name and an impossible value: "stell den Wecker auf 6".
            return False
        literal = _literal_words(result, text)
        if not literal & (words.verbs | words.states):
            # "{name} at {area}" and the like: no word of a command outside the slots.
            return False
        question = result.intent.name == "HassGetState"
        for phrase in phrases:
            name = _name_words(phrase, words)
            if not self._name_like(name, words):
                return False
            if not self._about_the_house(name, literal, words, _domains(result)):
                return False
            if question and any(_POSSESSIVE.search(word) for word in name):
                # "is grandma's light on" asks about someone's home, not this one.
                return False
        return True

    def _name_like(self, name: Sequence[str], words: _ChatWords) -> bool:
        """Could `name` (cleaned words) be a device or area nobody has set up yet?

        Up to four words, none of them a pronoun, auxiliary, preposition or time, and
        not merely wrapping a known device ("kitchen lamp and the" is a parse of a
        sentence, not a name).
        """
        if not 0 < len(name) <= 4:
            return False
        if any(word in words.chatter or _TIMELIKE.fullmatch(word) for word in name):
            return False
        if name[0].isdigit():
            return False
        padded = f" {' '.join(name)} "
        return not any(f" {phrase} " in padded for phrase in self._device_names)

    def _about_the_house(
        self,
        name: Sequence[str],
        literal: set[str],
        words: _ChatWords,
        domains: frozenset[str] | None,
    ) -> bool:
        """Is this a thing in the house: a device word, or a near spelling of a known
        device or area? A known area alone is not: "der garten sieht super aus"."""
        if any(_device_noun(word, words) for word in (*name, *literal)):
            return True
        return self._suggest(" ".join(name), domains) is not None

    def _suggest(self, phrase: str, domains: frozenset[str] | None = None) -> str | None:
        """The known device or area spelt most like `phrase` ("kitchn fan" -> "kitchen
        fan"), for a "did you mean" in the answer.

        An area (spelt right or nearly) that holds one device of the command's kind
        names that device: "open the garage" -> the garage door, "the bedrom lights" ->
        the bedroom lamp.
        """
        words = _language_data(self.language).chat
        cleaned = _name_words(phrase, words) if words else _clean(phrase).split()
        spoken = " ".join(cleaned)
        if not spoken:
            return None
        close = get_close_matches(spoken, self._device_names, n=1, cutoff=SUGGEST_CUTOFF)
        if close:
            return self._device_names[close[0]]
        close = get_close_matches(spoken, self._area_phrases, n=1, cutoff=SUGGEST_CUTOFF)
        if not close:
            return None
        area = self._area_phrases[close[0]]
        there = [
            d.name
            for d in self._devices.values()
            if d.area == area and (domains is None or KIND_DOMAINS[d.kind] in domains)
        ]
        if len(there) == 1:
            return there[0]
        return None if close[0] == spoken else area

    @staticmethod
    def _best(results: Iterable[RecognizeResult]) -> RecognizeResult | None:
        """Prefer fewer misses, a named device (longest name), more literal text, "all"."""

        def rank(result: RecognizeResult) -> tuple[int, int, int, int, int, int, str]:
            text_misses = [
                m
                for m in result.unmatched_entities_list
                if isinstance(m, UnmatchedTextEntity) and m.text != MISSING_ENTITY
            ]
            range_misses = [
                m for m in result.unmatched_entities_list if isinstance(m, UnmatchedRangeEntity)
            ]
            named = result.entities.get("name")
            return (
                len(text_misses),
                len(range_misses),
                0 if named is not None else 1,
                -(len(named.text) if named is not None else 0),
                -result.text_chunks_matched + sum(len(m.text) for m in text_misses),
                0 if (result.intent_metadata or {}).get("slot_combination") == "domain_all" else 1,
                result.intent.name,
            )

        return min(results, key=rank, default=None)

    def _command(
        self,
        result: RecognizeResult,
        matched: str,
        text: str,
        channel_area: str | None,
        duration_s: float | None,
    ) -> Command | None:
        """Resolve a hassil match to devices; `matched` is the text hassil saw."""
        intent = result.intent.name
        entities = result.entities
        fields = _values(result)
        fields["duration_s"] = duration_s

        area_entity = entities.get("area")
        area: str | None = None
        if area_entity is not None and area_entity.value != _EVERYWHERE:
            area = str(area_entity.value)
        spoken_area = area_entity if area_entity is not None and area_entity.text else None

        missed = [
            m
            for m in result.unmatched_entities_list
            if isinstance(m, UnmatchedTextEntity) and m.text != MISSING_ENTITY
        ]
        if missed:
            spoken = [m.text for m in missed]
            spoken += [e.text for e in entities.values() if e.text and e.name in _PLACES]
            spans = [_find(matched, phrase.strip()) for phrase in spoken]
            fields["unknown"] = _phrase(matched, spans) or missed[0].text.strip()
            fields["suggestion"] = self._suggest(fields["unknown"], _domains(result))
            return Command(intent=intent, devices=(), text=text, **fields)

        named = entities.get("name")
        if named is not None and isinstance(named.value, _Named):
            if named.value.scene is not None:
                if intent != "HassTurnOn":
                    return None
                return Command(
                    intent=SCENE_INTENT,
                    devices=(),
                    text=text,
                    scene=named.value.scene,
                    duration_s=duration_s,
                )
            domain = result.context.get("domain")
            candidates = [
                self._devices[name]
                for name in named.value.devices
                if domain is None or KIND_DOMAINS[self._devices[name].kind] == domain
            ]
            if spoken_area is not None:
                candidates = [d for d in candidates if d.area == area]
            elif len(candidates) > 1 and channel_area is not None:
                candidates = [d for d in candidates if d.area == channel_area] or candidates
            devices = tuple(sorted(d.name for d in candidates))
            if not devices:
                spans = [e.text_span for e in (named, spoken_area) if e is not None]
                fields["unknown"] = _phrase(matched, spans) or named.text.strip()
                fields["suggestion"] = self._suggest(fields["unknown"], _domains(result))
            return Command(intent=intent, devices=devices, text=text, **fields)

        if "domain" not in entities:
            return None
        domain = str(entities["domain"].value)
        device_class = entities["device_class"].value if "device_class" in entities else None
        devices = tuple(
            sorted(
                d.name
                for d in self._devices.values()
                if KIND_DOMAINS[d.kind] == domain
                and (device_class is None or KIND_DEVICE_CLASSES.get(d.kind) == device_class)
                and (area is None or d.area == area)
            )
        )
        if not devices:
            place = spoken_area.text.strip() if spoken_area is not None else (area or "")
            fields["unknown"] = f"{place} {self._kind_said(entities) or domain}".strip()
        return Command(intent=intent, devices=devices, text=text, **fields)

    def _kind_said(self, entities: Mapping[str, Any]) -> str | None:
        """The device class as the user said it ("tür", not "door"), without article."""
        said = entities.get("device_class")
        if said is None:
            return None
        words = _language_data(self.language).chat
        spoken = " ".join(_name_words(said.text, words)) if words else said.text.strip()
        return spoken or str(said.value)

    def _build_slot_lists(self, intents: Intents) -> dict[str, SlotList]:
        """{name}, {area} and {floor} from the federation, as HA builds them from its registry."""
        by_phrase: dict[tuple[str, str], set[str]] = {}
        for device in self._devices.values():
            domain = KIND_DOMAINS[device.kind]
            for phrase in (device.name, *device.aliases):
                by_phrase.setdefault((_clean(phrase), domain), set()).add(device.name)
        values = [
            TextSlotValue(
                text_in=TextChunk(phrase),
                value_out=_Named(devices=tuple(sorted(names))),
                context={"domain": domain},
            )
            for (phrase, domain), names in by_phrase.items()
            if phrase
        ]
        values.extend(
            TextSlotValue(
                text_in=TextChunk(phrase),
                value_out=_Named(scene=scene),
                context={"domain": _SCENE_DOMAIN},
            )
            for phrase, scene in self._scenes.items()
            if phrase
        )
        areas = [
            TextSlotValue(text_in=TextChunk(phrase), value_out=area)
            for phrase, area in self._area_phrases.items()
            if phrase
        ]
        return {
            "name": TextSlotList(name="name", values=values),
            "area": TextSlotList(name="area", values=areas),
            "floor": TextSlotList(name="floor", values=[]),
        }


def _values(result: RecognizeResult) -> dict[str, Any]:
    """Brightness, colour, temperature and state query, with any problem they have."""
    entities = result.entities
    fields: dict[str, Any] = {}
    for slot in ("brightness", "temperature"):
        if slot in entities and entities[slot].value is not None:
            fields[slot] = int(entities[slot].value)
    for missed in result.unmatched_entities_list:
        if isinstance(missed, UnmatchedRangeEntity):
            fields[missed.name] = int(missed.value)
    if "color" in entities:
        fields["color"] = str(entities["color"].value)
    if result.intent.name == "HassGetState" and "state" in entities:
        fields["query"] = str(entities["state"].value)
    problems = _validate(fields)
    if problems:
        fields["problem"] = "; ".join(problems)
    return fields


@cache
def _courtesy_pattern(language: str) -> re.Pattern[str]:
    """Courtesy phrases at either end of a message, with the punctuation around them."""
    words = _language_data(language).chat
    phrases = sorted(words.courtesy if words else (), key=len, reverse=True)
    either = "|".join(r"\s+".join(map(re.escape, phrase.split())) for phrase in phrases)
    return re.compile(
        rf"^[\s,.!]*(?:{either})(?!\w)[\s,.!]*|[\s,.!]*(?<!\w)(?:{either})[\s,.!?]*$",
        re.IGNORECASE,
    )


def _literal_words(result: RecognizeResult, text: str) -> set[str]:
    """Words of `text` that the sentence template itself matched, outside every slot."""
    remaining = Counter(_clean(text).split())
    for entity in (*result.entities_list, *result.unmatched_entities_list):
        spoken = getattr(entity, "text", "")
        if isinstance(spoken, str) and spoken != MISSING_ENTITY:
            remaining -= Counter(_clean(spoken).split())
    return set(remaining)


def _domains(result: RecognizeResult) -> frozenset[str] | None:
    """The Home Assistant domains a match is about: its {domain}, or those it requires."""
    domain = result.entities.get("domain")
    if domain is not None and domain.value:
        return frozenset({str(domain.value)})
    required = (result.intent_data.requires_context or {}).get("domain")
    if isinstance(required, str):
        return frozenset({required})
    if isinstance(required, list):
        return frozenset(str(d) for d in required)
    return None


def _name_words(phrase: str, words: _ChatWords) -> list[str]:
    """`phrase` cleaned, without its leading article: "the kitchn fan" -> kitchn, fan."""
    cleaned = _clean(phrase).split()
    while cleaned and cleaned[0] in words.articles:
        cleaned = cleaned[1:]
    return cleaned


def _device_noun(word: str, words: _ChatWords) -> bool:
    """A thing homes automate, plural or compound too: "lights", "schreibtischlampe"."""
    if word in words.nouns or word.rstrip("s") in words.nouns or word[:-2] in words.nouns:
        return True
    return any(len(noun) >= 4 and word.endswith(noun) for noun in words.nouns)


def _find(text: str, phrase: str) -> tuple[int, int] | None:
    start = text.casefold().find(phrase.casefold())
    return None if start < 0 or not phrase else (start, start + len(phrase))


def _phrase(text: str, spans: Iterable[tuple[int, int] | None]) -> str:
    """The stretch of `text` from the first span to the last: "garage heater"."""
    known = [span for span in spans if span is not None]
    if not known:
        return ""
    return text[min(s for s, _ in known) : max(e for _, e in known)].strip()


def _validate(fields: Mapping[str, Any]) -> list[str]:
    problems = []
    brightness = fields.get("brightness")
    low, high = BRIGHTNESS_RANGE
    if brightness is not None and not low <= brightness <= high:
        problems.append(f"brightness must be between {low} and {high}")
    temperature = fields.get("temperature")
    low, high = TEMPERATURE_RANGE
    if temperature is not None and not low <= temperature <= high:
        problems.append(f"color temperature must be between {low} and {high} kelvin")
    return problems


_NUMBER_WORDS: dict[str, dict[str, int]] = {}


def _number_words(language: str) -> dict[str, int]:
    """Spelled-out numbers 1..120 in `language` ("ten" -> 10), from CLDR's RBNF rules."""
    if language not in _NUMBER_WORDS:
        words: dict[str, int] = {}
        try:
            engine = get_rbnf_engine(language)
        except ValueError:
            _LOGGER.info("no number words for %s; durations need digits", language)
        else:
            for number in range(1, 121):
                for spelled in engine.format_number(number).text_by_ruleset.values():
                    spelled = spelled.casefold()
                    words.setdefault(spelled, number)
                    words.setdefault(spelled.replace("-", " "), number)
        for one in _language_data(language).one_words:
            words[one] = 1
        _NUMBER_WORDS[language] = words
    return _NUMBER_WORDS[language]


def _amount(spoken: str, language: str) -> float:
    spoken = " ".join(spoken.casefold().split())
    if re.fullmatch(r"\d+(?:[.,]\d+)?", spoken):
        return float(spoken.replace(",", "."))
    return float(_number_words(language)[spoken])


def _duration_pattern(language: str) -> re.Pattern[str] | None:
    """Regex for "for N <unit>" in `language`, or None if we have no words for it."""
    words = _language_data(language).durations
    if words is None:
        return None

    def alternation(options: Iterable[str]) -> str:
        return "|".join(
            r"\s+".join(re.escape(part) for part in option.split())
            for option in sorted(options, key=len, reverse=True)
        )

    amounts = alternation(_number_words(language))
    return re.compile(
        rf"(?<!\w){re.escape(words.preposition)}\s+"
        rf"(?:(?P<fixed>{alternation(words.fixed)})"
        rf"|(?P<amount>\d+(?:[.,]\d+)?|{amounts})\s*(?P<unit>{alternation(words.units)}))"
        rf"(?!\w)",
        re.IGNORECASE,
    )
