"""Reading the store's history: telemetry paged by sequence number, and the sound-level compliance log. Each call
opens a read-only connection of its own, from a thread of the caller's (never the loop): WAL lets it read beside
the store's writer without waiting for it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def _reader(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        yield conn


def read_telemetry(path: Path, since: int, limit: int, asset: str | None = None,
                   metric: str | None = None) -> tuple[list[tuple[int, float, str, str, float]], int | None]:
    """Committed readings after sequence number `since`, oldest first, at most `limit`: (seq, ts, asset, metric,
    value) rows, and the oldest sequence number still kept (None: no telemetry)."""
    where: list[str] = ["t.rowid > ?"]
    args: list[object] = [since]
    for column, value in (("s.asset", asset), ("s.metric", metric)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    with _reader(path) as conn:
        rows = conn.execute(
            "SELECT t.rowid, t.ts, s.asset, s.metric, t.value FROM telemetry t JOIN series s ON s.id = t.series "
            f"WHERE {' AND '.join(where)} ORDER BY t.rowid LIMIT ?", [*args, limit]).fetchall()
        oldest = conn.execute("SELECT min(rowid) FROM telemetry").fetchone()[0]
    return rows, oldest


def read_recent(path: Path, metrics: tuple[str, ...], since_ts: float) -> list[tuple[float, str, str, float]]:
    """Committed readings of `metrics` stamped at `since_ts` or later, in the order they were committed: (ts, asset,
    metric, value). Telemetry has no index on time (it would slow every commit): it is written in time order, so the
    first row of the span is found by a binary search on the sequence number, and the span is read from there."""
    with _reader(path) as conn:
        series = {row[0]: (row[1], row[2]) for row in conn.execute(
            f"SELECT id, asset, metric FROM series WHERE metric IN ({','.join('?' * len(metrics))})", metrics)}
        low, high = conn.execute("SELECT min(rowid), max(rowid) + 1 FROM telemetry").fetchone()
        if not series or low is None:
            return []
        while low < high:  # the first rowid whose reading is stamped at since_ts or later
            middle = (low + high) // 2
            row = conn.execute("SELECT ts FROM telemetry WHERE rowid >= ? ORDER BY rowid LIMIT 1", (middle,)).fetchone()
            if row is None or row[0] >= since_ts:
                high = middle
            else:
                low = middle + 1
        rows = conn.execute(f"SELECT ts, series, value FROM telemetry WHERE rowid >= ? AND ts >= ? AND series IN "
                            f"({','.join('?' * len(series))}) ORDER BY rowid", (low, since_ts, *series)).fetchall()
    return [(ts, *series[series_id], value) for ts, series_id, value in rows]


def read_compliance(path: Path, since: float, until: float, zone: str | None = None, *,
                    after: tuple[float, str] | None = None, limit: int = -1) -> list[tuple[Any, ...]]:
    """Compliance log rows with since <= ts < until, oldest first (by time, then zone); with `after`, only those
    past that (ts, zone), and at most `limit` (-1: all), so that a long span is read a page at a time."""
    where, args = "ts >= ? AND ts < ?", list[object]([since, until])
    if zone is not None:
        where += " AND zone = ?"
        args.append(zone)
    if after is not None:
        where += " AND (ts > ? OR (ts = ? AND zone > ?))"
        args.extend((after[0], after[0], after[1]))
    with _reader(path) as conn:
        return conn.execute(f"SELECT * FROM compliance_log WHERE {where} ORDER BY ts, zone LIMIT ?",
                            [*args, limit]).fetchall()
