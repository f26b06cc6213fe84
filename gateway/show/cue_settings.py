"""The timecode cue list's configuration (`[show.cues]`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CuesSection:
    pass
