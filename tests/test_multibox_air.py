"""Three boxes, one show, on one virtual air: three `venue-gateway run` daemons in one shared show over a real
Mosquitto, each under libfaketime with its own wall-clock offset (LAN grade, as chrony holds boxes), each radio
speaking HCI over its own pseudo-terminal to a Bumble controller of the shared air (bench/shared_air_process.py).
Bands stand where one, two or three radios are heard, and lose 30 % of each radio's copies. An effect fired over
HTTP on one box starts on every band, those that hear only the other boxes' radios too, within a few
milliseconds; a box killed mid-show: the bands that hear another radio go on, those that heard only it start
nothing new and go on showing the last effect they heard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from bench.multibox import LAN_MS, Started, Starts, floor, only, others, play, starts
from drivers.sim.shared_air import spot_name

TAIL_MS = 200  # a radio's copies go on this long after the start, for bands that lost every copy before it


def together(s: Starts, bands: Sequence[Started], serials: Sequence[int]) -> None:
    """Every band started the effects, most within a few milliseconds of the median band; one that lost every
    copy sent before the start (0.3^17 of them at a copy every 10 ms, more on a machine so loaded that the radios
    send fewer) joins from a copy after it, late, never not at all. bench/multibox.py measures how many, how late."""
    near = [ms for ms in s.from_median_ms if ms < 5]
    missed = [(spot_name(sorted(b.radios)), serial) for b in bands for serial in serials if serial not in b.starts]
    assert s.started == s.expected and len(near) >= 0.75 * len(s.from_median_ms), (s.line(), missed)
    assert max(s.from_median_ms) < TAIL_MS, s.line()


@pytest.mark.alone  # three daemons and the air on two cores: not beside the rest of the suite
async def test_an_effect_fired_on_one_box_starts_on_every_band_and_a_lost_box_leaves_only_its_own_bands(
        tmp_path: Path) -> None:
    async with floor(tmp_path, LAN_MS, 2, command_timeout_s=3.0) as f:
        show = await play(f, 3, kill_after=1, killed=0, into_lead_s=None)  # on A; A killed; on C, then on B
        record = await f.air.close()
    bands = record.bands
    a = 0
    first, = show.before
    # Fired on box A: every band starts it, those that hear only B or only C too, together.
    together(starts(bands, [first]), bands, [first])
    assert {b.radios for b in bands if first in b.starts} >= {(1,), (2,)}
    # Box A killed: the bands that hear B or C start what is fired next on C and B, together; those that heard
    # only A start nothing new: they go on showing the one effect they started (a solid colour, until the next).
    together(starts(others(bands, a), show.after), others(bands, a), show.after)
    alone = only(bands, a)
    assert len(show.after) == 2 and alone and all(set(b.starts) == {first} for b in alone)
