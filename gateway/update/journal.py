"""What the updater writes down, in the state directory's update/ (/var/lib/venue-gateway/update/):

    state.json   the update under way, if any (its phase, the versions it goes from and to, the store's backup), and
                 the outcome of the last one; replaced whole by a rename, so it is always one or the other
    lock         held (flock) by the updater while it runs: a recovery that finds it held leaves the update alone
    gateway-<label>.db   the store as it was under version <label>, backed up before a newer one could migrate it

The phases of an update: `installing` (nothing switched yet: undone by removing the new version), `trial` (current
names the new version, not yet healthy: undone by switching back), `rolling-back` (the new version failed: the
same), `confirmed` (healthy: finished by pruning). `outcome` and `report` say how the last update went, for
`venue-gateway update --status` and `doctor`."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from gateway.update.layout import fsync_dir

STATE_DIR = Path("/var/lib/venue-gateway")
Phase = Literal["installing", "trial", "rolling-back", "confirmed"]


class Busy(Exception):
    """Another updater holds the lock."""


@dataclass
class Update:
    """An update under way."""

    phase: Phase
    to: str
    came_from: str | None  # what current named before (None: the first install)
    previous: str | None  # what previous named before
    started: float
    store: str | None = None  # the store's file, when it was backed up
    backup: str | None = None
    backup_schema: int | None = None
    reason: str | None = None  # why it is rolled back


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

    def line(self) -> str:
        when = dt.datetime.fromtimestamp(self.at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if self.result == "installed":
            took = f" in {self.seconds:.1f} s" if self.seconds is not None else ""
            before = f" (previous {self.came_from})" if self.came_from else ""
            sick = f", not healthy: {self.reason}" if self.reason else ""
            return f"updated to {self.to} at {when}{took}{before}{sick}"
        if self.result == "rolled back":
            return f"update to {self.to} failed, rolled back to {self.came_from} at {when}: {self.reason}"
        return f"update to {self.to} was not installed ({self.reason}) at {when}; {self.came_from or 'nothing'} kept"


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "update"
        self.path = self.dir / "state.json"

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def update(self) -> Update | None:
        doc = self._read().get("update")
        return Update(**_known(Update, doc)) if isinstance(doc, dict) else None

    def outcome(self) -> Outcome | None:
        doc = self._read().get("last")
        return Outcome(**_known(Outcome, doc)) if isinstance(doc, dict) else None

    def write(self, update: Update | None, outcome: Outcome | None = None) -> None:
        """Replace the state: the update under way (None: none), and the last outcome (None: kept as it was)."""
        last = asdict(outcome) if outcome is not None else self._read().get("last")
        self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self.dir / "state.json.new"
        with tmp.open("w", encoding="utf-8") as f:
            json.dump({"update": asdict(update) if update is not None else None, "last": last}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # no secret in it: doctor, run by anyone, reads it
        os.replace(tmp, self.path)
        fsync_dir(self.dir)

    def backup_path(self, label: str) -> Path:
        return self.dir / f"gateway-{label}.db"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held for a whole update; Busy when another process holds it. The kernel lets go of it when the holder
        dies, `kill -9` included."""
        self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
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
    except (OSError, ValueError, TypeError) as exc:
        return "problem", f"the update state {journal.path} cannot be read: {exc}"
    if under_way is not None:
        try:
            with journal.lock():
                pass
        except Busy:
            return "warn", f"an update to {under_way.to} is running ({under_way.phase})"
        except OSError:
            pass  # (not root: the lock cannot be opened; the state alone says it)
        return "problem", (f"an update to {under_way.to} stopped halfway ({under_way.phase}): the next start of the "
                           "service finishes or undoes it (or run `venue-gateway update --recover`)")
    if last is None:
        return None
    return ("ok" if last.result == "installed" and last.reason is None else "warn"), last.line()
