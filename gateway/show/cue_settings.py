"""The timecode cue list's configuration (`[show.cues]`) and its file: each cue an id, a timecode label, a preset
or an inline effect (a look), zones, and whether it is armed. `load` reads and checks the file against the show
(its presets, zones and flash cap), so `check-config` and the daemon say the same things of it."""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gateway import preflight
from gateway.schema import Problem, check_all, check_slug, setting
from gateway.show.effects import Effect, EffectError
from gateway.show.timecode import Rate, Timecode

if TYPE_CHECKING:
    from gateway.show.settings import ShowSection

MAX_FILE_BYTES = 2**20
MAX_CUES = 10_000


@dataclass(frozen=True)
class CuesSection:
    file: str | None = None  # the cue list (TOML), relative to the configuration file; none: no cue list
    # The list's frame rate; none: the rate of the timecode received. Labels are read at this rate.
    rate: Literal["24", "25", "29.97df", "30"] | None = None
    stop_frames: int = setting(5, min=2, max=300)  # no frame for this many frame periods: the list is frozen
    jump_frames: int = setting(2, min=1, max=100)  # a label further than this from the link's: a jump (a seek)


@dataclass(frozen=True)
class CueSection:
    id: str = setting(check=check_slug)
    timecode: str = setting()
    preset: str | None = None
    effect: dict[str, Any] | None = None  # an inline effect (a look), as POST /api/v1/effects takes it
    zones: list[str] = field(default_factory=list)  # none: the preset's, else every zone
    armed: bool = True  # false: fired only by hand (or once armed)


@dataclass(frozen=True)
class CueFile:
    cues: list[CueSection] = field(default_factory=list)


@dataclass(frozen=True)
class Cue:
    """A cue as the list holds it: its label read at the list's rate (or at 30 until the rate is known)."""

    id: str
    timecode: str
    preset: str | None
    effect: dict[str, Any] | None
    zones: tuple[str, ...]
    armed: bool


def rate_of(section: CuesSection) -> Rate | None:
    return None if section.rate is None else Rate.of(section.rate)


def load(base: Path, show: ShowSection) -> tuple[list[Cue], list[Problem]]:
    """The cues of `show.cues.file` (relative to `base`) in timecode order, and every problem found, each under
    `show.cues.file` with the file's own key path."""
    name = show.cues.file
    if name is None:
        return [], []
    path = base / name

    def problem(message: str) -> Problem:
        return Problem("show.cues.file", f"{name}: {message}")

    found = preflight.readable_file(path, "show.cues.file", "the cue list")  # (a regular file: not a FIFO)
    if found:
        return [], found
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return [], [Problem("show.cues.file", f"the cue list {path} cannot be read: {exc.strerror}")]
    if len(data) > MAX_FILE_BYTES:
        return [], [problem(f"is larger than {MAX_FILE_BYTES // 1024} KB (allowed: a cue list)")]
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        return [], [problem(f"{exc} (allowed: TOML in UTF-8, [[cues]] tables)")]
    parsed, found = check_all(CueFile, raw)
    problems = [problem(str(p)) for p in found]
    if parsed is None:
        return [], problems
    if len(parsed.cues) > MAX_CUES:
        return [], [problem(f"{len(parsed.cues)} cues (allowed: at most {MAX_CUES})")]
    checked = _check(parsed.cues, show)
    problems += [problem(str(p)) for p in checked]
    if problems:
        return [], problems
    rate = rate_of(show.cues) or Rate.SMPTE
    cues = [Cue(c.id, c.timecode, c.preset, c.effect, tuple(c.zones), c.armed) for c in parsed.cues]
    return sorted(cues, key=lambda c: Timecode.parse(c.timecode, rate).frame()), []


def _check(cues: list[CueSection], show: ShowSection) -> list[Problem]:
    """Ids unique, labels valid at the list's rate (at any rate: frames below 30), presets and zones of the show,
    inline effects valid and within the flash cap, and no two cues lighting a zone closer than the cap allows."""
    out: list[Problem] = []
    rate = rate_of(show.cues)
    zones = [z.name for z in show.zones]
    presets = {p.name: p for p in show.presets}
    seen: set[str] = set()
    lit: dict[str, list[tuple[float, int]]] = {}  # zone -> (position, cue index) of the cues lighting it
    for i, cue in enumerate(cues):
        key = f"cues[{i}]"
        if cue.id in seen:
            out.append(Problem(f"{key}.id", f"{cue.id!r} is given twice (allowed: each id once)"))
        seen.add(cue.id)
        try:
            position = Timecode.parse(cue.timecode, rate or Rate.SMPTE).position()
        except ValueError as exc:
            at = "" if rate else " (the list's rate is that of the timecode received: give show.cues.rate to check it)"
            out.append(Problem(f"{key}.timecode", f"{exc}{at}"))
            position = None
        names = list(cue.zones)
        unknown = [z for z in names if z not in zones]
        if unknown:
            out.append(Problem(f"{key}.zones", f"no zone {unknown[0]!r} (allowed: {', '.join(zones) or 'none'})"))
        kind = None
        if (cue.preset is None) == (cue.effect is None):
            both = ", not both" if cue.preset is not None else ""
            out.append(Problem(f"{key}.preset", f"give a preset or an inline effect{both}"))
        elif cue.preset is not None:
            found = presets.get(cue.preset)
            if found is None:
                allowed = ", ".join(presets) or "none configured"
                out.append(Problem(f"{key}.preset", f"no preset {cue.preset!r} (allowed: {allowed})"))
            else:
                kind = found.kind
                names = names or list(found.zones)
        elif cue.effect is not None:
            try:
                effect = Effect.from_document(cue.effect, show.tempo_bpm)
                effect.check_flash(show.max_flash_hz)
                kind = effect.kind
            except (EffectError, ValueError) as exc:
                out.append(Problem(f"{key}.effect", str(exc)))
        if position is not None and kind is not None and kind != "blackout":
            for zone in names or [z.name for z in show.zones] or [""]:
                lit.setdefault(zone, []).append((position, i))
    gap_s = 1 / show.max_flash_hz
    for zone, starts in lit.items():
        starts.sort()
        for (before, first), (after, second) in itertools.pairwise(starts):
            if after - before < gap_s:
                where = f"zone {zone}" if zone else "the bands"
                out.append(Problem(f"cues[{second}].timecode", f"{where}: {(after - before) * 1000:.0f} ms after "
                                   f"cues[{first}] is over show.max_flash_hz {show.max_flash_hz:g} (allowed: one "
                                   f"effect every {gap_s * 1000:.0f} ms in a zone)"))
    return out

