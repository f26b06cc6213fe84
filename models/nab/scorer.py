"""NAB's scoring, written from its published algorithm (numenta/NAB nab/sweeper.py, nab/scorer.py, nab/util.py):
per-row scores, raw and normalised file scores, the corpus threshold sweep, and event-level metrics without
point adjustment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

PROBATION_PERCENT = 0.15
# NAB caps the probationary period at 15% of 5000 rows, so long files are not mostly unscored.
PROBATION_CAP_ROWS = 5000


@dataclass(frozen=True)
class CostMatrix:
    """One of NAB's application profiles: the weights of a true positive, a false positive and a missed window."""

    tp: float
    fp: float
    fn: float


def scaled_sigmoid(position: FloatArray) -> FloatArray:
    """NAB's scaled sigmoid, 2*sigmoid(-5x) - 1: about +0.987 at a window's left edge (x = -1), 0 at its right
    edge (x = 0), falling towards -1 after it; -1 beyond x = 3 (a false positive far from any window).
    Written as NAB writes it so per-row scores match its published columns to the last digits."""
    x = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        value = 2.0 * (1.0 / (1.0 + np.exp(-(-5.0 * x)))) - 1.0
    return np.where(x > 3.0, -1.0, value)


MAX_TP = float(scaled_sigmoid(np.array([-1.0]))[0])


def probation_length(rows: int, percent: float = PROBATION_PERCENT) -> int:
    """The number of leading rows NAB leaves unscored: min(floor(15% of the rows), 15% of 5000), as in NAB's
    `getProbationPeriod`; returned as the first scored row index (NAB scores row i when i >= that value)."""
    return math.ceil(min(math.floor(percent * rows), percent * PROBATION_CAP_ROWS))


@dataclass(frozen=True)
class Layout:
    """One file's rows set against its label windows: which rows are scored and which window each row is in."""

    rows: int
    probation: int
    starts: IntArray  # first row of each window (windows with at least one row, in time order)
    ends: IntArray  # last row of each window, inclusive
    window_of: IntArray  # the window a row is in, -1 outside every window
    previous: IntArray  # for a row outside windows, the last window that ended before it, -1 if none

    @property
    def scored_windows(self) -> IntArray:
        """The windows with at least one row after the probationary period (the ones NAB can score)."""
        return np.flatnonzero(self.ends >= self.probation)


def layout(
    timestamps: NDArray[np.datetime64],
    windows: Sequence[tuple[np.datetime64, np.datetime64]],
    percent: float = PROBATION_PERCENT,
) -> Layout:
    """Place label windows (inclusive timestamp limits) on a file's rows, as NAB's labeller does (rows with
    start <= t <= end); a window that covers no row is dropped."""
    rows = len(timestamps)
    starts: list[int] = []
    ends: list[int] = []
    for t1, t2 in sorted(windows):
        s = int(np.searchsorted(timestamps, t1, side="left"))
        e = int(np.searchsorted(timestamps, t2, side="right")) - 1
        if e >= s:
            starts.append(s)
            ends.append(e)
    start_arr = np.array(starts, dtype=np.int64)
    end_arr = np.array(ends, dtype=np.int64)
    window_of = np.full(rows, -1, dtype=np.int64)
    for w, (s, e) in enumerate(zip(starts, ends, strict=True)):
        window_of[s : e + 1] = w
    # The last window whose end is before row i: count of window ends < i, minus one.
    previous = np.searchsorted(end_arr, np.arange(rows), side="left").astype(np.int64) - 1
    previous[window_of >= 0] = -1
    return Layout(rows, probation_length(rows, percent), start_arr, end_arr, window_of, previous)


def row_scores(lay: Layout, cost: CostMatrix) -> FloatArray:
    """What each row would add if it were a detection (NAB's `sweepScore`): inside a window, the scaled sigmoid of
    its position (earliest is worth tp); outside, -fp before any window, else fp times the scaled sigmoid of its
    distance past the preceding window in units of that window's width less one."""
    i = np.arange(lay.rows, dtype=np.float64)
    out = np.empty(lay.rows, dtype=np.float64)
    inside = lay.window_of >= 0
    w = lay.window_of[inside]
    width = (lay.ends[w] - lay.starts[w] + 1).astype(np.float64)
    position = -(lay.ends[w] - i[inside] + 1) / width
    out[inside] = scaled_sigmoid(position) * cost.tp / MAX_TP
    before_any = (~inside) & (lay.previous < 0)
    out[before_any] = -cost.fp
    after = (~inside) & (lay.previous >= 0)
    p = lay.previous[after]
    gap = (i[after] - lay.ends[p]).astype(np.float64)
    denominator = (lay.ends[p] - lay.starts[p]).astype(np.float64)
    # NAB divides by zero after a one-row window; treat such a false positive as far from it.
    with np.errstate(divide="ignore"):
        past = np.where(denominator > 0, gap / np.where(denominator > 0, denominator, 1.0), np.inf)
    out[after] = scaled_sigmoid(past) * cost.fp
    return out


@dataclass(frozen=True)
class FileScore:
    """A file scored at one threshold: NAB's raw score, its row counts, and the per-row `S(t)` column."""

    raw: float
    tp: int
    fp: int
    fn: int
    tn: int
    per_row: FloatArray


def score_file(anomaly: FloatArray, lay: Layout, cost: CostMatrix, threshold: float) -> FileScore:
    """Score one file with detections = rows whose anomaly score >= threshold. The per-row column is laid out as
    NAB's published results are: a window's score (its first detection's, or -fn if missed) at the window's
    first row, each false positive's at its own row, zero elsewhere; the raw score is its sum."""
    detected = np.asarray(anomaly, dtype=np.float64) >= threshold
    detected[: lay.probation] = False
    values = row_scores(lay, cost)
    per_row = np.zeros(lay.rows, dtype=np.float64)
    inside = lay.window_of >= 0
    fp_rows = detected & ~inside
    per_row[fp_rows] = values[fp_rows]
    for w in lay.scored_windows:
        s, e = int(lay.starts[w]), int(lay.ends[w])
        hits = np.flatnonzero(detected[s : e + 1])
        per_row[s] = values[s + hits[0]] if hits.size else -cost.fn
    scored = np.arange(lay.rows) >= lay.probation
    tp = int(np.count_nonzero(detected & inside))
    fp = int(np.count_nonzero(fp_rows))
    fn = int(np.count_nonzero(scored & inside & ~detected))
    tn = int(np.count_nonzero(scored & ~inside & ~detected))
    return FileScore(float(per_row.sum()), tp, fp, fn, tn, per_row)


def normalised(raw: float, windows: int, cost: CostMatrix) -> float:
    """NAB's normalisation over the files scored: the null detector (every window missed, -fn each) scores 0 and
    a perfect one (each window detected at its first row, +tp each) 100."""
    null, perfect = -cost.fn * windows, cost.tp * windows
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0


@dataclass(frozen=True)
class Sweep:
    """Raw corpus score as a function of threshold, from highest threshold to lowest (NAB's optimiser)."""

    thresholds: FloatArray  # +inf first: nothing detected
    raw: FloatArray
    windows: int

    @property
    def best(self) -> tuple[float, float]:
        """The threshold with the highest raw score and that score; on ties the higher threshold, as NAB's
        stable sort keeps it."""
        k = int(np.argmax(self.raw))
        return float(self.thresholds[k]), float(self.raw[k])


def sweep(files: Sequence[tuple[FloatArray, Layout]], cost: CostMatrix) -> Sweep:
    """NAB's threshold sweep over several files at once: rows sorted by anomaly score, falling; each row turned
    into a detection adds its false-positive score, or raises its window to the best (earliest) detection so
    far; the raw score is recorded after all rows of equal score. Vectorised: a cumulative sum of increments,
    the in-window increments taken from a running maximum per window."""
    scores: list[FloatArray] = []
    values: list[FloatArray] = []
    window_ids: list[IntArray] = []
    offset = 0
    for anomaly, lay in files:
        keep = slice(lay.probation, lay.rows)
        scores.append(np.asarray(anomaly, dtype=np.float64)[keep])
        values.append(row_scores(lay, cost)[keep])
        w = lay.window_of[keep].copy()
        w[w >= 0] += offset
        window_ids.append(w)
        offset += len(lay.starts)
    windows = sum(len(lay.scored_windows) for _, lay in files)
    a = np.concatenate(scores) if scores else np.empty(0)
    v = np.concatenate(values) if values else np.empty(0)
    g = np.concatenate(window_ids) if window_ids else np.empty(0, dtype=np.int64)
    order = np.argsort(-a, kind="stable")
    a, v, g = a[order], v[order], g[order]
    increment = np.where(g < 0, v, 0.0)
    grouped = np.argsort(g, kind="stable")  # rows of each window together, still in falling-score order
    bounds = np.flatnonzero(np.diff(g[grouped])) + 1
    for segment in np.split(grouped, bounds):
        if segment.size == 0 or g[segment[0]] < 0:
            continue
        running = np.maximum.accumulate(np.concatenate(([-cost.fn], v[segment])))
        increment[segment] = np.diff(running)
    total = -cost.fn * windows + np.cumsum(increment)
    last_of_run = np.flatnonzero(np.append(a[1:] != a[:-1], True)) if a.size else np.empty(0, dtype=np.int64)
    thresholds = np.concatenate(([np.inf], a[last_of_run]))
    raw = np.concatenate(([-cost.fn * windows], total[last_of_run]))
    return Sweep(thresholds, raw, windows)


@dataclass(frozen=True)
class Events:
    """Event-level counts for one or more files (see `events`)."""

    alarms: int
    true_alarms: int
    windows: int
    detected: int
    delay_rows: tuple[float, ...]
    delay_minutes: tuple[float, ...]

    def __add__(self, other: Events) -> Events:
        return Events(
            self.alarms + other.alarms,
            self.true_alarms + other.true_alarms,
            self.windows + other.windows,
            self.detected + other.detected,
            self.delay_rows + other.delay_rows,
            self.delay_minutes + other.delay_minutes,
        )

    @property
    def precision(self) -> float:
        return self.true_alarms / self.alarms if self.alarms else 0.0

    @property
    def recall(self) -> float:
        return self.detected / self.windows if self.windows else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def mean_delay_rows(self) -> float:
        return float(np.mean(self.delay_rows)) if self.delay_rows else math.nan

    @property
    def mean_delay_minutes(self) -> float:
        return float(np.mean(self.delay_minutes)) if self.delay_minutes else math.nan


NO_EVENTS = Events(0, 0, 0, 0, (), ())


def events(anomaly: FloatArray, lay: Layout, timestamps: NDArray[np.datetime64], threshold: float) -> Events:
    """Event-level precision, recall and detection delay, with NO point adjustment, over the scored rows (after
    the probationary period):

    - an alarm event is a maximal run of consecutive rows whose anomaly score is >= threshold;
    - a true alarm event is one that overlaps a label window (shares at least one row with it);
    - a window is detected when at least one alarm event overlaps it;
    - precision = true alarm events / all alarm events; recall = detected windows / scored windows;
    - the delay of a detected window is from its first row to the first alarmed row inside it, in rows and in
      minutes (0 when an alarm event already running at the window's start carries into it).

    A window's rows are not credited as detected merely because one row of it is (no point adjustment), and
    a long alarm counts once, however many rows it covers."""
    on = np.asarray(anomaly, dtype=np.float64) >= threshold
    on[: lay.probation] = False
    edges = np.diff(np.concatenate(([0], on.astype(np.int8), [0])))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1) - 1
    inside = lay.window_of >= 0
    # A run overlaps a window iff some row of it is inside one: count inside rows per run by prefix sums.
    prefix = np.concatenate(([0], np.cumsum(inside & on)))
    true_alarms = int(np.count_nonzero(prefix[run_ends + 1] - prefix[run_starts] > 0))
    delays_rows: list[float] = []
    delays_minutes: list[float] = []
    scored = lay.scored_windows
    for w in scored:
        s, e = int(lay.starts[w]), int(lay.ends[w])
        hits = np.flatnonzero(on[s : e + 1])
        if hits.size:
            first = s + int(hits[0])
            delays_rows.append(float(first - s))
            delays_minutes.append(float((timestamps[first] - timestamps[s]) / np.timedelta64(1, "m")))
    return Events(len(run_starts), true_alarms, len(scored), len(delays_rows), tuple(delays_rows),
                  tuple(delays_minutes))
