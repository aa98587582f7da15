"""Each top-level section validated on its own, so one bad entry never hides the others."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from troupe.config.schema import Federation
from troupe.config.wording import Loc, describe, unwrap

CORE = tuple(name for name in Federation.model_fields if name != "driver_sections")
"""The sections troupe itself declares; any other top-level key is a driver's own."""


@dataclass
class Sections:
    """Each top-level section validated alone: a bad entry never hides the others' checks."""

    values: dict[str, Any] = field(default_factory=dict)
    raw_keys: dict[str, dict[str, list[object]]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    """Sections present in the file that failed their own checks (already reported)."""

    def entries(self, section: str) -> dict[str, Any]:
        value = self.values.get(section)
        return value if isinstance(value, dict) else {}


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    if tp not in _ADAPTERS:
        _ADAPTERS[tp] = TypeAdapter(tp)
    return _ADAPTERS[tp]


def _validate(tp: Any, value: object, loc: Loc, report: Callable[[Loc, str], None]) -> Any:
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as err:
        for error in err.errors(include_url=False):
            report(*describe(error, (*loc, *error["loc"]), Federation))
        return None


def validate_sections(data: dict[str, Any], report: Callable[[Loc, str], None]) -> Sections:
    """`data` as prepared() leaves it; each problem goes to `report` as it is found."""
    sections = Sections()
    own: dict[str, dict[str, Any]] = {}
    for name, value in data.get("driver_sections", {}).items():
        if isinstance(value, dict):
            own[name] = value  # a driver's own section: its driver checks it
        else:  # a driver's section is a mapping: this is a key troupe does not know
            report(
                (name,), describe({"type": "extra_forbidden", "msg": ""}, (name,), Federation)[1]
            )
            sections.failed.add(name)
    sections.values["driver_sections"] = own
    for name, info in Federation.model_fields.items():
        if name == "driver_sections":
            continue
        if name not in data or (data[name] is None and not info.is_required()):
            if info.is_required():
                report((name,), "is required but missing")
                continue
            sections.values[name] = info.get_default(call_default_factory=True)
            continue
        annotation = info.annotation
        if typing.get_origin(unwrap(annotation)) is dict and isinstance(data[name], dict):
            key_type, value_type = typing.get_args(unwrap(annotation))
            entries: dict[str, Any] = {}
            raw: dict[str, list[object]] = {}
            for raw_key, raw_value in data[name].items():
                key = _validate(key_type, raw_key, (name, str(raw_key)), report)
                if key is None:
                    continue
                raw.setdefault(key, []).append(raw_key)
                entries[key] = _validate(value_type, raw_value, (name, str(raw_key)), report)
            sections.values[name] = entries
            sections.raw_keys[name] = raw
        else:
            sections.values[name] = _validate(annotation, data[name], (name,), report)
            if sections.values[name] is None:
                sections.failed.add(name)
    return sections


def prepared(data: dict[Any, Any]) -> dict[Any, Any]:
    """The file's data without `x-` keys (anchors), the drivers' own sections gathered
    under `driver_sections`, bots' default tokens filled in.

    In app-per-bot mode a bot that names no token reads $<BOT>_BOT_TOKEN / _APP_TOKEN.
    New dicts throughout: one YAML anchor may be shared by several bots.
    """
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    own = {str(k): v for k, v in data.items() if k not in CORE}
    data = {k: v for k, v in data.items() if k in CORE} | {"driver_sections": own}
    slack = data.get("slack")
    mode = slack.get("mode", "app-per-bot") if isinstance(slack, dict) else "app-per-bot"
    bots = data.get("bots")
    if mode != "app-per-bot" or not isinstance(bots, dict):
        return data
    filled: dict[Any, Any] = {}
    for name, settings in bots.items():
        if settings is None:
            settings = {}
        if isinstance(settings, dict) and isinstance(name, str):
            env = re.sub(r"[^A-Z0-9]", "_", name.strip().upper())
            settings = {
                "bot_token": f"env:{env}_BOT_TOKEN",
                "app_token": f"env:{env}_APP_TOKEN",
            } | settings
        filled[name] = settings
    return data | {"bots": filled}
