"""What the radio sends next: the copies of the effects still counting down, in turn, else a heartbeat.

Each fired effect becomes one stream per zone group (groups further from the stage start later). A copy is made
at the moment it is handed to the radio: its sequence number is the show clock then, counted from the show's
start (the radio's epoch) so that it never wraps within a show, its countdown the time left to its group's
start. Copies go on for a short tail after the start with a countdown of 0, so a band that missed every earlier
copy still joins (late), and an effect fired with no lead time (a stop) is heard at all.
A newer effect replaces the streams of older ones for the zones it covers: on the air, the latest effect wins.
Pure: no radio, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from drivers.wristband.protocol import MAX_SEQUENCE, Effect, WristbandError, WristbandPacket
from gateway.driver import Fired

MAX_COUNTDOWN_MS = 0xFFFF


@dataclass(frozen=True)
class Stream:
    effect_id: str
    template: WristbandPacket  # sequence and countdown filled in per copy
    start_ms: int  # the group's start on the show clock
    until_ms: int  # last copy


def template(fired: Fired, show_id: int, zones: int) -> WristbandPacket:
    effect = fired.effect
    # The period goes in 10 ms steps, rounded up: an effect within the flash cap stays within it on the air.
    return WristbandPacket(show_id, 0, fired.serial, Effect[effect.kind.upper()], 0, zones, effect.colour,
                           round(effect.intensity * 255), min(10 * math.ceil(effect.period_ms / 10), 655_350),
                           min(effect.duration_ms, 6_553_500), effect.param)


class Streams:
    def __init__(self, show_id: int, tail_ms: int, heartbeat_ms: int, epoch_ms: int = 0) -> None:
        self.show_id = show_id
        self.epoch_ms = epoch_ms  # the show's start on the show clock: sequence numbers count from it
        self.tail_ms = tail_ms
        self.heartbeat_ms = heartbeat_ms
        self.active: list[Stream] = []
        self.serial = 0  # the last effect's, for heartbeats
        self._turn = 0
        self._last_heartbeat: int | None = None

    def add(self, fired: Fired) -> None:
        for group in fired.groups:
            kept = []
            for stream in self.active:
                if stream.effect_id != fired.effect_id and stream.template.zones & group.mask:
                    rest = stream.template.zones & ~group.mask
                    if not rest:
                        continue
                    stream = replace(stream, template=replace(stream.template, zones=rest))
                kept.append(stream)
            self.active = kept
            self.active.append(Stream(fired.effect_id, template(fired, self.show_id, group.mask), group.show_ms,
                                      group.show_ms + self.tail_ms))
        self.serial = fired.serial

    def before_start(self, effect_id: str, show_ms: int) -> bool:
        """Whether a group of the effect still counts down to its start (copies of it are still to come)."""
        return any(s.effect_id == effect_id and s.start_ms > show_ms for s in self.active)

    def next(self, show_ms: int) -> WristbandPacket | None:
        """The copy to send at `show_ms`, or None when there is nothing to say yet. WristbandError when `show_ms`
        is before the show's start or past the last sequence number a show has."""
        sequence = show_ms - self.epoch_ms
        if not 0 <= sequence <= MAX_SEQUENCE:
            raise WristbandError(f"the show clock is {sequence} ms from the show's start (allowed: 0 to "
                                 f"{MAX_SEQUENCE}, 49.7 days)")
        self.active = [s for s in self.active if s.until_ms >= show_ms]
        ready = [s for s in self.active if s.start_ms - show_ms <= MAX_COUNTDOWN_MS]
        if ready:
            self._turn = (self._turn + 1) % len(ready)
            stream = ready[self._turn]
            return replace(stream.template, sequence=sequence, countdown_ms=max(0, stream.start_ms - show_ms))
        if self.heartbeat_ms and (self._last_heartbeat is None or show_ms - self._last_heartbeat >= self.heartbeat_ms):
            self._last_heartbeat = show_ms
            return WristbandPacket(self.show_id, sequence, self.serial, Effect.HEARTBEAT, 0)
        return None
