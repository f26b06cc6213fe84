"""The reference wristband: what a band's firmware does with what it hears. Decode, authenticate, refuse
replays, keep an estimate of the show clock, and schedule the effect on the band's own clock.

Every authentic copy says "the effect that starts at show time S starts in C ms". Hearing it at local time
t, the band knows the show clock was S - C when the copy was sent, so the offset between the clocks is at
least S - C - t (the copy can only have been delayed on its way). The band keeps the largest such bound over
a sliding window, so the least-delayed copy it heard wins and a lost copy costs nothing.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from drivers.wristband.protocol import AuthenticationError, Effect, WristbandError, WristbandPacket, decode

CLOCK_WINDOW_S = 10.0  # long enough to span many copies, short enough to follow a band's crystal drift
LATE_GRACE_MS = 100  # an effect heard this long after its start is still joined; older means a replay


@dataclass
class Scheduled:
    packet: WristbandPacket
    heard_at: float


class Band:
    def __init__(self, key: bytes, show_id: int, zone: int) -> None:
        self.key = key
        self.show_id = show_id
        self.zone = zone
        self.current: Scheduled | None = None
        self.refused: Counter[str] = Counter()
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
        if packet.show_id != self.show_id:
            self.refused["other show"] += 1
            return
        now_ms = t * 1000
        self._learn_clock(packet.sequence - packet.countdown_ms - now_ms, t)
        if packet.effect == Effect.HEARTBEAT:
            return
        if self.current is not None and packet.sequence <= self.current.packet.sequence:
            if packet.sequence < self.current.packet.sequence:
                self.refused["replay"] += 1
            return  # another copy of the effect already scheduled: it only sharpened the clock
        if self.start_ms(packet) < now_ms - LATE_GRACE_MS:
            self.refused["replay"] += 1  # authentic but over: a recording played back
            return
        if packet.zones >> self.zone & 1:
            self.current = Scheduled(packet, t)

    def _learn_clock(self, bound_ms: float, t: float) -> None:
        bounds = self._bounds
        while bounds and bounds[0][0] < t - CLOCK_WINDOW_S:
            bounds.popleft()
        while bounds and bounds[-1][1] <= bound_ms:  # a monotonic deque: its head is the window's maximum
            bounds.pop()
        bounds.append((t, bound_ms))
        self._offset_ms = bounds[0][1]

    def start_ms(self, packet: WristbandPacket) -> float:
        """When the packet's effect starts, in ms on this band's clock."""
        assert self._offset_ms is not None
        return packet.sequence - self._offset_ms

    def starts_at(self) -> float | None:
        """When the scheduled effect starts, in seconds on the band's clock (None: nothing scheduled)."""
        return None if self.current is None else self.start_ms(self.current.packet) / 1000
