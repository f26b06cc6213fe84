"""Live looks: what the console says each zone of the crowd shows now, sent to the bands as live frames rather than
as effects with a countdown. The patch (`gateway/show/patch.py`) sets looks; transmitters read the latest one per
zone; an effect fired in a zone releases it from live control until the console changes it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.show.engine import ShowEngine

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Look:
    colour: RGB  # the colour at full intensity, 0..255 each
    intensity: float  # 0..1
    strobe_hz: float = 0.0  # 0: steady; else flashes a second, never over show.max_flash_hz

    def rgb(self) -> RGB:
        """The colour scaled by the intensity: what the LEDs show."""
        return tuple(round(c * self.intensity) for c in self.colour)  # type: ignore[return-value]


@dataclass(frozen=True)
class LiveChange:
    """A zone's latest look and when it shows: `show_ms` on the show clock, the same instant on every band."""

    zone: str
    mask: int  # the zone's wristband bit
    look: Look
    at_mono: float
    show_ms: int
    fade_ms: int
    version: int  # one more for each change of any zone


LiveListener = Callable[[LiveChange], None]


class LiveLooks:
    """The zones under the console's live control and their latest looks (filled in by the patch)."""

    def __init__(self, engine: ShowEngine) -> None:
        self.engine = engine
        self.version = 0
        self._current: dict[str, LiveChange] = {}
        self._listeners: list[LiveListener] = []

    def current(self) -> dict[str, LiveChange]:
        """The zones under live control, each with its latest change."""
        return self._current

    def release(self, zones: tuple[str, ...]) -> None:
        """An effect was fired in `zones`: live stops sending them until the console changes them again."""
        for zone in zones:
            self._current.pop(zone, None)

    def subscribe(self, listener: LiveListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None
