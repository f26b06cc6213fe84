"""The show's configuration section: the crowd's zones and the presets a lighting designer fires."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.schema import Problem, check_slug, setting
from gateway.show import console_settings
from gateway.show.console_settings import FixtureSection, LiveSection, MacroSection
from gateway.show.cue_settings import CuesSection
from gateway.show.effects import Effect, EffectError
from gateway.show.shared_settings import SharedSection
from gateway.show.zone_looks import FeedbackSection


@dataclass(frozen=True)
class ShowZone:
    name: str = setting(check=check_slug)
    index: int = setting(min=0, max=15)  # the zone's bit in the wristband packet
    distance_m: float = setting(0.0, min=0, max=2000)  # from the stage: the zone starts later by the sound's travel


@dataclass(frozen=True)
class PresetSection:
    name: str = setting(check=check_slug)
    kind: Literal["solid", "strobe", "pulse", "chase", "wave", "twinkle", "rainbow", "blackout"] = "solid"
    colour: str = "#ffffff"
    intensity: float = setting(1.0, min=0, max=1)
    bpm: float | None = setting(None, min=0.1, max=3000)  # default: the show's tempo; or give period_ms
    period_ms: int | None = setting(None, min=20, max=600_000)
    duration_s: float = setting(0.0, min=0, max=6553.5)  # 0: until the next effect
    chance: float = setting(0.3, min=0, max=1)  # twinkle: how many bands are lit each beat
    width: int = setting(1, min=1, max=16)  # chase: zones lit at once
    step_ms: int = setting(100, min=0, max=2550)  # wave: delay from one zone to the next
    zones: list[str] = field(default_factory=list)  # default zones; empty: all
    # "energy": the intensity is scaled by the crowd energy the audience-mood model gives the preset's zones,
    # from `min_intensity` (a calm room) to `intensity` (energy 1).
    intensity_from: Literal["fixed", "energy"] = "fixed"
    min_intensity: float = setting(0.2, min=0, max=1)

    def effect_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "colour": self.colour, "intensity": self.intensity,
                               "duration_s": self.duration_s, "chance": self.chance, "width": self.width,
                               "step_ms": self.step_ms}
        if self.bpm is not None:
            doc["bpm"] = self.bpm
        if self.period_ms is not None:
            doc["period_ms"] = self.period_ms
        return doc


@dataclass(frozen=True)
class ShowSection:
    lead_ms: int = setting(500, min=0, max=60_000)  # how far ahead an effect is fired: time for the radio copies
    tempo_bpm: float = setting(120.0, min=1, max=999)
    delay_by_distance: bool = True
    speed_of_sound_m_s: float = setting(343.0, min=300, max=400)
    # The photosensitivity cap: no effect flashes faster, whoever fires it (3 Hz, as broadcast guidelines allow;
    # a venue may only go lower). A request over it is refused; the bands' firmware clamps to 3 Hz anyway.
    max_flash_hz: float = setting(3.0, min=0.1, max=3.0)
    zones: list[ShowZone] = field(default_factory=list)
    presets: list[PresetSection] = field(default_factory=list)
    live: LiveSection = field(default_factory=LiveSection)  # the console's live looks (gateway/show/live.py)
    patch: list[FixtureSection] = field(default_factory=list)  # crowd fixtures on console universes
    macros: list[MacroSection] = field(default_factory=list)  # console channels that fire presets
    cues: CuesSection = field(default_factory=CuesSection)  # the timecode cue list
    feedback: FeedbackSection = field(default_factory=FeedbackSection)  # zone looks out (gateway/show/zone_looks.py)
    shared: SharedSection | None = None  # several boxes, one show (gateway/show/shared.py)

    def problems(self) -> list[Problem]:
        out = []
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            out.append(Problem("zones", "zone names must be unique"))
        if len({z.index for z in self.zones}) != len(self.zones):
            out.append(Problem("zones", "zone indexes must be unique (each is a bit in the wristband packet)"))
        for i, preset in enumerate(self.presets):
            try:  # (bpm and period_ms both given, too); at the show's tempo when it follows it
                Effect.from_document(preset.effect_document(), self.tempo_bpm).check_flash(self.max_flash_hz)
            except (EffectError, ValueError) as exc:
                out.append(Problem(f"presets[{i}]", str(exc)))
            unknown = [z for z in preset.zones if z not in names]
            if unknown:
                allowed = ", ".join(names) or "none"
                out.append(Problem(f"presets[{i}].zones", f"no zone {unknown[0]!r} (allowed: {allowed})"))
        if len({p.name for p in self.presets}) != len(self.presets):
            out.append(Problem("presets", "preset names must be unique"))
        out.extend(console_settings.problems(names, self.patch, self.macros, [p.name for p in self.presets]))
        return out
