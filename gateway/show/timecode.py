"""Timecode: SMPTE/EBU time of day from a console (Art-Net TimeCode), its frame rates, and the link between the
timecode's clock and the box's monotonic clock.

A label (hours, minutes, seconds, frames) names the start of a frame. At 24, 25 and 30 fps a label is its frame
count over the rate. At 29.97 drop-frame the frames run at 30000/1001 a second and the labels count as if at 30,
except that frames 0 and 1 are left out at the start of every minute but every tenth, so the labels keep up with
real time (a tenth of a frame, 3.6 ms, behind after an hour).

The link: a frame heard at monotonic time `a` with a label at position `p` (seconds) says the timecode's zero was
at `a - p` plus however late the frame was on its way, never earlier. The least of `a - p` over a sliding window
is the estimate (the least delayed frame wins, as a band keeps the show clock), so jitter on the network costs
nothing but the window's least delay. A frame whose label is more than `jump_frames` ahead of where the link puts
it, or more than MAX_LATE_S behind, is a jump (a seek) once the next frame agrees with it; until then it is an
outlier. A frame a little behind is late on its way (an outlier), unless frames stay behind for MAX_LATE_S.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Literal

WINDOW_S = 4.0  # the link's window: many frames, and short enough to follow a source's crystal drift
# Frames behind the link by less than this are late on their way (a stall, a burst), not a seek back, until they
# have been behind for this long: a burst after a stall looks like a small jump back, and a jump back would make
# the cues it passes over fire again.
MAX_LATE_S = 0.5


class Rate(enum.Enum):
    FILM = "24"
    EBU = "25"
    DF = "29.97df"
    SMPTE = "30"

    @property
    def fps(self) -> int:
        """Frames a second as labels count them (29.97 drop-frame counts 30)."""
        return 30 if self is Rate.DF else int(self.value)

    @property
    def frame_s(self) -> float:
        """A frame's real length in seconds."""
        return 1001 / 30000 if self is Rate.DF else 1 / self.fps

    @classmethod
    def of(cls, text: str) -> Rate:
        """The rate named `text` ("24", "25", "29.97df", "30"); ValueError otherwise."""
        for rate in cls:
            if rate.value == text:
                return rate
        raise ValueError(f"{text!r} is not a timecode rate (allowed: {', '.join(r.value for r in cls)})")


RATE_NAMES = tuple(r.value for r in Rate)
_LABEL = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})[:;.](\d{2})")
_DF_BLOCK = 17_982  # frames in ten minutes at 29.97 drop-frame
_DF_MINUTE = 1_798  # frames in a minute that drops two


@dataclass(frozen=True)
class Timecode:
    hours: int
    minutes: int
    seconds: int
    frames: int
    rate: Rate

    def problem(self) -> str | None:
        """What makes this label impossible at its rate, or None."""
        fps = self.rate.fps
        for name, value, top in (("hours", self.hours, 23), ("minutes", self.minutes, 59),
                                 ("seconds", self.seconds, 59), ("frames", self.frames, fps - 1)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                return f"{name} {value!r} is out of range at {self.rate.value} fps (allowed: 0 to {top})"
        if self.rate is Rate.DF and self.seconds == 0 and self.frames < 2 and self.minutes % 10:
            return (f"{self.label()} is dropped at 29.97df (allowed: frames 0 and 1 only at minutes 0, 10, 20, 30, "
                    "40 and 50)")
        return None

    def frame(self) -> int:
        """The frame count from 00:00:00:00."""
        counted = ((self.hours * 60 + self.minutes) * 60 + self.seconds) * self.rate.fps + self.frames
        if self.rate is Rate.DF:
            minutes = self.hours * 60 + self.minutes
            counted -= 2 * (minutes - minutes // 10)
        return counted

    def position(self) -> float:
        """Where the label is, in seconds of real time from 00:00:00:00."""
        return self.frame() * self.rate.frame_s

    def label(self) -> str:
        sep = ";" if self.rate is Rate.DF else ":"
        return f"{self.hours:02}:{self.minutes:02}:{self.seconds:02}{sep}{self.frames:02}"

    def __str__(self) -> str:
        return self.label()

    @classmethod
    def of_frame(cls, frame: int, rate: Rate) -> Timecode:
        """The label of frame number `frame` (from 00:00:00:00, within a day)."""
        if rate is Rate.DF:
            blocks, rest = divmod(frame, _DF_BLOCK)
            frame += 18 * blocks + (2 * ((rest - 2) // _DF_MINUTE) if rest >= 2 else 0)
        fps = rate.fps
        total_s, frames = divmod(frame, fps)
        minutes, seconds = divmod(total_s, 60)
        hours, minutes = divmod(minutes, 60)
        return cls(hours % 24, minutes, seconds, frames, rate)

    @classmethod
    def at(cls, position_s: float, rate: Rate) -> Timecode:
        """The label of the frame running at `position_s` seconds from 00:00:00:00."""
        return cls.of_frame(int(position_s / rate.frame_s + 1e-9), rate)

    @classmethod
    def parse(cls, text: str, rate: Rate) -> Timecode:
        """`HH:MM:SS:FF` (`;` or `.` before the frames too) at `rate`; ValueError says what is wrong."""
        found = _LABEL.fullmatch(text.strip()) if isinstance(text, str) else None
        if found is None:
            raise ValueError(f"{text!r} is not a timecode (allowed: HH:MM:SS:FF, e.g. 01:00:05:12)")
        hours, minutes, seconds, frames = (int(g) for g in found.groups())
        tc = cls(hours, minutes, seconds, frames, rate)
        problem = tc.problem()
        if problem is not None:
            raise ValueError(problem)
        return tc


Event = Literal["start", "run", "jump", "outlier"]


class Link:
    """The timecode's clock against the monotonic clock, from the frames' arrivals (see the module's docstring)."""

    def __init__(self, jump_frames: float = 2.0, window_s: float = WINDOW_S) -> None:
        self.jump_frames = jump_frames
        self.window_s = window_s
        self.offset: float | None = None  # monotonic time at the timecode's 00:00:00:00
        self.position: float | None = None  # the last frame's position (s)
        self.arrival: float | None = None  # and when it was heard
        self.rate: Rate | None = None
        self.origin: float | None = None  # the position the link began at (its first frame, or a jump's)
        self._bounds: deque[tuple[float, float]] = deque()  # (heard at, arrival - position), increasing
        self._candidate: tuple[float, float] | None = None  # a frame off the link: (arrival, position)
        self._behind_since: float | None = None  # frames have been a little behind the link since then

    def reset(self) -> None:
        """Forget the link: the next frame starts a new one (the timecode stopped)."""
        self.offset = None
        self._bounds.clear()
        self._candidate = self._behind_since = None

    def mono(self, position_s: float) -> float:
        """The monotonic time at which the timecode reaches `position_s` (the link must be known)."""
        assert self.offset is not None
        return self.offset + position_s

    def frame(self, position_s: float, arrival: float, rate: Rate) -> Event:
        """A frame at `position_s` heard at `arrival`: `start` (the first of a link), `run` (on the link), `jump`
        (a new link from here: the frame before agreed with this one) or `outlier` (off the link; not taken)."""
        tolerance = self.jump_frames * rate.frame_s
        if self.offset is None or rate is not self.rate:
            self._restart(position_s, arrival, rate)
            return "start"
        off = position_s - (arrival - self.offset)
        if abs(off) <= tolerance + 1e-9:
            self._candidate = self._behind_since = None
            self._take(position_s, arrival)
            return "run"
        if -MAX_LATE_S <= off < 0:  # behind by less than a network holds a frame: late, unless it lasts
            self._candidate = None
            if self._behind_since is None:
                self._behind_since = arrival
            if arrival - self._behind_since < MAX_LATE_S:
                return "outlier"
            self._restart(position_s, arrival, rate)  # behind for that long: the timecode went back a little
            return "jump"
        self._behind_since = None
        candidate, self._candidate = self._candidate, (arrival, position_s)
        if candidate is not None and abs((position_s - candidate[1]) - (arrival - candidate[0])) <= tolerance:
            self._restart(candidate[1], candidate[0], rate)
            self._take(position_s, arrival)
            return "jump"
        return "outlier"

    def _restart(self, position_s: float, arrival: float, rate: Rate) -> None:
        self._bounds.clear()
        self._candidate = self._behind_since = None
        self.rate = rate
        self.origin = position_s
        self._take(position_s, arrival)

    def _take(self, position_s: float, arrival: float) -> None:
        bound = arrival - position_s
        bounds = self._bounds
        while bounds and bounds[0][0] < arrival - self.window_s:
            bounds.popleft()
        while bounds and bounds[-1][1] >= bound:  # a monotonic deque: its head is the window's least
            bounds.pop()
        bounds.append((arrival, bound))
        self.offset = bounds[0][1]
        self.position, self.arrival = position_s, arrival
