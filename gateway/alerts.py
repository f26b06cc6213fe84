"""Alerts raised by the core (sound-level compliance, ...) for whoever listens: the cloud's events, OSC feedback
to front of house. An alert with a key stands until raised again with `standing=False` (a zone back under its
limit); a listener that comes later (an OSC driver started after the alert) is told the standing ones at once.
A listener's failure is logged and never reaches the one who raised the alert."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[str, str, dict[str, Any]], None]  # (kind, text for a person, document for a program)


class Alerts:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.standing: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self.raised = 0

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        for alert in list(self.standing.values()):
            self._tell(listener, *alert)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def raise_alert(self, kind: str, text: str, doc: dict[str, Any], *, key: str | None = None,
                    standing: bool = True) -> None:
        self.raised += 1
        if key is not None:
            if standing:
                self.standing[key] = (kind, text, doc)
            else:
                self.standing.pop(key, None)
        for listener in list(self._listeners):
            self._tell(listener, kind, text, doc)

    @staticmethod
    def _tell(listener: Listener, kind: str, text: str, doc: dict[str, Any]) -> None:
        try:
            listener(kind, text, doc)
        except Exception:
            log.exception("an alert listener failed on %s", kind)
