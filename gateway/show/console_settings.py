"""The console side's configuration: the live mode (`[show.live]`), the patch (`[[show.patch]]`, crowd fixtures)
and macro channels (`[[show.macros]]`)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.schema import Problem


@dataclass(frozen=True)
class LiveSection:
    pass


@dataclass(frozen=True)
class FixtureSection:
    pass


@dataclass(frozen=True)
class MacroSection:
    pass


def problems(zones: list[str], patch: list[FixtureSection], macros: list[MacroSection],
             presets: list[str]) -> list[Problem]:
    """Cross-checks: zones and presets named exist, fixtures and macros do not overlap."""
    return []
