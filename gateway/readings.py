"""Readings, and the ingest step that folds each batch into the twin (latest state) and the store (history)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from gateway.twin import TwinFrozen

if TYPE_CHECKING:
    from gateway.store import Store
    from gateway.twin import Twin


class Reading(NamedTuple):
    """One measurement: wall-clock time (s since the epoch), asset id, metric name, value."""

    ts: float
    asset: str
    metric: str
    value: float


class Ingest:
    def __init__(self, twin: Twin, store: Store) -> None:
        self._twin = twin
        self._store = store
        self.readings_total = 0
        # Watchers of what comes in (sound-level compliance), called with each batch after the twin has it.
        self.observers: list[Callable[[Sequence[Reading], str | None], None]] = []

    def publish(self, readings: Sequence[Reading], owner: str | None = None) -> None:
        """Hand a batch over: the twin is updated now, the store writes it in its next batch."""
        if not readings:
            return
        with contextlib.suppress(TwinFrozen):  # counted and logged by the twin; history is still kept
            self._twin.apply_readings(readings, owner)
        self._store.add_telemetry(readings)
        self.readings_total += len(readings)
        for observe in self.observers:
            observe(readings, owner)
