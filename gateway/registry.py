"""Drivers found by name: the `venue_gateway.drivers` entry points, or `package.module:Class` for a driver
that is not installed as a distribution (a site's own, or a test's). The core imports no concrete driver."""

from __future__ import annotations

import functools
import importlib
import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from gateway.driver import Driver

GROUP = "venue_gateway.drivers"
# `package.module:Class`: absolute, dotted identifiers (a relative or empty module name is not imported at all).
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)


class UnknownDriver(LookupError):
    pass


@functools.cache
def _installed() -> dict[str, EntryPoint]:
    """The installed drivers by name, read once: scanning every distribution's metadata costs tens of ms, and a
    configuration is checked on every reload (and by `check-config` for each file)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def available() -> list[str]:
    return sorted(_installed())


def find(kind: str) -> type[Driver[Any]]:
    if ":" in kind:
        module_name, _, attr = kind.partition(":")
        if not (_DOTTED.fullmatch(module_name) and attr.isidentifier()):
            raise UnknownDriver(f"{kind!r} is not module.path:ClassName (allowed: dotted names, e.g. "
                                "site_drivers.fog:FogMachine)")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # a site's module may fail to import in any way: said as the driver's problem
            raise UnknownDriver(f"cannot load driver {kind!r}: {exc} (allowed: module.path:ClassName)") from None
    else:
        entry = _installed().get(kind)
        if entry is None:
            allowed = ", ".join(available()) or "none installed"
            raise UnknownDriver(f"unknown driver type {kind!r} (allowed: {allowed}, or module.path:ClassName)")
        cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise UnknownDriver(f"{kind!r} is not a Driver subclass (allowed: a gateway.driver.Driver subclass)")
    return cls
