"""A bound on how often a driver tells of the same kind of thing (a log line, an alert) when a sender floods it:
what is held back is still counted by the driver, and the number held back is told with the next one let through."""

from __future__ import annotations


class Throttle:
    """Lets through at most `burst` events in each window of `window_s` seconds (a window starts with the first
    event after the last one ended) and holds back the rest."""

    __slots__ = ("_held", "_opened", "_passed", "burst", "window_s")

    def __init__(self, burst: int, window_s: float) -> None:
        self.burst = burst
        self.window_s = window_s
        self._opened = float("-inf")  # when the current window began
        self._passed = 0  # events let through in it
        self._held = 0  # events held back since the last one let through

    def __call__(self, now: float) -> int | None:
        """None: hold this event back. Otherwise let it through: the number of events held back before it (told
        with it, so that one line can stand for them)."""
        if now - self._opened >= self.window_s:
            self._opened, self._passed = now, 0
        if self._passed >= self.burst:
            self._held += 1
            return None
        self._passed += 1
        held, self._held = self._held, 0
        return held
