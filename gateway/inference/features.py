"""The statistical front end of the models: readings into in-memory ring buffers of bin means, and from them one
feature matrix per group, every row checked before a model sees it.

Readings are binned by when they arrive (monotonic), not by their stamps, so a step of the wall clock moves
nothing. A row is scored only when every required channel has readings in `min_coverage` of the window and at
least one recent bin, no stuck-checked channel held one non-zero value for the whole window, and every feature is
finite; otherwise it is "not scored" with the reason. An optional channel that is missing gives its features the
model's imputed values and `present(...)` 0. The same code makes the training data (models/), so the model is fed
in the venue exactly what it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.inference.spec import Group, Spec
from gateway.readings import Reading

Array = npt.NDArray[np.float64]
# asset id -> (kind, zone), or None while the twin does not know the asset yet
KindOf = Callable[[str], tuple[str, str | None] | None]
_NO_ROUTE: tuple[tuple[int, int, int], ...] = ()


@dataclass
class Batch:
    """One group's rows for one cycle: `x[i]` is fed to the model only where `scored[i]`."""

    group: Group
    keys: list[str]
    x: Array  # (rows, features)
    scored: npt.NDArray[np.bool_]
    reasons: list[str | None]  # why a row is not scored
    missing: list[tuple[str, ...]]  # optional channels imputed, per row


class _Buffers:
    def __init__(self, group: Group, window: int) -> None:
        self.group = group
        self.window = window
        self.rows: dict[str, int] = {}
        self.keys: list[str] = []
        self.channel = {c: i for i, c in enumerate(group.channels)}
        self.held: set[int] = set()  # rows whose baselines stand still
        self.spread = sorted({self.channel[f.channels[0]] for f in group.features if f.op in ("slope", "std")})
        self.stuck = [self.channel[c] for c in group.stuck_check]
        self._alloc(16)

    def _alloc(self, capacity: int) -> None:
        nch = len(self.group.channels)
        old = [self.ring, self.filled, self.valid, self.sum, self.count, self.baseline, self.capacity] \
            if hasattr(self, "ring") else None
        # The bin means three ways, each written once per bin and read every cycle without a pass to make it:
        # NaN where a bin had nothing, 0 there, and whether it had something.
        self.ring: Array = np.full((capacity, nch, self.window), np.nan)
        self.filled: Array = np.zeros((capacity, nch, self.window))
        self.valid: npt.NDArray[np.bool_] = np.zeros((capacity, nch, self.window), dtype=bool)
        self.sum: Array = np.zeros((capacity, nch))
        self.count: Array = np.zeros((capacity, nch))
        self.baseline: Array = np.full((capacity, nch), np.nan)
        self.capacity: Array = np.full(capacity, np.nan)
        if old is not None:
            n = len(old[0])
            for new, kept in zip([self.ring, self.filled, self.valid, self.sum, self.count, self.baseline,
                                  self.capacity], old, strict=True):
                new[:n] = kept

    def row(self, key: str) -> int:
        i = self.rows.get(key)
        if i is None:
            i = self.rows[key] = len(self.keys)
            self.keys.append(key)
            if i >= len(self.ring):
                self._alloc(2 * len(self.ring))
        return i


class FrontEnd:
    """The ring buffers and features of one model's specification."""

    def __init__(self, spec: Spec, kind_of: KindOf) -> None:
        self.spec = spec
        self._kind_of = kind_of
        self.buffers = [_Buffers(g, spec.window_bins) for g in spec.groups]
        self._sources: dict[tuple[str, str], list[tuple[int, str]]] = {}  # (kind, metric) -> (group, channel)
        for gi, g in enumerate(spec.groups):
            for channel, sources in g.sources.items():
                for s in sources:
                    kind, metric = s.split(".")
                    self._sources.setdefault((kind, metric), []).append((gi, channel))
        self._metrics = {m for _, m in self._sources}
        self._routes: dict[tuple[str, str], tuple[tuple[int, int, int], ...]] = {}
        self._pos = -1  # the ring slot written last
        self.bins = 0
        self.dropped = 0  # non-finite values
        t = np.arange(spec.window_bins) * spec.bin_s / 60.0  # minutes, oldest first
        self._t = t

    def _route(self, asset: str, metric: str) -> tuple[tuple[int, int, int], ...] | None:
        known = self._kind_of(asset)
        if known is None:
            return None  # not cached: the asset may be declared later
        kind, zone = known
        out = []
        for gi, channel in self._sources.get((kind, metric), ()):
            b = self.buffers[gi]
            key = asset if b.group.rows == "asset" else zone
            if key is not None:
                out.append((gi, b.row(key), b.channel[channel]))
        return tuple(out)

    def observe(self, readings: Iterable[Reading]) -> None:
        """Ingest's observer: add each reading to its bin (a dict lookup and two additions per reading)."""
        routes, metrics, buffers = self._routes, self._metrics, self.buffers
        for r in readings:
            if r.metric not in metrics:
                continue
            key = (r.asset, r.metric)
            route = routes.get(key)
            if route is None:
                route = self._route(r.asset, r.metric)
                if route is None:
                    continue
                routes[key] = route
            if not route:
                continue
            v = r.value
            if not math.isfinite(v):
                self.dropped += 1
                continue
            for gi, row, ch in route:
                b = buffers[gi]
                b.sum[row, ch] += v
                b.count[row, ch] += 1

    def forget_routes(self) -> None:
        """Assets were declared again (kind or zone may have changed): look their routes up afresh."""
        self._routes.clear()

    def set_capacity(self, zone: str, capacity: float) -> None:
        for b in self.buffers:
            if b.group.rows == "zone":
                row = b.row(zone)  # first: it may grow the arrays
                b.capacity[row] = capacity

    def close_bin(self) -> None:
        """End the current bin: its means go into the ring (NaN where nothing came)."""
        self._pos = (self._pos + 1) % self.spec.window_bins
        self.bins += 1
        for b in self.buffers:
            n = len(b.keys)
            had = b.count[:n] > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                means = b.sum[:n] / b.count[:n]
            b.ring[:n, :, self._pos] = np.where(had, means, np.nan)
            b.filled[:n, :, self._pos] = np.where(had, means, 0.0)
            b.valid[:n, :, self._pos] = had
            b.sum[:n] = 0.0
            b.count[:n] = 0.0

    def batches(self) -> list[Batch]:
        return [self._batch(b) for b in self.buffers]

    def _batch(self, b: _Buffers) -> Batch:
        spec, g = self.spec, b.group
        n, w = len(b.keys), spec.window_bins
        # The ring is read where it lies (no copy into time order): each slot's time, and the recent slots.
        t = self._t[(np.arange(w) - self._pos - 1) % w]
        last = (self._pos - np.arange(spec.short_bins)) % w
        x, y, valid = b.ring[:n], b.filled[:n], b.valid[:n]  # (rows, channels, slots)
        count = valid.sum(axis=2)
        recent_count = valid[:, :, last].sum(axis=2)
        nch = len(g.channels)
        slope, std = np.full((n, nch), np.nan), np.full((n, nch), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            recent = y[:, :, last].sum(axis=2) / recent_count
            if b.spread:  # least squares and spread only for the channels a feature takes them of
                c, v = b.spread, valid[:, b.spread]
                ys, cnt = y[:, c], count[:, c]
                tbar = (v * t).sum(axis=2) / cnt
                dt = np.where(v, t - tbar[:, :, None], 0.0)
                dy = np.where(v, ys - (ys.sum(axis=2) / cnt)[:, :, None], 0.0)
                slope[:, c] = (dt * dy).sum(axis=2) / (dt * dt).sum(axis=2)
                std[:, c] = np.sqrt((dy * dy).sum(axis=2) / cnt)
        ok = (count >= spec.min_coverage * w) & (recent_count > 0)
        stuck = np.zeros((n, nch), dtype=bool)
        if b.stuck:
            top = np.fmax.reduce(x, axis=2)[:, b.stuck]  # of the bins that had readings (NaN if none had)
            low = np.fmin.reduce(x, axis=2)[:, b.stuck]
            stuck[:, b.stuck] = ok[:, b.stuck] & (count[:, b.stuck] >= 2) & (low == top) & (top != 0)
        self._update_stats(b, recent, ok)
        feats = np.empty((n, len(g.features)))
        defined = np.ones((n, len(g.features)), dtype=bool)
        for j, f in enumerate(g.features):
            c = [b.channel[ch] for ch in f.channels]
            col = self._feature(b, f.op, c, recent, slope, std, ok)
            usable = ok[:, c].all(axis=1) & np.isfinite(col)
            defined[:, j] = usable | (f.op == "present")
            feats[:, j] = np.where(usable | (f.op == "present"), col, g.impute[j])
        return self._check(b, feats, defined, ok, stuck)

    @staticmethod
    def _feature(b: _Buffers, op: str, c: list[int], recent: Array, slope: Array, std: Array,
                 ok: npt.NDArray[np.bool_]) -> Array:
        n = len(b.keys)
        with np.errstate(invalid="ignore", divide="ignore"):
            if op == "mean":
                return recent[:, c[0]]
            if op == "slope":
                return slope[:, c[0]]
            if op == "std":
                return std[:, c[0]]
            if op == "diff":
                return recent[:, c[0]] - recent[:, c[1]]
            if op == "present":
                return ok[:, c[0]].astype(float)
            if op == "fill":
                return recent[:, c[0]] / b.capacity[:n]
            base = b.baseline[:n, c[0]]  # rel: within 1/16 and 16 times the baseline
            return np.log2(np.clip(recent[:, c[0]], base / 16, base * 16) / base)

    def _update_stats(self, b: _Buffers, recent: Array, ok: npt.NDArray[np.bool_]) -> None:
        """`rel`'s baselines: a slow average of each channel's recent mean, started by its first positive one and
        held still for the rows in `held`."""
        n = len(b.keys)
        base = b.baseline[:n]
        usable = ok & (recent > 0)
        fresh = usable & np.isnan(base)
        base[fresh] = recent[fresh]
        move = usable & ~fresh
        if b.held:
            move[[i for i in b.held if i < n]] = False
        base[move] += (recent[move] - base[move]) / self.spec.baseline_bins

    def hold_baselines(self, group: str, keys: Iterable[str]) -> None:
        """The rows whose baselines stop moving: an asset in alarm must not teach its fault as normal."""
        for b in self.buffers:
            if b.group.name == group:
                b.held = {b.rows[k] for k in keys if k in b.rows}

    def _check(self, b: _Buffers, feats: Array, defined: npt.NDArray[np.bool_], ok: npt.NDArray[np.bool_],
               stuck: npt.NDArray[np.bool_]) -> Batch:
        g = b.group
        n = len(b.keys)
        req = [b.channel[c] for c in g.required]
        stuck_ch = [b.channel[c] for c in g.stuck_check]
        scored = np.asarray(ok[:, req].all(axis=1) & ~stuck[:, stuck_ch].any(axis=1) & np.isfinite(feats).all(axis=1))
        # A feature of required channels only that is undefined (a baseline or capacity not known yet) stops the row.
        needs = np.array([all(ch in g.required for ch in f.channels) for f in g.features], dtype=bool)
        scored &= ~(needs & ~defined).any(axis=1)
        reasons: list[str | None] = [None] * n
        missing: list[tuple[str, ...]] = [()] * n
        optional = [c for c in g.channels if c not in g.required]
        for i in np.flatnonzero(~scored):
            reasons[i] = self._reason(b, int(i), ok, stuck, req, stuck_ch)
        if optional:
            opt = [b.channel[c] for c in optional]
            for i in np.flatnonzero(~ok[:, opt].all(axis=1)):
                missing[i] = tuple(c for c in optional if not ok[i, b.channel[c]])
        return Batch(g, list(b.keys), feats, scored, reasons, missing)

    @staticmethod
    def _reason(b: _Buffers, i: int, ok: npt.NDArray[np.bool_], stuck: npt.NDArray[np.bool_], req: list[int],
                stuck_ch: list[int]) -> str:
        channels = b.group.channels
        for c in req:
            if not ok[i, c]:
                return f"missing {channels[c]}"
        for c in stuck_ch:
            if stuck[i, c]:
                return f"stuck {channels[c]}"
        return "features not yet defined"
