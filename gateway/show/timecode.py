"""Timecode: SMPTE/EBU time of day from a console (Art-Net TimeCode), its frame rates, and the link between the
timecode's clock and the box's monotonic clock."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Rate(enum.Enum):
    FILM = "24"
    EBU = "25"
    DF = "29.97df"
    SMPTE = "30"


@dataclass(frozen=True)
class Timecode:
    hours: int
    minutes: int
    seconds: int
    frames: int
    rate: Rate
