"""Finishing or undoing an update: the rollback the updater does when the new version is not healthy, and the
recovery of an update that was stopped halfway (`kill -9`, a power cut), which the unit runs before every start
(`python -m gateway.update --recover --no-restart`) and the next update runs first.

An update is undone unless it was confirmed healthy: one still installing loses its new version (nothing was
switched); one on trial or rolling back gets current and previous back as they were, and the store's backup when
the new version changed its schema; one confirmed is finished (the older versions pruned). Only the lock's holder
does any of it: a recovery that finds an updater running leaves it alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gateway.update import backup
from gateway.update.journal import Journal, Outcome, Update
from gateway.update.layout import Layout
from gateway.update.service import Service

Say = Callable[[str], None]


def finish(layout: Layout, journal: Journal, update: Update, say: Say, seconds: float | None = None,
           unhealthy: str | None = None) -> Outcome:
    """The new version is healthy, or there was none before it (`unhealthy`: why it is not): prune, and write the
    outcome."""
    for label in layout.prune():
        say(f"removed the older version {label}")
    keep = {f"gateway-{label}.db" for label in (layout.link("current"), layout.link("previous")) if label}
    for old in journal.dir.glob("gateway-*.db"):
        if old.name not in keep:
            old.unlink()
    outcome = Outcome("installed", update.to, update.came_from, time.time(), unhealthy, seconds)
    journal.write(None, outcome)
    return outcome


def roll_back(layout: Layout, journal: Journal, update: Update, reason: str, service: Service | None,
              say: Say) -> Outcome:
    """current and previous as they were before `update`, the store's backup put back when its schema changed, the
    new version removed; with `service`, stopped first and started after."""
    update.phase, update.reason = "rolling-back", reason
    journal.write(update)
    if service is not None:
        error = service.run("stop")
        if error is not None:
            say(f"stopping the service: {error} (going on)")
    layout.point("current", update.came_from)
    layout.point("previous", update.previous)
    say(f"switched back: current {update.came_from}, previous {update.previous or '(none)'}")
    if update.store is not None and update.backup is not None:
        store, saved = Path(update.store), Path(update.backup)
        now = backup.schema(store)
        if now != update.backup_schema:
            backup.restore(saved, store)
            say(f"the store's schema went from {update.backup_schema} to {now}: restored from {saved.name}")
        else:
            say(f"the store's schema is still {now}: the store is kept as it is")
    layout.remove(update.to)
    if service is not None:
        error = service.run("start")
        if error is not None:
            say(f"starting the service: {error}")
    outcome = Outcome("rolled back", update.to, update.came_from, time.time(), reason)
    journal.write(None, outcome)
    return outcome


def recover(layout: Layout, journal: Journal, service: Service | None, say: Say) -> Outcome | None:
    """Finish or undo what an interrupted update left (the caller holds the lock); the outcome, None when there was
    nothing to do."""
    for name in layout.clean():
        say(f"removed {name}, left by an interrupted update")
    update = journal.update()
    if update is None:
        return None
    say(f"an update to {update.to} was stopped halfway ({update.phase})")
    if update.phase == "confirmed":
        return finish(layout, journal, update, say)
    if update.phase == "installing":
        if layout.link("current") != update.to:
            layout.remove(update.to)
        outcome = Outcome("not installed", update.to, update.came_from, time.time(),
                          "interrupted while installing, before the switch")
        journal.write(None, outcome)
        return outcome
    return roll_back(layout, journal, update, update.reason or "interrupted before the new version was healthy",
                     service, say)
