"""Live looks: what the console says each zone of the crowd shows now, sent to the bands as live frames rather than
as effects with a countdown. The patch (`gateway/show/patch.py`) sets looks; transmitters read the latest one per
zone; an effect fired in a zone releases it from live control until the console changes it again.

What a transmitter is given is already within the show's photosensitivity cap: strobe at most
`show.max_flash_hz`, and a flash (a rise in brightness of more than half of full scale above the lowest brightness
the zone showed within the last 1/max_flash_hz, however many steps it rises in) less than 1/max_flash_hz after the
last flash in the zone, or after the start of an effect lighting it, is held back to the moment the cap allows
(showing the latest look then), so that a fader or a bump button flicked fast does not flash the crowd faster than
an effect may. The band's firmware keeps the same caps.

In a shared show (gateway/show/shared.py) a look applied on another box is `carry`-ed here with its instant, and
kept for this box's own cap as a local look is. That box held it to the cap already; a carried look that is a
flash too soon after the zone's last one here all the same (by the same rule as a local look's) is dropped and
counted (`dropped_carried`), as is a strobe over the cap clamped: what reaches the radio is within the cap whatever
another box sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.show.engine import ShowEngine

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
FLASH_RISE = 0.5  # a rise in brightness (0..1) larger than this above the window's lowest is a flash, for the cap
REPORT_INTERVAL_S = 0.25  # the twin hears the live looks at most this often
CLOCK_SLACK_S = 0.001  # a timer the loop runs this early is on time
DROP_LOG_S = 10.0  # carried looks dropped are logged at most this often
CARRIED_SLACK_S = 0.005  # a carried flash this early is on time (the other box's timer, show ms in whole ms)


@dataclass(frozen=True)
class Look:
    colour: RGB  # the colour at full intensity, 0..255 each
    intensity: float  # 0..1
    strobe_hz: float = 0.0  # 0: steady; else flashes a second, never over show.max_flash_hz

    def rgb(self) -> RGB:
        """The colour scaled by the intensity: what the LEDs show."""
        return tuple(round(c * self.intensity) for c in self.colour)  # type: ignore[return-value]

    @property
    def brightness(self) -> float:
        """The brightest LED, 0..1: what the flash cap compares."""
        return max(self.colour) / 255 * self.intensity

    def document(self) -> dict[str, Any]:
        r, g, b = self.colour
        return {"colour": f"#{r:02x}{g:02x}{b:02x}", "intensity": round(self.intensity, 4),
                "strobe_hz": round(self.strobe_hz, 3)}


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
    origin: str | None = None  # the box of a shared show it was applied on, when not this one


LiveListener = Callable[[LiveChange], None]


@dataclass
class _Pending:
    look: Look
    at_mono: float  # when it arrived
    fade_ms: int


class LiveLooks:
    """The zones under the console's live control and their latest looks (filled in by the patch).

    `set` may be called many times in one turn of the loop (a burst of packets read at once): each zone's latest
    look is taken once, when the loop turns, as one change."""

    def __init__(self, engine: ShowEngine) -> None:
        self.engine = engine
        self.version = 0
        self.held_back = 0  # looks delayed by the flash cap
        self.strobe_clamped = 0  # looks whose strobe was over show.max_flash_hz
        self.dropped_carried = 0  # carried looks that were a flash too soon after the last one in their zone
        self._dropped_since_log = 0
        self._last_drop_log = float("-inf")
        self._current: dict[str, LiveChange] = {}
        self._listeners: list[LiveListener] = []
        self._pending: dict[str, _Pending] = {}  # set this turn, not yet taken
        self._flush: asyncio.Handle | None = None
        self._held: dict[str, asyncio.TimerHandle] = {}  # zone -> when the flash cap lets its latest look out
        self._waiting: dict[str, _Pending] = {}  # zone -> its latest look while held
        self._rises: dict[str, float] = {}  # zone -> when it last flashed
        # zone -> (when, brightness) of its changes within the last 1/max_flash_hz, after the one showing when that
        # window began (kept across a release)
        self._shown: dict[str, deque[tuple[float, float]]] = {}
        self._reported: set[str] = set()  # zones on the twin now
        self._last_report = float("-inf")
        self._report_timer: asyncio.TimerHandle | None = None

    def current(self) -> dict[str, LiveChange]:
        """The zones under live control, each with its latest change."""
        return self._current

    def set(self, zones: tuple[str, ...], look: Look, fade_ms: int | None = None,
            at_mono: float | None = None) -> None:
        """The console's look for `zones`, arrived at `at_mono` (default: now); shown with the bands' fade
        (`show.live.fade_ms`, or `fade_ms`). Taken when the loop turns, the latest of the turn per zone."""
        pending = _Pending(look, time.monotonic() if at_mono is None else at_mono,
                           self.engine.settings.live.fade_ms if fade_ms is None else fade_ms)
        for zone in zones:
            self._pending[zone] = pending
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._take)

    def release(self, zones: tuple[str, ...]) -> None:
        """An effect was fired in `zones`: live stops sending them until the console changes them again (a change
        of `version`, the zones gone from `current()`)."""
        released = False
        for zone in zones:
            released |= self._current.pop(zone, None) is not None
            self._pending.pop(zone, None)
            self._waiting.pop(zone, None)
            held = self._held.pop(zone, None)
            if held is not None:
                held.cancel()
        if released:
            self.version += 1
            self._report_soon()

    def carry(self, zone: str, look: Look, show_ms: int, fade_ms: int, origin: str) -> bool:
        """A look applied on another box of a shared show (`origin`), shown at the same instant `show_ms` (that box
        held it to the flash cap), and kept for this box's own cap as a local look is: its strobe clamped to the cap,
        and dropped (counted in `dropped_carried`) when it is a flash too soon after the zone's last one here, by
        the rule a local look is held back by. False when the zone is not this show's, it already has this look or
        a later one, or the look is dropped."""
        if zone not in self.engine.zones:
            return False
        current = self._current.get(zone)
        if current is not None and (current.show_ms > show_ms or (current.show_ms, current.look) == (show_ms, look)):
            return False
        look = self._capped(look)
        now = time.monotonic()
        instant = self.engine.mono(show_ms)
        flash = look.brightness - self._lowest(zone, now) > FLASH_RISE
        if flash and instant < self._allowed(zone, instant) - CARRIED_SLACK_S:
            self.dropped_carried += 1
            self._dropped_since_log += 1
            if now - self._last_drop_log >= DROP_LOG_S:
                log.warning("live: dropped %d carried look(s) since the last word, each a flash too soon after the "
                            "last one in its zone (show.max_flash_hz %g); the latest from %s for zone %s",
                            self._dropped_since_log, self.engine.settings.max_flash_hz, origin, zone)
                self._dropped_since_log, self._last_drop_log = 0, now
            self._report_soon()
            return False
        for held in (self._pending, self._waiting):
            held.pop(zone, None)
        timer = self._held.pop(zone, None)
        if timer is not None:
            timer.cancel()
        if flash:
            self._rises[zone] = instant + fade_ms / 1000
            self._shown[zone] = deque()
        self._emit(zone, look, instant - self.engine.settings.live.delay_ms / 1000, fade_ms, now, show_ms, origin)
        return True

    def subscribe(self, listener: LiveListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # -- taking the turn's looks -------------------------------------------------------------------------
    def _take(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, {}
        now = time.monotonic()
        for zone, change in pending.items():
            if zone in self._held:  # waiting for the flash cap: its latest look goes out then
                self._waiting[zone] = change
            else:
                self._offer(zone, change, now)

    def _offer(self, zone: str, change: _Pending, now: float) -> None:
        """Show `change` in `zone`, unless it is a flash too soon after the last one there: then it waits."""
        look = self._capped(change.look)
        if look.brightness - self._lowest(zone, now) > FLASH_RISE:
            # On the bands' time: the look shows delay_ms after it arrived.
            delay = self.engine.settings.live.delay_ms / 1000
            instant = change.at_mono + delay
            allowed = self._allowed(zone, instant)
            if instant < allowed - CLOCK_SLACK_S:
                self.held_back += 1
                self._waiting[zone] = replace(change, look=look)
                self._held[zone] = asyncio.get_running_loop().call_later(max(0.0, allowed - delay - now),
                                                                         self._let_out, zone)
                return
            self._rises[zone] = instant + change.fade_ms / 1000  # risen when its fade ends, as the bands count it
            self._shown[zone] = deque()  # a flash is counted once: the next rises from what shows from now on
        self._emit(zone, look, change.at_mono, change.fade_ms, now)

    def _capped(self, look: Look) -> Look:
        """The look with its strobe no faster than show.max_flash_hz."""
        cap = self.engine.settings.max_flash_hz
        if look.strobe_hz <= cap:
            return look
        self.strobe_clamped += 1
        return replace(look, strobe_hz=cap)

    def _allowed(self, zone: str, instant: float) -> float:
        """The soonest a flash may show in `zone` (on the bands' time, monotonic) near `instant`: 1/max_flash_hz
        after the last flash here and after any effect starting within the gap of it (at its start plus the zone's
        sound delay; one booked seconds ahead is no flash now)."""
        gap, sound = 1 / self.engine.settings.max_flash_hz, self.engine.delay_ms(zone) / 1000
        near = [s + sound for s in self.engine.starts(zone) if abs(s + sound - instant) < gap]
        return max((self._rises.get(zone, float("-inf")), *near)) + gap

    def flashes(self, zone: str) -> tuple[float, ...]:
        """When the zone's last live flash has risen on the bands (monotonic, its instant plus its fade): an effect
        lighting the zone keeps 1/max_flash_hz from it too."""
        rise = self._rises.get(zone)
        return () if rise is None else (rise,)

    def _lowest(self, zone: str, now: float) -> float:
        """The lowest brightness `zone` showed within the last 1/max_flash_hz and since its last flash (dark if
        nothing was shown)."""
        shown = self._shown.get(zone)
        if not shown:
            return 0.0
        since = now - 1 / self.engine.settings.max_flash_hz
        while len(shown) > 1 and shown[1][0] <= since:  # the first entry is what showed when the window began
            shown.popleft()
        return min(brightness for _, brightness in shown)

    def _let_out(self, zone: str) -> None:
        """The flash cap's moment for a held zone: its latest look, shown from now."""
        del self._held[zone]
        change = self._waiting.pop(zone)
        now = time.monotonic()
        self._offer(zone, replace(change, at_mono=now), now)

    def _emit(self, zone: str, look: Look, at_mono: float, fade_ms: int, now: float, show_ms: int | None = None,
              origin: str | None = None) -> None:
        self.version += 1
        if show_ms is None:
            show_ms = self.engine.show_ms(at_mono) + self.engine.settings.live.delay_ms
        change = LiveChange(zone, 1 << self.engine.zones[zone].index, look, at_mono, show_ms, fade_ms,
                            self.version, origin)
        self._current[zone] = change
        self._lowest(zone, now)  # drop what left the window
        self._shown.setdefault(zone, deque()).append((now, look.brightness))
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("a live listener failed")
        self._report_soon()

    # -- the twin ----------------------------------------------------------------------------------------
    def _report_soon(self) -> None:
        """Report the live looks on the twin now, or once REPORT_INTERVAL_S has passed since the last report."""
        if self._report_timer is not None:
            return
        wait = self._last_report + REPORT_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self._report()
        else:
            self._report_timer = asyncio.get_running_loop().call_later(wait, self._report)

    def _report(self) -> None:
        self._report_timer = None
        self._last_report = time.monotonic()
        zones: dict[str, Any] = dict.fromkeys(self._reported - set(self._current))  # released: removed
        for zone, change in self._current.items():
            zones[zone] = {**change.look.document(), "show_ms": change.show_ms, "fade_ms": change.fade_ms}
        self._reported = set(self._current)
        doc: dict[str, Any] = {"version": self.version, "zones": zones}
        if self.dropped_carried:
            doc["dropped_carried"] = self.dropped_carried
        self.engine.report({"live": doc})
