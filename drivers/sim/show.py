"""The show script of the virtual venue: doors, support act, changeover, headline set (songs, quiet songs,
choruses), encore and egress, laid out deterministically from a seed. It is the ground truth: how full the
venue is, how loud the PA plays and how much energy the crowd has at any second of the night.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShowTiming:
    """Minutes each part of the night lasts."""

    doors_min: float = 45.0
    support_min: float = 35.0
    changeover_min: float = 20.0
    headline_min: float = 90.0
    encore_break_min: float = 4.0
    encore_min: float = 15.0
    egress_min: float = 25.0


@dataclass(frozen=True)
class Segment:
    name: str  # doors, support, changeover, headline, encore_break, encore, egress
    start: float  # seconds from doors opening
    end: float


@dataclass(frozen=True)
class Song:
    start: float
    end: float
    quiet: bool
    choruses: tuple[tuple[float, float], ...]

    def in_chorus(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.choruses)


# Per part of the night: PA level at front of house in a song and between songs (dB LAeq), and crowd
# energy in a verse, a chorus, a quiet song and between songs (0..1).
_LEVELS = {
    "support": (96.0, 86.0), "headline": (100.0, 88.0), "encore": (101.0, 89.0),
}
_ENERGY = {
    "support": (0.40, 0.52, 0.30, 0.42), "headline": (0.62, 0.86, 0.36, 0.70), "encore": (0.78, 0.96, 0.50, 0.85),
}
_FLAT = {  # parts without songs: (PA level, crowd energy)
    "doors": (82.0, 0.12), "changeover": (84.0, 0.25), "encore_break": (80.0, 0.76), "egress": (78.0, 0.12),
}


class Show:
    def __init__(self, seed: int, timing: ShowTiming | None = None) -> None:
        self.timing = timing or ShowTiming()
        rng = np.random.default_rng([seed, 0x5_0_1_1])
        t = 0.0
        self.segments: list[Segment] = []
        for name, minutes in (
            ("doors", self.timing.doors_min), ("support", self.timing.support_min),
            ("changeover", self.timing.changeover_min), ("headline", self.timing.headline_min),
            ("encore_break", self.timing.encore_break_min), ("encore", self.timing.encore_min),
            ("egress", self.timing.egress_min),
        ):
            self.segments.append(Segment(name, t, t + minutes * 60))
            t += minutes * 60
        self.duration = t
        self.songs: dict[str, list[Song]] = {
            seg.name: self._songs(rng, seg, quiet_chance=0.2 if seg.name == "headline" else 0.1)
            for seg in self.segments if seg.name in _LEVELS
        }
        self._starts = [s.start for s in self.segments]

    @staticmethod
    def _songs(rng: np.random.Generator, seg: Segment, quiet_chance: float) -> list[Song]:
        songs: list[Song] = []
        t = seg.start + 20.0
        while True:
            length = float(rng.uniform(180, 330))
            if t + length > seg.end - 10:
                break
            quiet = bool(rng.random() < quiet_chance)
            choruses = () if quiet else tuple(
                (t + f * length, t + (f + 0.13) * length) for f in (0.28, 0.55, 0.8))
            songs.append(Song(t, t + length, quiet, choruses))
            t += length + float(rng.uniform(12, 35))
        return songs

    def segment_at(self, t: float) -> Segment:
        t = min(max(t, 0.0), self.duration - 1e-9)
        return self.segments[bisect_right(self._starts, t) - 1]

    def song_at(self, t: float) -> Song | None:
        for song in self.songs.get(self.segment_at(t).name, ()):
            if song.start <= t < song.end:
                return song
        return None

    def attendance(self, t: float) -> float:
        """Fraction of capacity inside the venue."""
        seg = self.segment_at(t)
        x = (t - seg.start) / max(seg.end - seg.start, 1.0)
        if seg.name == "doors":
            return 0.78 / (1 + math.exp(-9 * (x - 0.45)))
        if seg.name == "support":
            return 0.78 + 0.12 * x
        if seg.name == "changeover":
            return 0.90 + 0.07 * x
        if seg.name == "egress":
            return 0.97 * math.exp(-5 * x) if x < 0.95 else 0.0
        return 0.97 + 0.03 * min(1.0, 5 * x) if seg.name == "headline" else 1.0

    def music_db(self, t: float) -> float:
        """The PA's level at front of house (dB LAeq), before distance and crowd noise."""
        seg = self.segment_at(t)
        if seg.name in _FLAT:
            return _FLAT[seg.name][0]
        in_song, between = _LEVELS[seg.name]
        song = self.song_at(t)
        if song is None:
            return between
        if song.quiet:
            return in_song - 8
        return in_song + 3 if song.in_chorus(t) else in_song

    def energy(self, t: float) -> float:
        """The crowd's energy (0..1) across the venue: the truth the mood model is measured against."""
        seg = self.segment_at(t)
        if seg.name in _FLAT:
            base = _FLAT[seg.name][1]
            if seg.name == "doors":
                base *= 0.5 + self.attendance(t)
            return base
        verse, chorus, quiet, between = _ENERGY[seg.name]
        song = self.song_at(t)
        if song is None:
            return between
        if song.quiet:
            return quiet
        return chorus if song.in_chorus(t) else verse

    def zone_energy(self, t: float, distance_m: float) -> float:
        """Energy in a zone: the front of the floor moves more than the back of the balcony."""
        return min(1.0, self.energy(t) * (1.12 - 0.45 * min(1.0, distance_m / 60.0)))
