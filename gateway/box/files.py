"""Files written so that a power cut at any moment leaves the old file or the new one, never part of one: a
temporary beside the target, written with its mode and owner from the start, flushed to disk, then renamed (or
linked, where an existing file must never be replaced), and the directory flushed too."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gateway.durable import sync_directory


def _temporary(path: Path, data: bytes, mode: int, gid: int | None) -> Path:
    """`data` in a new file beside `path`, flushed, with `mode` and, as root, owner root and group `gid`."""
    temporary = path.with_name(f".{path.name}.tmp")  # one left by a run cut short is replaced
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)  # never more than its owner's
    try:
        if gid is not None and os.geteuid() == 0:
            os.fchown(fd, 0, gid)
        os.fchmod(fd, mode)  # the group's bits only once the group is the right one
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temporary


def replace(path: Path, data: bytes, mode: int, gid: int | None = None) -> None:
    """Write `path` whole, replacing what was there."""
    temporary = _temporary(path, data, mode, gid)
    try:
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    sync_directory(path.parent)


def create(path: Path, data: bytes, mode: int, gid: int | None = None) -> bool:
    """Write `path` whole unless it exists, which is kept as it is: True when this call made it. The new file is
    linked into place, which fails rather than replace one made meanwhile."""
    if path.exists():
        return False
    temporary = _temporary(path, data, mode, gid)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    sync_directory(path.parent)
    return True


def directory(path: Path, mode: int, gid: int | None = None) -> None:
    """`path` and its parents made if missing; `path` itself with `mode` and, as root, owner root and group `gid`."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    if gid is not None and os.geteuid() == 0:
        os.chown(path, 0, gid)
    path.chmod(mode)
    with contextlib.suppress(OSError):
        sync_directory(path.parent)
