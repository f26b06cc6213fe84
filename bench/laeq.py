"""Sound-level compliance: the monitor's rolling LAeq (1, 15, 60 min) against a reference computed in numpy on the
same synthetic levels, and how many meter readings a second it folds.

A night of three zones at one reading a second: a show's shape (doors, support, headline, encore), level noise,
and gaps where a meter was away. At every minute the monitor closes, its three levels are compared with numpy's
energy mean over the same window (intervals ending in (t - T, t]); the figure is the largest difference.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.common import Figure, title
from gateway.compliance.monitor import ComplianceMonitor, LogRow
from gateway.compliance.settings import ComplianceSection
from gateway.readings import Reading
from gateway.twin import Twin

ZONES = ("floor", "balcony", "bar")
HOURS = 4.0
T0 = 1_790_000_040.0  # a minute boundary


def synthetic_night(seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reading end times, levels per zone [zone, i], interval lengths [zone, i]) for one reading a second."""
    rng = np.random.default_rng(seed)
    n = int(HOURS * 3600)
    t = np.arange(n, dtype=float)
    shape = np.interp(t, [0, 1800, 3600, 5400, 9000, 12600, n], [72, 88, 96, 90, 102, 105, 80])
    levels = np.stack([shape - 8 * z + rng.normal(0, 2.5, n) for z in range(len(ZONES))])
    step = np.ones((len(ZONES), n))
    for z in range(len(ZONES)):  # a meter away now and then: 5 gaps of 30 s to 5 min each
        for start in rng.integers(0, n - 400, 5):
            step[z, start] += rng.integers(30, 300)
    ends = T0 + np.cumsum(step, axis=1)
    return ends, levels, step


def reference(ends: np.ndarray, levels: np.ndarray, dts: np.ndarray, at: float, span: float) -> float:
    inside = (ends > at - span) & (ends <= at)  # intervals ending inside the window
    return float(10 * np.log10(np.sum(dts[inside] * 10 ** (levels[inside] / 10)) / np.sum(dts[inside])))


def run() -> list[Figure]:
    title(f"LAeq: {len(ZONES)} zones x {HOURS:g} h of 1 s meter intervals through the compliance monitor, "
          "against numpy")
    ends, levels, _ = synthetic_night()
    twin = Twin("bench", "hall")
    for zone in ZONES:
        twin.declare(f"spl:{zone}", "spl_meter", zone, "meter")
    rows: list[LogRow] = []
    alerts: list[Any] = []
    monitor = ComplianceMonitor(ComplianceSection(max_gap_s=2.0), twin, lambda readings: None, rows.extend,
                                lambda *a, **kw: alerts.append(a))
    batches = [[Reading(float(ends[z, i]), f"spl:{zone}", "laeq_db", float(levels[z, i]))
                for z, zone in enumerate(ZONES)] for i in range(ends.shape[1])]
    # Interleaved by time as a gateway sees them: each zone's readings in order, zones merged.
    merged = sorted((r for batch in batches for r in batch), key=lambda r: r.ts)
    began = time.perf_counter()
    for i in range(0, len(merged), 100):
        monitor.observe(merged[i:i + 100])
    elapsed = time.perf_counter() - began
    # The interval each reading stands for, as the monitor counts it: the time since the previous one, unless
    # that is a gap (over max_gap_s), when it is the default second.
    dts = np.diff(ends, axis=1, prepend=ends[:, :1] - 1.0)
    dts = np.where(dts > 2.0, 1.0, dts)
    worst = 0.0
    for at, zone, l1, l15, l60, *_ in rows:
        z = ZONES.index(zone)
        last = float(ends[z][ends[z] <= at].max())  # the windows end with the minute's last interval
        for value, span in ((l1, 60.0), (l15, 900.0), (l60, 3600.0)):
            if value is not None:
                worst = max(worst, abs(value - reference(ends[z], levels[z], dts[z], last, span)))
    rate = len(merged) / elapsed
    print(f"  {len(merged):,} readings in {elapsed:.2f} s: {rate:,.0f} readings/s folded")
    print(f"  {len(rows):,} minute rows; largest difference from numpy over 1, 15 and 60 min windows: {worst:.4f} dB "
          "(the rows round to 0.01 dB)")
    print(f"  alerts raised on the way: {len(alerts)}")
    return [Figure("LAeq: largest difference from numpy", worst, "dB", target=0.1),
            Figure("LAeq: meter readings folded", rate, "/s")]


if __name__ == "__main__":
    run()
