"""Effects: what a zone of wristbands shows, as a pure function of the time since the effect started.

This is the rendering the preview (dashboard, tests) uses and a band's firmware is meant to run, from the fields
of the wristband packet and its zone's position. Kinds: solid, strobe, pulse, chase, wave, twinkle, rainbow,
blackout.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["solid", "strobe", "pulse", "chase", "wave", "twinkle", "rainbow", "blackout"]
KINDS: tuple[Kind, ...] = ("solid", "strobe", "pulse", "chase", "wave", "twinkle", "rainbow", "blackout")
RGB = tuple[int, int, int]
STROBE_FLASH_MS = 30
# Kinds whose light goes up and down once a period: a flash each period, for the photosensitivity cap
# (`show.max_flash_hz`). Solid, rainbow (a hue turning at constant brightness) and blackout do not flash.
FLASHING: frozenset[str] = frozenset({"strobe", "pulse", "chase", "wave", "twinkle"})


class EffectError(ValueError):
    """An effect that cannot be made from what was given; the message says what is allowed."""


class TooSoon(EffectError):
    """An effect that would light a zone sooner than the flash cap allows after the last one there: not wrong in
    itself, and fired as it is `retry_after_s` later."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


COLOUR = re.compile(r"#?[0-9A-Fa-f]{6}")
# An effect's fields beside `kind` and `colour`: JSON type, minimum, maximum. A preset takes the same
# (`gateway/show/settings.py`), and the HTTP API's document states them from this table.
FIELDS: dict[str, tuple[Literal["number", "integer"], float, float]] = {
    "intensity": ("number", 0, 1),
    "bpm": ("number", 0.1, 3000),  # or period_ms; neither: the show's tempo
    "period_ms": ("integer", 20, 600_000),
    "duration_s": ("number", 0, 6553.5),  # 0: until the next effect
    "chance": ("number", 0, 1),  # twinkle: the share of bands lit each beat
    "width": ("integer", 1, 16),  # chase: zones lit at once
    "step_ms": ("integer", 0, 2550),  # wave: the delay from one zone to the next
}


def parse_colour(text: str) -> RGB:
    if not COLOUR.fullmatch(text):
        raise EffectError(f"colour {text!r} is not #RRGGBB")
    value = int(text.removeprefix("#"), 16)
    return value >> 16, value >> 8 & 0xFF, value & 0xFF


def number(name: str, value: Any, lo: float, hi: float, whole: bool = False) -> float:
    """`value` as a finite number within lo..hi (a whole one if `whole`); EffectError naming `name` otherwise.
    Never raises anything else, whatever the value (NaN, infinities, an int too large for a float, a bool)."""
    span = f"{lo:g} to {hi:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EffectError(f"{name} must be {'a whole number' if whole else 'a number'} (allowed: {span})")
    if isinstance(value, int):
        if not lo <= value <= hi:  # compared as ints: no float conversion to overflow
            shown = f" {value}" if abs(value) < 10**18 else ""
            raise EffectError(f"{name}{shown} is out of range (allowed: {span})")
        return value
    if not math.isfinite(value) or not lo <= value <= hi:
        raise EffectError(f"{name} {value:g} is out of range (allowed: {span})")
    if whole and not value.is_integer():
        raise EffectError(f"{name} must be a whole number (allowed: {span})")
    return value


def _field(name: str, value: Any) -> float:
    kind, lo, hi = FIELDS[name]
    return number(name, value, lo, hi, whole=kind == "integer")


@dataclass(frozen=True)
class Effect:
    kind: Kind
    colour: RGB = (255, 255, 255)
    intensity: float = 1.0  # 0..1
    period_ms: int = 500  # one beat
    duration_ms: int = 0  # 0: until the next effect
    param: int = 0  # twinkle: chance /255; chase: zones lit at once; wave: step between zones in 10 ms

    @classmethod
    def from_document(cls, doc: dict[str, Any], tempo_bpm: float | None = None) -> Effect:
        """From a preset or an inline effect: kind, colour "#RRGGBB", intensity, bpm or period_ms,
        duration_s, chance (twinkle, 0..1), width (chase), step_ms (wave). Each field given is checked, whatever
        the kind, so that what is accepted is exactly what FIELDS says."""
        known = ("kind", "colour", *FIELDS)
        unknown = sorted(set(doc) - set(known))
        if unknown:
            raise EffectError(f"unknown key {unknown[0]!r} (allowed: {', '.join(known)})")
        kind = doc.get("kind")
        if kind not in KINDS:
            raise EffectError(f"kind {kind!r} is not allowed (allowed: {', '.join(KINDS)})")
        if "bpm" in doc and "period_ms" in doc:
            raise EffectError("give bpm or period_ms, not both")
        given = {name: _field(name, doc[name]) for name in FIELDS if name in doc}
        colour = doc.get("colour", "#ffffff")
        if not isinstance(colour, str):
            raise EffectError(f"colour {colour!r} is not #RRGGBB")
        bpm = given.get("bpm", tempo_bpm if "period_ms" not in given else None)
        period = round(60_000 / bpm) if bpm else int(given.get("period_ms", 500))
        if not 20 <= period <= 600_000:  # (the show's tempo is 1 to 999 bpm: always within)
            raise EffectError(f"period {period} ms is out of range (allowed: 20 ms to 10 min, or bpm 0.1 to 3000)")
        param = {"twinkle": round(given.get("chance", 0.3) * 255), "chase": int(given.get("width", 1)),
                 "wave": round(given.get("step_ms", 100) / 10)}.get(str(kind), 0)
        return cls(kind, parse_colour(colour), float(given.get("intensity", 1.0)), period,
                   round(given.get("duration_s", 0) * 1000), param)

    @property
    def flash_hz(self) -> float:
        """Flashes a second: one a period for a flashing kind, none for the others."""
        return 1000 / self.period_ms if self.kind in FLASHING else 0.0

    def check_flash(self, max_flash_hz: float) -> None:
        """EffectError if the effect flashes faster than `max_flash_hz` (the show's photosensitivity cap)."""
        if self.flash_hz > max_flash_hz:
            slowest = math.ceil(1000 / max_flash_hz)
            raise EffectError(f"{self.kind} at {self.flash_hz:.3g} flashes a second is over show.max_flash_hz "
                              f"{max_flash_hz:g} (allowed: period_ms {slowest} or more, or bpm "
                              f"{60_000 / slowest:.4g} or less)")

    def document(self) -> dict[str, Any]:
        r, g, b = self.colour
        return {"kind": self.kind, "colour": f"#{r:02x}{g:02x}{b:02x}", "intensity": self.intensity,
                "period_ms": self.period_ms, "duration_ms": self.duration_ms, "param": self.param}


def _scale(colour: RGB, level: float) -> RGB:
    r, g, b = colour
    return round(r * level), round(g * level), round(b * level)


def render(effect: Effect, t_ms: float, zone: int, zones: int, band: int = 0) -> RGB:
    """What band `band` of the zone at position `zone` (of `zones`) shows `t_ms` after the start."""
    if t_ms < 0 or effect.kind == "blackout" or (effect.duration_ms and t_ms >= effect.duration_ms):
        return (0, 0, 0)
    period, level = effect.period_ms, effect.intensity
    phase = (t_ms % period) / period
    if effect.kind == "solid":
        return _scale(effect.colour, level)
    if effect.kind == "strobe":
        return _scale(effect.colour, level if t_ms % period < min(STROBE_FLASH_MS, period / 2) else 0.0)
    if effect.kind == "pulse":
        return _scale(effect.colour, level * (0.5 - 0.5 * math.cos(2 * math.pi * phase)))
    if effect.kind == "chase":
        step = int(t_ms // period) % max(zones, 1)
        lit = (zone - step) % max(zones, 1) < max(effect.param, 1)
        return _scale(effect.colour, level if lit else 0.0)
    if effect.kind == "wave":
        shifted = (t_ms - zone * effect.param * 10) / period
        return _scale(effect.colour, level * (0.5 + 0.5 * math.sin(2 * math.pi * shifted)))
    if effect.kind == "twinkle":
        beat = int(t_ms // period)
        digest = hashlib.blake2b(f"{zone}:{band}:{beat}".encode(), digest_size=1).digest()[0]
        return _scale(effect.colour, level if digest < effect.param else 0.0)
    hue = (t_ms / period + zone / max(zones, 1)) % 1.0  # rainbow
    r, g, b = colorsys.hsv_to_rgb(hue, 1.0, level)
    return round(r * 255), round(g * 255), round(b * 255)
