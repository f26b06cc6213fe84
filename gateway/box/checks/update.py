"""The last update, as the updater recorded it in its state directory (gateway.update.journal): installed, rolled
back, or stopped halfway."""

from __future__ import annotations

from gateway.box.check import Box, Finding, ok, problem, skipped, warn
from gateway.update.journal import STATE_DIR, report

FIX = "venue-gateway update --status says more; the journal has the update's lines (journalctl -u venue-gateway)"


def check(box: Box) -> list[Finding]:
    found = report(box.path(str(STATE_DIR)))
    if found is None:
        return [skipped("no update has run on this box")]
    status, message = found
    if status == "problem":
        return [problem(message, FIX)]
    return [warn(message, FIX) if status == "warn" else ok(message)]
