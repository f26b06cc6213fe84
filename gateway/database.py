"""The store's database file: the schema (created, or upgraded in place), its pragmas, and what to say when it
cannot be opened."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlite_utils

from gateway.outbox import new_store_id

BULK_NICE = 10  # a thread of database work runs at this niceness: the loop (the show) comes first for the CPU

# 2: the outbox table as gateway.outbox writes it (schema 1 had an outbox table that nothing wrote).
SCHEMA_VERSION = 2


class StoreError(Exception):
    """A store problem a person must act on (disk, permissions, another instance); said plainly."""


def worker(name: str) -> ThreadPoolExecutor:
    """One thread for a connection's database work, at a lower CPU priority than the loop: when a drain or a
    large commit keeps it busy on a loaded box, the scheduler lets the loop (frames, OSC) run first."""
    return ThreadPoolExecutor(1, thread_name_prefix=name, initializer=_lower_priority)


def _lower_priority() -> None:
    if sys.platform == "linux":  # there a thread has a niceness of its own (elsewhere it would be the process's)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)


def open_database(path: Path, synchronous: str) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("PRAGMA journal_size_limit=16777216")
        conn.execute("PRAGMA busy_timeout=2000")
        # Some builds (Debian's among them) zero every freed page by default: deleting an acknowledged outbox
        # batch then writes its ~18 overflow pages of zeros to the WAL, ten times the work of the delete itself,
        # and a drain's acknowledgements would keep the writer thread busy. FAST still purges b-tree pages.
        conn.execute("PRAGMA secure_delete=FAST")
        db = sqlite_utils.Database(conn)
        with db.atomic():
            db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
            db.table("assets").create(
                {"id": str, "kind": str, "zone": str, "owner": str, "reported": bytes, "desired": bytes,
                 "version": int, "updated_at": float},
                pk="id", not_null={"kind", "reported", "desired", "version"}, if_not_exists=True)
            db.table("series").create({"id": int, "asset": str, "metric": str}, pk="id",
                                not_null={"asset", "metric"}, if_not_exists=True)
            db.table("series").create_index(["asset", "metric"], unique=True, if_not_exists=True)
            # rowid is the telemetry sequence number: what "acknowledged up to" and paging refer to.
            db.table("telemetry").create({"ts": float, "series": int, "value": float},
                                   not_null={"ts", "series"}, if_not_exists=True)
            # Sound-level compliance, a row per zone and minute, kept for the authorities longer than telemetry.
            conn.execute("CREATE TABLE IF NOT EXISTS compliance_log (ts REAL NOT NULL, zone TEXT NOT NULL,"
                         " laeq_1min REAL, laeq_15min REAL, laeq_60min REAL, lmax REAL, limit_label TEXT NOT NULL,"
                         " limit_db REAL NOT NULL, state TEXT NOT NULL, projected REAL)")
            conn.execute("CREATE INDEX IF NOT EXISTS compliance_log_ts ON compliance_log(ts)")
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise StoreError(f"{path} was written by a newer gateway (schema {row[0]}, this one knows "
                                 f"{SCHEMA_VERSION}); upgrade the gateway or move the file aside")
            if row is not None and int(row[0]) < 2:
                conn.execute("DROP TABLE IF EXISTS outbox")
            # AUTOINCREMENT: an id is never reused, even once the table has emptied, so the drain's position
            # stays valid. The payload is the last column: the others are read without its overflow pages.
            conn.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
                         " rows INTEGER NOT NULL, bytes INTEGER NOT NULL, first_seq INTEGER, created_at REAL NOT NULL,"
                         " payload BLOB NOT NULL)")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (new_store_id(),))
        return conn
    except sqlite3.DatabaseError as exc:
        raise StoreError(advice(path, exc)) from None
    except OSError as exc:
        raise StoreError(f"cannot create the data directory {path.parent}: {exc.strerror}") from None


def advice(path: Path, exc: sqlite3.Error) -> str:
    """What went wrong opening the database, and what to do about it."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"the store {path} is locked by another program ({text}): close whatever holds it (a sqlite3 "
                "shell, a backup) and start again")
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return (f"the store {path} is corrupt ({text}): stop the gateway and move the file aside (a new one is "
                f"made; the twin is filled again by the drivers), or rescue it with `sqlite3 {path.name} .recover`")
    return f"cannot open the store {path}: {text} (is the directory writable and the disk not full?)"

