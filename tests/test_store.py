"""The store: the twin restored, versions never reused, telemetry kept within its bounds, errors said plainly."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from gateway.database import BULK_NICE
from gateway.readings import Ingest, Reading
from gateway.settings import StoreSection
from gateway.store import VERSION_BLOCK, Store, StoreError
from gateway.twin import Twin, TwinFrozen
from tests.conftest import ROOT, with_tmpfs


def twin() -> Twin:
    return Twin("gw", "hall")


async def test_the_twin_comes_back_after_a_clean_close_at_the_same_version(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(t)
    assert t.version == 0
    t.declare("amp:1", "amplifier", "stage", "sim")
    t.report("amp:1", {"temperature_c": 41.5, "label": "left"})
    t.patch_desired("amp:1", {"enabled": False})
    await store.close(t)

    again = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(again)
    assert again.version == 3 and again.floor == 3
    asset = again.get("amp:1")
    assert asset is not None
    assert (asset.kind, asset.zone, asset.owner) == ("amplifier", "stage", "sim")
    assert asset.reported == {"temperature_c": 41.5, "label": "left"} and asset.desired == {"enabled": False}
    await store.close(again)


async def test_a_state_an_older_version_stored_that_cannot_be_encoded_is_dropped_and_the_rest_served(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An older version let a desired patch 254 deep in and wrote it: restored as it was, the snapshot could never
    be encoded again (500 on GET /api/v1/twin, the cloud's twin sync failing at each connect). The bad state is
    dropped (its row rewritten) with a log line; the rest of the twin, the asset's other state included, serves."""
    t = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(t)
    t.declare("amp:1", "amplifier", "stage", "sim")
    t.report("amp:1", {"temperature_c": 41.5})
    t.declare("amp:2", "amplifier", "stage", "sim")
    t.patch_desired("amp:2", {"enabled": False})
    await store.close(t)
    poison = '{"a":' * 254 + "1" + "}" * 254
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        db.execute("UPDATE assets SET desired = ? WHERE id = 'amp:1'", (poison,))
        db.execute("UPDATE assets SET reported = ? WHERE id = 'amp:2'", ('{"a":' * 1100 + "1" + "}" * 1100,))
    db.close()

    again = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(again)
    snapshot = orjson.loads(again.snapshot_json())["assets"]
    assert snapshot["amp:1"]["desired"] == {} and snapshot["amp:1"]["reported"] == {"temperature_c": 41.5}
    assert snapshot["amp:2"]["reported"] == {} and snapshot["amp:2"]["desired"] == {"enabled": False}
    dropped = [r.getMessage() for r in caplog.records if "cannot be held by the twin" in r.getMessage()]
    assert len(dropped) == 2 and "desired state of amp:1" in dropped[0], dropped
    again.patch_desired("amp:1", {"enabled": True})  # and it changes, and is stored, as any other
    await store.close(again)
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        assert orjson.loads(db.execute("SELECT desired FROM assets WHERE id = 'amp:1'").fetchone()[0]) == {
            "enabled": True}
        assert orjson.loads(db.execute("SELECT reported FROM assets WHERE id = 'amp:2'").fetchone()[0]) == {}
    db.close()


async def test_after_a_crash_versions_jump_past_any_that_was_shown(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(t)
    for i in range(10):
        t.report("a", {"v": i})
    await store.flush(t)
    t.report("a", {"v": 99})  # shown to a client, never written: the process dies here
    shown = t.version
    store._executor.shutdown(wait=True)  # abandon it without closing, as kill -9 would
    assert store._conn is not None
    store._conn.close()
    os.close(store._lock_file or -1)

    again = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(again)
    assert again.version >= VERSION_BLOCK > shown
    asset = again.get("a")
    assert asset is not None and asset.reported == {"v": 9}  # what was committed
    await store.close(again)


async def test_telemetry_is_committed_and_acknowledged_by_sequence(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(t)
    ingest = Ingest(t, store)
    now = time.time()
    ingest.publish([Reading(now + i, f"amp:{i % 4}", "current_a", float(i)) for i in range(1000)], owner="sim")
    seq = await store.flush(t)
    assert seq == store.stats.committed_seq == 1000
    await store.close(t)
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        rows = db.execute("SELECT s.asset, s.metric, t.value FROM telemetry t JOIN series s ON s.id = t.series "
                          "ORDER BY t.rowid").fetchall()
    assert len(rows) == 1000
    assert rows[5] == ("amp:1", "current_a", 5.0)


async def test_old_telemetry_is_evicted_by_age(tmp_path: Path) -> None:
    now = time.time()
    t = twin()
    store = Store(tmp_path, StoreSection(telemetry_retention_hours=1.0))
    await store.open(t)
    store.add_telemetry([Reading(now - 7200 + i, "a", "v", 1.0) for i in range(100)])
    store.add_telemetry([Reading(now - 60 + i, "a", "v", 2.0) for i in range(50)])
    await store.flush(t)  # the first commit also runs the bounds
    assert store.stats.evicted_rows == 100
    await store.close(t)
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        assert db.execute("SELECT count(*), min(value) FROM telemetry").fetchone() == (50, 2.0)


async def test_the_database_stays_under_its_size_bound(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection(max_mb=8))
    await store.open(t)
    for _batch in range(30):
        store.add_telemetry([Reading(time.time(), f"amp:{i % 50}", f"m{i % 5}", float(i)) for i in range(20_000)])
        store._last_retention = 0.0  # run the bound after every batch rather than every 5 s
        await store.flush(t)
    assert store.stats.evicted_rows > 0
    assert store.stats.used_bytes <= 8 * 1024 * 1024
    size = (tmp_path / "gateway.db").stat().st_size
    assert size < 10 * 1024 * 1024, size  # freed pages are reused: the file stays near the bound
    await store.close(t)


async def test_a_writer_that_falls_behind_drops_the_oldest_pending_and_counts(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection(max_pending_rows=1000))
    await store.open(t)
    store.add_telemetry([Reading(time.time(), "a", "v", float(i)) for i in range(1500)])
    assert store.stats.dropped_rows == 500
    await store.flush(t)
    await store.close(t)
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        assert db.execute("SELECT min(value), count(*) FROM telemetry").fetchone() == (500.0, 1000)


async def test_a_full_disk_is_reported_and_nothing_is_lost_once_there_is_room(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(t)
    await store.flush(t)
    assert store._conn is not None
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk is full", at the real seam
    store.add_telemetry([Reading(time.time(), f"a{i}", "v", float(i)) for i in range(5000)])
    with pytest.raises(StoreError, match="database or disk is full"):
        await store.flush(t)
    assert store.stats.last_error is not None and store.stats.errors == 1
    store.add_telemetry([Reading(time.time(), "late", "v", 1.0)])
    store._conn.execute("PRAGMA max_page_count=1073741823")
    await store.flush(t)
    assert store.stats.last_error is None
    await store.close(t)
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        assert db.execute("SELECT count(*) FROM telemetry").fetchone() == (5001,)


async def test_a_long_failure_keeps_the_newest_readings_within_the_bound(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection(max_pending_rows=1000))
    await store.open(t)
    assert store._conn is not None
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages}")
    for n in range(3):
        store.add_telemetry([Reading(time.time(), "a", "v", float(n * 1000 + i)) for i in range(1000)])
        with pytest.raises(StoreError):
            await store.flush(t)
    assert store.stats.dropped_rows == 2000
    store._conn.execute("PRAGMA max_page_count=1073741823")
    await store.flush(t)
    await store.close(t)
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        assert db.execute("SELECT min(value), count(*) FROM telemetry").fetchone() == (2000.0, 1000)


async def test_one_gateway_per_data_directory(tmp_path: Path) -> None:
    first = Store(tmp_path, StoreSection())
    await first.open(twin())
    with pytest.raises(StoreError, match="another gateway is running"):
        await Store(tmp_path, StoreSection()).open(twin())
    await first.close(twin())


async def test_a_file_that_is_not_a_database_is_refused_plainly(tmp_path: Path) -> None:
    (tmp_path / "gateway.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"the store .*gateway.db is corrupt \(file is not a database\): stop the "):
        await Store(tmp_path, StoreSection()).open(twin())


async def test_a_data_directory_that_cannot_be_made_is_refused_plainly(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"data directory .*file/data is not usable: Not a directory"):
        await Store(tmp_path / "file" / "data", StoreSection()).open(twin())


def test_a_read_only_data_directory_is_refused_plainly(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    script = ("import asyncio, pathlib\nfrom gateway.store import Store, StoreError\n"
              "from gateway.settings import StoreSection\nfrom gateway.twin import Twin\ntry:\n"
              f"    asyncio.run(Store(pathlib.Path({str(data)!r}), StoreSection()).open(Twin('g', 'v')))\n"
              "except StoreError as e:\n    print(e)\n")
    result = subprocess.run(with_tmpfs(data, "ro", [sys.executable, "-c", script]), capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "is not usable: Read-only file system" in result.stdout, result.stdout + result.stderr


async def test_sequence_numbers_never_go_back_after_eviction(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection(telemetry_retention_hours=1.0))
    await store.open(t)
    store.add_telemetry([Reading(time.time() - 7200, "a", "v", float(i)) for i in range(100)])  # all too old
    assert await store.flush(t) == 100
    store.add_telemetry([Reading(time.time(), "a", "v", 1.0)])
    assert await store.flush(t) == 101
    await store.close(t)


async def test_versions_are_never_handed_out_past_the_durable_reservation(tmp_path: Path) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(t)
    assert t.version_limit == VERSION_BLOCK
    assert store._conn is not None
    store._conn.execute(f"PRAGMA max_page_count={store._conn.execute('PRAGMA page_count').fetchone()[0]}")
    t.restore([], VERSION_BLOCK - 5)  # as if 999,995 changes had gone by while the disk was failing
    t.version_limit = VERSION_BLOCK
    t.report("a", {"v": 1})
    store.add_telemetry([Reading(time.time(), f"a{i}", "v", 1.0) for i in range(5000)])
    with pytest.raises(StoreError):
        await store.flush(t)  # the renewal of the reservation is in this batch, and fails
    with pytest.raises(TwinFrozen):  # ten assets may take twenty versions: more than are reserved
        t.apply_readings([Reading(time.time(), f"x{i}", "v", 1.0) for i in range(10)])
    assert t.version == VERSION_BLOCK - 3 and t.refused_changes == 20 and t.get("x0") is None
    t.report("a", {"v": 2})
    t.report("a", {"v": 3})
    t.report("a", {"v": 4})  # the last three reserved versions
    assert t.frozen and t.version == VERSION_BLOCK
    with pytest.raises(TwinFrozen):
        t.report("a", {"v": 5})
    store._conn.execute("PRAGMA max_page_count=1073741823")
    await store.flush(t)  # the renewed reservation is now on disk
    assert t.version_limit is not None and t.version_limit > VERSION_BLOCK and not t.frozen
    t.report("a", {"v": 6})
    await store.close(t)


async def test_a_failure_after_commit_does_not_write_the_batch_twice(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    t = twin()
    store = Store(tmp_path, StoreSection())
    await store.open(t)

    def broken() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_enforce_bounds", broken)
    store._last_retention = -1e9
    store.add_telemetry([Reading(time.time(), "a", "v", float(i)) for i in range(100)])
    await store.flush(t)
    await store.flush(t)
    await store.close(t)
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        assert db.execute("SELECT count(*) FROM telemetry").fetchone() == (100,)


def test_a_full_disk_at_start_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "full"
    data.mkdir()
    script = ("import asyncio, pathlib\nfrom gateway.store import Store, StoreError\n"
              "from gateway.settings import StoreSection\nfrom gateway.twin import Twin\n"
              f"d = pathlib.Path({str(data)!r})\n"
              "try:\n    open(d / 'filler', 'wb').write(b'x' * (4 * 10**6))\nexcept OSError:\n    pass\n"
              "try:\n    asyncio.run(Store(d, StoreSection()).open(Twin('g', 'v')))\n"
              "except StoreError as e:\n    print('StoreError:', e)\n")
    result = subprocess.run(with_tmpfs(data, "size=64k", [sys.executable, "-c", script]), capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "StoreError:" in result.stdout and "Traceback" not in result.stderr, result.stdout + result.stderr


async def test_the_writer_thread_yields_the_cpu_to_the_loop_and_deletes_without_zeroing_pages(tmp_path: Path) -> None:
    store = Store(tmp_path, StoreSection())
    t = twin()
    await store.open(t)
    loop = asyncio.get_running_loop()
    nice = await loop.run_in_executor(store._executor, lambda: os.getpriority(os.PRIO_PROCESS,
                                                                               threading.get_native_id()))
    assert nice == os.getpriority(os.PRIO_PROCESS, 0) + BULK_NICE or nice == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < nice  # the loop's thread is untouched
    assert store._conn is not None
    assert store._conn.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST: b-tree pages, not the freelist
    await store.close(t)
