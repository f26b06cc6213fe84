"""Effects: what a zone of wristbands shows, as a pure function of the time since the effect started.

This is the rendering the preview (dashboard, tests) uses and a band's firmware is meant to run, from the fields
of the wristband packet and its zone's position. Kinds: solid, strobe, pulse, chase, wave, twinkle, rainbow,
blackout.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["solid", "strobe", "pulse", "chase", "wave", "twinkle", "rainbow", "blackout"]
KINDS: tuple[Kind, ...] = ("solid", "strobe", "pulse", "chase", "wave", "twinkle", "rainbow", "blackout")
RGB = tuple[int, int, int]
STROBE_FLASH_MS = 30


class EffectError(ValueError):
    """An effect that cannot be made from what was given; the message says what is allowed."""


def parse_colour(text: str) -> RGB:
    raw = text.removeprefix("#")
    if len(raw) != 6:
        raise EffectError(f"colour {text!r} is not #RRGGBB")
    try:
        value = int(raw, 16)
    except ValueError:
        raise EffectError(f"colour {text!r} is not #RRGGBB") from None
    return value >> 16, value >> 8 & 0xFF, value & 0xFF


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
        duration_s, chance (twinkle, 0..1), width (chase), step_ms (wave)."""
        known = {"kind", "colour", "intensity", "bpm", "period_ms", "duration_s", "chance", "width", "step_ms"}
        unknown = set(doc) - known
        if unknown:
            raise EffectError(f"unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(known))})")
        kind = doc.get("kind")
        if kind not in KINDS:
            raise EffectError(f"kind {kind!r} is not allowed (allowed: {', '.join(KINDS)})")
        bpm = doc.get("bpm", tempo_bpm if "period_ms" not in doc else None)
        period = round(60_000 / bpm) if bpm else int(doc.get("period_ms", 500))
        intensity = float(doc.get("intensity", 1.0))
        if not 0 <= intensity <= 1:
            raise EffectError(f"intensity {intensity} is out of range (allowed: 0 to 1)")
        if not 20 <= period <= 600_000:
            raise EffectError(f"period {period} ms is out of range (allowed: 20 ms to 10 min, or bpm 0.1 to 3000)")
        duration = round(float(doc.get("duration_s", 0)) * 1000)
        if not 0 <= duration <= 6_553_500:
            raise EffectError(f"duration_s {duration / 1000} is out of range (allowed: 0 to 6553.5)")
        param = {"twinkle": round(float(doc.get("chance", 0.3)) * 255), "chase": int(doc.get("width", 1)),
                 "wave": round(float(doc.get("step_ms", 100)) / 10)}.get(str(kind), 0)
        if not 0 <= param <= 255:
            raise EffectError("chance must be 0 to 1, width 0 to 255, step_ms 0 to 2550")
        return cls(kind, parse_colour(str(doc.get("colour", "#ffffff"))), intensity, period, duration, param)

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
