"""Services a plugin declares, the way it declares commands: companions that run beside
the bot for its whole life (started after the drivers, stopped before them)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ServiceSpec:
    """One declared service: how to make it, and which section of the file it reads."""

    name: str
    factory: Callable[[Any], Any]
    """Called with the section's settings (or None); returns a troupe.bot.Service."""
    section: str | None
    plugin: str


def service(section: str | None = None) -> Callable[[F], F]:
    """Declare a class or function `factory(settings) -> Service` as a service: every bot
    that loads the plugin makes one and starts it. `settings` is the federation file's
    top-level section named `section` as validated (None without a section or a file)."""

    def attach(factory: F) -> F:
        factory.__troupe_service__ = ServiceSpec(  # type: ignore[attr-defined]
            name=getattr(factory, "__name__", "service"),
            factory=factory,
            section=section,
            plugin=factory.__module__,
        )
        return factory

    return attach


def declared_services(modules: Iterable[str]) -> list[ServiceSpec]:
    """The services the (imported) plugin modules declare, in the order of the modules."""
    found = []
    for name in modules:
        module = sys.modules.get(name)
        for value in vars(module).values() if module is not None else ():
            spec = getattr(value, "__troupe_service__", None)
            if isinstance(spec, ServiceSpec) and spec.plugin == name and spec.factory is value:
                found.append(spec)
    return found
