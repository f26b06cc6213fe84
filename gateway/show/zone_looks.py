"""What each zone of the crowd shows now, whatever drives it: the console's live look (`engine.live`) or the
effect fired there (rendered by `gateway.show.effects.render` at the zone's position), the latest to start
winning. It is fed back to those who watch the crowd: OSC `/vg/out/zone/{zone}/look` (the `osc` driver) and,
optionally, a DMX universe (zone index i's red, green and blue at channels 3i+1..3i+3) that the DMX outputs carry
to a visualiser or the console's own preview. Each follower hears the zones whose look changed, at most
`[show.feedback] rate_hz` times a second; nothing is computed while no zone changes (an effect that moves, such
as a pulse, changes on every sample).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from gateway.schema import setting
from gateway.show.effects import RGB, render
from gateway.show.live import LiveChange

if TYPE_CHECKING:
    from gateway.dmx import DmxUniverses
    from gateway.show.engine import Fired, ShowEngine

    Source = LiveChange | tuple[Fired, int]  # a live look, or an effect with its start in the zone (show ms)

STILL = frozenset({"solid", "blackout"})  # kinds whose look does not move once started (until a duration ends)


@dataclass(frozen=True)
class FeedbackSection:
    rate_hz: float = setting(10.0, min=0.5, max=44)  # looks a second, at most, to each follower
    universe: int = setting(0, min=0, max=63999)  # 0: none; else a universe of [dmx] that carries the looks


@dataclass(frozen=True)
class ZoneLook:
    colour: tuple[float, float, float]  # red, green, blue 0..1 at full intensity
    intensity: float  # 0..1
    rgb: RGB  # what the bands show (the colour scaled by the intensity), 0..255 each


DARK = ZoneLook((0.0, 0.0, 0.0), 0.0, (0, 0, 0))
Follower = Callable[[dict[str, ZoneLook]], None]


def _effect_look(fired: Fired, t_ms: int, position: int, zones: int) -> tuple[ZoneLook, bool]:
    """An effect's look `t_ms` after it started in a zone, and whether it may change later."""
    effect = fired.effect
    if effect.kind == "blackout":
        return DARK, False
    shown = render(effect, t_ms, position, zones)
    moving = effect.kind not in STILL or bool(effect.duration_ms and t_ms < effect.duration_ms)
    top = max(shown)
    if effect.kind == "rainbow":  # the colour turns: the hue at full value
        colour = tuple(c / top for c in shown) if top else (0.0, 0.0, 0.0)
        return ZoneLook(colour, top / 255, shown), moving  # type: ignore[arg-type]
    # the effect's level now (0..1 of full scale), read from the same rendering of white at full intensity
    level = render(replace(effect, colour=(255, 255, 255), intensity=1.0), t_ms, position, zones)[0] / 255
    colour = tuple(c / 255 for c in effect.colour)
    return ZoneLook(colour, effect.intensity * level, shown), moving  # type: ignore[arg-type]


def _live_look(change: LiveChange) -> ZoneLook:
    look = change.look
    return ZoneLook(tuple(c / 255 for c in look.colour), look.intensity, look.rgb())  # type: ignore[arg-type]


def _started(sources: list[tuple[int, Source]], now_ms: int) -> int:
    """Drop what an older start showed (gone for good once a later one has started): 1 when the first source left
    is the one shown now, 0 when none has started yet."""
    last = None
    for i, (start, _) in enumerate(sources):
        if start > now_ms:
            break
        last = i
    if last is None:
        return 0
    del sources[:last]
    return 1


class ZoneLooks:
    """Each zone's sources in the order they start (a live look shows from its `show_ms`, an effect from its
    start in the zone, sound delay included); the latest one started is what the zone shows."""

    def __init__(self, engine: ShowEngine) -> None:
        self.engine = engine
        self._sources: dict[str, list[tuple[int, Source]]] = {}  # zone -> (start, source), the shown one first
        self._wakes: set[asyncio.Event] = set()  # one per follower: set on every change
        engine.on_fire(self._fired)
        engine.live.subscribe(self._live)

    def _fired(self, fired: Fired) -> None:
        for group in fired.groups:
            for zone in group.zones:
                self._add(zone, group.show_ms, (fired, group.show_ms))

    def _live(self, change: LiveChange) -> None:
        self._add(change.zone, change.show_ms, change)

    def _add(self, zone: str, start: int, source: Source) -> None:
        sources = self._sources.setdefault(zone, [])
        sources.append((start, source))
        sources.sort(key=lambda s: s[0])  # (stable: of two starting together, the later told wins)
        _started(sources, self.engine.show_ms(time.monotonic()))  # kept short while nobody follows
        for wake in self._wakes:
            wake.set()

    def looks(self, now: float | None = None) -> tuple[dict[str, ZoneLook], float | None]:
        """Every zone's look at monotonic `now` (default: now), and in how many seconds one may change next
        (None: not until something new is fired or set)."""
        now = time.monotonic() if now is None else now
        now_ms = self.engine.show_ms(now)
        zones = sorted(self.engine.zones.values(), key=lambda z: z.index)
        out: dict[str, ZoneLook] = {}
        soonest: float | None = None
        for position, zone in enumerate(zones):
            sources = self._sources.get(zone.name, [])
            started = _started(sources, now_ms)
            if len(sources) > started:
                wait = (sources[started][0] - now_ms) / 1000
                soonest = wait if soonest is None else min(soonest, wait)
            if not started:
                out[zone.name] = DARK
                continue
            source = sources[0][1]
            if isinstance(source, LiveChange):
                out[zone.name] = _live_look(source)
                continue
            look, moving = _effect_look(source[0], now_ms - source[1], position, len(zones))
            out[zone.name] = look
            if moving:
                soonest = 0.0
        return out, soonest

    async def follow(self, listener: Follower) -> None:
        """`listener(looks)` with the zones whose look changed, at once and then on every change, at most
        `show.feedback.rate_hz` times a second, until cancelled."""
        period = 1 / self.engine.settings.feedback.rate_hz
        told: dict[str, ZoneLook] = {}
        wake = asyncio.Event()
        self._wakes.add(wake)
        try:
            while True:
                wake.clear()
                looks, soonest = self.looks()
                changed = {zone: look for zone, look in looks.items() if told.get(zone) != look}
                if changed:
                    told.update(changed)
                    listener(changed)
                await asyncio.sleep(period)
                if soonest is not None and soonest <= period:
                    continue
                wait = None if soonest is None else soonest - period
                if not wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), wait)
        finally:
            self._wakes.discard(wake)

    async def feed(self, dmx: DmxUniverses) -> None:
        """The looks into `show.feedback.universe`: zone index i's red, green, blue at channels 3i+1..3i+3."""
        number = self.engine.settings.feedback.universe
        dmx.get(number)  # a universe missing from [dmx] is said plainly
        zones = self.engine.zones

        def write(changed: dict[str, ZoneLook]) -> None:
            for zone, look in changed.items():
                dmx.set_levels(number, bytes(look.rgb), 3 * zones[zone].index + 1)

        await self.follow(write)
