"""The data directory's disk, and the store in it: room for the store to reach its bound, and a file SQLite finds
whole (`PRAGMA quick_check`, read-only) of a schema this gateway knows."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

from gateway.box.check import Box, Finding, ok, problem, skipped, warn
from gateway.database import SCHEMA_VERSION

MB = 2**20
WAL_MB = 16  # the write-ahead log after a checkpoint (journal_size_limit), on top of store.max_mb
SPARE_MB = 256  # beside the store at its bound: the journal, a version installed by an update
CHECK_S = 4.0  # quick_check stops here on a large store (it reads every page: minutes for gigabytes on a card)
STORE = "gateway.db"


def _files(data_dir: Path) -> list[Path]:
    return [data_dir / f"{STORE}{suffix}" for suffix in ("", "-wal", "-shm")]


def _closed(directory: Path) -> Finding | None:
    """Skipped when this user cannot look into the data directory (0750, the gateway's user's)."""
    if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
        return skipped(f"{directory} is closed to this user (uid {os.geteuid()}): run doctor as root")
    return None


def disk(box: Box) -> list[Finding]:
    assert box.config is not None
    cfg = box.config
    directory = cfg.data_dir
    if (closed := _closed(directory)) is not None:
        return [closed]
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    used = sum(p.stat().st_size for p in _files(directory) if p.exists())
    growth = max(0, int((cfg.store.max_mb + WAL_MB) * MB) - used)
    figures = {"free_bytes": usage.free, "store_bytes": used, "store_bound_bytes": int(cfg.store.max_mb * MB)}
    where = f"the file system of {directory}"
    if usage.free < growth:
        fits = max(0, (usage.free + used) // MB - WAL_MB - SPARE_MB)
        return [problem(f"the store may grow by {growth / MB:,.0f} MB to its bound (store.max_mb = "
                        f"{cfg.store.max_mb:g}), but {where} has {usage.free / MB:,.0f} MB free: the disk would fill "
                        "first, and then nothing more is written",
                        f"lower store.max_mb to {fits:,} or less (what fits, with {SPARE_MB} MB to spare), or make "
                        f"room on {where}", **figures)]
    if usage.free - growth < SPARE_MB * MB:
        return [warn(f"{where} has {usage.free / MB:,.0f} MB free; with the store at its bound "
                     f"({cfg.store.max_mb:g} MB) less than {SPARE_MB} MB would be left for logs and updates",
                     f"lower store.max_mb, or make room on {where}", **figures)]
    return [ok(f"{usage.free / MB:,.0f} MB free in {directory}; the store uses {used / MB:,.1f} MB of its "
               f"{cfg.store.max_mb:g} MB", **figures)]


def store(box: Box) -> list[Finding]:
    assert box.config is not None
    path = box.config.data_dir / STORE
    if (closed := _closed(path.parent)) is not None:
        return [closed]
    if not path.exists():
        return [ok(f"no store yet at {path}: the gateway makes it at its first start")]
    fix = (f"stop the gateway (systemctl stop venue-gateway) and move {path} and its -wal and -shm files aside: a "
           f"new store is made at start and the drivers fill the twin again (history and the outbox stay in the "
           f"old file: sqlite3 {path} .recover > rescued.sql saves what it can)")
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=box.timeout_s)
    except sqlite3.Error as exc:
        return [problem(f"the store {path} cannot be opened: {exc}", f"is {path.parent} readable by this user? "
                                                                     "Run doctor as root")]
    try:
        deadline = time.monotonic() + CHECK_S
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            found = [row[0] for row in connection.execute("PRAGMA quick_check(5)")]
            whole = True
        except sqlite3.OperationalError as exc:
            if "interrupt" not in str(exc):
                raise
            found, whole = [], False
        connection.set_progress_handler(None, 0)
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.DatabaseError as exc:
        return [problem(f"the store {path} is corrupt: {exc}", fix)]
    finally:
        connection.close()
    size = path.stat().st_size / MB
    if found and found != ["ok"]:
        return [problem(f"the store {path} is corrupt: {'; '.join(found)}", fix)]
    if row is None:
        return [problem(f"{path} is not a store of this gateway (no schema in its meta table)", fix)]
    schema = int(row[0])
    if schema > SCHEMA_VERSION:
        return [problem(f"the store {path} has schema {schema}, written by a newer gateway than this one (which "
                        f"knows {SCHEMA_VERSION}): it will not start on it",
                        "run the version that wrote it again, or put back the copy of the store kept from before "
                        "the newer version's first start", schema=schema)]
    checked = "no error found" if whole else f"no error in the part {CHECK_S:g} s could read (of {size:,.0f} MB)"
    later = f" (upgraded to {SCHEMA_VERSION} at the next start)" if schema < SCHEMA_VERSION else ""
    return [ok(f"{path}: {checked}, schema {schema}{later}", schema=schema, checked_whole=whole)]
