"""Energy-equivalent sound levels over rolling windows, and rolling maxima: the arithmetic of compliance.

A meter reports the LAeq of each short interval (a second, typically). The LAeq over a longer window is the
level of the mean sound energy: 10·log10(Σ dtᵢ·10^(Lᵢ/10) / Σ dtᵢ). A window holds the intervals that end
inside it, (now - T, now]; gaps (a meter offline) are not counted as silence, they shorten the covered time.
"""

from __future__ import annotations

import math
from collections import deque

RESUM_EVERY = 4096  # running sums are recomputed exactly (math.fsum) this often, so rounding never accumulates
COMPACT_AT = 8192


def energy(level_db: float) -> float:
    return float(10.0 ** (level_db / 10.0))


def level(mean_energy: float) -> float:
    return 10.0 * math.log10(mean_energy) if mean_energy > 0 else -math.inf


class RollingLeq:
    """Sums of energy·time and time over several windows of the same series of interval levels, O(1) per
    interval: each window keeps a start index into one list of the intervals and running sums."""

    def __init__(self, windows_s: tuple[float, ...]) -> None:
        self.windows_s = windows_s
        self._end: list[float] = []  # each interval's end time
        self._e: list[float] = []  # energy · duration
        self._dt: list[float] = []
        self._start = [0] * len(windows_s)
        self._sum_e = [0.0] * len(windows_s)
        self._sum_dt = [0.0] * len(windows_s)
        self._since_resum = 0
        self.now = -math.inf

    def add(self, end: float, level_db: float, dt: float) -> None:
        """One interval of `dt` seconds at `level_db`, ending at `end` (not before the previous one's end)."""
        e = energy(level_db) * dt
        self._end.append(end)
        self._e.append(e)
        self._dt.append(dt)
        self.now = max(self.now, end)
        for w in range(len(self.windows_s)):
            self._sum_e[w] += e
            self._sum_dt[w] += dt
        self._expire()
        self._since_resum += 1
        if self._since_resum >= RESUM_EVERY:
            self._resum()

    def _expire(self) -> None:
        ends, es, dts = self._end, self._e, self._dt
        for w, span in enumerate(self.windows_s):
            cutoff = self.now - span
            i = self._start[w]
            while i < len(ends) and ends[i] <= cutoff:
                self._sum_e[w] -= es[i]
                self._sum_dt[w] -= dts[i]
                i += 1
            self._start[w] = i
        first = min(self._start)
        if first >= COMPACT_AT:
            del ends[:first], es[:first], dts[:first]
            self._start = [s - first for s in self._start]

    def _resum(self) -> None:
        self._since_resum = 0
        for w, start in enumerate(self._start):
            self._sum_e[w] = math.fsum(self._e[start:])
            self._sum_dt[w] = math.fsum(self._dt[start:])

    def leq(self, w: int) -> float:
        """The LAeq over the covered part of window `w` (-inf with nothing in it)."""
        return level(self._sum_e[w] / self._sum_dt[w]) if self._sum_dt[w] > 0 else -math.inf

    def lower_bound(self, w: int) -> float:
        """The LAeq window `w` will have at least, whatever its uncovered part holds: energy over the full span."""
        return level(self._sum_e[w] / self.windows_s[w])

    def coverage(self, w: int) -> float:
        return min(1.0, self._sum_dt[w] / self.windows_s[w])

    def tail(self, after: float) -> tuple[float, float]:
        """Energy·time and time of the intervals ending after `after` (within the longest window)."""
        i = self._start[self.windows_s.index(max(self.windows_s))]
        ends = self._end
        while i < len(ends) and ends[i] <= after:
            i += 1
        return math.fsum(self._e[i:]), math.fsum(self._dt[i:])


class RollingMax:
    """The maximum over the last `span_s` seconds: a deque of (time, level) kept decreasing, O(1) amortised."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._q: deque[tuple[float, float]] = deque()

    def add(self, ts: float, level_db: float) -> None:
        q = self._q
        while q and q[-1][1] <= level_db:
            q.pop()
        q.append((ts, level_db))
        while q[0][0] <= ts - self.span_s:
            q.popleft()

    def value(self) -> float:
        return self._q[0][1] if self._q else -math.inf
