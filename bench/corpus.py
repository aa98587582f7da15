"""`python -m bench.corpus`: the share of the command corpora the recognizer understands,
written to bench/reports/corpus.md (and checked by tests/test_corpus.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from troupe.intents import Command, DeviceInfo, Recognizer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
REPORT = Path(__file__).resolve().parent / "reports" / "corpus.md"
GOAL = 0.95

INTENTS = {
    "on": "HassTurnOn",
    "off": "HassTurnOff",
    "toggle": "HassToggle",
    "set": "HassLightSet",
    "query": "HassGetState",
    "scene": "Scene",
    "brighter": "HassLightSet",
    "darker": "HassLightSet",
    "warmer": "HassLightSet",
    "cooler": "HassLightSet",
}
STEPS = {
    "brighter": ("brightness_step", 1),
    "darker": ("brightness_step", -1),
    "warmer": ("temperature_step", -1),
    "cooler": ("temperature_step", 1),
}

# The demo house (troupe/demo.py) plus its garage door, as tests/test_chatter.py has it.
EN_DEVICES = (
    DeviceInfo("kitchen lamp", "light", "kitchen", ("kitchen light",)),
    DeviceInfo("kitchen fan", "fan", "kitchen"),
    DeviceInfo("garage light", "light", "garage"),
    DeviceInfo("garage door", "cover", "garage"),
    DeviceInfo("hall light", "light", "hall"),
    DeviceInfo("living room lamp", "light", "living room"),
    DeviceInfo("porch switch", "switch", "porch"),
    DeviceInfo("bedroom bulb", "light", "bedroom"),
    DeviceInfo("garden pump", "switch", "garden"),
)
EN_AREAS = {
    "kitchen": ["cuisine"],
    "hall": ["hallway"],
    "garage": [],
    "porch": [],
    "garden": [],
    "living room": ["lounge"],
    "bedroom": [],
}
DE_DEVICES = (
    DeviceInfo("küchenlampe", "light", "küche", ("küchenlicht",)),
    DeviceInfo("ventilator", "fan", "küche"),
    DeviceInfo("garagenlicht", "light", "garage"),
    DeviceInfo("garagentor", "cover", "garage"),
    DeviceInfo("flurlicht", "light", "flur"),
    DeviceInfo("stehlampe", "light", "wohnzimmer"),
    DeviceInfo("verandaschalter", "switch", "veranda"),
    DeviceInfo("schlafzimmerlampe", "light", "schlafzimmer"),
    DeviceInfo("gartenpumpe", "switch", "garten"),
)
DE_AREAS = {
    "küche": [],
    "flur": ["diele"],
    "garage": [],
    "veranda": [],
    "garten": [],
    "wohnzimmer": [],
    "schlafzimmer": [],
}


def house(language: str) -> Recognizer:
    """The test house in `language`, warmed."""
    if language == "en":
        recognizer = Recognizer(EN_DEVICES, EN_AREAS, scenes=("movie mode",))
    else:
        recognizer = Recognizer(DE_DEVICES, DE_AREAS, language="de", scenes=("filmabend",))
    recognizer.warm()
    return recognizer


@dataclass(frozen=True)
class Case:
    """One corpus line: a message and what it means for the test house."""

    text: str
    op: str
    devices: frozenset[str]
    values: tuple[tuple[str, str], ...] = ()


def lines(name: str) -> list[str]:
    """A data file's messages: "# " lines are comments."""
    text = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line for line in text if line.strip() and not line.startswith("# ")]


def cases(language: str, devices: Sequence[DeviceInfo], corpus: str = "commands") -> list[Case]:
    """The command corpus of `language` (or its held-out set, corpus="heldout"), "lights"
    and "everything" resolved for `devices`."""
    groups = {
        "lights": {d.name for d in devices if d.kind == "light"},
        "everything": {d.name for d in devices if d.kind in ("light", "fan", "switch", "outlet")},
    }
    found = []
    if not (DATA / f"{corpus}_{language}.txt").exists():
        return found
    for line in lines(f"{corpus}_{language}.txt"):
        text, _, meaning = line.rpartition(" => ")
        op, _, rest = meaning.partition(":")
        names, _, values = rest.partition(";")
        wanted: set[str] = set()
        for name in (n.strip() for n in names.split(",")):
            wanted |= groups.get(name, {name})
        pairs = tuple(
            (key.strip(), value.strip())
            for key, _, value in (v.partition("=") for v in values.split(";") if v.strip())
        )
        found.append(Case(text, op.strip(), frozenset(wanted), pairs))
    return found


def understood(case: Case, command: Command | None) -> bool:
    """Whether `command` does what the corpus line means."""
    if command is None or command.unknown or command.problem:
        return False
    same = command.intent == INTENTS[case.op] and frozenset(command.devices) == case.devices
    if not same and not (case.op == "scene" and command.scene):
        return False
    if case.op in STEPS:
        key, sign = STEPS[case.op]
        step = getattr(command, key)
        if step is None or step * sign <= 0:
            return False
    return all(str(getattr(command, k)) in (v, f"{v}.0") for k, v in case.values)


@dataclass
class Score:
    """How one language's corpora fared."""

    language: str
    commands: int = 0
    understood: int = 0
    missed: list[tuple[str, str]] = field(default_factory=list)
    near_misses: int = 0
    near_misses_answered: int = 0
    unanswered: list[str] = field(default_factory=list)
    chatter: int = 0
    chatter_taken: list[str] = field(default_factory=list)
    heldout: int = 0
    heldout_understood: int = 0
    heldout_missed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.understood / max(1, self.commands)


def score(language: str, recognizer: Recognizer | None = None) -> Score:
    """Run every corpus of `language` through the recognizer (channel without an area)."""
    recognizer = recognizer or house(language)
    result = Score(language)
    for case in cases(language, list(recognizer.devices.values())):
        command = recognizer.recognize(case.text)
        result.commands += 1
        if understood(case, command):
            result.understood += 1
        else:
            result.missed.append((case.text, _said(command)))
    for case in cases(language, list(recognizer.devices.values()), "heldout"):
        command = recognizer.recognize(case.text)
        result.heldout += 1
        if understood(case, command):
            result.heldout_understood += 1
        else:
            result.heldout_missed.append((case.text, _said(command)))
    for text in lines(f"nearmiss_{language}.txt"):
        command = recognizer.recognize(text)
        result.near_misses += 1
        answered = command is not None and bool(command.unknown or command.problem)
        acts = command is not None and bool(command.devices) and not command.problem
        if answered and not acts:
            result.near_misses_answered += 1
        else:
            result.unanswered.append(text)
    for text in lines(f"chatter_{language}.txt"):
        result.chatter += 1
        if recognizer.recognize(text) is not None:
            result.chatter_taken.append(text)
    return result


def _said(command: Command | None) -> str:
    if command is None:
        return "not a command"
    shown = {
        key: value
        for key, value in vars(command).items()
        if value not in (None, (), "") and key != "text"
    }
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def render(scores: Iterable[Score]) -> str:
    """The report as Markdown."""
    out = [
        "# Corpus: how much of the way people talk to a house troupe understands",
        "",
        "Reproduce: `.venv/bin/python -m bench.corpus` (writes this file);"
        " checked by `tests/test_corpus.py`.",
        "Corpora: tests/data/commands_*.txt (commands with their meaning),"
        " nearmiss_*.txt, chatter_*.txt. Goal: at least"
        f" {GOAL:.0%} of commands understood, every near miss answered, no chatter taken.",
        "",
        "| language | commands understood | share | near misses answered | chatter taken |",
        "|---|---|---|---|---|",
    ]
    scores = list(scores)
    for s in scores:
        out.append(
            f"| {s.language} | {s.understood} / {s.commands} | {s.share:.1%} |"
            f" {s.near_misses_answered} / {s.near_misses} |"
            f" {len(s.chatter_taken)} / {s.chatter} |"
        )
    held = [s for s in scores if s.heldout]
    if held:
        out += [
            "",
            "The rules of troupe/intents_data/phrases_*.yaml were written while reading what the"
            " corpus above missed, so its share is an in-sample one. The held-out set"
            " (tests/data/heldout_*.txt) was written afterwards by someone who had not read"
            " those rules; its header tells the one fix it led to:",
            "",
            "| language | held-out commands understood | share |",
            "|---|---|---|",
        ]
        out += [
            f"| {s.language} | {s.heldout_understood} / {s.heldout} |"
            f" {s.heldout_understood / s.heldout:.1%} |"
            for s in held
        ]
    for s in scores:
        out += ["", f"## Not understood ({s.language})", ""]
        out += [f"- `{text}` → {said}" for text, said in s.missed] or ["(none)"]
        if s.heldout_missed:
            out += ["", f"Held out, not understood ({s.language}):", ""]
            out += [f"- `{text}` → {said}" for text, said in s.heldout_missed]
        if s.unanswered:
            out += ["", f"Near misses without an answer ({s.language}):", ""]
            out += [f"- `{text}`" for text in s.unanswered]
        if s.chatter_taken:
            out += ["", f"Chatter taken for a command ({s.language}):", ""]
            out += [f"- `{text}`" for text in s.chatter_taken]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--languages", default="en,de")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    scores = [score(language) for language in args.languages.split(",")]
    args.out.write_text(render(scores), encoding="utf-8")
    for s in scores:
        print(
            f"{s.language}: {s.understood}/{s.commands} understood ({s.share:.1%}),"
            f" near misses {s.near_misses_answered}/{s.near_misses},"
            f" chatter taken {len(s.chatter_taken)}/{s.chatter}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
