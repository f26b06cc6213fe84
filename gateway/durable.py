"""Names made durable: a rename or a new file survives a power cut once its directory is synced. The standard
library alone, for the update's recovery, which runs before every start of the service."""

from __future__ import annotations

import os
from pathlib import Path


def sync_directory(directory: Path) -> None:
    """fsync `directory`, so that the names in it (a rename, a link, a new file) are on disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
