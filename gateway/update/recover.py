"""Finishing or undoing an update: the rollback the updater does when the new version is not healthy, and the
recovery of an update that was stopped halfway (`kill -9`, a power cut), which the unit runs before every start
(`python -m gateway.update --recover --no-restart`) and the next update runs first.

An update is undone unless it was confirmed healthy: one still installing loses its new version (nothing was
switched); one on trial or rolling back gets current and previous back as they were, and the store's backup when
the new version changed its schema (the store it replaces kept aside, in the update's state directory); one
confirmed is finished (the older versions pruned). A trial whose bound had long passed when it was stopped (the
updater killed, and the new version left running for hours or days) is not undone as if it had just failed: its
store is never replaced, and its code is rolled back only when the version before can read the store as it is.
Only the lock's holder does any of it: a recovery that finds an updater running leaves it alone. The store is the
configuration's, never a path read from the state."""

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
    keep = {journal.backup_path(label).name for label in (layout.link("current"), layout.link("previous")) if label}
    for old in journal.dir.glob("gateway-*.db"):
        if old.name not in keep:
            old.unlink()
    outcome = Outcome("installed", update.to, update.came_from, time.time(), unhealthy, seconds)
    journal.write(None, outcome)
    return outcome


def roll_back(layout: Layout, journal: Journal, update: Update, reason: str, service: Service | None,
              say: Say, store: Path | None, *, restore: bool = True) -> Outcome:
    """current and previous as they were before `update`, the new version removed; with `restore`, the store's
    backup put back when its schema changed (the store it replaces kept aside first); with `service`, stopped first
    and started after."""
    update.phase, update.reason = "rolling-back", reason
    update.keep_store = update.keep_store or not restore  # so too when this rollback is itself interrupted
    journal.write(update)
    if service is not None:
        error = service.run("stop")
        if error is not None:
            say(f"stopping the service: {error} (going on)")
    layout.point("current", update.came_from)
    layout.point("previous", update.previous)
    say(f"switched back: current {update.came_from}, previous {update.previous or '(none)'}")
    aside = None
    if not update.keep_store and update.backed_up and update.came_from is not None and store is not None:
        saved = journal.backup_path(update.came_from)
        now = backup.schema(store)
        if now == update.backup_schema:
            say(f"the store's schema is still {now}: the store is kept as it is")
        elif not saved.is_file():
            say(f"the store's schema went from {update.backup_schema} to {now}, and its backup {saved} is gone: "
                "the store is kept as it is")
        else:
            aside = journal.aside_path(update.to)
            aside.parent.mkdir(mode=0o700, exist_ok=True)
            try:
                backup.backup(store, aside)
            except backup.BackupError as exc:
                aside = None
                say(f"WARNING: the store's schema went from {update.backup_schema} to {now}, and the store cannot "
                    f"be kept aside ({exc}): it is NOT replaced by its backup; {update.came_from} may refuse it")
            else:
                backup.restore(saved, store)
                say(f"the store's schema went from {update.backup_schema} to {now}: restored from {saved.name}; "
                    f"the store it replaced is kept in {aside}")
    layout.remove(update.to)
    if service is not None:
        error = service.run("start")
        if error is not None:
            say(f"starting the service: {error}")
    outcome = Outcome("rolled back", update.to, update.came_from, time.time(), reason,
                      replaced=str(aside) if aside is not None else None)
    journal.write(None, outcome)
    return outcome


def recover(layout: Layout, journal: Journal, service: Service | None, say: Say,
            store: Callable[[], Path | None]) -> Outcome | None:
    """Finish or undo what an interrupted update left (the caller holds the lock); the outcome, None when there was
    nothing to do. `store`: the store's file, from the configuration (asked only when an undo needs it)."""
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
    switched = update.switched if update.switched is not None else update.started
    if update.phase == "trial" and time.time() > switched + update.bound_s + update.settle_s:
        return _stale_trial(layout, journal, update, service, say, store())
    return roll_back(layout, journal, update, update.reason or "interrupted before the new version was healthy",
                     service, say, store())


def _stale_trial(layout: Layout, journal: Journal, update: Update, service: Service | None, say: Say,
                 store: Path | None) -> Outcome:
    """A trial stopped long after its bound: the new version ran on since, and its store holds what was written
    since (readings, history, the outbox). That store is kept; the code goes back only if the version before can
    read it."""
    hours = (time.time() - (update.switched or update.started)) / 3600
    schema = backup.schema(store) if store is not None else None
    if not update.backed_up or schema == update.backup_schema:
        say(f"WARNING: the update to {update.to} was stopped {hours:.1f} h ago, during its trial, and never "
            f"confirmed: back to {update.came_from}, keeping the store as it is (schema {schema})")
        return roll_back(layout, journal, update, f"the updater was stopped during the trial, {hours:.1f} h before; "
                         "the store kept as it is", service, say, store, restore=False)
    why = (f"the updater was stopped during the trial, {hours:.1f} h before, and the store's schema is now "
           f"{schema} ({update.came_from} reads {update.backup_schema}): {update.to} is KEPT, never confirmed "
           "healthy; check it (venue-gateway doctor), or update again")
    say(f"WARNING: {why}")
    return finish(layout, journal, update, say, unhealthy=why)
