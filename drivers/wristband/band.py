"""The reference wristband: what a band's firmware does with what it hears. Decode, authenticate, refuse
replays, keep an estimate of the show clock, and schedule the effect on the band's own clock.

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
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, replace

from drivers.wristband.protocol import AuthenticationError, Effect, WristbandError, WristbandPacket, decode

CLOCK_WINDOW_S = 10.0  # long enough to span many copies, short enough to follow a band's crystal drift
LATE_GRACE_MS = 100  # an effect heard this long after its start is still joined
SERIAL_MEMORY_S = 60.0  # how long a heard serial is remembered as "not new"
# The firmware's rules. A photosensitivity cap (3 flashes a second, as broadcast guidelines allow) on every effect
# whose light goes up and down with its period, and the band model's LED ceiling (80 %) on every effect.
MAX_FLASH_HZ = 3.0
FLASHING = frozenset({Effect.STROBE, Effect.PULSE, Effect.CHASE, Effect.WAVE, Effect.TWINKLE})
MIN_PERIOD_MS = 10 * math.ceil(100 / MAX_FLASH_HZ)  # in the packet's 10 ms steps: 340 ms
MAX_INTENSITY = 204


def clamped(packet: WristbandPacket) -> WristbandPacket:
    """What the band shows of `packet`: its flash rate and brightness within the firmware's rules."""
    period = max(packet.period_ms, MIN_PERIOD_MS) if packet.effect in FLASHING else packet.period_ms
    intensity = min(packet.intensity, MAX_INTENSITY)
    if (period, intensity) == (packet.period_ms, packet.intensity):
        return packet
    return replace(packet, period_ms=period, intensity=intensity)


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

    def hear(self, adv: bytes, t: float) -> None:
        """One advertisement heard at local time `t` (seconds on the band's own clock)."""
        try:
            packet = decode(adv, self.key)
        except AuthenticationError:
            self.refused["forged"] += 1
            return
        except WristbandError:
            self.refused["malformed"] += 1
            return
        self.accept(packet, t)

    def accept(self, packet: WristbandPacket, t: float) -> None:
        """An authentic packet heard at local time `t`."""
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
