"""Probes of a running daemon, shared by the benchmarks: its HTTP API read with a bearer token (its health among
it), the loop-lag histogram of its /metrics and what it says between two scrapes, and a process's CPU time."""

from __future__ import annotations

import math
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class DaemonApi:
    """The daemon's HTTP API at `base` (http://host:port), read as `token`'s holder (None: no token)."""

    base: str
    token: str | None = None
    timeout: float = 5.0

    def get(self, path: str) -> bytes:
        headers = {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
        with urllib.request.urlopen(urllib.request.Request(self.base + path, headers=headers),
                                    timeout=self.timeout) as response:
            body: bytes = response.read()
            return body

    def json(self, path: str) -> Any:
        return orjson.loads(self.get(path))

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = self.json("/api/v1/health")
        return health


def lag_histogram(metrics: bytes) -> dict[float, float]:
    """Cumulative bucket counts of vg_event_loop_lag_seconds, by upper bound."""
    for family in text_string_to_metric_families(metrics.decode()):
        if family.name == "vg_event_loop_lag_seconds":
            return {float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}
    raise LookupError("no vg_event_loop_lag_seconds in /metrics")


def histogram_p99_ms(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """The upper bound of the bucket holding the p99 of the observations in between, and their count."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta[float("inf")]
    return next(le for le, n in delta.items() if n >= 0.99 * total) * 1000, total


def histogram_quantile_ms(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of the observations between two scrapes, interpolated in its bucket as Prometheus does."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta[math.inf]
    if not total:
        return math.nan
    rank, low, below = q * total, 0.0, 0.0
    for le, n in delta.items():
        if n >= rank:
            if le == math.inf or n == below:
                return low * 1000
            return (low + (le - low) * (rank - below) / (n - below)) * 1000
        low, below = le, n
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
