"""The cue list: effects that start at timecodes, fired ahead by the radio's lead."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.show.timecode import Timecode

if TYPE_CHECKING:
    from gateway.show.engine import ShowEngine


class CueList:
    def __init__(self, engine: ShowEngine) -> None:
        self.engine = engine

    def timecode(self, tc: Timecode, arrival_mono: float) -> None:
        """A timecode frame from a console, received at `arrival_mono` (time.monotonic())."""
