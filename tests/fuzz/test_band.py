"""The reference wristband (`Band.hear`) over sequences of advertisements that carry a valid tag: any fields, any
order of sequence numbers (recordings, replays, jumps by weeks either way), any body bytes under a tag made with
the show's key, with forged and malformed ones among them. Nothing escapes `hear`; a copy older than one the band
has taken never becomes its effect; what it shows is within the firmware's rules."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from drivers.wristband.band import FLASHING, MAX_INTENSITY, MIN_PERIOD_MS, Band
from drivers.wristband.protocol import ADV_SIZE, MAX_SEQUENCE, TAG_SIZE, Effect, WristbandPacket, tag
from tests.fuzz.budget import fuzz

KEY, OTHER_KEY = bytes(range(16)), bytes(16)
SHOW = 7

packets = st.builds(
    WristbandPacket, show_id=st.sampled_from([SHOW, SHOW, SHOW, 8]), sequence=st.just(0), serial=st.integers(0, 255),
    effect=st.sampled_from(list(Effect)), countdown_ms=st.integers(0, 0xFFFF),
    zones=st.integers(0, 0xFFFF) | st.just(0xFFFF), colour=st.tuples(*[st.integers(0, 255)] * 3),
    intensity=st.integers(0, 255), period_ms=st.integers(0, 2550).map(lambda p: p // 10 * 10),
    duration_ms=st.integers(0, 25500).map(lambda d: d // 100 * 100), param=st.integers(0, 255))
# How a copy is put on the air: as encoded, with its body bytes changed under a fresh valid tag, under another
# key, or cut short.
airings = st.sampled_from(["valid", "valid", "valid", "body", "forged", "short"])
# Each copy's sequence number, as a step from the last one sent: small steps forward, the same again, and jumps of
# up to 35 days either way (a recording, a clock stepped back or forward).
steps = st.integers(-50, 2000) | st.integers(-3_000_000_000, 3_000_000_000)


def _air(packet: WristbandPacket, how: str, edits: list[tuple[int, int]]) -> bytes:
    adv = bytearray(packet.encode(OTHER_KEY if how == "forged" else KEY))
    if how == "short":
        return bytes(adv[:len(adv) - 1 - edits[0][0] % 8]) if edits else bytes(adv[:-1])
    if how == "body":
        signed = ADV_SIZE - TAG_SIZE
        for at, value in edits:
            adv[4 + at % (signed - 4)] = value  # past the AD header: the body
        adv[signed:] = tag(KEY, bytes(adv[:signed]))
    return bytes(adv)


@fuzz(40)
@given(st.integers(0, MAX_SEQUENCE), st.integers(0, 15),
       st.lists(st.tuples(packets, steps, st.floats(0, 120), airings,
                          st.lists(st.tuples(st.integers(0, 30), st.integers(0, 255)), max_size=3)), max_size=25))
def test_a_band_hears_any_sequence_of_tagged_packets_without_error(
        start: int, zone: int, copies: list[tuple[WristbandPacket, int, float, str, list[tuple[int, int]]]]) -> None:
    band = Band(KEY, SHOW, zone)
    sequence, t, newest = start, 1000.0, -1
    for packet, step, dt, how, edits in copies:
        sequence = min(max(sequence + step, 0), MAX_SEQUENCE)
        t += dt
        before = band.current
        band.hear(_air(WristbandPacket(**{**packet.__dict__, "sequence": sequence}), how, edits), t)
        now = band.current
        if now is not None and now is not before:
            assert now.packet.sequence >= newest, "a copy older than one already taken became the band's effect"
            assert now.packet.show_id == SHOW
        if now is not None:
            newest = max(newest, now.packet.sequence)
            assert now.packet.intensity <= MAX_INTENSITY
            assert now.packet.effect not in FLASHING or now.packet.period_ms >= MIN_PERIOD_MS
        at = band.starts_at()
        assert at is None or math.isfinite(at)
