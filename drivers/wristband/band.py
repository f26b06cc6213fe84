"""The reference wristband: what a band's firmware does with what it hears. Decode, authenticate, refuse
replays, keep an estimate of the show clock, and schedule the effect on the band's own clock.

Every authentic copy says "the show clock read S when this copy was sent, and the effect starts C ms later".
Hearing it at local time t, the band knows the offset between the clocks is at least S - t (a copy can only be
late on its way). The band keeps the largest such bound over a sliding window, so the least-delayed copy it
heard wins and a lost copy costs nothing. Sequence numbers grow (compared modulo 2^32, as RFC 1982 does), so a
recording played back is refused. An effect serial not heard in the last minute is a new effect: the latest
one heard wins, and copies of an older one still on the air change nothing.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from drivers.wristband.protocol import AuthenticationError, Effect, WristbandError, WristbandPacket, decode

CLOCK_WINDOW_S = 10.0  # long enough to span many copies, short enough to follow a band's crystal drift
LATE_GRACE_MS = 100  # an effect heard this long after its start is still joined
SERIAL_MEMORY_S = 60.0  # how long a heard serial is remembered as "not new"
HALF = 2**31


def sequence_delta(sequence: int, last: int) -> int:
    """How far `sequence` is past `last`, modulo 2^32: negative when it is older."""
    return (sequence - last + HALF) % 2**32 - HALF


@dataclass
class Scheduled:
    packet: WristbandPacket
    heard_at: float
    start_show_ms: int  # the effect's start on the (unwrapped) show clock


class Band:
    def __init__(self, key: bytes, show_id: int, zone: int) -> None:
        self.key = key
        self.show_id = show_id
        self.zone = zone
        self.current: Scheduled | None = None
        self.refused: Counter[str] = Counter()
        self._last_sequence: int | None = None
        self._show_ms = 0  # the last sequence, unwrapped: show time keeps counting past 2^32 ms
        self._serials: dict[int, float] = {}  # serial -> when last heard
        self._bounds: deque[tuple[float, float]] = deque()  # (heard at, lower bound of the clock offset, ms)
        self._offset_ms: float | None = None

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
        first = self._last_sequence is None
        delta = 1 if self._last_sequence is None else sequence_delta(packet.sequence, self._last_sequence)
        if delta <= 0:
            if delta < 0:
                self.refused["replay"] += 1
            return  # the radio repeating the same copy: nothing new
        self._last_sequence = packet.sequence
        self._show_ms = packet.sequence if first else self._show_ms + delta
        now_ms = t * 1000
        self._learn_clock(self._show_ms - now_ms, t)
        if packet.effect == Effect.HEARTBEAT or not packet.zones >> self.zone & 1:
            return
        for serial in [s for s, heard in self._serials.items() if t - heard > SERIAL_MEMORY_S]:
            del self._serials[serial]
        known = packet.serial in self._serials
        self._serials[packet.serial] = t
        if known:
            return  # a copy of an effect already heard: it only sharpened the clock
        start = self._show_ms + packet.countdown_ms - (self._offset_ms or 0.0)
        if start < now_ms - LATE_GRACE_MS:
            self.refused["late"] += 1  # heard only after it was over
            return
        self.current = Scheduled(packet, t, self._show_ms + packet.countdown_ms)

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
