"""Timecode: labels to and from positions at 24, 25, 29.97 drop-frame and 30 fps, and the link between the
timecode's clock and the monotonic clock (jitter, a jump, an outlier, a new rate)."""

from __future__ import annotations

import random
import re

import pytest

from gateway.show.timecode import Link, Rate, Timecode


@pytest.mark.parametrize("rate", list(Rate))
def test_every_frame_of_a_day_edge_round_trips(rate: Rate) -> None:
    day = Timecode(23, 59, 59, rate.fps - 1, rate).frame() + 1
    for frame in [*range(0, 2_000), *range(17_800, 18_200), *range(107_800, 108_200), *range(day - 200, day)]:
        tc = Timecode.of_frame(frame, rate)
        assert tc.problem() is None, (frame, tc)
        assert tc.frame() == frame
        assert Timecode.parse(tc.label(), rate) == tc


def test_drop_frame_skips_frames_0_and_1_each_minute_but_every_tenth() -> None:
    df = Rate.DF
    assert Timecode.of_frame(1799, df).label() == "00:00:59;29"
    assert Timecode.of_frame(1800, df).label() == "00:01:00;02"  # 00:01:00;00 and ;01 do not exist
    assert Timecode.of_frame(17_982, df).label() == "00:10:00;00"  # every tenth minute keeps them
    assert Timecode.parse("00:10:00:01", df).frame() == 17_983
    with pytest.raises(ValueError, match=re.escape("dropped at 29.97df")):
        Timecode.parse("00:01:00:00", df)
    # Real time runs at 30000/1001: one hour of labels is 107,892 frames, 3.6 ms short of an hour.
    hour = Timecode.parse("01:00:00;00", df)
    assert hour.frame() == 107_892
    assert hour.position() == pytest.approx(3600 - 0.0036, abs=1e-4)
    assert Timecode.at(hour.position() + 0.001, df) == hour


def test_positions_at_the_whole_rates() -> None:
    assert Timecode.parse("01:00:05:12", Rate.EBU).position() == pytest.approx(3605.48)
    assert Timecode.parse("00:00:01:23", Rate.FILM).position() == pytest.approx(1 + 23 / 24)
    assert Timecode.parse("00:00:00:29", Rate.SMPTE).position() == pytest.approx(29 / 30)
    for text, said in (("01:00:05:25", "frames 25 is out of range at 25 fps (allowed: 0 to 24)"),
                       ("24:00:00:00", "hours 24 is out of range"), ("1:2:3", "is not a timecode"),
                       ("01:60:00:00", "minutes 60")):
        with pytest.raises(ValueError, match=re.escape(said)):
            Timecode.parse(text, Rate.EBU)
    assert Timecode(1, 2, 3, 40, Rate.SMPTE).problem() == "frames 40 is out of range at 30 fps (allowed: 0 to 29)"
    assert Rate.of("29.97df") is Rate.DF and Rate.DF.fps == 30
    with pytest.raises(ValueError, match=re.escape("allowed: 24, 25, 29.97df, 30")):
        Rate.of("60")


def test_the_link_keeps_the_least_delayed_frame_through_jitter() -> None:
    """Frames delayed 0.2 to 30 ms at random: the link's zero is within the least delay of the truth."""
    rng = random.Random(7)
    link = Link()
    zero = 1000.0  # monotonic time at 00:00:00:00
    rate = Rate.EBU
    events = []
    for frame in range(90_000, 90_250):
        position = frame * rate.frame_s
        events.append(link.frame(position, zero + position + rng.uniform(0.0002, 0.030), rate))
    assert events[0] == "start" and set(events[1:]) == {"run"}
    assert link.offset is not None and 0 <= link.offset - zero < 0.002


def test_a_jump_is_taken_when_the_next_frame_agrees_and_a_late_frame_is_an_outlier() -> None:
    link = Link(jump_frames=2)
    rate = Rate.SMPTE
    t = 50.0
    for frame in range(300):
        assert link.frame(frame / 30, t + frame / 30, rate) in ("start", "run")
    # A frame held up 150 ms on its way: off the link by 4.5 frames, and the next is back on it.
    assert link.frame(300 / 30, t + 300 / 30 + 0.150, rate) == "outlier"
    assert link.frame(301 / 30, t + 301 / 30, rate) == "run"
    # A seek to 00:10:00:00 at 302's instant: the first frame there is a candidate, the second confirms it.
    now = t + 302 / 30
    assert link.frame(600.0, now, rate) == "outlier"
    assert link.frame(600.0 + 1 / 30, now + 1 / 30, rate) == "jump"
    assert link.origin == 600.0 and link.offset == pytest.approx(now - 600.0)
    # A new rate starts a new link.
    assert link.frame(601.0, now + 1.0, Rate.EBU) == "start"


def test_a_burst_after_a_stall_is_late_frames_not_a_jump_back_but_frames_behind_for_long_are() -> None:
    """A 120 ms stall on the way, then the held frames in a burst: each behind the link, and consistent with the
    one before within the jump tolerance; they are late, not a seek back (which would fire passed cues again)."""
    link = Link(jump_frames=2)
    rate = Rate.EBU
    t = 10.0
    for frame in range(100):
        link.frame(frame * rate.frame_s, t + frame * rate.frame_s, rate)
    burst_at = t + 103 * rate.frame_s + 0.001
    events = [link.frame(frame * rate.frame_s, burst_at + (frame - 100) * 0.0005, rate) for frame in range(100, 104)]
    assert events == ["outlier", "outlier", "run", "run"]
    assert link.offset == pytest.approx(t)
    # The timecode really went back 200 ms: behind for MAX_LATE_S, then taken as a jump.
    now = t + 104 * rate.frame_s
    events = [link.frame((frame - 5) * rate.frame_s, now + (frame - 104) * rate.frame_s, rate)
              for frame in range(104, 124)]
    assert events[:12] == ["outlier"] * 12 and events[13] == "jump" and events[-1] == "run"
    assert link.offset == pytest.approx(t + 5 * rate.frame_s)
