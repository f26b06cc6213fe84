"""The cloud outbox: telemetry batches and events waiting for the broker, in the store's own database.

A batch is cut and encoded in the same transaction that commits its readings, so what the store has
acknowledged is in the outbox too, and a crash in between loses nothing. A row leaves only when the broker has
acknowledged it. The drain then only reads blobs and publishes them: a backlog of a million readings costs the
box almost nothing to send. Each batch's id is its store and sequence range, the same on every resend, so a
consumer drops the duplicates that at-least-once delivery allows.

At the bound (bytes or age) the oldest telemetry is evicted and counted; the tally waits in the database and
becomes an event once the link is back. Events go only when no telemetry is left to evict and the bytes are still
over the bound (a flood of them from outside while offline), oldest first and counted the same way: the box holds
its bound whatever arrives.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.readings import Reading

log = logging.getLogger(__name__)

# Offline, a batch is cut only when full (or this old): a backlog is then made of large batches, cheap to drain.
OFFLINE_DELAY_S = 10.0
FIELDS = ["seq", "ts", "asset", "metric", "value"]


@dataclass(frozen=True)
class OutboxSettings:
    gateway_id: str
    batch_readings: int
    delay_s: float  # online: how long a reading waits for its batch to fill
    max_bytes: int
    max_age_s: float


@dataclass
class OutboxStats:
    batches: int = 0  # telemetry batches waiting
    readings: int = 0
    events: int = 0
    bytes: int = 0  # payload bytes waiting, telemetry and events
    oldest_ts: float | None = None  # the oldest waiting reading's time
    evicted_readings: int = 0  # since the start of this process
    evicted_batches: int = 0
    evicted_events: int = 0


def new_store_id() -> str:
    return uuid.uuid4().hex[:12]


def event_payload(gateway_id: str, kind: str, doc: dict[str, Any], at: float) -> bytes:
    from gateway.twin import rfc3339

    return orjson.dumps({"event_id": uuid.uuid4().hex, "gateway_id": gateway_id, "kind": kind, "at": rfc3339(at),
                         **doc})


class Outbox:
    """The writer thread's side: every method runs inside a transaction the store opened."""

    def __init__(self, settings: OutboxSettings, store_id: str) -> None:
        self.settings = settings
        self.store_id = store_id
        self.stats = OutboxStats()
        self.online = False  # set by the link: online, batches are cut by delay_s, offline only when full
        self.stopping = False  # set by the link as it stops: every pending reading is due at once, to be sent
        self._pending: list[Reading] = []
        self._pending_seq = 0  # the first pending reading's sequence number
        self._pending_since = 0.0  # monotonic time the first pending reading arrived
        self._through = 0  # the last sequence number cut into a batch (meta 'outbox_seq')
        self.tally = False  # evictions not yet announced (meta 'outbox_evicted')

    def save(self) -> tuple[Any, ...]:
        """What a failed transaction must put back (see restore)."""
        s = self.stats
        return (list(self._pending), self._pending_seq, self._pending_since, self._through, self.tally,
                (s.batches, s.readings, s.events, s.bytes, s.oldest_ts, s.evicted_readings, s.evicted_batches,
                 s.evicted_events))

    def restore(self, saved: tuple[Any, ...]) -> None:
        self._pending, self._pending_seq, self._pending_since, self._through, self.tally, counts = saved
        s = self.stats
        (s.batches, s.readings, s.events, s.bytes, s.oldest_ts, s.evicted_readings, s.evicted_batches,
         s.evicted_events) = counts

    # -- start -----------------------------------------------------------------------------------------
    def open(self, conn: sqlite3.Connection, committed_seq: int) -> None:
        """Count what waits; batch again the readings committed but not yet cut when the last run stopped."""
        row = conn.execute("SELECT value FROM meta WHERE key='outbox_seq'").fetchone()
        self._through = int(row[0]) if row else committed_seq  # new outbox: history stays local (HTTP backfill)
        self.tally = conn.execute("SELECT 1 FROM meta WHERE key='outbox_evicted'").fetchone() is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                "SELECT t.rowid, t.ts, s.asset, s.metric, t.value FROM telemetry t JOIN series s ON s.id = t.series"
                " WHERE t.rowid > ? ORDER BY t.rowid", (self._through,)).fetchall()
            if rows:
                log.info("outbox: %d readings committed before the last stop are batched again", len(rows))
            start = 0
            for i in range(1, len(rows) + 1):  # contiguous runs: retention may have taken the oldest
                if i == len(rows) or rows[i][0] != rows[i - 1][0] + 1:
                    self.add(conn, [Reading(ts, a, m, v) for _, ts, a, m, v in rows[start:i]], rows[start][0])
                    start = i
            self._through = max(self._through, committed_seq - len(self._pending))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('outbox_seq', ?)", (str(self._through),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._count(conn)

    def _count(self, conn: sqlite3.Connection) -> None:
        s = self.stats
        s.batches, s.readings, tel_bytes, s.oldest_ts = conn.execute(
            "SELECT count(*), coalesce(sum(rows), 0), coalesce(sum(bytes), 0), min(created_at)"
            " FROM outbox WHERE kind = 'telemetry'").fetchone()
        s.events, event_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM outbox WHERE kind = 'event'").fetchone()
        s.bytes = tel_bytes + event_bytes

    # -- writing (inside the store's transaction) -------------------------------------------------------
    def add(self, conn: sqlite3.Connection, readings: Sequence[Reading], first_seq: int) -> int:
        """Readings just inserted with sequence numbers from `first_seq`; returns the batches cut."""
        if not self._pending:
            self._pending_seq = first_seq
            self._pending_since = time.monotonic()
        elif first_seq != self._pending_seq + len(self._pending):  # a gap: never merge across it
            self.cut(conn, force=True)
            self._pending_seq, self._pending_since = first_seq, time.monotonic()
        self._pending.extend(readings)
        return self.cut(conn, force=False)

    def due(self) -> bool:
        """Pending readings have waited their delay: the store should write even with nothing new."""
        delay = 0.0 if self.stopping else self.settings.delay_s if self.online else OFFLINE_DELAY_S
        return bool(self._pending) and time.monotonic() - self._pending_since >= delay

    def cut(self, conn: sqlite3.Connection, *, force: bool) -> int:
        size = self.settings.batch_readings
        cut = 0
        while len(self._pending) >= size or (self._pending and (force or self.due())):
            chunk, self._pending = self._pending[:size], self._pending[size:]
            first = self._pending_seq
            last = first + len(chunk) - 1
            payload = orjson.dumps({
                "batch_id": f"{self.store_id}:{first}-{last}", "gateway_id": self.settings.gateway_id,
                "first_seq": first, "fields": FIELDS,
                "readings": [(first + i, r[0], r[1], r[2], r[3]) for i, r in enumerate(chunk)]})
            conn.execute("INSERT INTO outbox(kind, rows, bytes, first_seq, created_at, payload) VALUES "
                         "('telemetry', ?, ?, ?, ?, ?)", (len(chunk), len(payload), first, chunk[0][0], payload))
            s = self.stats
            s.batches += 1
            s.readings += len(chunk)
            s.bytes += len(payload)
            s.oldest_ts = chunk[0][0] if s.oldest_ts is None else min(s.oldest_ts, chunk[0][0])
            self._pending_seq = last + 1
            self._through = last
            cut += 1
        if cut:
            if self._pending:  # what is left waits from now
                self._pending_since = time.monotonic()
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('outbox_seq', ?)", (str(self._through),))
        return cut

    def add_events(self, conn: sqlite3.Connection, payloads: Sequence[bytes]) -> None:
        now = time.time()
        conn.executemany("INSERT INTO outbox(kind, rows, bytes, created_at, payload) VALUES ('event', 0, ?, ?, ?)",
                         [(len(p), now, p) for p in payloads])
        self.stats.events += len(payloads)
        self.stats.bytes += sum(len(p) for p in payloads)

    def ack(self, conn: sqlite3.Connection, ids: Sequence[int]) -> None:
        """The broker has these: delete them."""
        rows = conn.execute(
            f"SELECT kind, rows, bytes FROM outbox WHERE id IN ({','.join('?' * len(ids))})",
            ids).fetchall() if len(ids) < 900 else None
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        if rows is None:
            self._count(conn)
            return
        s = self.stats
        for kind, count, size in rows:
            s.bytes -= size
            if kind == "event":
                s.events -= 1
            else:
                s.batches -= 1
                s.readings -= count
        if s.batches == 0:
            s.oldest_ts = None
        elif rows and any(kind == "telemetry" for kind, _, _ in rows):  # batches are cut in time order
            s.oldest_ts = conn.execute(
                "SELECT created_at FROM outbox WHERE kind = 'telemetry' ORDER BY id LIMIT 1").fetchone()[0]

    def announce(self, conn: sqlite3.Connection) -> None:
        """Online: turn the eviction tally into an event."""
        row = conn.execute("SELECT value FROM meta WHERE key='outbox_evicted'").fetchone()
        if row is None:
            return
        tally = orjson.loads(row[0])
        self.add_events(conn, [event_payload(self.settings.gateway_id, "outbox_evicted", tally, time.time())])
        conn.execute("DELETE FROM meta WHERE key='outbox_evicted'")
        self.tally = False
        log.warning("outbox: %d readings in %d batches and %d events were evicted while offline; announced",
                    tally["readings"], tally["batches"], tally.get("events", 0))

    def evict(self, conn: sqlite3.Connection, now: float, in_flight: int) -> int:
        """Evict the oldest telemetry past the age bound, then past the byte bound, then (none left) the oldest
        events past the byte bound, except rows up to id `in_flight` (sent, their acknowledgement due). Returns
        the readings evicted."""
        readings = self._evict_telemetry(conn, now, in_flight)
        over = self.stats.bytes - self.settings.max_bytes
        if over > 0:
            self._evict_events(conn, now, in_flight, over)
        return readings

    def _tally(self, conn: sqlite3.Connection, now: float, first_seq: int | None) -> dict[str, Any]:
        old = conn.execute("SELECT value FROM meta WHERE key='outbox_evicted'").fetchone()
        tally: dict[str, Any] = orjson.loads(old[0]) if old else {
            "readings": 0, "batches": 0, "first_seq": first_seq, "by_age": 0, "by_bytes": 0, "since": now}
        tally.setdefault("events", 0)
        if tally["first_seq"] is None:
            tally["first_seq"] = first_seq
        tally["until"] = now
        return tally

    def _save_tally(self, conn: sqlite3.Connection, tally: dict[str, Any]) -> None:
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('outbox_evicted', ?)", (orjson.dumps(tally),))
        self.tally = True
        self._count(conn)

    def _evict_events(self, conn: sqlite3.Connection, now: float, in_flight: int, over: int) -> None:
        if conn.execute("SELECT 1 FROM outbox WHERE kind = 'telemetry' AND id > ? LIMIT 1",
                        (in_flight,)).fetchone() is not None:
            return  # telemetry first
        evicted: list[int] = []
        for event_id, size in conn.execute(
                "SELECT id, bytes FROM outbox WHERE kind = 'event' AND id > ? ORDER BY id", (in_flight,)):
            if over <= 0:
                break
            evicted.append(event_id)
            over -= size
        if not evicted:
            return
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in evicted])
        tally = self._tally(conn, now, None)
        tally["events"] += len(evicted)
        self._save_tally(conn, tally)
        self.stats.evicted_events += len(evicted)
        log.warning("outbox over its bound with no telemetry left: %d events evicted (%d so far)", len(evicted),
                    self.stats.evicted_events)

    def _evict_telemetry(self, conn: sqlite3.Connection, now: float, in_flight: int) -> int:
        s = self.stats
        cutoff = now - self.settings.max_age_s
        over = s.bytes - self.settings.max_bytes
        if over <= 0 and (s.oldest_ts is None or s.oldest_ts >= cutoff):
            return 0
        evicted: list[tuple[int, int, int, int, str]] = []
        for row in conn.execute(
                "SELECT id, rows, bytes, first_seq, created_at FROM outbox WHERE kind = 'telemetry' "
                "AND id > ? ORDER BY id", (in_flight,)):
            reason = "age" if row[4] < cutoff else "bytes" if over > 0 else None
            if reason is None:
                break
            evicted.append((row[0], row[1], row[2], row[3], reason))
            over -= row[2]
        if not evicted:
            return 0
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(e[0],) for e in evicted])
        readings = sum(e[1] for e in evicted)
        tally = self._tally(conn, now, evicted[0][3])
        tally["readings"] += readings
        tally["batches"] += len(evicted)
        tally["last_seq"] = evicted[-1][3] + evicted[-1][1] - 1
        tally["by_age"] += sum(e[1] for e in evicted if e[4] == "age")
        tally["by_bytes"] += sum(e[1] for e in evicted if e[4] == "bytes")
        self._save_tally(conn, tally)
        s.evicted_readings += readings
        s.evicted_batches += len(evicted)
        log.warning("outbox over its bound: %d readings in %d batches evicted (%d so far)", readings, len(evicted),
                    s.evicted_readings)
        return readings


class OutboxReader:
    """The drain's side: a read-only connection of its own, used from one thread at a time."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def read(self, after: int, max_rows: int, max_bytes: int) -> list[tuple[int, str, int, bytes]]:
        """Rows after id `after`, oldest first, at most `max_rows` and about `max_bytes`: (id, kind, readings,
        payload)."""
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=5,
                                         check_same_thread=False)
        out: list[tuple[int, str, int, bytes]] = []
        size = 0
        for row in self._conn.execute("SELECT id, kind, rows, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                      (after, max_rows)):
            out.append(row)
            size += len(row[3])
            if size >= max_bytes:
                break
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
