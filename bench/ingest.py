"""Ingest: readings/s sustained through Ingest.publish into the Twin and the Store until Store.flush has
committed them all, against a bare sqlite3 executemany loop writing the same rows on the same disk."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import Figure, figures_table, latency_line, percentile, title
from gateway.config import StoreSection, TwinSection
from gateway.readings import Ingest, Reading
from gateway.store import Store
from gateway.twin import Twin

ASSETS = 10_000
METRICS = ("temperature_c", "current_a", "fan_rpm", "load_ohm")
BATCH = 1_000  # readings per publish, like one driver tick
BARE_COMMIT_ROWS = 50_000  # the store's own early-flush threshold, which a saturated producer always hits
# Ingest.publish never pushes back, and the store drops the oldest readings past max_pending_rows. The producer
# here waits while more than this many readings are handed over but not yet committed, so nothing is dropped
# and the rate measured is the one the writer sustains.
MAX_BACKLOG = 800000
LAG_INTERVAL_S = 0.01
TARGET_RATE = 50_000.0
TARGET_SHARE = 40.0  # % of the bare sqlite rate

Batches = list[list[Reading]]


def make_batches(total: int, assets: int = ASSETS, seed: int = 1) -> Batches:
    """`total` readings in rounds over every asset x metric (one timestamp per round), cut into batches."""
    rng = np.random.default_rng(seed)
    pairs = [(f"amp:{a:05d}", m) for a in range(assets) for m in METRICS]
    out: Batches = []
    base = time.time() - 86_400
    for r in range(-(-total // len(pairs))):
        values = rng.normal(50.0, 10.0, len(pairs)).round(3).tolist()
        ts = base + r
        readings = [Reading(ts, a, m, v) for (a, m), v in zip(pairs, values, strict=True)]
        out += [readings[i:i + BATCH] for i in range(0, len(readings), BATCH)]
    return out[:total // BATCH]


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


async def run_gateway(warmup: Batches, batches: Batches, data_dir: Path) -> GatewayRun:
    twin = Twin("bench", "bench", change_log=TwinSection().change_log)
    store = Store(data_dir, StoreSection())
    ingest = Ingest(twin, store)
    await store.open(twin)
    loop = asyncio.get_running_loop()
    flusher = loop.create_task(store.run(twin))
    try:
        for a in dict.fromkeys(r.asset for b in warmup for r in b):
            twin.declare(a, "amplifier", "stage", "bench")
        for batch in warmup:  # creates every series and asset row: startup cost, not the sustained rate
            ingest.publish(batch, "bench")
            await asyncio.sleep(0)
        await store.flush(twin)
        rows0, commits0, dropped0 = store.stats.committed_rows, store.stats.commits, store.stats.dropped_rows
        lag: list[float] = []
        sampler = loop.create_task(_sample_lag(lag))
        in_publish = 0.0
        start = time.perf_counter()
        stats, waits = store.stats, 0
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
        s = store.stats
        return GatewayRun(seconds, in_publish, s.commits - commits0, s.committed_rows - rows0,
                          s.dropped_rows - dropped0, waits, lag)
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await store.close(twin)


def bare_rows(warmup: Batches, batches: Batches) -> list[tuple[float, int, float]]:
    """The rows the store writes: series ids numbered in order of first appearance, as the store does."""
    ids: dict[tuple[str, str], int] = {}
    for r in (r for b in warmup for r in b):
        ids.setdefault((r.asset, r.metric), len(ids) + 1)
    return [(r.ts, ids[r.asset, r.metric], r.value) for b in batches for r in b]


def run_bare(rows: list[tuple[float, int, float]], path: Path, commit_rows: int = BARE_COMMIT_ROWS) -> float:
    """Seconds for executemany + COMMIT per `commit_rows` rows, same schema and pragmas as the store."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "journal_size_limit=16777216"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TABLE telemetry (ts FLOAT NOT NULL, series INTEGER NOT NULL, value FLOAT)")
        start = time.perf_counter()
        for i in range(0, len(rows), commit_rows):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO telemetry(ts, series, value) VALUES (?, ?, ?)", rows[i:i + commit_rows])
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def run(total: int = 2_000_000, profile: bool = False) -> list[Figure]:
    title(f"Ingest: {total:,} readings over {ASSETS:,} assets x {len(METRICS)} metrics, batches of {BATCH:,}")
    warmup = make_batches(ASSETS * len(METRICS), seed=0)
    batches = make_batches(total)
    gc.collect()
    gc.freeze()  # the prepared readings are the bench's, not the gateway's: keep them out of GC passes
    try:
        with tempfile.TemporaryDirectory(prefix="vg-bench-ingest-") as tmp:
            profiler = cProfile.Profile() if profile else None
            if profiler:
                profiler.enable()
            gw = asyncio.run(run_gateway(warmup, batches, Path(tmp) / "gateway"))
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            rows = bare_rows(warmup, batches)
            bare_s = run_bare(rows, Path(tmp) / "bare.db")
            del rows
    finally:
        gc.unfreeze()
    n = len(batches) * BATCH
    rate, bare_rate = n / gw.seconds, n / bare_s
    share = 100 * rate / bare_rate
    print(f"gateway  Ingest.publish -> Twin + Store (StoreSection() defaults: synchronous=full, flush every 100 ms"
          f" or at 50,000 pending), until Store.flush confirmed:\n"
          f"         {rate:,.0f} readings/s  ({n:,} in {gw.seconds:.2f} s; {gw.rows:,} rows in {gw.commits} commits,"
          f" {gw.rows / max(gw.commits, 1):,.0f} rows/commit; {gw.dropped:,} dropped;"
          f" loop busy in publish {gw.publish_seconds:.2f} s; producer waited {gw.waits:,} x 1 ms for the writer)")
    print(f"bare     sqlite3 executemany, same table, WAL + synchronous=FULL, one commit per "
          f"{BARE_COMMIT_ROWS:,} rows:\n         {bare_rate:,.0f} rows/s  ({n:,} in {bare_s:.2f} s)")
    print(f"ratio    gateway / bare = {share:.1f} %  (target >= {TARGET_SHARE:.0f} %)")
    print(latency_line(f"loop lag during ingest ({LAG_INTERVAL_S * 1000:.0f} ms timer)", gw.lag))
    if gw.rows != n:
        print(f"WARNING: {n - gw.rows:,} readings were not committed")
    return [
        Figure("ingest readings/s", rate, "/s", TARGET_RATE, "higher", bare_rate, "bare sqlite"),
        Figure("ingest, share of bare sqlite", share, "%", TARGET_SHARE, "higher"),
        Figure("ingest loop lag p99", percentile(gw.lag, 99) * 1000, "ms"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--readings", type=int, default=2_000_000, help="readings to ingest (default 2,000,000)")
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway run (loop thread only)")
    args = parser.parse_args()
    print(figures_table(run(args.readings, args.profile)))


if __name__ == "__main__":
    main()
