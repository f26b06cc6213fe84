"""The patch: a console's universes mapped to crowd fixtures (looks of zones) and macro channels (presets).

A crowd fixture's channels, from its start address, in mode "8ch" (mode "4ch": the first four alone);
`docs/consoles.md` has the table a console programmer reads:

1. intensity: 0..255, dark to full.
2. red, 3. green, 4. blue: 0..255 each, the colour at full intensity.
5. strobe: 0-9 steady; 10-255 from 0.5 to 3 flashes a second (never over show.max_flash_hz).
6. effect: 0-9 and 210-255 none (the live look); 10-49 pulse, 50-89 chase, 90-129 wave, 130-169 twinkle, 170-209
   rainbow, fired when the level enters the range, in the fixture's colour and intensity as they are then.
7. speed: the effect's beat: 0 the show's tempo; 1-255 from 15 to 180 bpm (never faster than the flash cap).
8. control: 0-127 live, the console drives the zones; 128-255 released to the box's own effects (OSC, HTTP, cues).

A look goes to `engine.live` only when it changed; an effect goes out through the engine's fire path (every cap
of the show holds). One the flash cap says is too soon waits, on the loop, for the moment the cap allows, and is
fired then: at most one such deferred fire per fixture and per macro channel, replaced by a newer request from the
same channel, dropped when the fixture's effect channel leaves the range (or its control channel releases it), when
the console is lost and when the show is stopped. A channel flicked fast thus books nothing far ahead.

A macro channel fires a preset when its level enters a range, not while it stays there; the first level heard (at
start, or after the console was lost) is where it stands, and fires nothing, so that a gateway restarted or a
console reconnected mid-show does not fire its macros again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.show.console_settings import LAYOUTS, FixtureSection, MacroRange, MacroSection
from gateway.show.effects import EffectError, TooSoon
from gateway.show.live import Look

if TYPE_CHECKING:
    from gateway.show.engine import ShowEngine

log = logging.getLogger(__name__)

STROBE_FROM = 10  # strobe channel: below this, steady
STROBE_HZ = (0.5, 3.0)  # at STROBE_FROM and at 255
EFFECTS: tuple[tuple[int, int, str], ...] = (  # effect channel: level ranges and the effect kind each fires
    (10, 49, "pulse"), (50, 89, "chase"), (90, 129, "wave"), (130, 169, "twinkle"), (170, 209, "rainbow"))
SPEED_BPM = (15.0, 180.0)  # speed channel at 1 and at 255 (0: the show's tempo)
RELEASED_FROM = 128  # control channel: from this level the fixture's zones are the box's own
REFUSAL_LOG_S = 10.0  # refused effects and presets are logged at most this often, with a count
CAP_SLACK_S = 0.002  # a deferred fire runs this long after the flash cap's moment (the loop's timer may be early)


def strobe_hz(level: int) -> float:
    """The strobe channel's flashes a second (0: steady), before the show's cap."""
    if level < STROBE_FROM:
        return 0.0
    lo, hi = STROBE_HZ
    return round(lo + (level - STROBE_FROM) * (hi - lo) / (255 - STROBE_FROM), 3)


def effect_kind(level: int) -> str | None:
    """The effect channel's effect kind, or None for the live look."""
    for lo, hi, kind in EFFECTS:
        if lo <= level <= hi:
            return kind
    return None


def speed_bpm(level: int) -> float | None:
    """The speed channel's tempo, or None for the show's."""
    if level == 0:
        return None
    lo, hi = SPEED_BPM
    return lo + (level - 1) * (hi - lo) / 254


@dataclass
class _Fixture:
    """What the patch last made of a fixture's channels."""

    section: FixtureSection
    zones: tuple[str, ...]
    levels: bytes = b""  # its channels' levels last read: the same again is nothing new
    look: Look | None = None  # the last look set on live (None: none, or the next one is set whatever it is)
    effect: str | None = None  # the effect range its effect channel is in
    released: bool = False  # its control channel gives its zones to the box


class Patch:
    def __init__(self, engine: ShowEngine) -> None:
        self.engine = engine
        self.fired = 0  # effects and presets fired from console channels
        self.refused = 0  # refused by the show
        self.dropped = 0  # deferred by the flash cap, then replaced by a newer request or cancelled
        self._deferred: dict[tuple[int, str], asyncio.TimerHandle] = {}  # (universe, channel's name) -> its fire
        self._fixtures: dict[int, list[_Fixture]] = {}
        self._macros: dict[int, list[tuple[MacroSection, tuple[MacroRange, ...]]]] = {}
        self._macro_at: dict[tuple[int, int], MacroRange | None] = {}  # (universe, channel) -> its range now
        self._last_refusal_log = float("-inf")
        for section in engine.settings.patch:
            self._fixtures.setdefault(section.universe, []).append(_Fixture(section, tuple(section.zones)))
        for macro in engine.settings.macros:
            self._macros.setdefault(macro.universe, []).append((macro, macro.parsed()))

    def universes(self) -> set[int]:
        """The universes the patch and the macros use."""
        return set(self._fixtures) | set(self._macros)

    def levels(self, universe: int, levels: bytes) -> None:
        """A console universe's merged levels (from channel 1), as received."""
        now = time.monotonic()
        for fixture in self._fixtures.get(universe, ()):
            start = fixture.section.address - 1
            values = levels[start:start + fixture.section.channels].ljust(fixture.section.channels, b"\0")
            if values != fixture.levels:
                fixture.levels = values
                self._fixture(fixture, dict(zip(LAYOUTS[fixture.section.mode], values, strict=True)), now)
        for macro, ranges in self._macros.get(universe, ()):
            level = levels[macro.channel - 1] if macro.channel <= len(levels) else 0
            at = next((r for r in ranges if r.lo <= level <= r.hi), None)
            key = (universe, macro.channel)
            seen = key in self._macro_at
            before, self._macro_at[key] = self._macro_at.get(key), at
            if seen and at is not None and at != before:
                self._fire((universe, f"macro on universe {universe} channel {macro.channel}"), preset=at.preset,
                           zones=list(macro.zones) or None)

    def lost(self, universe: int) -> None:
        """The console's signal for `universe` is lost (every source gone)."""
        for key in [k for k in self._macro_at if k[0] == universe]:
            del self._macro_at[key]  # the console's next level is where the channel stands
        self.cancel(universe)
        live = self.engine.settings.live
        if live.on_loss == "hold":
            log.info("console universe %d lost: its fixtures hold their looks", universe)
            return
        log.info("console universe %d lost: its fixtures fade out over %d ms", universe, live.loss_fade_ms)
        for fixture in self._fixtures.get(universe, ()):
            if fixture.look is not None or fixture.effect is not None:  # it drives its zones: a look, or an effect
                colour = fixture.look.colour if fixture.look is not None else (0, 0, 0)
                self.engine.live.set(fixture.zones, Look(colour, 0.0), fade_ms=live.loss_fade_ms)
            fixture.levels, fixture.look, fixture.effect = b"", None, None  # the console's return sets them again

    def cancel(self, universe: int | None = None) -> None:
        """Drop the fires waiting for the flash cap (those of `universe`'s channels, or all)."""
        for key in [k for k in self._deferred if universe is None or k[0] == universe]:
            self._drop(key)

    def _fixture(self, fixture: _Fixture, ch: dict[str, int], now: float) -> None:
        key = (fixture.section.universe, f"fixture {fixture.section.name}")
        if ch.get("control", 0) >= RELEASED_FROM:
            if not fixture.released:
                fixture.released, fixture.look, fixture.effect = True, None, None
                self._drop(key)
                self.engine.live.release(fixture.zones)
            return
        fixture.released = False
        look = Look((ch["red"], ch["green"], ch["blue"]), ch["intensity"] / 255, strobe_hz(ch.get("strobe", 0)))
        kind = effect_kind(ch.get("effect", 0))
        if kind != fixture.effect:
            fixture.effect, fixture.look = kind, None
            if kind is None:
                self._drop(key)  # back to the live look before a deferred effect started: it does not start
            else:
                self._fire(key, inline=self._effect(kind, look, ch.get("speed", 0)), zones=list(fixture.zones))
        if kind is None and look != fixture.look:
            fixture.look = look
            self.engine.live.set(fixture.zones, look, at_mono=now)

    def _effect(self, kind: str, look: Look, speed: int) -> dict[str, Any]:
        """The inline effect the effect channel fires: the fixture's colour and intensity, the speed channel's
        beat slowed to the flash cap where the kind flashes (rainbow only turns)."""
        period = round(60_000 / (speed_bpm(speed) or self.engine.tempo_bpm))
        if kind != "rainbow":
            period = max(period, math.ceil(1000 / self.engine.settings.max_flash_hz))
        r, g, b = look.colour
        return {"kind": kind, "colour": f"#{r:02x}{g:02x}{b:02x}", "intensity": round(look.intensity, 4),
                "period_ms": period}

    def _fire(self, key: tuple[int, str], preset: str | None = None, inline: dict[str, Any] | None = None,
              zones: list[str] | None = None) -> None:
        """Fire through the engine for the channel `key`; one the flash cap says is too soon is fired when the cap
        allows, replacing the channel's request already waiting."""
        self._drop(key)
        try:
            self.engine.fire(preset, inline, zones)
        except TooSoon as exc:
            self._deferred[key] = asyncio.get_running_loop().call_later(
                exc.retry_after_s + CAP_SLACK_S, self._deferred_fire, key, preset, inline, zones)
        except (EffectError, LookupError) as exc:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= REFUSAL_LOG_S:
                self._last_refusal_log = now
                log.warning("%s: %s refused: %s (%d refused so far)", key[1], preset or inline, exc, self.refused)
        else:
            self.fired += 1

    def _deferred_fire(self, key: tuple[int, str], preset: str | None, inline: dict[str, Any] | None,
                       zones: list[str] | None) -> None:
        """The flash cap's moment for a channel's deferred fire (deferred again if the zones were lit meanwhile)."""
        del self._deferred[key]
        self._fire(key, preset, inline, zones)

    def _drop(self, key: tuple[int, str]) -> None:
        handle = self._deferred.pop(key, None)
        if handle is not None:
            handle.cancel()
            self.dropped += 1
