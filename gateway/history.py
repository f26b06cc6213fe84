"""Reading the store's history: telemetry paged by sequence number, series reduced for plotting, the venue's last
values at a moment, and the sound-level compliance log. Each call opens a read-only connection of its own, from a
thread of the caller's (never the loop): WAL lets it read beside the store's writer without waiting for it.

Telemetry has no index but its sequence number (an index on series or time would slow every commit: bench.ingest
loses two thirds of its rate to one on (series, ts)). It is written in time order, so a span of time is found as a
span of sequence numbers by a binary search, widened by SLACK_S on each side for readings committed out of order,
and read from there with the span's times as a filter: the cost is the span's readings, of every series."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, NamedTuple


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


def _first_at(conn: sqlite3.Connection, ts: float) -> int:
    """The first sequence number whose reading is stamped at `ts` or later (one past the last when none is)."""
    # (each in a query of its own: SQLite finds a lone min() or max() of the key at once, but scans for two)
    low, high = conn.execute("SELECT (SELECT min(rowid) FROM telemetry), (SELECT max(rowid) FROM telemetry) + 1"
                             ).fetchone()
    if low is None:
        return 0
    while low < high:
        middle = (low + high) // 2
        row = conn.execute("SELECT ts FROM telemetry WHERE rowid >= ? ORDER BY rowid LIMIT 1", (middle,)).fetchone()
        if row is None or row[0] >= ts:
            high = middle
        else:
            low = middle + 1
    return int(low)


def read_recent(path: Path, metrics: tuple[str, ...], since_ts: float) -> list[tuple[float, str, str, float]]:
    """Committed readings of `metrics` stamped at `since_ts` or later, in the order they were committed: (ts, asset,
    metric, value)."""
    with _reader(path) as conn:
        series = {row[0]: (row[1], row[2]) for row in conn.execute(
            f"SELECT id, asset, metric FROM series WHERE metric IN ({','.join('?' * len(metrics))})", metrics)}
        if not series:
            return []
        rows = conn.execute(f"SELECT ts, series, value FROM telemetry WHERE rowid >= ? AND ts >= ? AND series IN "
                            f"({','.join('?' * len(series))}) ORDER BY rowid",
                            (_first_at(conn, since_ts), since_ts, *series)).fetchall()
    return [(ts, *series[series_id], value) for ts, series_id, value in rows]


SLACK_S = 60.0  # a reading committed up to this long out of time order is still found in its span
FIRST_LOOK_S = 15.0  # the replay looks this far back first: every series reporting at least this often is found
MAX_IN = 500  # series named in one query's IN list; past it, every series in the span is read


def _span(conn: sqlite3.Connection, since: float, until: float) -> tuple[int, int]:
    """The sequence numbers that hold the readings stamped in [since, until], widened by SLACK_S."""
    return _first_at(conn, since - SLACK_S), _first_at(conn, until + SLACK_S) - 1


def _marks(count: int) -> str:
    return ",".join("?" * count)


class Trace(NamedTuple):
    """A series over a span: `readings` in it (how many); `columns` are [t, min, max, last] per bucket when `reduced`
    (buckets without readings left out), else [t, value] per reading."""

    readings: int
    reduced: bool
    columns: list[list[float]]


def read_series(path: Path, keys: Sequence[tuple[str, str]], since: float, until: float, buckets: int
                ) -> list[Trace]:
    """Each (asset, metric) of `keys` over [since, until): cut into `buckets` of equal length, each bucket's start,
    least, greatest and last (latest committed) value; or, when the series has fewer than 2 * `buckets` readings in
    the span, the readings themselves in time order. Times are to the millisecond (a plot needs no finer). SQLite
    reduces the buckets in one pass over the span; the readings of a series with at most one a bucket are its
    buckets' last ones, and only a series with fewer readings but more than one in some bucket (a short span) is
    read again."""
    step = (until - since) / buckets
    with _reader(path) as conn:
        ids = [conn.execute("SELECT id FROM series WHERE asset = ? AND metric = ?", key).fetchone() for key in keys]
        known = sorted({row[0] for row in ids if row is not None})
        found: dict[int, list[tuple[int, int, float, float, float, float]]] = {i: [] for i in known}
        raw: dict[int, list[tuple[float, float]]] = {}
        if known:
            first, last = _span(conn, since, until)
            # (the series first: SQLite tests the terms in turn, and most readings are of other series)
            where = f"rowid BETWEEN ? AND ? AND series IN ({_marks(len(known))}) AND ts >= ? AND ts < ?"
            args = (first, last, *known, since, until)
            for series, *bucket in conn.execute(
                    "SELECT g.series, g.b, g.n, g.low, g.high, t.value, t.ts FROM (SELECT series, "
                    "min(CAST((ts - ?) / ? AS INTEGER), ?) AS b, count(*) AS n, min(value) AS low, max(value) AS high,"
                    f" max(rowid) AS latest FROM telemetry WHERE {where} GROUP BY series, b) AS g "
                    "JOIN telemetry AS t ON t.rowid = g.latest ORDER BY g.series, g.b",
                    (since, step, buckets - 1, *args)):
                found[series].append(tuple(bucket))
            few = {i: rows for i, rows in found.items() if sum(row[1] for row in rows) < 2 * buckets}
            raw = {i: [(row[5], row[4]) for row in rows] for i, rows in few.items() if all(r[1] == 1 for r in rows)}
            again = [i for i in few if i not in raw]
            if again:
                raw.update((i, []) for i in again)
                for series, ts, value in conn.execute(
                        "SELECT series, ts, value FROM telemetry WHERE rowid BETWEEN ? AND ? AND series IN "
                        f"({_marks(len(again))}) AND ts >= ? AND ts < ? ORDER BY rowid", (first, last, *again, since,
                                                                                         until)):
                    raw[series].append((ts, value))
    out: list[Trace] = []
    for row in ids:
        if row is None:
            out.append(Trace(0, False, [[], []]))
        elif row[0] in raw:
            points = sorted(raw[row[0]], key=lambda point: point[0])
            out.append(Trace(len(points), False, [[round(p[0], 3) for p in points], [p[1] for p in points]]))
        else:
            rows = found[row[0]]
            out.append(Trace(sum(r[1] for r in rows), True, [[round(since + r[0] * step, 3) for r in rows],
                                                              *([r[i] for r in rows] for i in (2, 3, 4))]))
    return out


class Moment(NamedTuple):
    """The venue's history at a moment: asset -> metric -> (ts, value) of its last reading; each zone's compliance
    log row for the minute holding the moment; the first and last reading the store holds (None: none)."""

    values: dict[str, dict[str, tuple[float, float]]]
    compliance: list[tuple[Any, ...]]
    oldest: float | None
    newest: float | None


def read_moment(path: Path, at: float, lookback: float) -> Moment:
    """Each series' last reading stamped in [at - lookback, at]; first among those stamped in the last FIRST_LOOK_S,
    then, for the series not seen there, further back (every series the store has held that did not report in those
    seconds: usually the whole look-back is read once)."""
    values: dict[str, dict[str, tuple[float, float]]] = {}
    with _reader(path) as conn:
        names = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, asset, metric FROM series")}
        ends = conn.execute("SELECT (SELECT ts FROM telemetry ORDER BY rowid LIMIT 1), "
                            "(SELECT ts FROM telemetry ORDER BY rowid DESC LIMIT 1)").fetchone()
        latest: dict[int, tuple[float, float]] = {}
        if ends[0] is not None:
            first, last = _span(conn, at - lookback, at)
            middle = min(max(first, _first_at(conn, at - min(FIRST_LOOK_S, lookback))), last + 1)
            query = ("SELECT series, max(rowid), ts, value FROM telemetry WHERE rowid BETWEEN ? AND ?{} AND ts <= ? "
                     "AND ts >= ? GROUP BY series")
            for series, _, ts, value in conn.execute(query.format(""), (middle, last, at, at - lookback)):
                latest[series] = (ts, value)
            missing = [i for i in names if i not in latest]
            if missing and first < middle:
                only = f" AND series IN ({_marks(len(missing))})" if len(missing) <= MAX_IN else ""
                for series, _, ts, value in conn.execute(query.format(only), (
                        first, middle - 1, *(missing if only else ()), at, at - lookback)):
                    latest[series] = (ts, value)
        compliance = conn.execute("SELECT * FROM compliance_log WHERE ts >= ? AND ts < ? ORDER BY ts, zone",
                                  (at, at + 60)).fetchall()
    for series, (ts, value) in latest.items():
        asset, metric = names[series]
        values.setdefault(asset, {})[metric] = (ts, value)
    first_minute: dict[str, tuple[Any, ...]] = {}
    for row in compliance:
        first_minute.setdefault(row[1], row)
    return Moment(values, list(first_minute.values()), ends[0], ends[1])


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
