"""The reference wristband: what a band's firmware does with what it hears. Decode, authenticate, refuse
replays, keep an estimate of the show clock, and schedule effects and live looks on the band's own clock.

Every authentic copy says "the show clock read S when this copy was sent, and the effect starts C ms later".
Hearing it at local time t, the band knows the offset between the clocks is at least S - t (a copy can only be
late on its way). The band keeps the largest such bound over a sliding window, so the least-delayed copy it
heard wins and a lost copy costs nothing. Sequence numbers count the ms from the show's start and are compared
as plain integers (they never wrap within a show, and the key is the show's own): once a band has heard a copy,
no recording of an older one is accepted. An effect serial not heard in the last minute is a new effect: the
latest one heard wins, and copies of an older one still on the air change nothing.

The firmware's own rules come last, whatever a packet says: a flashing effect never flashes faster than
MAX_FLASH_HZ, nor do effects in turn (an effect that lights the band starts at least MIN_PERIOD_MS after the last
one that did, later if need be; a blackout at any time), and no effect is brighter than MAX_INTENSITY (the band
model's LED ceiling).

Live frames (protocol version 2) carry the current look of zones and the instant every band shows it. The latest
look heard for the band's zone is shown at its instant, fading from what the band showed over the frame's fade; a
repeat of the latest look changes nothing (the gateway refreshes looks continuously). What the band shows is a
timeline: effects and live looks each from their start, the one that started last in force. The firmware runs it
as its timers fire (`settle`), with the flash rules on what really showed: a flash (an effect that lights the band,
a live strobe's every flash, a live look that raises the brightness by more than half of full scale above the
lowest the band showed within MIN_PERIOD_MS, its own fade's dip included, so a rise in steps is one too; counted
once: a look rising on before it has risen is the same flash, and the next rise is measured from what showed after
it) comes at least MIN_PERIOD_MS after the last one has risen (a live look's after its fade), deferred if need be
(a deferred live look shows the latest look then); a live look's colour is scaled down to the LED ceiling and its
strobe slowed to MAX_FLASH_HZ. A live look whose instant is more than LIVE_LATE_MS behind the band's clock when
heard is a recording played late: it is not shown (unless it is the look that shows, which changes nothing).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace

from drivers.wristband.protocol import (
    AuthenticationError,
    Effect,
    LiveFrame,
    WristbandError,
    WristbandPacket,
    decode_any,
)

CLOCK_WINDOW_S = 10.0  # long enough to span many copies, short enough to follow a band's crystal drift
LATE_GRACE_MS = 100  # an effect heard this long after its start is still joined
SERIAL_MEMORY_S = 60.0  # how long a heard serial is remembered as "not new"
# The firmware's rules. A photosensitivity cap (3 flashes a second, as broadcast guidelines allow) on every effect
# whose light goes up and down with its period, and the band model's LED ceiling (80 %) on every effect.
MAX_FLASH_HZ = 3.0
FLASHING = frozenset({Effect.STROBE, Effect.PULSE, Effect.CHASE, Effect.WAVE, Effect.TWINKLE})
MIN_PERIOD_MS = 10 * math.ceil(100 / MAX_FLASH_HZ)  # in the packet's 10 ms steps: 340 ms
MAX_INTENSITY = 204
FLASH_RISE = 255 / 2  # a live look that raises the brightest LED by more than this over MIN_PERIOD_MS is a flash
LIVE_LATE_MS = 1000  # a live look this far behind the band's clock when heard is stale: not shown
HISTORY = 1024  # what the band showed, kept for reading back (the benchmark's record)

RGB = tuple[int, int, int]


def clamped(packet: WristbandPacket) -> WristbandPacket:
    """What the band shows of `packet`: its flash rate and brightness within the firmware's rules."""
    period = max(packet.period_ms, MIN_PERIOD_MS) if packet.effect in FLASHING else packet.period_ms
    intensity = min(packet.intensity, MAX_INTENSITY)
    if (period, intensity) == (packet.period_ms, packet.intensity):
        return packet
    return replace(packet, period_ms=period, intensity=intensity)


def clamped_look(rgb: RGB, strobe_ms: int) -> tuple[RGB, int]:
    """What the band shows of a live look: scaled so no LED is above MAX_INTENSITY, the strobe no faster than
    MAX_FLASH_HZ."""
    top = max(rgb)
    if top > MAX_INTENSITY:
        rgb = tuple(c * MAX_INTENSITY // top for c in rgb)  # type: ignore[assignment]
    return rgb, max(strobe_ms, MIN_PERIOD_MS) if strobe_ms else 0


@dataclass(slots=True)
class Shown:
    """An effect or a live look on the band's timeline: shown from `start_ms` (show clock) until the next."""

    start_ms: int  # when it shows, after any deferral by the flash rules
    instant_ms: int  # the start its packet named
    sequence: int  # the packet that brought it
    index: int  # a live look's place in its frame (0 or 1); -1 for an effect
    effect: WristbandPacket | None = None  # an effect, as the band shows it
    rgb: RGB = (0, 0, 0)  # a live look's colour, as the band shows it
    strobe_ms: int = 0  # a live look's strobe period, 0: steady
    fade_ms: int = 0
    began: float | None = None  # when it began to show, on the band's clock (None: not yet)
    # What the LEDs showed as it began, which a live look fades from: the last live look's colour then (black
    # after an effect: this model schedules effects but does not render them).
    from_rgb: RGB = field(default=(0, 0, 0))

    @property
    def live(self) -> bool:
        return self.effect is None

    def rgb_at(self, ms: float) -> RGB:
        """A live look's colour `ms` after it began: the fade from `from_rgb`, then the look (a strobe does not
        fade: it is lit for the first half of each period)."""
        if self.strobe_ms:
            return (0, 0, 0) if (ms % self.strobe_ms) >= self.strobe_ms / 2 else self.rgb
        if ms >= self.fade_ms:
            return self.rgb
        share = max(ms, 0) / self.fade_ms
        return tuple(round(a + (b - a) * share) for a, b in zip(self.from_rgb, self.rgb, strict=True))  # type: ignore[return-value]

    def period_ms(self) -> int:
        """The period of its flashes: a live strobe's, a flashing effect's; 0 for none."""
        if self.effect is None:
            return self.strobe_ms
        return self.effect.period_ms if self.effect.effect in FLASHING else 0

    def end_ms(self) -> float:
        """When it ends by itself (an effect's duration), else never."""
        if self.effect is not None and self.effect.duration_ms:
            return self.start_ms + self.effect.duration_ms
        return math.inf

    def lowest(self, from_ms: float, to_ms: float) -> int:
        """The lowest the brightest LED goes from `from_ms` to `to_ms` (show clock, within its time): what a rise is
        measured from. An effect counts as dark (not rendered here: its flashes count as such), a strobe goes dark
        each period, and a fade between colours dips where two channels cross (the brightest LED over a fade is
        convex: its lowest is at an end or at a crossing)."""
        if self.effect is not None or self.strobe_ms:
            return 0
        low, high = max(from_ms, self.start_ms) - self.start_ms, to_ms - self.start_ms
        points = {low, high}
        for i, j in itertools.combinations(range(3), 2):
            slope = (self.rgb[i] - self.from_rgb[i]) - (self.rgb[j] - self.from_rgb[j])
            if slope and self.fade_ms:
                points.add(self.fade_ms * (self.from_rgb[j] - self.from_rgb[i]) / slope)
        return min(max(self.rgb_at(ms)) for ms in points if low <= ms <= high)

    def crossing(self, low: float) -> float:
        """When a steady live look's brightest LED first comes within 1 of FLASH_RISE above `low` (show ms; inf:
        never): when a flash it makes has risen, at the earliest (rounding aside)."""
        level = low + FLASH_RISE - 1
        if not self.fade_ms:
            return self.start_ms if max(self.rgb) >= level else math.inf
        shares = [0.0 if a >= level else (level - a) / (b - a)
                  for a, b in zip(self.from_rgb, self.rgb, strict=True) if a >= level or b >= level > a]
        return self.start_ms + self.fade_ms * min(shares) if shares else math.inf

    def flashes(self, before_ms: float) -> float:
        """Its last periodic flash before `before_ms` (-inf: none)."""
        period, until = self.period_ms(), min(before_ms, self.end_ms())
        if not period or until <= self.start_ms:
            return -math.inf
        return self.start_ms + (math.ceil((until - self.start_ms) / period) - 1) * period


@dataclass
class Scheduled:
    packet: WristbandPacket  # as the band shows it: within the firmware's rules
    heard_at: float
    start_show_ms: int  # the effect's start, in ms from the show's start


class Band:
    def __init__(self, key: bytes, show_id: int, zone: int) -> None:
        self.key = key
        self.show_id = show_id
        self.zone = zone
        self.current: Scheduled | None = None
        self.refused: Counter[str] = Counter()
        self.clamped = 0  # effects shown slower or dimmer than their packet asked
        self._last_sequence: int | None = None
        self._serials: dict[int, float] = {}  # serial -> when last heard
        self._bounds: deque[tuple[float, float]] = deque()  # (heard at, lower bound of the clock offset, ms)
        self._offset_ms: float | None = None
        self._lit_ms: int | None = None  # the start of the last effect that lit the band, in show ms
        self.showing: Shown | None = None  # what the band shows now
        self.history: deque[Shown] = deque(maxlen=HISTORY)  # what it showed, in order, each from when it began
        self._due: list[Shown] = []  # what it will show, by start
        self._flash_ms = -math.inf  # when the last flash it showed had risen, in show ms
        # A live flash still rising, and the lowest its rise is measured from; the next rise is measured from what
        # showed since the last one had risen (a flash is counted once).
        self._rise: tuple[Shown, int] | None = None
        self._since_ms = -math.inf
        self._look: tuple[RGB, int] | None = None  # the latest live look heard for its zone

    def hear(self, adv: bytes, t: float) -> None:
        """One advertisement heard at local time `t` (seconds on the band's own clock)."""
        try:
            packet = decode_any(adv, self.key)
        except AuthenticationError:
            self.refused["forged"] += 1
            return
        except WristbandError:
            self.refused["malformed"] += 1
            return
        self.accept(packet, t)

    def accept(self, packet: WristbandPacket | LiveFrame, t: float) -> None:
        """An authentic packet heard at local time `t`."""
        self.settle(t)
        if packet.show_id != self.show_id:
            self.refused["other show"] += 1
            return
        last = self._last_sequence
        if last is not None and packet.sequence <= last:
            if packet.sequence < last:
                self.refused["replay"] += 1  # older than a copy already heard: a recording
            return  # the radio repeating the same copy: nothing new
        self._last_sequence = packet.sequence
        now_ms = t * 1000
        self._learn_clock(packet.sequence - now_ms, t)
        if isinstance(packet, LiveFrame):
            self._live(packet, now_ms + (self._offset_ms or 0.0))
            return
        if packet.effect == Effect.HEARTBEAT or not packet.zones >> self.zone & 1:
            return
        for serial in [s for s, heard in self._serials.items() if t - heard > SERIAL_MEMORY_S]:
            del self._serials[serial]
        known = packet.serial in self._serials
        self._serials[packet.serial] = t
        if known:
            return  # a copy of an effect already heard: it only sharpened the clock
        start = packet.sequence + packet.countdown_ms - (self._offset_ms or 0.0)
        if start < now_ms - LATE_GRACE_MS:
            self.refused["late"] += 1  # heard only after it was over
            return
        shown = clamped(packet)
        start_ms = packet.sequence + packet.countdown_ms
        if packet.effect != Effect.BLACKOUT:
            if self._lit_ms is not None and 0 <= start_ms - self._lit_ms < MIN_PERIOD_MS:
                start_ms = self._lit_ms + MIN_PERIOD_MS  # effects in turn flash too: this one waits
                shown = replace(shown)  # told apart from the packet: clamped
            self._lit_ms = start_ms
        self.clamped += shown is not packet
        self.current = Scheduled(shown, t, start_ms)
        self._due = [s for s in self._due if s.live]  # the latest effect heard replaces one still to come
        self._look = None  # after an effect, any live look is new again
        self._schedule(Shown(start_ms, packet.sequence + packet.countdown_ms, packet.sequence, -1, shown))

    def _live(self, frame: LiveFrame, clock_ms: float) -> None:
        """A live frame heard when the band's estimate of the show clock read `clock_ms`."""
        look = next((look for look in frame.looks if look.zones >> self.zone & 1), None)
        if look is None:
            return
        index = frame.looks.index(look)
        rgb, strobe = clamped_look(look.rgb, look.strobe_ms)
        self.clamped += (rgb, strobe) != (look.rgb, look.strobe_ms)
        if (rgb, strobe) == self._look:
            return  # a refresh of the latest look: nothing changes
        instant = frame.sequence + frame.countdown_ms
        if instant < clock_ms - LIVE_LATE_MS:
            self.refused["late"] += 1  # a look withheld and played later: stale
            return
        self._look = rgb, strobe
        self._due = [s for s in self._due if not s.live or s.start_ms < instant]  # the latest look wins
        self._schedule(Shown(instant, instant, frame.sequence, index, rgb=rgb, strobe_ms=strobe,
                             fade_ms=frame.fade_ms))

    def _schedule(self, shown: Shown) -> None:
        bisect.insort(self._due, shown, key=lambda s: s.start_ms)

    def settle(self, t: float) -> None:
        """Run the band's timers up to local time `t`: what is due begins to show, within the flash rules."""
        if self._offset_ms is None:
            return
        now_ms = t * 1000 + self._offset_ms
        while self._due and self._due[0].start_ms <= now_ms:
            shown = self._due.pop(0)
            previous = self.showing
            if shown.live:  # it fades from what shows as it begins (again, if it was deferred)
                shown.from_rgb = (previous.rgb_at(shown.start_ms - previous.start_ms)
                                  if previous is not None and previous.live else (0, 0, 0))
            rising = self._rising(previous, shown.start_ms)
            low = self._low(shown)
            if self._flashes(shown, low):
                last = max(self._flash_ms, previous.flashes(shown.start_ms) if previous else -math.inf)
                if not (rising and shown.live and not shown.strobe_ms) and shown.start_ms - last < MIN_PERIOD_MS:
                    shown.start_ms = math.ceil(last + MIN_PERIOD_MS)  # too soon after the last flash: it waits
                    if self.current is not None and shown.effect is self.current.packet:
                        self.current.start_show_ms = shown.start_ms
                    self.clamped += 1
                    if not (shown.live and any(s.live and s.start_ms <= shown.start_ms for s in self._due)):
                        self._schedule(shown)  # (a look heard later that shows by then wins: this one is dropped)
                    continue
                steady = shown.live and not shown.strobe_ms  # a rise still to come, counted once
                self._flash_ms = max(self._flash_ms, shown.start_ms + (shown.fade_ms if steady else 0))
                self._rise = (shown, low) if steady else None
            if previous is not None:
                self._flash_ms = max(self._flash_ms, previous.flashes(shown.start_ms))
            shown.began = (shown.start_ms - self._offset_ms) / 1000
            self.showing = shown
            self.history.append(shown)

    @staticmethod
    def _flashes(shown: Shown, low: int) -> bool:
        """Whether `shown` flashes as it begins: an effect that lights the band, a strobe, a live look whose
        brightest LED rises more than FLASH_RISE above `low`."""
        if shown.effect is not None:
            return shown.effect.effect != Effect.BLACKOUT
        return bool(shown.strobe_ms) or max(shown.rgb) - low > FLASH_RISE

    def _rising(self, previous: Shown | None, at_ms: int) -> bool:
        """Whether `previous`, ending at `at_ms`, is a live flash still rising (a look after it rising on is the same
        flash); once it has risen, the next rise is measured from then on."""
        if self._rise is None or previous is not self._rise[0]:
            return False
        crossed = previous.crossing(self._rise[1])
        if crossed < at_ms:
            self._since_ms, self._rise = max(self._since_ms, crossed), None
            return False
        self._rise = None
        return True

    def _low(self, shown: Shown) -> int:
        """The lowest a live look's rise is measured from: what the band showed within MIN_PERIOD_MS before it (and
        since the last flash had risen), and its own fade's dip."""
        if shown.effect is not None or shown.strobe_ms:
            return 0
        since, until = max(shown.start_ms - MIN_PERIOD_MS, self._since_ms), shown.start_ms
        low = shown.lowest(until, until + shown.fade_ms)
        for earlier in reversed(self.history):  # what showed before it, back to the window's start
            low = min(low, earlier.lowest(since, until))
            if earlier.start_ms <= since:
                return low
            until = earlier.start_ms
        return 0  # dark before it showed anything

    def upcoming(self) -> tuple[Shown, ...]:
        """What the band will show, by start (its timers not yet fired)."""
        return tuple(self._due)

    def shows(self, t: float) -> Shown | None:
        """What the band shows at local time `t` (its timers run up to `t` first; an earlier `t` is read from what
        it showed)."""
        self.settle(t)
        return next((s for s in reversed(self.history) if s.began is not None and s.began <= t), None)

    def began(self, sequence: int, index: int) -> float | None:
        """When the live look `index` of the frame `sequence` began to show, on the band's clock (None: it did
        not, or not yet: the frame was a repeat, or a later look came first)."""
        return next((s.began for s in self.history if (s.sequence, s.index) == (sequence, index)), None)

    def _learn_clock(self, bound_ms: float, t: float) -> None:
        bounds = self._bounds
        while bounds and bounds[0][0] < t - CLOCK_WINDOW_S:
            bounds.popleft()
        while bounds and bounds[-1][1] <= bound_ms:  # a monotonic deque: its head is the window's maximum
            bounds.pop()
        bounds.append((t, bound_ms))
        self._offset_ms = bounds[0][1]

    def starts_at(self) -> float | None:
        """When the scheduled effect starts, in seconds on the band's clock (None: nothing scheduled)."""
        if self.current is None or self._offset_ms is None:
            return None
        return (self.current.start_show_ms - self._offset_ms) / 1000
