"""The store across an update: backed up with SQLite's online backup (a consistent copy while the running version
writes on) before the new version can migrate it, and put back when a rollback finds its schema changed (a version
refuses a store written by a newer schema)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from gateway.durable import sync_directory

STORE_FILE = "gateway.db"  # in the configuration's data_dir, as gateway.store names it
HEADROOM = 64 * 1024 * 1024  # left free on the disk beyond the backup's size


class BackupError(Exception):
    """The store cannot be backed up (no room, unreadable): the update stops before anything is switched."""


@contextlib.contextmanager
def reading(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store (a write-ahead log SQLite makes beside it to read it is given the store's
    owner by SQLite itself)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def plain(db: Path) -> bool:
    """Whether the store is there as a plain file (BackupError when it is there as anything else: a link planted
    in the service's directory is never read or written through by root)."""
    try:
        st = os.lstat(db)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise BackupError(f"the store {db} is not a plain file (a link?): refused")
    return True


def schema(db: Path) -> int | None:
    """The store's schema version (the `meta` table's), None when there is no store or it has none yet."""
    if not plain(db):
        return None
    try:
        with reading(db) as conn:
            try:
                row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                return None  # no meta table yet
        return int(row[0]) if row is not None else None
    except (sqlite3.Error, ValueError) as exc:
        raise BackupError(f"the store {db} cannot be read ({exc}): refused; repair it or move it aside") from None


def backup(db: Path, dest: Path) -> int:
    """Copy the store to `dest` (made beside it and renamed), mode 0600; the bytes written."""
    partial = dest.with_name(dest.name + ".partial")
    plain(db)
    try:
        with reading(db) as source:
            pages, page_size = (source.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
            free = shutil.disk_usage(dest.parent).free
            if pages * page_size + HEADROOM > free:
                raise BackupError(f"no room to back up the store {db} ({pages * page_size / 1048576:.0f} MB) in "
                                  f"{dest.parent} ({free / 1048576:.0f} MB free): free some space and update again")
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            copy = sqlite3.connect(partial)
            try:
                source.backup(copy)
            finally:
                copy.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the store {db} cannot be backed up: {exc}") from None
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial, dest)
    sync_directory(dest.parent)
    return dest.stat().st_size


def restore(saved: Path, db: Path) -> None:
    """Put the backup back in place of the store (the service stopped): copied beside it with the store's owner and
    mode, the store's write-ahead log removed (it belongs to the file being replaced), then renamed over it. The copy
    is a new file (never through a link the service's user left there), given its owner by its descriptor."""
    st = os.lstat(db) if plain(db) else None
    partial = db.with_name(db.name + ".restore")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, saved.open("rb") as source:
        shutil.copyfileobj(source, out)
        if st is not None:
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, st.st_mode & 0o777)
        out.flush()
        os.fsync(fd)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{db}{suffix}")
    os.replace(partial, db)
    sync_directory(db.parent)
