"""How a problem in the federation file is worded: one `file:line: key: sentence` each."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel

from troupe.errors import TroupeError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the federation file, printed as one `file:line: key: message`."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return ": ".join(part for part in (where, self.key, self.message) if part)


class ConfigError(TroupeError, ValueError):
    """The federation file cannot be used; carries every problem found, one per line."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def key_of(loc: Loc) -> str:
    """`devices.kitchen fan.pin`, `plugins[0]`: where in the file, as the user reads it."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def hint(word: object, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def sentence(text: str) -> str:
    text = text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
    return text if text.endswith((".", "?", "!")) else text + "."


def unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def type_at(loc: Loc, root: Any) -> Any:
    """The declared type at `loc` inside the model `root`, or None if not known."""
    tp: Any = root
    for part in loc:
        tp = unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            if info is None:
                return None
            tp = info.annotation
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin in (tuple, list):
            tp = typing.get_args(tp)[0]
        else:
            return None
    return unwrap(tp)


def describe(error: Any, loc: Loc, root: Any, skip: int = 0) -> tuple[Loc, str]:
    """One pydantic error at `loc` of the file as a sentence; `root` is the model that
    validated the part of the file from `loc[skip:]` on (the Federation, or a driver's
    section model for a section of its own)."""
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        model = type_at(loc[skip:-1], root)
        known = [f for f in getattr(model, "model_fields", ()) if f != "driver_sections"]
        where = "at the top level" if len(loc) == 1 else "here"
        return loc, f"{str(loc[-1])!r} is not a key troupe knows {where}{hint(loc[-1], known)}"
    if kind == "missing":
        tp = type_at(loc[skip:], root)
        if typing.get_origin(tp) is Literal:
            return loc, f"is required; use one of {', '.join(typing.get_args(tp))}"
        return loc, "is required but missing"
    if kind == "literal_error":
        choices = [str(c) for c in typing.get_args(type_at(loc[skip:], root) or Literal[""])]
        value = error.get("input")
        return (
            loc,
            f"{value!r} is not allowed; use one of {', '.join(choices)}{hint(value, choices)}",
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"must be a mapping of keys (got {type(error.get('input')).__name__})"
    if kind in ("tuple_type", "list_type"):
        return loc, f"must be a list (got {type(error.get('input')).__name__})"
    if kind == "value_error":
        return loc, msg.removeprefix("Value error, ")
    value = error.get("input")
    shown = (
        repr(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    )
    return loc, f"{msg} (got {shown[:60]})"
