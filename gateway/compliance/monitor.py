"""Sound-level compliance per zone: rolling LAeq over 1, 15 and 60 minutes and the maximum, checked against the
configured limits with hysteresis, a projection to the end of the show, alerts, and a per-minute history.

It watches the readings going into the twin: `laeq_db` (the LAeq of each meter interval) and `lafmax_db` of any
asset with a zone. What it finds goes back out as readings of `compliance:<zone>`, a reported state, alerts and
rows of the store's compliance log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.compliance.leq import RollingLeq, RollingMax, energy, level
from gateway.compliance.settings import WINDOWS_MIN, ComplianceSection, LimitSection
from gateway.readings import Reading
from gateway.twin import Twin, TwinFrozen

log = logging.getLogger(__name__)

OWNER = "compliance"
WINDOWS_S = tuple(60.0 * m for m in WINDOWS_MIN)
State = Literal["ok", "warning", "over"]
_RANK: dict[State, int] = {"ok": 0, "warning": 1, "over": 2}

# (ts of the minute's end, zone, LAeq 1/15/60 min, max, the worst limit's label, its level, its state, projected)
LogRow = tuple[float, str, float | None, float | None, float | None, float | None, str, float, str, float | None]


def _db(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


@dataclass
class LimitState:
    limit: LimitSection
    state: State = "ok"
    level_db: float = -math.inf  # what is judged: below min_coverage, only the energy already certain
    partial: bool = False  # level_db is that lower bound (the window is not yet covered enough to judge it whole)
    projected_db: float | None = None
    projected_over: bool = False
    allowed_db: float | None = None  # the level that can be kept from now to the end without going over


@dataclass(eq=False)
class ZoneLevels:
    zone: str
    meter: str | None
    leq: RollingLeq = field(default_factory=lambda: RollingLeq(WINDOWS_S))
    peak: RollingMax = field(default_factory=lambda: RollingMax(WINDOWS_S[-1]))
    peak_1min: RollingMax = field(default_factory=lambda: RollingMax(WINDOWS_S[0]))
    has_fmax: bool = False
    last_ts: float | None = None
    minute: int | None = None  # the minute (its end, in minutes since the epoch) being filled
    limits: list[LimitState] = field(default_factory=list)

    def measure(self, limit: LimitSection) -> float:
        if limit.measure == "lmax":
            return self.peak_1min.value() if limit.window_min == 1 else self.peak.value()
        return self.leq.leq(WINDOWS_MIN.index(limit.window_min))


class Alert(Protocol):
    def __call__(self, kind: str, text: str, doc: dict[str, Any], *, key: str | None = None,
                 standing: bool = True) -> None: ...


class ComplianceMonitor:
    def __init__(self, settings: ComplianceSection, twin: Twin, publish: Callable[[Sequence[Reading]], None],
                 log_rows: Callable[[Sequence[LogRow]], None], alert: Alert) -> None:
        self.settings = settings
        self._twin = twin
        self._publish = publish
        self._log_rows = log_rows
        self._alert = alert
        self._wanted = {z.zone: z.meter for z in settings.zones}
        self.zones: dict[str, ZoneLevels] = {}
        self._zone_of: dict[str, str] = {}  # asset -> zone, cached: assets do not move often
        self.ignored_meters: set[str] = set()
        self.readings = 0
        self._replaying = False

    def restore(self, readings: Sequence[Reading]) -> None:
        """The windows as they stood: the last hour of sound levels from the store, at start, so a restart does
        not start the 15- and 60-minute windows again from nothing. Minutes already logged are not logged (nor
        published) again; the limits are judged on the restored windows, and alerts raised as they stand."""
        self._replaying = True
        try:
            self.observe(sorted(readings, key=lambda r: r.ts))
        finally:
            self._replaying = False
        for zl in self.zones.values():
            self._report(zl)
        if readings:
            log.info("compliance: %d sound levels of the last %.0f minutes restored from the store", len(readings),
                     WINDOWS_MIN[-1])

    # -- readings in ---------------------------------------------------------------------------------------
    def observe(self, readings: Sequence[Reading], owner: str | None = None) -> None:
        """Ingest's observer: called with every batch, on the loop. Only sound levels are looked at."""
        touched: set[ZoneLevels] = set()
        for r in readings:
            if r.metric == "laeq_db":
                zl = self._zone_for(r.asset)
                if zl is not None and math.isfinite(r.value):
                    self._interval(zl, r.ts, r.value)
                    touched.add(zl)
            elif r.metric == "lafmax_db":
                zl = self._zone_for(r.asset)
                if zl is not None and math.isfinite(r.value):
                    zl.has_fmax = True
                    zl.peak.add(r.ts, r.value)
                    zl.peak_1min.add(r.ts, r.value)
        for zl in touched:
            self._evaluate(zl)

    def _zone_for(self, asset_id: str) -> ZoneLevels | None:
        zone = self._zone_of.get(asset_id)
        if zone is None:  # not cached until the asset is known with a zone: it may be declared later
            found = self._twin.get(asset_id)
            zone = found.zone if found is not None else None
            if zone is not None:
                self._zone_of[asset_id] = zone
        if zone is None or (self._wanted and zone not in self._wanted):
            return None
        zl = self.zones.get(zone)
        if zl is None:
            zl = self.zones[zone] = ZoneLevels(zone, self._wanted.get(zone) or asset_id,
                                               limits=[LimitState(lim) for lim in self.settings.all_limits()])
            with contextlib.suppress(TwinFrozen):
                self._twin.declare(f"compliance:{zone}", "sound_compliance", zone, OWNER)
            self._report(zl)
            log.info("compliance: zone %s measured by %s", zone, zl.meter)
        if zl.meter != asset_id:
            self.ignored_meters.add(asset_id)
            return None
        return zl

    def _interval(self, zl: ZoneLevels, ts: float, level_db: float) -> None:
        s = self.settings
        gap = ts - zl.last_ts if zl.last_ts is not None else math.inf
        if gap <= 0:  # a repeat or a reading from the past: it would count twice
            return
        # A minute's row holds the windows as they stood at its last interval: closed before the next one counts.
        minute = math.ceil(ts / 60)  # the minute an interval belongs to is the one it ends in: (m-1, m] * 60 s
        if zl.minute is not None and minute != zl.minute:
            self._close_minute(zl, zl.minute * 60.0)
        zl.minute = minute
        zl.last_ts = ts
        zl.leq.add(ts, level_db, gap if gap <= s.max_gap_s else s.default_interval_s)
        if not zl.has_fmax:  # without LAFmax from the meter, the loudest interval is the maximum
            zl.peak.add(ts, level_db)
            zl.peak_1min.add(ts, level_db)
        self.readings += 1

    # -- limits, projection, alerts ------------------------------------------------------------------------
    def _evaluate(self, zl: ZoneLevels) -> None:
        s = self.settings
        for ls in zl.limits:
            lim = ls.limit
            if lim.measure == "laeq":
                w = WINDOWS_MIN.index(lim.window_min)
                ls.partial = zl.leq.coverage(w) < s.min_coverage
                ls.level_db = zl.leq.lower_bound(w) if ls.partial else zl.leq.leq(w)
            else:
                ls.level_db = zl.measure(lim)
            new = self._next_state(ls.state, ls.level_db, lim.level_db)
            if new != ls.state:
                old, ls.state = ls.state, new
                self._state_alert(zl, ls, old)

    def _next_state(self, state: State, value: float, limit: float) -> State:
        s = self.settings
        warn = limit - s.warn_margin_db
        if value >= limit:
            return "over"
        if state == "over" and value >= limit - s.hysteresis_db:
            return "over"
        if value >= warn or (state != "ok" and value >= warn - s.hysteresis_db):
            return "warning"
        return "ok"

    def _state_alert(self, zl: ZoneLevels, ls: LimitState, old: State) -> None:
        lim = ls.limit
        rising = _RANK[ls.state] > _RANK[old]
        text = (f"{zl.zone}: {lim.label} {ls.level_db:.1f} dB, {'over' if ls.state == 'over' else 'near'} the "
                f"{lim.level_db:g} dB limit" if ls.state != "ok" else
                f"{zl.zone}: {lim.label} {ls.level_db:.1f} dB, back under the {lim.level_db:g} dB limit")
        (log.warning if rising else log.info)("compliance %s", text)
        self._alert("sound_level", text, {"alert": "sound_level", "zone": zl.zone, "limit": lim.label,
                                          "limit_db": lim.level_db, "level_db": _db(ls.level_db),
                                          "state": ls.state, "was": old},
                    key=f"sound_level:{zl.zone}:{lim.label}", standing=ls.state != "ok")
        self._report(zl)

    def _project(self, zl: ZoneLevels, now: float) -> None:
        """Where each LAeq limit's window will stand at the show's end if the last minute's level goes on,
        and the level that could be kept from now on without ending over the limit."""
        end = self._show_end(now)
        l1 = zl.leq.leq(0)
        for ls in zl.limits:
            ls.projected_db = ls.allowed_db = None
            if end is None or ls.limit.measure != "laeq" or not math.isfinite(l1):
                continue
            span = ls.limit.window_min * 60.0
            remaining = end - now
            known_e, known_t = zl.leq.tail(end - span) if remaining < span else (0.0, 0.0)
            future = min(remaining, span)
            ls.projected_db = _db(level((known_e + energy(l1) * future) / (known_t + future)))
            budget = energy(ls.limit.level_db) * (known_t + future) - known_e
            ls.allowed_db = _db(level(budget / future)) if budget > 0 else None
            limit_db, h = ls.limit.level_db, self.settings.hysteresis_db
            was = ls.projected_over
            ls.projected_over = ls.projected_db is not None and (
                ls.projected_db >= limit_db or (was and ls.projected_db >= limit_db - h))
            if ls.projected_over and not was:
                text = (f"{zl.zone}: at the current level the show ends with {ls.limit.label} "
                        f"{ls.projected_db:.1f} dB, over the {limit_db:g} dB limit; keep under "
                        + (f"{ls.allowed_db:.1f} dB" if ls.allowed_db is not None else "silence") + " to the end")
                log.warning("compliance %s", text)
                self._alert("sound_projection", text, {
                    "alert": "sound_projection", "zone": zl.zone, "limit": ls.limit.label, "limit_db": limit_db,
                    "projected_db": ls.projected_db, "allowed_db": ls.allowed_db},
                    key=f"sound_projection:{zl.zone}:{ls.limit.label}")
            elif was and not ls.projected_over:
                self._alert("sound_projection", f"{zl.zone}: at the current level the show ends under the "
                            f"{limit_db:g} dB {ls.limit.label} limit", {
                                "alert": "sound_projection", "zone": zl.zone, "limit": ls.limit.label,
                                "limit_db": limit_db, "projected_db": ls.projected_db, "cleared": True},
                            key=f"sound_projection:{zl.zone}:{ls.limit.label}", standing=False)

    def _show_end(self, now: float) -> float | None:
        if self.settings.show_end is None:
            return None
        local = dt.datetime.fromtimestamp(now).astimezone()
        hh, mm = map(int, self.settings.show_end.split(":"))
        end = local.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if end <= local - dt.timedelta(hours=12):  # a show that ends after midnight
            end += dt.timedelta(days=1)
        return end.timestamp() if end > local else None

    # -- each minute: history, readings, the twin ----------------------------------------------------------
    def _close_minute(self, zl: ZoneLevels, at: float) -> None:
        if self._replaying:  # logged and published when it happened
            return
        self._project(zl, zl.leq.now)
        levels = [_db(zl.leq.leq(w)) for w in range(len(WINDOWS_S))]
        peak = _db(zl.peak.value())
        metrics = {"laeq_1min_db": levels[0], "laeq_15min_db": levels[1], "laeq_60min_db": levels[2],
                   "lmax_db": peak}
        worst = max(zl.limits, key=lambda ls: (_RANK[ls.state], ls.level_db - ls.limit.level_db))
        projected = max((ls.projected_db for ls in zl.limits if ls.projected_db is not None), default=None)
        self._publish([Reading(at, f"compliance:{zl.zone}", m, v) for m, v in metrics.items() if v is not None])
        self._log_rows([(at, zl.zone, levels[0], levels[1], levels[2], peak, worst.limit.label, worst.limit.level_db,
                         worst.state, projected)])
        self._report(zl)

    def _report(self, zl: ZoneLevels) -> None:
        with contextlib.suppress(TwinFrozen):
            self._twin.report(f"compliance:{zl.zone}", {
                "meter": zl.meter, "profile": self.settings.profile,
                "state": max((ls.state for ls in zl.limits), key=_RANK.__getitem__),
                "coverage_60min": round(zl.leq.coverage(len(WINDOWS_S) - 1), 3),
                "limits": [{"limit": ls.limit.label, "limit_db": ls.limit.level_db, "level_db": _db(ls.level_db),
                            "partial": ls.partial, "state": ls.state, "projected_db": ls.projected_db,
                            "allowed_db": ls.allowed_db}
                           for ls in zl.limits]}, OWNER)

    def document(self) -> dict[str, Any]:
        """The current state of every zone, for the API."""
        out = {}
        for zl in self.zones.values():
            out[zl.zone] = {
                "meter": zl.meter, "laeq_1min_db": _db(zl.leq.leq(0)), "laeq_15min_db": _db(zl.leq.leq(1)),
                "laeq_60min_db": _db(zl.leq.leq(2)), "lmax_db": _db(zl.peak.value()),
                "coverage": {f"{m}min": round(zl.leq.coverage(i), 3) for i, m in enumerate(WINDOWS_MIN)},
                "limits": [{"limit": ls.limit.label, "limit_db": ls.limit.level_db, "level_db": _db(ls.level_db),
                            "partial": ls.partial, "state": ls.state, "projected_db": ls.projected_db,
                            "allowed_db": ls.allowed_db}
                           for ls in zl.limits]}
        return {"profile": self.settings.profile, "show_end": self.settings.show_end,
                "warn_margin_db": self.settings.warn_margin_db, "zones": out,
                "ignored_meters": sorted(self.ignored_meters)}
