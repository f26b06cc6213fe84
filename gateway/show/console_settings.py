"""The console side's configuration: the live mode (`[show.live]`), the patch (`[[show.patch]]`, crowd fixtures)
and macro channels (`[[show.macros]]`).

A crowd fixture is one zone of wristbands (or a zone group: several zones that take the same look) patched on a
console universe at a start address, with the channel layout of its `mode` (`LAYOUTS`; `docs/consoles.md` says
what each value does). A macro channel fires presets by value range, as a console's macro would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.schema import Problem, check_slug, setting

Mode = Literal["8ch", "4ch"]
# Each mode's channels in order from the fixture's start address (`gateway/show/patch.py` reads them).
LAYOUTS: dict[str, tuple[str, ...]] = {
    "8ch": ("intensity", "red", "green", "blue", "strobe", "effect", "speed", "control"),
    "4ch": ("intensity", "red", "green", "blue"),
}
UNIVERSES = (1, 63999)  # the universe numbers of sACN (E1.31)
FADE_MAX_MS = 2550  # the longest fade a live frame carries: its fade byte, in 10 ms steps


@dataclass(frozen=True)
class LiveSection:
    # How long after a change arrives every band shows it: time for the radio's repeats of a live frame (a copy
    # every 10 ms: about five in 50 ms), so that all bands change at the same instant though some missed a copy.
    # At 30 % loss, 50 ms has the 99th percentile band on time; 80 ms keeps the spread of a change over 10,000
    # bands within 20 ms (docs/wristband-protocol.md, "How many copies"). Over 255 ms a change waits to be sent.
    delay_ms: int = setting(50, min=0, max=2000)
    # The bands' fade from one live look to the next; a live frame carries at most FADE_MAX_MS (its fade byte).
    fade_ms: int = setting(100, min=0, max=FADE_MAX_MS)
    on_loss: Literal["hold", "fade-out"] = "hold"  # every console source of a universe gone: keep or fade its looks
    loss_fade_ms: int = setting(2000, min=0, max=FADE_MAX_MS)  # "fade-out": over this long (one live frame's fade)


@dataclass(frozen=True)
class FixtureSection:
    name: str = setting(check=check_slug)  # the fixture's name on the patch sheet and the console
    universe: int = setting(min=UNIVERSES[0], max=UNIVERSES[1])
    address: int = setting(min=1, max=512)  # the first channel
    zones: list[str] = field(default_factory=list)  # one zone, or a group that takes the same look
    mode: Mode = "8ch"

    @property
    def channels(self) -> int:
        return len(LAYOUTS[self.mode])

    def problems(self) -> list[Problem]:
        out = []
        if not self.zones:
            out.append(Problem("zones", "name one zone or more (allowed: the names of [[show.zones]])"))
        if len(set(self.zones)) != len(self.zones):
            out.append(Problem("zones", "each zone once"))
        last = self.address + self.channels - 1
        if last > 512:
            out.append(Problem("address", f"{self.address}: the fixture's {self.channels} channels end at {last} "
                                          f"(allowed: 1 to {513 - self.channels} for mode {self.mode})"))
        return out


@dataclass(frozen=True)
class MacroRange:
    lo: int
    hi: int
    preset: str


@dataclass(frozen=True)
class MacroSection:
    universe: int = setting(min=UNIVERSES[0], max=UNIVERSES[1])
    channel: int = setting(min=1, max=512)
    # [{from = 10, to = 19, preset = "intro"}, ...]: a preset fired when the level enters its range (from..to,
    # both included), not again while it stays there.
    ranges: list[dict[str, Any]] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)  # where the presets fire (default: each preset's own zones)

    def parsed(self) -> tuple[MacroRange, ...]:
        """The ranges, as checked by `problems()`."""
        return tuple(MacroRange(r["from"], r["to"], r["preset"]) for r in self.ranges)

    def problems(self) -> list[Problem]:
        out = []
        if not self.ranges:
            out.append(Problem("ranges", "give one range or more ({from = 10, to = 19, preset = \"intro\"})"))
        seen: list[tuple[int, int]] = []
        for i, r in enumerate(self.ranges):
            path = f"ranges[{i}]"
            unknown = sorted(set(r) - {"from", "to", "preset"})
            if unknown:
                out.append(Problem(f"{path}.{unknown[0]}", "unknown key (allowed: from, preset, to)"))
                continue
            lo, hi, preset = _level(r.get("from")), _level(r.get("to")), r.get("preset")
            if lo is None or hi is None:
                out.append(Problem(path, "from and to must be levels (allowed: whole numbers 0 to 255)"))
                continue
            if lo > hi:
                out.append(Problem(path, f"from {lo} is above to {hi}"))
            elif any(lo <= b and a <= hi for a, b in seen):
                out.append(Problem(path, f"{lo} to {hi} overlaps another range of this channel"))
            seen.append((lo, hi))
            if not isinstance(preset, str):
                out.append(Problem(f"{path}.preset", "is required (a preset's name)"))
        return out


def _level(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255 else None


def problems(zones: list[str], patch: list[FixtureSection], macros: list[MacroSection],
             presets: list[str]) -> list[Problem]:
    """Cross-checks: zones and presets named exist, fixtures and macros do not overlap."""
    out = []
    allowed_zones = ", ".join(zones) or "none"
    allowed_presets = ", ".join(presets) or "none"
    taken: dict[tuple[int, int], str] = {}  # (universe, channel) -> what uses it
    zone_of: dict[str, str] = {}
    if len({f.name for f in patch}) != len(patch):
        out.append(Problem("patch", "fixture names must be unique"))
    for i, fixture in enumerate(patch):
        for zone in fixture.zones:
            if zone not in zones:
                out.append(Problem(f"patch[{i}].zones", f"no zone {zone!r} (allowed: {allowed_zones})"))
            elif zone in zone_of:
                out.append(Problem(f"patch[{i}].zones", f"zone {zone!r} is already in fixture {zone_of[zone]!r} "
                                                        f"(a zone takes one fixture's look)"))
            else:
                zone_of[zone] = fixture.name
        out.extend(_claim(taken, f"patch[{i}]", f"fixture {fixture.name!r}", fixture.universe,
                          range(fixture.address, min(fixture.address + fixture.channels, 513))))
    for i, macro in enumerate(macros):
        out.extend(_claim(taken, f"macros[{i}]", f"the macro on channel {macro.channel}", macro.universe,
                          range(macro.channel, macro.channel + 1)))
        for j, r in enumerate(macro.ranges):
            preset = r.get("preset") if isinstance(r, dict) else None
            if isinstance(preset, str) and preset not in presets:
                out.append(Problem(f"macros[{i}].ranges[{j}].preset",
                                   f"no preset {preset!r} (allowed: {allowed_presets})"))
        unknown = [z for z in macro.zones if z not in zones]
        if unknown:
            out.append(Problem(f"macros[{i}].zones", f"no zone {unknown[0]!r} (allowed: {allowed_zones})"))
    return out


def _claim(taken: dict[tuple[int, int], str], path: str, what: str, universe: int,
           channels: range) -> list[Problem]:
    """Mark `channels` of `universe` as used by `what`; a problem if something else has one of them."""
    for channel in channels:
        other = taken.get((universe, channel))
        if other is not None:
            return [Problem(path, f"{what} overlaps {other} at universe {universe} channel {channel}")]
    taken.update(dict.fromkeys(((universe, c) for c in channels), what))
    return []
