"""What the radio sends next: the copies of the effects still counting down and the live frames, in turn, else a
heartbeat.

Each fired effect becomes one stream per zone group (groups further from the stage start later). A copy is made
at the moment it is handed to the radio: its sequence number is the show clock then, counted from the show's
start (the radio's epoch) so that it never wraps within a show, its countdown the time left to its group's
start. Copies go on for a short tail after the start with a countdown of 0, so a band that missed every earlier
copy still joins (late), and an effect fired with no lead time (a stop) is heard at all.
A newer effect replaces the streams of older ones for the zones it covers: on the air, the latest effect wins.

Live zones (the console's looks, `set_live`) take a turn with the effect streams while a change is pending: from
when the streams learn it until its instant plus `live_tail_ms`. Pending changes go out in every live turn,
zones of the same look and instant sharing a mask, two looks a frame (more: the frames take turns); a frame's
looks share its countdown, so a second look is one of the same instant, else a refresh. With nothing pending,
every live zone is refreshed in turn in the slots no effect needs, so that a band switched on late learns its
look; live frames then stand in for heartbeats (they carry the show clock as well). An effect fired in a zone
takes it from live control.
Pure: no radio, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from drivers.wristband.protocol import (
    LOOKS_PER_FRAME,
    MAX_FADE_MS,
    MAX_LIVE_COUNTDOWN_MS,
    MAX_SEQUENCE,
    MAX_STROBE_MS,
    Effect,
    LiveFrame,
    LiveLook,
    WristbandError,
    WristbandPacket,
)
from gateway.driver import Fired, LiveChange

MAX_COUNTDOWN_MS = 0xFFFF
RGB = tuple[int, int, int]


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


@dataclass(frozen=True)
class LiveZone:
    """A zone under live control, as the live frames carry it."""

    mask: int
    rgb: RGB
    strobe_ms: int
    show_ms: int  # its look's instant on the show clock
    fade_ms: int


def strobe_ms(hz: float) -> int:
    """A strobe's period in the frame's 10 ms steps, rounded up (slower: within the cap as asked); a strobe
    slower than the frame can carry goes out steady, never faster than asked."""
    if hz <= 0:
        return 0
    period = 10 * math.ceil(100 / hz)
    return period if period <= MAX_STROBE_MS else 0


def live_zone(change: LiveChange) -> LiveZone:
    return LiveZone(change.mask, change.look.rgb(), strobe_ms(change.look.strobe_hz), change.show_ms,
                    min(max(change.fade_ms, 0), MAX_FADE_MS))


@dataclass(frozen=True)
class _Group:
    """Live zones of one look (and one instant, when pending): one look of a frame."""

    mask: int
    rgb: RGB
    strobe_ms: int
    instant: int | None  # pending: its instant; None: passed (a tail copy) or a refresh
    fade_ms: int

    def look(self) -> LiveLook:
        return LiveLook(self.mask, self.rgb, self.strobe_ms)


def _groups(zones: Iterable[LiveZone], now_ms: int, pending: bool) -> list[_Group]:
    by_look: dict[tuple[RGB, int, int | None], list[LiveZone]] = {}
    for zone in zones:
        instant = zone.show_ms if pending and zone.show_ms > now_ms else None
        by_look.setdefault((zone.rgb, zone.strobe_ms, instant), []).append(zone)
    groups = []
    for (rgb, strobe, instant), members in by_look.items():
        mask = 0
        for member in members:
            mask |= member.mask
        groups.append(_Group(mask, rgb, strobe, instant, max(m.fade_ms for m in members)))
    return sorted(groups, key=lambda g: (g.instant or 0, g.mask))


class Streams:
    def __init__(self, show_id: int, tail_ms: int, heartbeat_ms: int, epoch_ms: int = 0,
                 live_tail_ms: int = 100) -> None:
        self.show_id = show_id
        self.epoch_ms = epoch_ms  # the show's start on the show clock: sequence numbers count from it
        self.tail_ms = tail_ms
        self.heartbeat_ms = heartbeat_ms
        self.live_tail_ms = live_tail_ms  # a live change is sent as pending this long after its instant
        self.active: list[Stream] = []
        self.live: dict[str, LiveZone] = {}
        self.serial = 0  # the last effect's, for heartbeats
        self._turn = 0
        self._live_turn = 0
        self._refresh_turn = 0
        self._last_heartbeat: int | None = None

    def set_live(self, changes: Iterable[LiveChange]) -> None:
        """The zones under live control now, each with its latest change (a zone not named is no longer sent)."""
        self.live = {change.zone: live_zone(change) for change in changes}

    def add(self, fired: Fired) -> None:
        for group in fired.groups:
            self.live = {name: z for name, z in self.live.items() if not z.mask & group.mask}  # the effect's now
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

    def next(self, show_ms: int) -> WristbandPacket | LiveFrame | None:
        """The copy to send at `show_ms`, or None when there is nothing to say yet. WristbandError when `show_ms`
        is before the show's start or past the last sequence number a show has."""
        sequence = show_ms - self.epoch_ms
        if not 0 <= sequence <= MAX_SEQUENCE:
            raise WristbandError(f"the show clock is {sequence} ms from the show's start (allowed: 0 to "
                                 f"{MAX_SEQUENCE}, 49.7 days)")
        self.active = [s for s in self.active if s.until_ms >= show_ms]
        ready = [s for s in self.active if s.start_ms - show_ms <= MAX_COUNTDOWN_MS]
        frame, changes, refreshes = self._live_frame(show_ms, sequence) if self.live else (None, 0, 0)
        if frame is not None and ready and not changes:
            frame = None  # refreshes wait for a slot no effect needs: an effect's copies are its sync
        if ready or frame:
            self._turn = (self._turn + 1) % (len(ready) + (frame is not None))
            if self._turn == len(ready):
                assert frame is not None
                self._live_turn += changes  # these went out: the next looks' turn
                self._refresh_turn += refreshes
                return frame
            stream = ready[self._turn]
            return replace(stream.template, sequence=sequence, countdown_ms=max(0, stream.start_ms - show_ms))
        if self.heartbeat_ms and (self._last_heartbeat is None or show_ms - self._last_heartbeat >= self.heartbeat_ms):
            self._last_heartbeat = show_ms
            return WristbandPacket(self.show_id, sequence, self.serial, Effect.HEARTBEAT, 0)
        return None

    def _live_frame(self, show_ms: int, sequence: int) -> tuple[LiveFrame | None, int, int]:
        """The live frame to send at `show_ms` if it is live's turn (pending looks first, refreshes after), and how
        many pending and refreshed looks it carries."""
        pending, rest = [], []
        for zone in self.live.values():
            if zone.show_ms + self.live_tail_ms < show_ms:
                rest.append(zone)
            elif zone.show_ms - show_ms <= MAX_LIVE_COUNTDOWN_MS:  # further ahead than a countdown says: waits
                pending.append(zone)
        changes, refreshes = _groups(pending, show_ms, True), _groups(rest, show_ms, False)
        looks: list[_Group] = []
        for i in range(len(changes)):  # the next in turn, and the next after it of the same instant
            group = changes[(self._live_turn + i) % len(changes)]
            if not looks or (group.instant == looks[0].instant and len(looks) < LOOKS_PER_FRAME):
                looks.append(group)
        pending_looks = len(looks)
        for i in range(min(LOOKS_PER_FRAME - len(looks), len(refreshes))):
            looks.append(refreshes[(self._refresh_turn + i) % len(refreshes)])
        if not looks:
            return None, 0, 0
        first = looks[0]
        countdown = first.instant - show_ms if first.instant is not None else 0
        frame = LiveFrame(self.show_id, sequence, countdown, first.fade_ms, tuple(g.look() for g in looks))
        return frame, pending_looks, len(looks) - pending_looks
