"""The `[compliance]` section: which sound-level limits apply, from a ready profile or given one by one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from gateway.schema import Problem, setting

WINDOWS_MIN = (1, 15, 60)  # the rolling LAeq windows kept for every zone


@dataclass(frozen=True)
class LimitSection:
    """A limit: the LAeq over a rolling window, or the maximum level (LAFmax where the meter gives it)."""

    measure: Literal["laeq", "lmax"] = "laeq"
    window_min: int = setting(15, check=lambda v: None if v in WINDOWS_MIN else
                              f"{v} is not a kept window (allowed: {', '.join(map(str, WINDOWS_MIN))})")
    level_db: float = setting(100.0, min=40, max=150)

    @property
    def label(self) -> str:
        return f"LAeq,{self.window_min}min" if self.measure == "laeq" else "LAFmax"


# Ready profiles. WHO Global Standard for Safe Listening Venues and Events (2022), feature 1: 100 dB LAeq over
# 15 minutes. Swiss V-NISSG (SR 814.711, in force since 2019), art. 6 with annex 1: 100 dB(A) LAeq over 60 minutes
# and 125 dB(A) maximum (LAFmax) at the loudest place the audience can reach.
PROFILES: dict[str, tuple[LimitSection, ...]] = {
    "who": (LimitSection("laeq", 15, 100.0),),
    "ch_vnissg": (LimitSection("laeq", 60, 100.0), LimitSection("lmax", 1, 125.0)),
    "custom": (),
}

_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


@dataclass(frozen=True)
class ComplianceZone:
    zone: str
    meter: str | None = None  # the asset whose laeq_db counts (default: the first meter heard in the zone)


@dataclass(frozen=True)
class ComplianceSection:
    profile: Literal["who", "ch_vnissg", "custom"] = "who"
    limits: list[LimitSection] = field(default_factory=list)  # added to the profile's
    zones: list[ComplianceZone] = field(default_factory=list)  # empty: every zone with a meter
    # Local time the show ends, for the projection "ends over the limit at the current level".
    show_end: str | None = setting(None, check=lambda v: None if _HHMM.fullmatch(v) else
                                   f"{v!r} is not a time of day (allowed: HH:MM, 24-hour)")
    warn_margin_db: float = setting(3.0, min=0, max=20)  # a warning this far below a limit
    hysteresis_db: float = setting(1.0, min=0, max=10)  # a state clears this far below where it was entered
    # Below this share of a window covered by readings, only the energy already certain counts against a limit.
    min_coverage: float = setting(0.5, min=0.05, max=1)
    # An interval level's duration is the time since its meter's previous one, unless that is longer than this:
    # then the meter was away, and the reading counts for `default_interval_s`.
    max_gap_s: float = setting(10.0, min=0.1, max=600)
    default_interval_s: float = setting(1.0, min=0.05, max=60)
    retention_days: float = setting(90.0, min=1, max=3660)  # the per-minute history kept for export

    def all_limits(self) -> tuple[LimitSection, ...]:
        return PROFILES[self.profile] + tuple(self.limits)

    def problems(self) -> list[Problem]:
        out = []
        if not self.all_limits():
            out.append(Problem("limits", "the custom profile needs at least one limit (allowed: [[compliance.limits]]"
                                         " tables, or profile = \"who\" or \"ch_vnissg\")"))
        zones = [z.zone for z in self.zones]
        if len(set(zones)) != len(zones):
            out.append(Problem("zones", "zones must not repeat"))
        return out
