"""The cloud outbox inside the store: batches cut with their readings, acknowledged rows deleted, the bound kept by
evicting the oldest telemetry (counted and announced), and nothing lost across a crash or a failed write."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.outbox import OutboxReader, OutboxSettings
from gateway.readings import Reading
from gateway.settings import StoreSection
from gateway.store import Store, StoreError
from gateway.twin import Twin


def settings(**overrides: float) -> OutboxSettings:
    base: dict[str, float] = {"batch_readings": 100, "delay_s": 0.0, "max_bytes": 10**9, "max_age_s": 10**9}
    base.update(overrides)
    return OutboxSettings("gw", int(base["batch_readings"]), base["delay_s"], int(base["max_bytes"]),
                          base["max_age_s"])


def readings(n: int, start: float = 1_800_000_000.0, asset: str = "amp:1") -> list[Reading]:
    return [Reading(start + i / 1000, asset, "temp_c", float(i)) for i in range(n)]


def rows(store: Store) -> list[tuple[int, str, bytes]]:
    return [(i, k, p) for i, k, _, p in OutboxReader(str(store.path)).read(0, 10**6, 10**12)]


def seqs(payloads: list[bytes]) -> list[int]:
    return [r[0] for p in payloads for r in orjson.loads(p)["readings"]]


@contextlib.contextmanager
def full_disk(store: Store) -> Iterator[None]:
    """SQLite's own "disk is full", at the real seam: the file may not grow."""
    assert store._conn is not None
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages}")
    try:
        yield
    finally:
        store._conn.execute("PRAGMA max_page_count=1073741823")


def crash(store: Store) -> None:
    """Abandon a store as kill -9 would: no close, nothing written after the last commit."""
    store._executor.shutdown(wait=True)
    assert store._conn is not None
    store._conn.close()
    os.close(store._lock_file or -1)


async def opened(path: Path, **overrides: float) -> tuple[Store, Twin]:
    twin = Twin("gw", "hall")
    store = Store(path, StoreSection(), outbox=settings(**overrides))
    await store.open(twin)
    return store, twin


async def test_batches_are_cut_with_their_readings_in_order_with_stable_ids(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    assert store.outbox is not None
    store.outbox.online = True
    store.add_telemetry(readings(250))
    await store.flush(twin)
    found = rows(store)
    docs = [orjson.loads(p) for _, _, p in found]
    assert [d["first_seq"] for d in docs] == [1, 101, 201]
    assert [len(d["readings"]) for d in docs] == [100, 100, 50]
    assert docs[0]["fields"] == ["seq", "ts", "asset", "metric", "value"]
    assert docs[0]["readings"][0] == [1, 1_800_000_000.0, "amp:1", "temp_c", 0.0]
    assert docs[0]["batch_id"].endswith(":1-100") and docs[2]["batch_id"].endswith(":201-250")
    assert store.outbox.stats.readings == 250 and store.outbox.stats.batches == 3
    assert store.outbox_ready.is_set()
    await store.close(twin)


async def test_offline_a_batch_waits_until_it_is_full(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    store.add_telemetry(readings(150))
    await store.flush(twin)
    assert seqs([p for _, _, p in rows(store)]) == list(range(1, 101))  # 50 wait for more
    store.add_telemetry(readings(60))
    await store.flush(twin)
    assert seqs([p for _, _, p in rows(store)]) == list(range(1, 201))
    await store.close(twin)


async def test_acknowledged_rows_leave_and_events_keep_their_place(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    assert store.outbox is not None
    store.outbox.online = True
    store.add_telemetry(readings(100))
    store.add_event(b'{"event_id":"e1","kind":"test"}')
    store.add_telemetry(readings(100))  # same flush: telemetry is written first
    await store.flush(twin)
    found = rows(store)
    assert [k for _, k, _ in found] == ["telemetry", "telemetry", "event"]
    store.ack_outbox([found[0][0], found[2][0]])
    await store.flush(twin)
    assert [i for i, _, _ in rows(store)] == [found[1][0]]
    assert (store.outbox.stats.batches, store.outbox.stats.events) == (1, 0)
    await store.close(twin)


async def test_ids_are_never_reused_once_the_outbox_has_emptied(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    assert store.outbox is not None
    store.outbox.online = True
    store.add_telemetry(readings(100))
    await store.flush(twin)
    first = rows(store)[0][0]
    store.ack_outbox([first])
    await store.flush(twin)
    await store.close(twin)
    store, twin = await opened(tmp_path)
    store.add_telemetry(readings(100))
    await store.flush(twin)
    assert rows(store)[0][0] > first
    await store.close(twin)


async def test_readings_committed_but_not_yet_batched_are_batched_after_a_crash(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    store.add_telemetry(readings(150))  # offline: 50 wait in memory for their batch
    await store.flush(twin)
    crash(store)
    store, twin = await opened(tmp_path, batch_readings=1000)
    assert store.outbox is not None
    store.outbox.online = True
    await store.flush(twin)
    assert seqs([p for _, _, p in rows(store)]) == list(range(1, 151))
    await store.close(twin)


async def test_a_failed_write_loses_nothing_from_the_outbox(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    assert store.outbox is not None
    store.outbox.online = True
    store.add_telemetry(readings(50))
    await store.flush(twin)  # 50 wait for their batch
    store.add_telemetry(readings(5000))
    with full_disk(store), pytest.raises(StoreError):
        await store.flush(twin)
    await store.flush(twin)
    payloads = [p for _, _, p in rows(store)]
    assert seqs(payloads) == list(range(1, 5051)) and store.outbox.stats.readings == 5050
    await store.close(twin)


async def test_at_the_byte_bound_the_oldest_telemetry_is_evicted_counted_and_announced(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path, max_bytes=20_000)
    assert store.outbox is not None
    store.add_event(b'{"event_id":"e1","kind":"alert"}')
    store.add_telemetry(readings(2100))  # about 200 kB of batches
    await store.flush(twin)  # the bounds are kept after the commit
    s = store.outbox.stats
    assert s.bytes <= 20_000 and s.evicted_readings > 0 and s.events == 1
    left = rows(store)
    assert [k for _, k, _ in left].count("event") == 1  # events go only when no telemetry is left
    kept = seqs([p for _, k, p in left if k == "telemetry"])
    assert kept == list(range(kept[0], 2101)) and kept[0] == s.evicted_readings + 1
    # Offline the tally waits; once online, it becomes an event after what is waiting.
    store.outbox.online = True
    await store.flush(twin)
    last = orjson.loads(rows(store)[-1][2])
    assert last["kind"] == "outbox_evicted" and last["readings"] == s.evicted_readings
    assert last["first_seq"] == 1 and last["last_seq"] == s.evicted_readings and last["by_bytes"] == s.evicted_readings
    await store.close(twin)


async def test_a_flood_of_events_with_no_telemetry_left_evicts_the_oldest_events_counted(tmp_path: Path) -> None:
    """Events from outside (effects fired, alerts) while offline: the outbox holds its bound whatever arrives,
    telemetry first, then the oldest events, each counted in the tally."""
    store, twin = await opened(tmp_path, max_bytes=20_000)
    assert store.outbox is not None
    store.add_telemetry(readings(200))  # two batches
    for i in range(400):  # about 40 kB of events
        store.add_event(b'{"event_id":"e%04d","kind":"effect_fired","pad":"%s"}' % (i, b"x" * 60))
    await store.flush(twin)
    s = store.outbox.stats
    assert s.bytes <= 20_000 and s.readings == 0 and 0 < s.events < 400 and s.evicted_events == 400 - s.events
    kept = [orjson.loads(p)["event_id"] for _, k, p in rows(store) if k == "event"]
    assert kept == [f"e{i:04d}" for i in range(400 - s.events, 400)]  # the newest
    store.outbox.online = True
    await store.flush(twin)
    last = orjson.loads(rows(store)[-1][2])
    assert last["kind"] == "outbox_evicted" and last["events"] == s.evicted_events and last["readings"] == 200
    await store.close(twin)


async def test_telemetry_older_than_the_age_bound_is_evicted_but_not_what_is_in_flight(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path, max_age_s=60)
    assert store.outbox is not None
    store._last_retention = time.monotonic()  # no bounds kept on this first commit
    store.add_telemetry(readings(300, start=1_000.0))  # long ago
    await store.flush(twin)
    store.outbox_in_flight = rows(store)[0][0]  # the drain sent the first batch
    store._last_retention = 0.0
    store.add_telemetry(readings(100))
    await store.flush(twin)
    left = rows(store)
    assert seqs([p for _, _, p in left]) == list(range(1, 101)) + list(range(301, 401))
    assert store.outbox.stats.evicted_readings == 200
    await store.close(twin)


async def test_without_a_cloud_nothing_is_queued_and_the_position_is_forgotten(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    store.add_telemetry(readings(100))
    await store.flush(twin)
    await store.close(twin)
    twin = Twin("gw", "hall")
    plain = Store(tmp_path, StoreSection())
    await plain.open(twin)
    plain.add_telemetry(readings(500))
    plain.add_event(b"{}")
    await plain.flush(twin)
    await plain.close(twin)
    store, twin = await opened(tmp_path)  # the cloud is back: what was queued is still there, nothing else
    assert seqs([p for _, _, p in rows(store)]) == list(range(1, 101))
    await store.close(twin)


async def test_a_schema_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "gateway.db")
    conn.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('schema', '1');"
                       "CREATE TABLE outbox (id INTEGER PRIMARY KEY, kind TEXT, topic TEXT, payload BLOB,"
                       " created_at FLOAT);")
    conn.close()
    store, twin = await opened(tmp_path)
    store.add_event(b"{}")
    await store.flush(twin)
    assert [k for _, k, _ in rows(store)] == ["event"]
    await store.close(twin)


async def test_a_corrupt_outbox_is_detected_at_start_and_said_with_what_to_do(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    store.add_telemetry(readings(300))
    await store.flush(twin)
    await store.close(twin)
    path = tmp_path / "gateway.db"
    with sqlite3.connect(path) as db:
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with path.open("r+b") as f:  # the outbox's first page overwritten, as a failing SD card might
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)
    with pytest.raises(StoreError, match=r"gateway.db is corrupt \(.*malformed.*\): stop the gateway and move the "
                                         r"file aside .* or rescue it with `sqlite3 gateway.db .recover`"):
        await opened(tmp_path)


async def test_a_locked_store_is_detected_at_start_and_said_with_what_to_do(tmp_path: Path) -> None:
    store, twin = await opened(tmp_path)
    await store.close(twin)
    holder = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a shell or a backup holding the write lock
    try:
        with pytest.raises(StoreError, match=r"gateway.db is locked by another program \(database is locked\): "
                                             r"close whatever holds it"):
            await opened(tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
