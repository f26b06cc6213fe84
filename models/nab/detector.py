"""The project's anomaly method applied to one univariate series, causally: window features, a model of normal fitted
on the probationary rows, a standardised squared residual, an anomaly likelihood and alarm hysteresis."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Params:
    """One parameter set for every series (no per-file tuning); lengths are in rows."""

    scales: tuple[int, ...] = (1, 6, 36)  # the recent windows: a row, and two longer ones a factor 6 apart
    long: int = 750  # the longer window features are relative to: NAB's probation cap, so it is full when scoring
    scale_floor: float = 0.05  # the long window's spread never falls below this fraction of the probation's
    average: int = 10  # rows in the short-term mean of raw scores (Numenta's averagingWindow)
    history: int = 8640  # rows of that mean kept as its long-term distribution (Numenta's historicWindowSize)
    reestimate: int = 100  # rows between re-estimates of that distribution (Numenta's reestimationPeriod)
    tail_from: float = 0.98  # the distribution's tail above this quantile is modelled as exponential
    alarm_tail: float = 0.01  # an alarm is raised when the short-term mean is this improbable (score 0.2)
    hold: int = 72  # after an alarm, no new alarm for this many rows (one alarm per excursion)
    refit: int = 0  # rows between refits of the normal model from rows that scored normal; 0 = never
    refit_rows: int = 4000  # the most recent normal rows a refit uses


def score_of_tail(tail: float) -> float:
    """The [0, 1] score of a tail probability, as Numenta maps its anomaly likelihood: -log10(tail) / 10, so that
    0.2 means 1 in 100, 0.3 1 in 1000 and 0.5 1 in 100,000."""
    return min(max(-math.log10(tail) / 10.0, 0.0), 1.0)


FIXED_THRESHOLD = score_of_tail(Params().alarm_tail)


def rolling_mean(x: FloatArray, w: int) -> FloatArray:
    """Mean of the last w rows up to and including each row (fewer at the start)."""
    c = np.concatenate(([0.0], np.cumsum(x)))
    hi = np.arange(1, len(x) + 1)
    lo = np.maximum(hi - w, 0)
    result: FloatArray = (c[hi] - c[lo]) / (hi - lo)
    return result


def rolling_std(x: FloatArray, w: int) -> FloatArray:
    m = rolling_mean(x, w)
    result: FloatArray = np.sqrt(np.maximum(rolling_mean(x * x, w) - m * m, 0.0))
    return result


def rolling_slope(x: FloatArray, w: int) -> FloatArray:
    """Least-squares slope per row over the last w rows (0 where fewer than two rows)."""
    n = len(x)
    i = np.arange(n, dtype=np.float64)
    c0 = np.concatenate(([0.0], np.cumsum(x)))
    c1 = np.concatenate(([0.0], np.cumsum(x * i)))
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - w, 0)
    k = (hi - lo).astype(np.float64)
    sx, sxi = c0[hi] - c0[lo], c1[hi] - c1[lo]
    si = (lo + hi - 1) * k / 2.0
    sii = ((hi - 1) * hi * (2 * hi - 1) - (lo - 1) * lo * (2 * lo - 1)) / 6.0
    den = k * sii - si * si
    result: FloatArray = np.where(den > 0, (k * sxi - si * sx) / np.where(den > 0, den, 1.0), 0.0)
    return result


def previous(x: FloatArray) -> FloatArray:
    """x shifted one row later, so row t sees only rows before it."""
    return np.concatenate((x[:1], x[:-1]))


def features(y: FloatArray, probation: int, p: Params) -> FloatArray:
    """Per row and recent window s: the recent mean's distance from the longer window's mean, and (for s > 1) the
    recent slope and the log ratio of recent to longer spread, all in units of the longer window's spread. The
    longer window ends the row before, so a sudden change is measured against what preceded it."""
    y = y - float(np.mean(y[: max(probation, 1)]))  # smaller cumulative sums, same features
    long_mean = previous(rolling_mean(y, p.long))
    floor = p.scale_floor * float(np.std(y[: max(probation, 1)])) + 1e-12
    long_std = np.maximum(previous(rolling_std(y, p.long)), floor)
    columns = []
    for s in p.scales:
        columns.append((rolling_mean(y, s) - long_mean) / long_std)
        if s > 1:
            columns.append(rolling_slope(y, s) * s / long_std)
            columns.append(np.log((rolling_std(y, s) + floor) / long_std))
    return np.column_stack(columns)


@dataclass(frozen=True)
class NormalModel:
    """A Gaussian model of normal feature vectors held as principal axes: centre, per-feature scale, axes and the
    variance along each."""

    centre: FloatArray
    scale: FloatArray
    axes: FloatArray
    variance: FloatArray

    @classmethod
    def fit(cls, rows: FloatArray) -> NormalModel:
        centre = rows.mean(axis=0)
        scale = rows.std(axis=0) + 1e-9
        z = (rows - centre) / scale
        variance, axes = np.linalg.eigh(np.atleast_2d(np.cov(z.T)))
        floor = 1e-6 * max(float(variance.max()), 1e-12)
        return cls(centre, scale, axes, np.maximum(variance, floor))

    def residual(self, rows: FloatArray) -> FloatArray:
        """The squared residual from the normal centre, standardised along each principal axis and averaged over
        axes: about 1 for normal rows, large when a row leaves the normal cloud in any direction."""
        t = ((rows - self.centre) / self.scale) @ self.axes
        result: FloatArray = (t * t / self.variance).mean(axis=1)
        return result


def raw_scores(f: FloatArray, first: int, probation: int, p: Params) -> FloatArray:
    """Residuals from a model of normal fitted on the probationary rows [first, probation), optionally refitted
    every `refit` rows from the recent rows whose residual was within normal (below the fit rows' 99th
    percentile); each block is scored with the model fitted before it."""
    model = NormalModel.fit(f[first:probation])
    raw = model.residual(f)
    raw[:first] = float(np.median(raw[first:probation]))
    if p.refit <= 0:
        return raw
    normal = np.zeros(len(f), dtype=bool)
    normal[first:probation] = True
    limit = float(np.quantile(raw[first:probation], 0.99))
    for t in range(probation, len(f), p.refit):
        end = min(t + p.refit, len(f))
        raw[t:end] = model.residual(f[t:end])
        normal[t:end] = raw[t:end] < limit
        rows = np.flatnonzero(normal[:end])[-p.refit_rows :]
        model = NormalModel.fit(f[rows])
        limit = float(np.quantile(model.residual(f[rows]), 0.99))
    return raw


def likelihood(raw: FloatArray, probation: int, p: Params) -> FloatArray:
    """Numenta's idea of an anomaly likelihood, fitted to squared residuals: the short-term mean of the raw score
    against the long-term distribution of that mean (re-estimated every `reestimate` rows from the `history`
    rows before). A squared residual has an exponential tail, so above the `tail_from` quantile the tail is
    exponential with the median excess (robust to past anomalies) setting its rate; below it, the empirical
    rank. Returns score_of_tail of each row's tail probability; rows of the probationary period score 0."""
    mean = rolling_mean(raw, p.average)
    score = np.zeros(len(raw))
    below_tail = -math.log10(1.0 - p.tail_from)
    for t in range(probation, len(raw), p.reestimate):
        past = np.sort(mean[max(0, t - p.history) : t])
        end = min(t + p.reestimate, len(raw))
        now = mean[t:end]
        if past.size == 0:
            continue
        u = float(np.quantile(past, p.tail_from))
        excess = past[past > u] - u
        rate = math.log(2) / max(float(np.median(excess)) if excess.size else 0.0, 1e-12)
        rank = np.searchsorted(past, now, side="left") / past.size
        log_tail = np.where(now > u, below_tail + (now - u) * rate / math.log(10),
                            -np.log10(np.maximum(1.0 - rank, 1e-12)))
        score[t:end] = np.clip(log_tail / 10.0, 0.0, 1.0)
    return score


def hysteresis(score: FloatArray, alarm: float, hold: int) -> FloatArray:
    """One alarm per excursion: a row reaches the alarm level only when the score rises through it and no alarm
    was raised in the previous `hold` rows; other rows above it are held just below (alarm - 0.1)."""
    out = score.copy()
    above = score >= alarm
    rising = above & ~np.concatenate(([False], above[:-1]))
    last = -hold - 1
    for t in np.flatnonzero(above):
        if rising[t] and t - last > hold:
            last = int(t)
        else:
            out[t] = max(alarm - 0.1, 0.0)
    return out


def score_series(values: FloatArray, probation: int, p: Params | None = None) -> FloatArray:
    """Anomaly scores in [0, 1] for one series; row t's score depends only on rows <= t (the model of normal is
    fitted on rows < probation, and probationary rows score 0)."""
    p = p or Params()
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    gaps = np.isnan(x)
    if gaps.any():  # a missing reading repeats the last one (a leading gap takes the first reading)
        last = np.maximum.accumulate(np.where(gaps, 0, np.arange(n)))
        x = x[last]
        x[np.isnan(x)] = x[~np.isnan(x)][0] if (~np.isnan(x)).any() else 0.0
    if probation < 2 * max(p.scales) or n <= probation:
        return np.zeros(n)
    f = features(x, probation, p)
    warm = min(2 * max(p.scales), probation // 2)  # rows whose rolling windows are still filling are not fitted
    raw = raw_scores(f, warm, probation, p)
    return hysteresis(likelihood(raw, probation, p), score_of_tail(p.alarm_tail), p.hold)
