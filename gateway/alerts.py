"""Alerts raised by the core (sound-level compliance, ...) for whoever listens: the cloud's events, OSC feedback
to front of house. An alert with a key stands until raised again with `standing=False` (a zone back under its
limit); a listener that comes later (an OSC driver started after the alert) is told the standing ones at once.
A listener's failure is logged and never reaches the one who raised the alert. The last RECENT_ALERTS raised and
cleared (and those the daemon notes as it sends them to the cloud) are kept, newest last, for the dashboard
(`GET /api/v1/alerts`)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

Listener = Callable[[str, str, dict[str, Any]], None]  # (kind, text for a person, document for a program)
RECENT_ALERTS = 200
State = Literal["raised", "cleared", "event"]  # an alert that stands, one cleared, one with no key (it never stands)


@dataclass(frozen=True)
class Alert:
    kind: str
    text: str
    doc: dict[str, Any]
    key: str | None
    state: State
    at: float  # wall clock


class Alerts:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.standing: dict[str, Alert] = {}  # key -> the alert, as it was first raised ("since")
        self.recent: deque[Alert] = deque(maxlen=RECENT_ALERTS)
        self.raised = 0

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        for alert in list(self.standing.values()):
            self._tell(listener, alert.kind, alert.text, alert.doc)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def raise_alert(self, kind: str, text: str, doc: dict[str, Any], *, key: str | None = None,
                    standing: bool = True) -> None:
        self.raised += 1
        state: State = "event" if key is None else "raised" if standing else "cleared"
        alert = Alert(kind, text, doc, key, state, time.time())
        if key is not None:
            if standing:
                before = self.standing.get(key)  # raised again while it stands: it stands since the first time
                self.standing[key] = alert if before is None else Alert(kind, text, doc, key, state, before.at)
            else:
                self.standing.pop(key, None)
        self.recent.append(alert)
        for listener in list(self._listeners):
            self._tell(listener, kind, text, doc)

    def note(self, kind: str, text: str, doc: dict[str, Any]) -> None:
        """An alert the core sends the cloud itself (a unit failed, an effect not sent): kept with the recent ones
        for the dashboard, told to no listener."""
        self.recent.append(Alert(kind, text, doc, None, "event", time.time()))

    @staticmethod
    def _tell(listener: Listener, kind: str, text: str, doc: dict[str, Any]) -> None:
        try:
            listener(kind, text, doc)
        except Exception:
            log.exception("an alert listener failed on %s", kind)
