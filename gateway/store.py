"""The SQLite store: the twin (restored on start), telemetry history under a retention and a size bound, and
the cloud outbox (gateway.outbox); the file itself is gateway.database. The loop hands over batches; one writer
thread commits them, so the loop never waits on disk.

sqlite-utils creates the schema and answers queries; the hot insert path uses the connection's executemany
directly, because building dicts per row (sqlite-utils' insert_all) would cost more than the write itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.database import StoreError as StoreError  # raised by the store: its callers catch it from here
from gateway.database import advice, open_database, worker
from gateway.outbox import Outbox, OutboxSettings
from gateway.readings import Reading
from gateway.settings import StoreSection
from gateway.twin import Asset, Twin, state_problem

log = logging.getLogger(__name__)

# Versions are reserved on disk a block ahead of use, so a restart after a crash never reuses a version
# that a client may have seen. The block is renewed once a tenth of it is used.
VERSION_BLOCK = 1_000_000
RETENTION_EVERY_S = 5.0


_AssetRow = tuple[str, str, str | None, str | None, dict[str, Any], dict[str, Any], int, float]


@dataclass
class _Batch:
    telemetry: list[Reading] = field(default_factory=list)
    # Rows taken on the loop, so the writer never reads an asset the loop is changing. The state dicts in
    # them are never mutated (the twin replaces them), so holding references is enough.
    assets: dict[str, _AssetRow] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    reserve: int | None = None
    events: list[bytes] = field(default_factory=list)  # encoded, for the outbox
    acked: list[int] = field(default_factory=list)  # outbox rows the broker has
    compliance: list[tuple[Any, ...]] = field(default_factory=list)  # rows of the compliance log

    def merge(self, newer: _Batch) -> None:
        self.telemetry += newer.telemetry
        self.compliance += newer.compliance
        self.events += newer.events
        self.acked += newer.acked
        for asset_id in newer.removed:
            self.assets.pop(asset_id, None)
        self.removed = (self.removed - newer.assets.keys()) | newer.removed
        self.assets.update(newer.assets)
        self.reserve = max(self.reserve or 0, newer.reserve or 0) or None


@dataclass
class StoreStats:
    committed_seq: int = 0  # rowid of the last telemetry row committed: what the store has acknowledged
    committed_rows: int = 0
    dropped_rows: int = 0  # readings dropped because the writer fell behind past max_pending_rows
    evicted_rows: int = 0  # old telemetry removed by the retention or size bound
    commits: int = 0
    errors: int = 0
    last_error: str | None = None
    db_bytes: int = 0
    wal_bytes: int = 0
    used_bytes: int = 0
    disk_free_bytes: int = 0


class Store:
    def __init__(self, data_dir: Path, settings: StoreSection, *, clock: Any = time.time,
                 outbox: OutboxSettings | None = None, compliance_retention_s: float = 90 * 86400) -> None:
        self.path = data_dir / "gateway.db"
        self.settings = settings
        self.stats = StoreStats()
        self._outbox_settings = outbox
        self.outbox: Outbox | None = None  # set on open when the cloud is configured
        self.outbox_ready = asyncio.Event()  # set when rows are added to the outbox
        self.outbox_in_flight = 0  # the drain's highest id sent: eviction leaves these to their acknowledgement
        self._events: list[bytes] = []
        self._compliance: list[tuple[Any, ...]] = []
        self._compliance_retention_s = compliance_retention_s
        self._acked: list[int] = []
        self._clock = clock
        self._pending: list[Reading] = []
        self._carry: _Batch | None = None  # a batch that failed to commit, retried with the next one
        self._executor = worker("store-writer")
        self._conn: sqlite3.Connection | None = None
        self._lock_file: int | None = None
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reserved = 0
        self._series: dict[str, dict[str, int]] = {}  # writer thread only
        self._last_retention = 0.0
        self._last_state = 0.0
        self._last_drop_log = -math.inf
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------------------
    async def open(self, twin: Twin) -> None:
        """Open (or create) the database, restore the twin into `twin`, reserve versions ahead."""
        loop = asyncio.get_running_loop()
        assets, version = await loop.run_in_executor(self._executor, self._open)
        twin.restore(assets, version)
        twin.version_limit = self._reserved
        log.info("store %s: restored %d assets at version %d", self.path, len(assets), version)

    def _open(self) -> tuple[list[Asset], int]:
        self._lock()
        try:
            return self._restore()
        except StoreError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(advice(self.path, exc)) from None
        except OSError as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc.strerror}") from None

    def _restore(self) -> tuple[list[Asset], int]:
        conn = self._conn = open_database(self.path, self.settings.synchronous)
        assets = [
            Asset(r[0], r[1], r[2], r[3], reported=self._state(r[0], "reported", r[4]),
                  desired=self._state(r[0], "desired", r[5]), version=r[6], updated_at=r[7] or 0.0)
            for r in conn.execute("SELECT id, kind, zone, owner, reported, desired, version, updated_at FROM assets")
        ]
        row = conn.execute("SELECT value FROM meta WHERE key='version_reserved'").fetchone()
        version = max([int(row[0]) if row else 0, *(a.version for a in assets)])
        self._write_reservation(version + VERSION_BLOCK)
        self._reserved = version + VERSION_BLOCK
        for series_id, asset, metric in conn.execute("SELECT id, asset, metric FROM series"):
            self._series.setdefault(asset, {})[metric] = series_id
        seq = conn.execute("SELECT max(rowid) FROM telemetry").fetchone()[0]
        self.stats.committed_seq = seq or 0
        if self._outbox_settings is not None:
            store_id = conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
            self.outbox = Outbox(self._outbox_settings, store_id)
            self.outbox.open(conn, self.stats.committed_seq)
        else:  # no cloud: readings from now on are not queued, so the position is forgotten
            conn.execute("DELETE FROM meta WHERE key='outbox_seq'")
        self._measure()
        return assets, version

    def _state(self, asset_id: str, column: str, raw: bytes | str) -> dict[str, Any]:
        """An asset's state as stored, or {} (rewritten so) when the twin could not hold it: a value an older
        version let in (nested past what JSON documents carry) would make the snapshot unencodable for good."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            problem: str | None = f"not JSON: {exc}"
        else:
            problem = state_problem(value)
        if problem is None:
            return value  # type: ignore[no-any-return]  # a dict: state_problem says so
        assert self._conn is not None
        self._conn.execute(f"UPDATE assets SET {column} = '{{}}' WHERE id = ?", (asset_id,))
        log.warning("store: the %s state of %s (%d bytes) cannot be held by the twin (%s); it is dropped",
                    column, asset_id, len(raw), problem)
        return {}

    def _lock(self) -> None:
        """One gateway per data directory: a second one would interleave versions."""
        lock_path = self.path.with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"the data directory {self.path.parent} is not usable: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"another gateway is running on {self.path.parent} (it holds {lock_path})") from None
        self._lock_file = fd

    def _write_reservation(self, reserved: int) -> None:
        assert self._conn is not None
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('version_reserved', ?)", (str(reserved),))

    async def close(self, twin: Twin) -> None:
        """Write what is pending, then release the version reservation so a clean restart does not jump."""
        if self._conn is None:
            return
        try:
            try:
                await self.flush(twin)
            except StoreError:
                carry = self._carry
                log.error("closing with %d readings and %d twin assets that could not be written",
                          len(carry.telemetry) if carry else 0, len(carry.assets) if carry else 0)
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close, twin.version)
        finally:
            self._executor.shutdown(wait=False)  # never block the loop on a hung disk

    def _close(self, version: int) -> None:
        conn = self._conn
        assert conn is not None
        try:
            if self._carry is None:  # everything is on disk: the exact version is the next start's version
                self._write_reservation(version)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.error("the store could not be tidied on close (%s); the next start recovers from the journal", exc)
        finally:
            conn.close()
            self._conn = None
            if self._lock_file is not None:
                os.close(self._lock_file)

    # -- the loop's side -------------------------------------------------------------------------------
    def add_telemetry(self, readings: Sequence[Reading]) -> None:
        pending = self._pending
        pending.extend(readings)
        overflow = len(pending) - self.settings.max_pending_rows
        if overflow > 0:
            del pending[:overflow]
            self.stats.dropped_rows += overflow
            now = time.monotonic()
            if now - self._last_drop_log >= 10.0:  # once in a while, not once per batch
                self._last_drop_log = now
                log.warning("store writer is behind: %d readings dropped so far (max_pending_rows=%d)",
                            self.stats.dropped_rows, self.settings.max_pending_rows)
        if len(pending) >= 50_000:
            self._wake.set()

    def add_event(self, payload: bytes) -> None:
        """An encoded event for the cloud: into the outbox with the next write (dropped without a cloud)."""
        if self.outbox is not None:
            self._events.append(payload)
            self._wake.set()

    def add_compliance(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows of the sound-level compliance log, written with the next batch."""
        self._compliance.extend(rows)

    def ack_outbox(self, ids: Sequence[int]) -> None:
        """The broker has acknowledged these outbox rows; they are deleted with the next write."""
        self._acked.extend(ids)

    async def run(self, twin: Twin) -> None:
        """Flush every flush_interval (sooner when a large batch waits), until `stop()`."""
        interval = self.settings.flush_interval_ms / 1000
        state_interval = self.settings.twin_flush_interval_ms / 1000
        backoff = interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()
            if self._stopping:
                break
            now = time.monotonic()
            state = now - self._last_state >= state_interval
            try:
                await self.flush(twin, state=state)
                if state:
                    self._last_state = now
                backoff = interval
            except StoreError:
                backoff = min(backoff * 2, 5.0)
            except Exception:  # a bug must not stop the writes: log it and keep flushing
                log.exception("store flush failed")
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        """End `run` after the flush it may be in; `close` writes what is left."""
        self._stopping = True
        self._wake.set()

    async def flush(self, twin: Twin, *, state: bool = True) -> int:
        """Commit the readings handed over so far and, with `state`, the twin's changed assets; returns the
        acknowledged telemetry sequence number. Twin state is written less often than telemetry: it is the
        latest value of what telemetry already logs, and 10,000 busy assets would otherwise be rewritten ten
        times a second."""
        async with self._flush_lock:
            assets, removed = twin.take_dirty() if state else ([], [])
            rows = {a.id: (a.id, a.kind, a.zone, a.owner, a.reported, a.desired, a.version, a.updated_at)
                    for a in assets}
            batch = _Batch(self._pending, rows, set(removed), events=self._events, acked=self._acked,
                           compliance=self._compliance)
            self._pending, self._events, self._acked, self._compliance = [], [], [], []
            if twin.version > self._reserved - VERSION_BLOCK * 9 // 10:
                batch.reserve = twin.version + VERSION_BLOCK
            if self._carry is not None:
                self._carry.merge(batch)
                batch, self._carry = self._carry, None
                overflow = len(batch.telemetry) - self.settings.max_pending_rows
                if overflow > 0:  # the disk has been failing for long: keep the newest, count the rest
                    del batch.telemetry[:overflow]
                    self.stats.dropped_rows += overflow
            outbox = self.outbox
            if not (batch.telemetry or batch.assets or batch.removed or batch.reserve or batch.events or batch.acked
                    or batch.compliance or (outbox is not None and (outbox.due() or (outbox.online and outbox.tally)))):
                return self.stats.committed_seq
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)
            except sqlite3.Error as exc:
                self._carry = batch
                self.stats.errors += 1
                message = f"store write failed, will retry: {exc}"
                if message != self.stats.last_error:
                    log.error("%s (%s; %d readings waiting)", message, self.path, len(batch.telemetry))
                self.stats.last_error = message
                raise StoreError(message) from None
            self.stats.last_error = None
            if batch.reserve:  # durable now: the twin may hand out versions up to it
                self._reserved = twin.version_limit = batch.reserve
            if outbox is not None and (outbox.stats.batches or outbox.stats.events):
                self.outbox_ready.set()
            return self.stats.committed_seq

    # -- the writer thread -----------------------------------------------------------------------------
    def _series_id(self, asset: str, metric: str) -> int:
        assert self._conn is not None
        self._conn.execute("INSERT OR IGNORE INTO series(asset, metric) VALUES (?, ?)", (asset, metric))
        series_id: int = self._conn.execute(
            "SELECT id FROM series WHERE asset=? AND metric=?", (asset, metric)).fetchone()[0]
        self._series.setdefault(asset, {})[metric] = series_id
        return series_id

    def _write(self, batch: _Batch) -> None:
        conn = self._conn
        assert conn is not None
        seq = self.stats.committed_seq
        outbox = self.outbox
        saved = outbox.save() if outbox is not None else None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch.telemetry:
                series = self._series
                try:  # the common case, every series known: one comprehension, the fastest Python has
                    rows = [(ts, series[a][m], v) for ts, a, m, v in batch.telemetry]
                except KeyError:
                    for _, a, m, _ in batch.telemetry:
                        if m not in series.get(a, ()):
                            self._series_id(a, m)
                    rows = [(ts, series[a][m], v) for ts, a, m, v in batch.telemetry]
                conn.executemany("INSERT INTO telemetry(ts, series, value) VALUES (?, ?, ?)", rows)
                seq = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                if outbox is not None:  # one executemany in one transaction: the rowids are consecutive
                    outbox.add(conn, batch.telemetry, seq - len(rows) + 1)
            elif outbox is not None and outbox.due():
                outbox.cut(conn, force=False)
            if outbox is not None:
                if batch.acked:
                    outbox.ack(conn, batch.acked)
                if batch.events:
                    outbox.add_events(conn, batch.events)
                if outbox.online and outbox.tally:
                    outbox.announce(conn)
            if batch.assets:
                conn.executemany(
                    "INSERT INTO assets VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                    " kind=excluded.kind, zone=excluded.zone, owner=excluded.owner, reported=excluded.reported,"
                    " desired=excluded.desired, version=excluded.version, updated_at=excluded.updated_at",
                    [(i, k, z, o, orjson.dumps(r), orjson.dumps(d), v, u) for i, k, z, o, r, d, v, u in
                     batch.assets.values()])
            if batch.removed:
                conn.executemany("DELETE FROM assets WHERE id=?", [(i,) for i in batch.removed])
            if batch.compliance:
                conn.executemany("INSERT INTO compliance_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch.compliance)
            if batch.reserve:
                self._write_reservation(batch.reserve)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if outbox is not None and saved is not None:
                outbox.restore(saved)
            self._series.clear()  # ids created in the rolled-back transaction are gone
            for series_id, asset, metric in conn.execute("SELECT id, asset, metric FROM series"):
                self._series.setdefault(asset, {})[metric] = series_id
            raise
        if batch.telemetry:
            self.stats.committed_seq = seq
            self.stats.committed_rows += len(batch.telemetry)
        self.stats.commits += 1
        now = time.monotonic()
        if now - self._last_retention >= RETENTION_EVERY_S:
            self._last_retention = now
            try:  # the batch is committed: a failure here must not send it again
                self._enforce_bounds()
                self._measure()
            except (sqlite3.Error, OSError) as exc:
                log.error("store bounds could not be enforced this time: %s", exc)

    def _enforce_bounds(self) -> None:
        """Evict the outbox's oldest telemetry past its bounds; then the oldest telemetry history past the retention
        age, then past the size bound, in short steps."""
        conn = self._conn
        assert conn is not None
        if self.outbox is not None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self.outbox.evict(conn, self._clock(), self.outbox_in_flight)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        conn.execute("DELETE FROM compliance_log WHERE ts < ?", (self._clock() - self._compliance_retention_s,))
        cutoff = self._clock() - self.settings.telemetry_retention_hours * 3600
        oldest = conn.execute("SELECT min(rowid) FROM telemetry").fetchone()[0]
        if oldest is None:
            return
        young = conn.execute("SELECT min(rowid) FROM telemetry WHERE ts >= ?", (cutoff,)).fetchone()[0]
        end = (young if young is not None else self.stats.committed_seq + 1) - 1
        while oldest <= end:
            self._evict(oldest, min(end, oldest + 100_000))
            oldest += 100_001
        max_bytes = self.settings.max_mb * 1024 * 1024
        for _ in range(20):
            if self._used_bytes() <= max_bytes:
                break
            first, last = conn.execute("SELECT min(rowid), max(rowid) FROM telemetry").fetchone()
            if first is None:
                log.warning("store is over its %d MB bound with no telemetry left to evict", self.settings.max_mb)
                break
            self._evict(first, first + max(1000, (last - first) // 20))

    def _evict(self, first: int, last: int) -> None:
        """Delete telemetry rows first..last, always keeping the newest: SQLite gives the next row
        max(rowid) + 1, so keeping it keeps sequence numbers from ever going back."""
        last = min(last, self.stats.committed_seq - 1)
        if last < first:
            return
        assert self._conn is not None
        deleted = self._conn.execute("DELETE FROM telemetry WHERE rowid BETWEEN ? AND ?", (first, last)).rowcount
        self.stats.evicted_rows += deleted

    def _used_bytes(self) -> int:
        assert self._conn is not None
        pages, free, size = (self._conn.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return int((pages - free) * size)

    def _measure(self) -> None:
        s = self.stats
        s.used_bytes = self._used_bytes()
        s.db_bytes = self.path.stat().st_size if self.path.exists() else 0
        wal = self.path.with_name(self.path.name + "-wal")
        s.wal_bytes = wal.stat().st_size if wal.exists() else 0
        vfs = os.statvfs(self.path.parent)
        s.disk_free_bytes = vfs.f_bavail * vfs.f_frsize
