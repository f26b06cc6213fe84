"""The reference wristband: what a band's firmware does with what it hears. Decode, authenticate, refuse
replays, keep an estimate of the show clock, and schedule the effect on the band's own clock.

Every authentic copy says "the show clock read S when this copy was sent, and the effect starts C ms later".
Hearing it at local time t, the band knows the offset between the clocks is at least S - t (a copy can only be
late on its way). The band keeps the largest such bound over a sliding window, so the least-delayed copy it
heard wins and a lost copy costs nothing. Sequence numbers only grow, so a recording played back is refused.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from drivers.wristband.protocol import AuthenticationError, Effect, WristbandError, WristbandPacket, decode

CLOCK_WINDOW_S = 10.0  # long enough to span many copies, short enough to follow a band's crystal drift
LATE_GRACE_MS = 100  # an effect heard this long after its start is still joined


def newer(serial: int, than: int) -> bool:
    """Serial numbers count modulo 256: the next 127 are newer, the 128 before are older."""
    return 0 < (serial - than) % 256 < 128


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
        self._last_sequence = -1
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
        if packet.sequence <= self._last_sequence:
            if packet.sequence < self._last_sequence:
                self.refused["replay"] += 1
            return  # the radio repeating the same copy: nothing new
        self._last_sequence = packet.sequence
        now_ms = t * 1000
        self._learn_clock(packet.sequence - now_ms, t)
        if packet.effect == Effect.HEARTBEAT or not packet.zones >> self.zone & 1:
            return
        current = self.current
        if current is not None and not newer(packet.serial, current.packet.serial):
            return  # a copy of the effect scheduled, or an older one still on the air: it only sharpened the clock
        if self.start_ms(packet) < now_ms - LATE_GRACE_MS:
            self.refused["late"] += 1  # heard only after it was over
            return
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
        return packet.start() - self._offset_ms

    def starts_at(self) -> float | None:
        """When the scheduled effect starts, in seconds on the band's clock (None: nothing scheduled)."""
        return None if self.current is None else self.start_ms(self.current.packet) / 1000
