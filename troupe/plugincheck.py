"""What `troupe check` learns by loading the plugins as a bot would: import failures, unknown
drivers, bad device options and the sections drivers need."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from troupe import _imp_shim
from troupe.config.wording import describe
from troupe.plugin import ENTRY_POINT_GROUP, Driver, PluginError, load_plugins

if TYPE_CHECKING:
    from troupe.config import Federation, Loc


def plugin_problems(fed: Federation) -> tuple[dict[str, type[Driver]], list[tuple[Loc, str]]]:
    """What `troupe check` finds by loading every plugin as a Pi would: the drivers, and
    each problem as (where in the file, one sentence), in the order of the file."""
    _imp_shim.install()
    found: list[tuple[Loc, str]] = []
    failed: set[str] = set()
    for index, module in enumerate(fed.plugins):
        try:
            importlib.import_module(module)
        except Exception as err:  # a plugin may raise anything while it is imported
            failed.add(module)
            found.append((("plugins", index), _import_failure(repr(module), module, err)))
    entry_points_ok = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as err:
            entry_points_ok = False
            package = ep.dist.name if ep.dist else "an installed package"
            what = f"the plugin entry point {ep.name!r} of {package} ({ep.value})"
            found.append((("plugins",), _import_failure(what, ep.module, err)))
    try:
        plugins = load_plugins(
            [m for m in fed.plugins if m not in failed], entry_points_too=entry_points_ok
        )
    except PluginError as err:
        found.append((("plugins",), str(err)))
        return {}, found
    found += driver_problems(fed, plugins.drivers)
    return plugins.drivers, found


def driver_problems(
    fed: Federation, drivers: Mapping[str, type[Driver]], devices: Iterable[str] | None = None
) -> list[tuple[Loc, str]]:
    """The drivers' settings against the drivers' own models: each device's driver and
    options (of `devices`, default all), the sections drivers need, and each top-level
    section a driver owns. A bot checks its own devices with this before it starts."""
    found = list(_device_problems(fed, drivers, devices))
    unclaimed = [s for s in fed.driver_sections if s not in drivers]
    for section, users in _missing_sections(fed, drivers, devices).items():
        if _hint(section, unclaimed):
            continue  # written, but misspelt: that key's own line says it better
        found.append(
            (
                ("devices", users[0], "driver"),
                f"the {section} driver (used by {', '.join(users)}) needs a {section}: section "
                "at the top level of the file, and there is none; add it",
            )
        )
    found += _section_problems(fed, drivers)
    return found


def section_settings(fed: Federation, drivers: Mapping[str, type[Driver]]) -> dict[str, Any]:
    """Each top-level section a driver owns, validated by its model (those that pass)."""
    settings: dict[str, Any] = {}
    for name in ("mqtt", *fed.driver_sections):
        driver, value = drivers.get(name), fed.section(name)
        if value is None:
            continue
        if name == "mqtt" or driver is None or driver.section_model is None:
            settings[name] = value
            continue
        with contextlib.suppress(ValidationError):
            settings[name] = TypeAdapter(driver.section_model).validate_python(value)
    return settings


def _import_failure(what: str, module: str, err: BaseException) -> str:
    """One sentence: why `what` cannot be imported, and what to do about it."""
    missing = err.name if isinstance(err, ModuleNotFoundError) else None
    if missing and (module == missing or module.startswith(missing + ".")):
        return (
            f"cannot import {what}: no module {missing!r} here; install it in troupe's "
            "environment (or set PYTHONPATH) or fix the name"
        )
    if missing:
        return (
            f"cannot import {what}: it needs the module {missing!r}, which is not installed; "
            f"pip install it in troupe's environment or remove the plugin"
        )
    if isinstance(err, SyntaxError):
        return f"cannot import {what}: {err.msg} at {err.filename}:{err.lineno}; fix the plugin"
    return f"cannot import {what}: {type(err).__name__}: {err}; fix the plugin or remove it"


def _device_problems(
    fed: Federation, drivers: Mapping[str, type[Driver]], only: Iterable[str] | None
) -> Iterator[tuple[Loc, str]]:
    wanted = None if only is None else set(only)
    for name, device in fed.devices.items():
        if wanted is not None and name not in wanted:
            continue
        driver = drivers.get(device.driver)
        if driver is None:
            known = sorted(drivers)
            yield (
                ("devices", name, "driver"),
                f"{device.driver!r} is not a driver of the plugins loaded "
                f"({', '.join(known)}){_hint(device.driver, known)}",
            )
            continue
        if driver.options_model is not None:
            yield from _option_problems(("devices", name), driver, device.options)


def _missing_sections(
    fed: Federation, drivers: Mapping[str, type[Driver]], only: Iterable[str] | None
) -> dict[str, list[str]]:
    """The sections the devices' drivers need and the file lacks -> the devices using them."""
    needing: dict[str, list[str]] = {}
    wanted = None if only is None else set(only)
    for name, device in fed.devices.items():
        driver = drivers.get(device.driver)
        if wanted is not None and name not in wanted:
            continue
        if driver is None or driver.section_model is None:
            continue
        if fed.section(driver.name) is None:
            needing.setdefault(driver.name, []).append(name)
    return needing


def _section_problems(
    fed: Federation, drivers: Mapping[str, type[Driver]]
) -> Iterator[tuple[Loc, str]]:
    """Each top-level key troupe does not declare is a driver's section: is there such a
    driver, does it take a section, and does its model accept this one?"""
    for section, value in fed.driver_sections.items():
        driver = drivers.get(section)
        if driver is None:
            known = [k for k in type(fed).model_fields if k != "driver_sections"]
            known += [d for d, cls in drivers.items() if cls.section_model is not None]
            sections = sorted(d for d, cls in drivers.items() if cls.section_model is not None)
            yield (
                (section,),
                f"{section!r} is not a key troupe knows at the top level"
                + (
                    _hint(section, known)
                    or f", nor a section of the drivers loaded ({', '.join(sections)})"
                ),
            )
        elif driver.section_model is None:
            yield (section,), f"the {section} driver takes no section of its own; remove it"
        else:
            try:
                TypeAdapter(driver.section_model).validate_python(value)
            except ValidationError as err:
                for error in err.errors(include_url=False):
                    yield describe(error, (section, *error["loc"]), driver.section_model, skip=1)


def _option_problems(
    at: Loc, driver: type[Driver], options: dict[str, Any]
) -> Iterator[tuple[Loc, str]]:
    tp = driver.options_model
    try:
        TypeAdapter(tp).validate_python(options)
        return
    except ValidationError as err:
        errors = err.errors(include_url=False)
    # A union of option models reports each error under the member's tag: drop it.
    tagged = typing.get_origin(_bare(tp)) in (typing.Union, types.UnionType)
    found = [(e, tuple(e["loc"][1:] if tagged else e["loc"])) for e in errors]
    extra = [str(loc[-1]) for e, loc in found if e["type"] == "extra_forbidden" and loc]
    missing = [str(loc[-1]) for e, loc in found if e["type"] == "missing" and loc]
    for error, loc in found:
        kind = error["type"]
        if kind == "missing" and difflib.get_close_matches(str(loc[-1]), extra, 1, 0.6):
            continue  # the misspelt key says it better
        if kind == "extra_forbidden":
            yield (
                (*at, *loc),
                f"{str(loc[-1])!r} is not an option of the {driver.name} driver"
                f"{_hint(loc[-1], missing or _fields(tp))}",
            )
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            key = error["ctx"]["discriminator"].strip("'")
            tags = _tags(tp, key)
            value = error["ctx"].get("tag")
            if value is None:
                yield (*at, key), f"is required; use one of {', '.join(tags)}"
            else:
                yield (
                    (*at, key),
                    f"{value!r} is not allowed; use one of {', '.join(tags)}{_hint(value, tags)}",
                )
        elif kind == "missing":
            yield (*at, *loc), f"the {driver.name} driver needs this option"
        else:
            yield (*at, *loc), str(error["msg"]).removeprefix("Value error, ")


def _bare(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _bare(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_bare(member) for member in typing.get_args(tp)]
    return [tp]


def _fields(tp: Any) -> list[str]:
    return sorted({f for m in _members(tp) for f in getattr(m, "model_fields", {})})


def _tags(tp: Any, key: str) -> list[str]:
    """The values the members of a discriminated union take for `key` (`protocol`)."""
    tags = []
    for member in _members(tp):
        field = getattr(member, "model_fields", {}).get(key)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            tags += [str(arg) for arg in typing.get_args(field.annotation)]
    return tags


def _hint(word: object, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
