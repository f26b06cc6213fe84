"""The install layout the installer, the unit, the image and the updater share:

    $PREFIX/versions/<label>/   one whole version: a virtual environment with share/ and models/
    $PREFIX/current             -> versions/<label>, the version the unit runs
    $PREFIX/previous            -> the version before it, for a rollback

A link is switched by making a new one beside it and renaming it over the old (rename(2) is atomic), and a version
appears by renaming its finished directory into place, so that whenever the box stops, `current` names one whole
version. What an interrupted update leaves in versions/ is a dot-directory (`.build-*`, `.incoming-*`,
`.trash-*`), which `clean` removes."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Literal

from gateway.durable import sync_directory

Link = Literal["current", "previous"]
TEMPORARY = (".build-", ".incoming-", ".trash-")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", re.ASCII)


def is_label(label: object) -> bool:
    """Whether `label` is a version label: a name in versions/ that stays there (no /, not . or ..)."""
    return isinstance(label, str) and LABEL.fullmatch(label) is not None


class Layout:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.versions = prefix / "versions"

    def link(self, name: Link) -> str | None:
        """The label `current` or `previous` names, None when there is no such link (or it names no version)."""
        try:
            target = os.readlink(self.prefix / name)
        except OSError:
            return None
        parent, _, label = target.rpartition("/")
        return label if parent == "versions" and is_label(label) else None

    def point(self, name: Link, label: str | None) -> None:
        """Make `name` name versions/`label` (None: no link), atomically."""
        if label is not None and not is_label(label):
            raise ValueError(f"{label!r} is not a version label")
        path = self.prefix / name
        if label is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            new = self.prefix / f".{name}.new"
            with contextlib.suppress(FileNotFoundError):
                new.unlink()
            new.symlink_to(f"versions/{label}")
            os.replace(new, path)
        sync_directory(self.prefix)

    def path(self, label: str) -> Path:
        if not is_label(label):
            raise ValueError(f"{label!r} is not a version label")
        return self.versions / label

    def whole(self, label: str | None) -> bool:
        """Whether versions/`label` is a finished version: a real directory (never the link a build goes through)
        with its entry point."""
        if label is None:
            return False
        path = self.path(label)
        return path.is_dir() and not path.is_symlink() and (path / "bin" / "venue-gateway").is_file()

    def installed(self) -> list[str]:
        if not self.versions.is_dir():
            return []
        return sorted(p.name for p in self.versions.iterdir()
                      if not p.name.startswith(".") and p.is_dir() and not p.is_symlink())

    def remove(self, label: str) -> None:
        """Take a version away: renamed out of versions/ first (one step), then deleted."""
        path = self.path(label)
        if path.is_symlink():  # the name a build goes through
            path.unlink()
            return
        if not path.exists():
            return
        trash = self.versions / f".trash-{label}-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)
        sync_directory(self.versions)
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self) -> list[str]:
        """Remove every version but the current and the previous one; the labels removed."""
        keep = {self.link("current"), self.link("previous")}
        gone = [label for label in self.installed() if label not in keep]
        for label in gone:
            self.remove(label)
        return gone

    def clean(self) -> list[str]:
        """Remove what an interrupted update left: temporary directories, a link a build went through, a link
        being made beside current or previous. The names removed."""
        removed = []
        for name in ("current", "previous"):
            stray = self.prefix / f".{name}.new"
            if stray.is_symlink():
                stray.unlink()
                removed.append(stray.name)
        if self.versions.is_dir():
            for path in sorted(self.versions.iterdir()):
                if path.is_symlink():
                    path.unlink()
                elif path.name.startswith(TEMPORARY):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    continue
                removed.append(path.name)
        return removed
