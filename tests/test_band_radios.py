"""The reference band hearing copies of the same effects from several radios, each box's clock off the show's by a
residual offset within the show's bound (docs/wristband-protocol.md, Several radios)."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.wristband.band import MIN_PERIOD_MS, Band
from drivers.wristband.protocol import Effect, WristbandPacket

KEY = bytes(range(16))
SHOW = 7
BOUND_MS = 2.0  # [show.shared] clock_bound_ms: each box's clock within this of the show's
COPY_MS = 10  # each radio's copy interval
MAX_DELAY_MS = 10.0  # stamp to air and the band's receive window: a copy is late by 0-10 ms, never early
BAND_MS = -250_000.0  # the band's clock minus the show's (true) clock


def local(true_ms: float) -> float:
    """The band's clock, in seconds, when the show's true clock reads `true_ms`."""
    return (true_ms + BAND_MS) / 1000


@settings(max_examples=60, deadline=None)
@given(offsets=st.lists(st.floats(-BOUND_MS, BOUND_MS), min_size=1, max_size=3),
       effects=st.lists(st.tuples(st.integers(0, 1500), st.integers(50, 600), st.sampled_from(
           [Effect.SOLID, Effect.PULSE, Effect.BLACKOUT, Effect.STROBE])), min_size=1, max_size=4),
       loss=st.floats(0.0, 0.9), replays=st.integers(0, 20), rng=st.randoms(use_true_random=False))
def test_copies_from_several_radios_start_the_band_within_the_largest_offset_and_never_replay(
        offsets: list[float], effects: list[tuple[int, int, Effect]], loss: float, replays: int,
        rng: random.Random) -> None:
    """Copies of 1-4 effects from 1-3 radios, each radio with its own offset, phase, losses and delays, heard in any
    interleaving, with recordings of earlier copies played back among them: the band's start of each effect is
    within the largest offset plus its single-radio error (the least delay it heard) of the truth, it never takes a
    copy behind one it heard, and effects that light it start at least MIN_PERIOD_MS apart."""
    airs: list[tuple[float, float, int, bytes]] = []  # (heard at, band's s; its delay, ms; radio; the advertisement)
    fired = 0
    starts: dict[int, int] = {}  # serial -> the effect's absolute start (show ms)
    for serial, (gap, lead, kind) in enumerate(effects):
        fired += gap
        start = 20_000 + fired + lead
        starts[serial] = start
        for radio, offset in enumerate(offsets):
            phase = rng.uniform(0, COPY_MS)
            sent = 20_000.0 + fired + phase
            while sent < start:  # every box stamps its copy with its own show clock, the start is the show's
                stamp = int(sent + offset)
                if stamp < start and rng.random() >= loss:
                    delay = rng.uniform(0, MAX_DELAY_MS)
                    adv = WristbandPacket(SHOW, stamp, serial, kind, start - stamp).encode(KEY)
                    airs.append((local(sent + delay), delay, radio, adv))
                sent += COPY_MS
    airs.sort(key=lambda a: a[0])
    for _ in range(replays if airs else 0):  # a recording of a copy, played back later (its delay grows)
        heard, delay, radio, adv = rng.choice(airs)
        later = rng.uniform(0.001, 1.0)
        airs.append((heard + later, delay + later * 1000, radio, adv))
    airs.sort(key=lambda a: a[0])

    band = Band(KEY, SHOW, zone=0)
    highest = -1
    accepted: list[tuple[float, int]] = []  # (delay, radio) of each copy the band took
    for heard, delay, radio, adv in airs:
        sequence = int.from_bytes(adv[7:11], "little")
        before = (band.current, band.refused["replay"])
        band.hear(adv, heard)
        if sequence < highest:
            assert band.refused["replay"] == before[1] + 1 and band.current is before[0]  # refused, nothing changed
        elif sequence == highest:
            assert band.current is before[0]  # a repeat: nothing new
        else:
            accepted.append((delay, radio))  # (a recording newer than all it heard: a copy it missed, late)
        highest = max(highest, sequence)
        current = band.current
        if current is None or current.start_show_ms != starts[current.packet.serial]:
            continue  # nothing yet, or an effect the flash rules deferred
        # Within the largest offset plus the least delay of the copies taken (and the stamp's ms), of the true
        # start on its clock; never earlier than the most-ahead clock it heard says.
        took = [offsets[r] for _d, r in accepted]
        error_ms = (band.starts_at() or 0.0) * 1000 - local(current.start_show_ms) * 1000
        least = min(d for d, _r in accepted)
        assert -max(took) - 1e-6 <= error_ms <= least + 1.0 + max(abs(o) for o in took) + 1e-6
    band.settle(local(40_000))
    lit = [s.start_ms for s in band.history if s.effect is not None and s.effect.effect != Effect.BLACKOUT]
    assert all(b - a >= MIN_PERIOD_MS for a, b in itertools.pairwise(lit))
