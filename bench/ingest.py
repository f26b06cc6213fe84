"""Ingest: readings/s sustained through Ingest.publish into the Twin and the Store until Store.flush has
committed them all, against a bare sqlite3 executemany loop writing the same rows on the same disk."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import io
import pstats
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.common import Figure, exit_on_signals, figures_table, latency_line, percentile, title
from gateway.readings import Ingest, Reading
from gateway.settings import StoreSection, TwinSection
from gateway.store import Store
from gateway.twin import Twin

if TYPE_CHECKING:
    from gateway.store import _Batch

ASSETS = 10_000
METRICS = ("temperature_c", "current_a", "fan_rpm", "load_ohm")
BATCH = 1_000  # readings per publish, like one driver tick
BARE_COMMIT_ROWS = 50_000  # the bare peer commits per 50,000 rows: the store's own early-flush threshold
# Ingest.publish never pushes back, and the store drops the oldest readings past max_pending_rows. So the
# producer waits (1 ms sleeps) while more than two flushes' worth is handed over but not yet committed: one
# batch being written, the next filling up. The store then commits ~50,000 rows at a time, like the peer.
MAX_BACKLOG = 2 * BARE_COMMIT_ROWS
LAG_INTERVAL_S = 0.01
TARGET_RATE = 50_000.0
TARGET_SHARE = 40.0  # % of the bare sqlite rate

Batches = list[list[Reading]]
Rows = list[tuple[float, int, float]]


def make_batches(total: int, assets: int = ASSETS, seed: int = 1) -> Batches:
    """`total` readings in rounds over every asset x metric (one timestamp per round), cut into batches."""
    rng = np.random.default_rng(seed)
    pairs = [(f"amp:{a:05d}", m) for a in range(assets) for m in METRICS]
    out: Batches = []
    base = time.time() - 86_400
    for r in range(-(-total // len(pairs))):
        values = rng.normal(50.0, 10.0, len(pairs)).round(3).tolist()
        readings = [Reading(base + r, a, m, v) for (a, m), v in zip(pairs, values, strict=True)]
        out += [readings[i:i + BATCH] for i in range(0, len(readings), BATCH)]
    return out[:total // BATCH]


class ProfiledStore(Store):
    """The real store, with its writer thread's commits under a profiler (cProfile sees one thread only)."""

    profile = cProfile.Profile()

    def _write(self, batch: _Batch) -> None:
        self.profile.enable()
        try:
            super()._write(batch)
        finally:
            self.profile.disable()


@dataclass
class GatewayRun:
    seconds: float
    publish_seconds: float  # loop time spent inside Ingest.publish
    commits: int
    rows: int
    dropped: int
    waits: int  # 1 ms waits of the producer for the writer to catch up
    lag: list[float]


async def _sample_lag(out: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_INTERVAL_S
        await asyncio.sleep(LAG_INTERVAL_S)
        out.append(max(0.0, loop.time() - due))


async def run_gateway(warmup: Batches, batches: Batches, data_dir: Path, store_cls: type[Store] = Store) -> GatewayRun:
    twin = Twin("bench", "bench", change_log=TwinSection().change_log)
    store = store_cls(data_dir, StoreSection())
    ingest = Ingest(twin, store)
    await store.open(twin)
    loop = asyncio.get_running_loop()
    flusher = loop.create_task(store.run(twin))
    try:
        for asset in dict.fromkeys(r.asset for b in warmup for r in b):
            twin.declare(asset, "amplifier", "stage", "bench")
        for batch in warmup:  # creates every series and asset row: startup cost, not the sustained rate
            ingest.publish(batch, "bench")
            await asyncio.sleep(0)
        await store.flush(twin)
        stats = store.stats
        rows0, commits0, dropped0 = stats.committed_rows, stats.commits, stats.dropped_rows
        lag: list[float] = []
        sampler = loop.create_task(_sample_lag(lag))
        in_publish, waits = 0.0, 0
        start = time.perf_counter()
        for batch in batches:
            t = time.perf_counter()
            ingest.publish(batch, "bench")
            in_publish += time.perf_counter() - t
            await asyncio.sleep(0)
            while ingest.readings_total - stats.committed_rows - stats.dropped_rows > MAX_BACKLOG:
                waits += 1
                await asyncio.sleep(0.001)
        await store.flush(twin)
        seconds = time.perf_counter() - start
        sampler.cancel()
        return GatewayRun(seconds, in_publish, stats.commits - commits0, stats.committed_rows - rows0,
                          stats.dropped_rows - dropped0, waits, lag)
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await store.close(twin)


def bare_rows(warmup: Batches, batches: Batches) -> Rows:
    """The rows the store writes: series ids numbered in order of first appearance, as the store does."""
    ids: dict[tuple[str, str], int] = {}
    for r in (r for b in warmup for r in b):
        ids.setdefault((r.asset, r.metric), len(ids) + 1)
    return [(r.ts, ids[r.asset, r.metric], r.value) for b in batches for r in b]


def run_bare(rows: Rows, path: Path, commit_rows: int = BARE_COMMIT_ROWS) -> float:
    """Seconds for executemany + COMMIT per `commit_rows` rows, same table and pragmas as the store."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "journal_size_limit=16777216"):
            conn.execute(f"PRAGMA {pragma}")
        # The store's table (sqlite-utils spells FLOAT as REAL: the same affinity).
        conn.execute("CREATE TABLE telemetry (ts FLOAT NOT NULL, series INTEGER NOT NULL, value FLOAT)")
        start = time.perf_counter()
        for i in range(0, len(rows), commit_rows):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO telemetry(ts, series, value) VALUES (?, ?, ?)", rows[i:i + commit_rows])
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _print_profile(label: str, profile: cProfile.Profile) -> None:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(12)
    text = out.getvalue()
    print(f"--- cProfile, {label} (sorted by own time):\n{text[text.find('   ncalls'):].rstrip()}")


def run(total: int = 2_000_000, profile: bool = False) -> list[Figure]:
    title(f"Ingest: {total:,} readings over {ASSETS:,} assets x {len(METRICS)} metrics, batches of {BATCH:,}")
    warmup = make_batches(ASSETS * len(METRICS), seed=0)
    batches = make_batches(total)
    n = len(batches) * BATCH
    gc.collect()
    gc.freeze()  # the prepared readings are the bench's, not the gateway's: keep them out of GC passes
    try:
        with tempfile.TemporaryDirectory(prefix="vg-bench-ingest-") as tmp:
            loop_profile = cProfile.Profile()
            if profile:
                loop_profile.enable()
            gw = asyncio.run(run_gateway(warmup, batches, Path(tmp) / "gateway", ProfiledStore if profile else Store))
            loop_profile.disable()
            rows = bare_rows(warmup, batches)
            bare_s = run_bare(rows, Path(tmp) / "bare.db")
            del rows
    finally:
        gc.unfreeze()
    rate, bare_rate = n / gw.seconds, n / bare_s
    share = 100 * rate / bare_rate
    settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(StoreSection()).items())
    print(f"gateway  Ingest.publish -> Twin + Store with StoreSection() defaults ({settings}),"
          f" producer backlog <= {MAX_BACKLOG:,}, until Store.flush confirmed:\n"
          f"         {rate:,.0f} readings/s  ({n:,} in {gw.seconds:.2f} s; {gw.rows:,} rows in {gw.commits} commits,"
          f" {gw.rows / max(gw.commits, 1):,.0f} rows/commit; {gw.dropped:,} dropped; loop busy in publish"
          f" {gw.publish_seconds:.2f} s; producer waited {gw.waits:,} x 1 ms for the writer)")
    print(f"bare     sqlite3 executemany, same table, WAL + synchronous=FULL, one commit per "
          f"{BARE_COMMIT_ROWS:,} rows:\n         {bare_rate:,.0f} rows/s  ({n:,} in {bare_s:.2f} s)")
    print(f"ratio    gateway / bare = {share:.1f} %  (target >= {TARGET_SHARE:.0f} %)")
    print(latency_line(f"loop lag during ingest ({LAG_INTERVAL_S * 1000:.0f} ms timer)", gw.lag))
    if gw.rows != n:
        print(f"WARNING: {n - gw.rows:,} readings were not committed")
    if profile:
        _print_profile("event-loop thread (asyncio.run)", loop_profile)
        _print_profile("store writer thread (Store._write)", ProfiledStore.profile)
    return [
        Figure("ingest readings/s", rate, "/s", TARGET_RATE, "higher", bare_rate, "bare sqlite"),
        Figure("ingest, % of bare sqlite rate", share, "%", TARGET_SHARE, "higher"),
        Figure("ingest loop lag p99", percentile(gw.lag, 99) * 1000, "ms"),
    ]


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--readings", type=int, default=2_000_000, help="readings to ingest (default 2,000,000)")
    parser.add_argument("--profile", action="store_true", help="cProfile the event loop and the writer thread")
    args = parser.parse_args()
    print(figures_table(run(args.readings, args.profile)))


if __name__ == "__main__":
    main()
