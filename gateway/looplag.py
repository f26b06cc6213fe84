"""Event-loop lag, measured all the time: how late a timer fires past its due time on the running loop."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Histogram

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LoopLag:
    def __init__(self, registry: CollectorRegistry, interval_s: float = 0.05, window: int = 1200) -> None:
        self.interval = interval_s
        self._recent: deque[float] = deque(maxlen=window)
        self._histogram = Histogram("vg_event_loop_lag_seconds", "How late loop timers fire", buckets=BUCKETS,
                                    registry=registry)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - due)
            self._recent.append(lag)
            self._histogram.observe(lag)

    def summary(self) -> dict[str, float]:
        """p50, p99 and max over the recent window, in milliseconds."""
        return summarize(self._recent)


def summarize(seconds: Iterable[float]) -> dict[str, float]:
    """p50, p99 and max of durations given in seconds, in milliseconds, with the sample count."""
    ordered = sorted(seconds)
    n = len(ordered)
    if not n:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "samples": 0}
    return {"p50_ms": round(ordered[n // 2] * 1000, 3), "p99_ms": round(ordered[min(n - 1, n * 99 // 100)] * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3), "samples": n}
