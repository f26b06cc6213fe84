"""What the updater writes down, in its own state directory (/var/lib/venue-gateway-update/, 0755 root: never the
service's state directory, which the service's user could rearrange under a root process):

    state.json   the update under way, if any (its phase, the versions it goes from and to, the store's backup), and
                 the outcome of the last one; replaced whole by a rename, so it is always one or the other
    lock         held (flock) by the updater while it runs: a recovery that finds it held leaves the update alone
    gateway-<label>.db   the store as it was under version <label>, backed up before a newer one could migrate it
    replaced/gateway-<label>-<time>.db   a store a rollback replaced by its backup, as version <label> left it

The phases of an update: `installing` (nothing switched yet: undone by removing the new version), `trial` (current
names the new version, not yet healthy: undone by switching back), `rolling-back` (the new version failed: the
same), `confirmed` (healthy: finished by pruning). `outcome` and `report` say how the last update went, for
`venue-gateway update --status` and `doctor`.

Everything read back is checked: the labels are version labels (so a path built from one stays in versions/ and in
this directory), and the directory is refused unless root (the updater's user) owns it and it and every directory
above it are writable by no one else."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from gateway.durable import sync_directory
from gateway.update.layout import is_label

STATE_DIR = Path("/var/lib/venue-gateway-update")
Phase = Literal["installing", "trial", "rolling-back", "confirmed"]


class Busy(Exception):
    """Another updater holds the lock."""


class JournalError(Exception):
    """The state directory is unsafe, or its state.json cannot be read: said in one line."""


@dataclass
class Update:
    """An update under way."""

    phase: Phase
    to: str
    came_from: str | None  # what current named before (None: the first install)
    previous: str | None  # what previous named before
    started: float
    backed_up: bool = False  # the store (the configuration's) was backed up, to gateway-<came_from>.db here
    backup_schema: int | None = None
    reason: str | None = None  # why it is rolled back
    keep_store: bool = False  # rolled back with the store kept as it is (a trial stopped long before)
    switched: float | None = None  # when current was switched to the new version
    bound_s: float = 120.0  # how long its trial was to last at most (with settle_s): one stopped long after that
    settle_s: float = 10.0  # ran on unwatched, and its store holds what it wrote since


@dataclass
class Outcome:
    """How the last update ended: `installed`, `rolled back` (the new version failed, or the update was
    interrupted before it was healthy), or `not installed` (it failed or was stopped before the switch)."""

    result: Literal["installed", "rolled back", "not installed"]
    to: str
    came_from: str | None
    at: float
    reason: str | None = None  # why it was rolled back or not installed; why a first version is not healthy
    seconds: float | None = None
    replaced: str | None = None  # where the store a rollback replaced with its backup is kept

    def line(self) -> str:
        when = dt.datetime.fromtimestamp(self.at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if self.result == "installed":
            took = f" in {self.seconds:.1f} s" if self.seconds is not None else ""
            before = f" (previous {self.came_from})" if self.came_from else ""
            sick = f", not healthy: {self.reason}" if self.reason else ""
            return f"updated to {self.to} at {when}{took}{before}{sick}"
        if self.result == "rolled back":
            aside = f" (the store it wrote is kept in {self.replaced})" if self.replaced else ""
            return f"update to {self.to} failed, rolled back to {self.came_from} at {when}: {self.reason}{aside}"
        return f"update to {self.to} was not installed ({self.reason}) at {when}; {self.came_from or 'nothing'} kept"


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = self.dir / "state.json"

    def exists(self) -> bool:
        return self.dir.is_dir()

    def check(self) -> None:
        """JournalError unless the directory is safe for root to act on what is in it: a real directory owned by
        this process's user (root), and it and every directory above it writable by no other user (a sticky
        directory, /tmp's kind, is safe above it: no one else can rename what is in it)."""
        me = os.geteuid()
        path = Path(os.path.abspath(self.dir))
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise JournalError(f"the update's state directory {path} cannot be used: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != me or st.st_mode & 0o022:
            raise JournalError(f"the update's state directory {path} is not a directory of uid {me}'s that no one "
                               f"else may write (it is uid {st.st_uid}, mode {stat.filemode(st.st_mode)}): refused; "
                               f"fix it with: chown root:root {path} && chmod 0755 {path}")
        for above in path.parents:
            st = os.lstat(above)
            if st.st_uid not in (0, me) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
                raise JournalError(f"{above}, above the update's state directory, may be changed by another user "
                                   f"(uid {st.st_uid}, mode {stat.filemode(st.st_mode)}): refused")

    def create(self) -> None:
        """Make the directory, its parent being there already: 0755 (doctor, run by anyone, reads state.json; the
        backups in it are 0600)."""
        with contextlib.suppress(FileExistsError):
            self.dir.mkdir(mode=0o755)

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise JournalError(f"{self.path} cannot be read ({exc}): move it aside to go on") from None
        return doc if isinstance(doc, dict) else {}

    def update(self) -> Update | None:
        doc = self._read().get("update")
        if not isinstance(doc, dict):
            return None
        try:
            update = Update(**_known(Update, doc))
            for label in (update.to, update.came_from, update.previous):
                if label is not None and not is_label(label):
                    raise ValueError(f"{label!r} is not a version label")
            if update.phase not in ("installing", "trial", "rolling-back", "confirmed") or \
                    not all(isinstance(v, (int, float)) and math.isfinite(v)
                            for v in (update.started, update.bound_s, update.settle_s,
                                                   update.switched or 0.0)):
                raise ValueError("an unknown phase, or a time that is not a number")
        except (TypeError, ValueError) as exc:
            raise JournalError(f"{self.path} holds an update that makes no sense ({exc}): refused; move it aside "
                               "to go on") from None
        return update

    def outcome(self) -> Outcome | None:
        doc = self._read().get("last")
        try:
            return Outcome(**_known(Outcome, doc)) if isinstance(doc, dict) else None
        except TypeError as exc:
            raise JournalError(f"{self.path}: the last outcome cannot be read ({exc})") from None

    def write(self, update: Update | None, outcome: Outcome | None = None) -> None:
        """Replace the state: the update under way (None: none), and the last outcome (None: kept as it was)."""
        last = asdict(outcome) if outcome is not None else self._read().get("last")
        tmp = self.dir / "state.json.new"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.fchmod(fd, 0o644)  # no secret in it: doctor reads it (as root: the directory is root's alone)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"update": asdict(update) if update is not None else None, "last": last}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        sync_directory(self.dir)

    def backup_path(self, label: str) -> Path:
        """The store's backup taken under version `label`."""
        if not is_label(label):
            raise ValueError(f"{label!r} is not a version label")
        return self.dir / f"gateway-{label}.db"

    def aside_path(self, label: str) -> Path:
        """Where the store a rollback replaces is kept (replaced/, never pruned): named for the version that wrote
        it, and the time."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.dir / "replaced" / self.backup_path(label).name.replace(".db", f"-{stamp}.db")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held for a whole update; Busy when another process holds it. The kernel lets go of it when the holder
        dies, `kill -9` included."""
        self.check()
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(f"another update is running (it holds {self.dir / 'lock'})") from None
            yield
        finally:
            os.close(fd)


def _known(cls: type, doc: dict[str, Any]) -> dict[str, Any]:
    """The fields of `doc` that `cls` has: the recovery runs the previous version's code, which may be older than
    the updater that wrote the state (a field added later is left out, never an error)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in doc.items() if k in names}


def report(state_dir: Path = STATE_DIR) -> tuple[Literal["ok", "warn", "problem"], str] | None:
    """How updates stand on this box, for doctor: None when no update ever ran; ("problem", ...) when the last one
    was stopped halfway and is not yet finished or undone; ("warn", ...) when the last one failed and was rolled back
    (the box runs the version before it) or was not installed; else ("ok", ...)."""
    journal = Journal(state_dir)
    try:
        under_way, last = journal.update(), journal.outcome()
    except (OSError, JournalError) as exc:
        return "problem", f"the update state {journal.path} cannot be read: {exc}"
    if under_way is not None:
        try:
            with journal.lock():
                pass
        except Busy:
            return "warn", f"an update to {under_way.to} is running ({under_way.phase})"
        except (OSError, JournalError):
            pass  # (not root: the lock cannot be opened; the state alone says it)
        return "problem", (f"an update to {under_way.to} stopped halfway ({under_way.phase}): the next start of the "
                           "service finishes or undoes it (or run `venue-gateway update --recover`)")
    if last is None:
        return None
    return ("ok" if last.result == "installed" and last.reason is None else "warn"), last.line()
