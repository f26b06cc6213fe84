"""The wristband packet and the reference band: authentication, replays, and start times from any copy."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.wristband.band import FLASHING, MAX_FLASH_HZ, MAX_INTENSITY, MIN_PERIOD_MS, Band
from drivers.wristband.protocol import (
    ADV_SIZE,
    MAX_SEQUENCE,
    AuthenticationError,
    Effect,
    WristbandError,
    WristbandPacket,
    decode,
    show_key,
)
from drivers.wristband.streams import Streams
from gateway.show.effects import Effect as ShowEffect
from gateway.show.engine import Fired, Group

KEY = bytes(range(16))
STRANGER = bytes(16)

packets = st.builds(
    WristbandPacket, show_id=st.integers(0, 0xFFFF), sequence=st.integers(0, 2**32 - 1), serial=st.integers(0, 255),
    effect=st.sampled_from(Effect), countdown_ms=st.integers(0, 0xFFFF), zones=st.integers(0, 0xFFFF),
    colour=st.tuples(*[st.integers(0, 255)] * 3), intensity=st.integers(0, 255),
    period_ms=st.integers(0, 65535).map(lambda p: p * 10), duration_ms=st.integers(0, 65535).map(lambda d: d * 100),
    param=st.integers(0, 255))


@given(packets)
def test_a_packet_fits_one_legacy_advertisement_and_round_trips(packet: WristbandPacket) -> None:
    adv = packet.encode(KEY)
    assert len(adv) == ADV_SIZE
    assert decode(adv, KEY) == packet


@given(st.binary(max_size=40))
def test_any_bytes_decode_or_raise_the_codecs_own_error(data: bytes) -> None:
    with contextlib.suppress(WristbandError):
        decode(data, KEY)


@given(packets, st.integers(0, ADV_SIZE - 1), st.integers(1, 255))
def test_any_changed_byte_is_refused(packet: WristbandPacket, index: int, flip: int) -> None:
    adv = bytearray(packet.encode(KEY))
    adv[index] ^= flip
    with pytest.raises(WristbandError):
        decode(bytes(adv), KEY)


def test_a_strangers_key_does_not_verify() -> None:
    adv = WristbandPacket(7, 1000, 1, Effect.STROBE, 500).encode(STRANGER)
    with pytest.raises(AuthenticationError):
        decode(adv, KEY)


def test_fields_out_of_range_are_refused_when_encoding() -> None:
    with pytest.raises(WristbandError):
        WristbandPacket(7, 1000, 1, Effect.SOLID, 70_000).encode(KEY)


def copy(serial: int, start_ms: int, sent_at_ms: int, **kw: object) -> bytes:
    """The copy of effect `serial`, starting at `start_ms` on the show clock, that the gateway sends at `sent_at_ms`."""
    return WristbandPacket(7, sent_at_ms, serial, kw.pop("effect", Effect.PULSE), start_ms - sent_at_ms,  # type: ignore[arg-type]
                           **kw).encode(KEY)  # type: ignore[arg-type]


OFFSET = -100_000  # the band's clock reads 100 s when the show clock reads 0


def local(show_ms: float, delay_s: float = 0.0) -> float:
    return (show_ms - OFFSET) / 1000 + delay_s


def test_the_least_delayed_copy_sets_the_start() -> None:
    band = Band(KEY, 7, zone=0)
    for sent, delay in [(6_000, 0.008), (6_100, 0.0015), (6_200, 0.009), (6_300, 0.004)]:
        band.hear(copy(1, 10_000, sent), local(sent, delay))
    assert band.starts_at() == pytest.approx(local(10_000, 0.0015), abs=1e-9)


def test_a_later_fired_effect_wins_even_if_it_starts_first() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(copy(1, 10_000, 9_000), local(9_000))  # long lead
    band.hear(copy(2, 9_200, 9_100, effect=Effect.BLACKOUT), local(9_100))  # a stop fired right after
    band.hear(copy(1, 10_000, 9_150), local(9_150))  # the first effect's copies are still on the air
    assert band.current is not None and band.current.packet.effect == Effect.BLACKOUT
    assert band.starts_at() == pytest.approx(local(9_200))


def test_a_replayed_packet_does_nothing() -> None:
    band = Band(KEY, 7, zone=0)
    first = copy(1, 10_000, 9_500)
    band.hear(first, local(9_500))
    band.hear(first, local(9_600))  # the radio repeating the same data: ignored, not a replay
    newer = copy(2, 20_000, 19_000, effect=Effect.SOLID)
    band.hear(newer, local(19_000))
    assert band.current is not None and band.current.packet.effect == Effect.SOLID
    band.hear(first, local(25_000))  # a recording of the older effect, played back
    assert band.current.packet.effect == Effect.SOLID and band.refused["replay"] == 1
    # a band that heard only a heartbeat knows the show clock: an old recording is refused
    fresh = Band(KEY, 7, zone=0)
    fresh.hear(copy(0, 30_000, 30_000, effect=Effect.HEARTBEAT), local(30_000))
    fresh.hear(newer, local(30_001))
    assert fresh.current is None and fresh.refused["replay"] == 1


def test_strangers_other_shows_and_other_zones_are_ignored() -> None:
    band = Band(KEY, 7, zone=3)
    band.hear(WristbandPacket(7, 5_000, 1, Effect.STROBE, 500).encode(STRANGER), 1.0)
    band.hear(WristbandPacket(8, 5_000, 1, Effect.STROBE, 500).encode(KEY), 1.0)
    band.hear(copy(1, 5_000, 4_500, zones=0b0111), 1.0)
    band.hear(b"\x02\x01\x06", 1.0)
    assert band.current is None
    assert band.refused == {"forged": 1, "other show": 1, "malformed": 1}
    band.hear(copy(2, 6_000, 5_500, zones=0b1000), 1.5)
    assert band.current is not None


def test_the_clock_estimate_follows_a_drifting_band() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(copy(0, 1_000, 1_000, effect=Effect.HEARTBEAT), 10.0)  # offset -9,000 ms
    band.hear(copy(0, 40_000, 40_000, effect=Effect.HEARTBEAT), 49.1)  # 100 ms of drift later: -9,100 ms
    band.hear(copy(1, 45_000, 44_000), 53.1)
    assert band.starts_at() == pytest.approx(54.1)  # the old bound has left the window


def test_a_band_synced_at_s_refuses_a_valid_packet_from_long_before_and_takes_the_next() -> None:
    """A recording 3e9 ms (34.7 days) older than what a band last heard has a valid tag: refused as a replay, and
    the real transmitter's next copy is still taken (compared modulo 2^32, the recording was 'newer')."""
    s = 4_000_000_000  # 46 days into the show
    band = Band(KEY, 7, zone=0)
    band.hear(copy(0, s, s, effect=Effect.HEARTBEAT), local(s))
    band.hear(copy(1, s - 3_000_000_000 + 500, s - 3_000_000_000, effect=Effect.STROBE), local(s + 10))
    assert band.current is None and band.refused["replay"] == 1
    band.hear(copy(2, s + 1500, s + 1000, effect=Effect.SOLID), local(s + 1000))
    assert band.current is not None and band.current.packet.effect == Effect.SOLID
    assert band.starts_at() == pytest.approx(local(s + 1500))


def test_each_show_has_a_key_of_its_own_derived_from_the_venue_key() -> None:
    keys = {show_key(KEY, show) for show in range(64)}
    assert len(keys) == 64 and KEY not in keys and all(len(k) == 16 for k in keys)
    assert show_key(KEY, 7) == show_key(bytes(range(16)), 7)  # the same on the box and the hand-out desk
    # A band of show 7 holds show 7's key: a packet signed with another show's key is forged to it, whatever
    # show id it claims, and the venue key itself signs nothing a band takes.
    band = Band(show_key(KEY, 7), 7, zone=0)
    for key in (show_key(KEY, 8), KEY):
        band.hear(WristbandPacket(7, 5_000, 1, Effect.STROBE, 500).encode(key), 1.0)
    assert band.current is None and band.refused["forged"] == 2
    with pytest.raises(ValueError, match="show id 65536 is out of range"):
        show_key(KEY, 65536)


def test_the_bands_firmware_clamps_flash_rate_and_brightness_whatever_a_packet_says() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(copy(1, 2_000, 1_000, effect=Effect.STROBE, period_ms=20, intensity=255), local(1_000))
    assert band.current is not None
    shown = band.current.packet
    assert (shown.effect, shown.period_ms, shown.intensity) == (Effect.STROBE, MIN_PERIOD_MS, MAX_INTENSITY)
    assert 1000 / shown.period_ms <= MAX_FLASH_HZ and band.clamped == 1
    band.hear(copy(2, 3_000, 2_000, effect=Effect.SOLID, period_ms=20, intensity=100), local(2_000))
    assert band.current.packet.period_ms == 20 and band.clamped == 1  # a solid light does not flash


def test_the_bands_firmware_holds_effects_in_turn_to_the_flash_rate_too() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(copy(1, 2_000, 1_000, effect=Effect.SOLID, intensity=100), local(1_000))
    band.hear(copy(2, 2_050, 1_010, effect=Effect.BLACKOUT, intensity=100), local(1_010))  # a blackout at any time
    assert band.current is not None and band.current.start_show_ms == 2_050 and band.clamped == 0
    band.hear(copy(3, 2_100, 1_020, effect=Effect.SOLID, intensity=100), local(1_020))  # lit again 100 ms on: 10 Hz
    assert band.current.start_show_ms == 2_000 + MIN_PERIOD_MS and band.clamped == 1
    assert band.starts_at() == pytest.approx(local(2_000 + MIN_PERIOD_MS))
    band.hear(copy(4, 3_000, 1_030, effect=Effect.SOLID, intensity=100), local(1_030))  # slower than the cap: as sent
    assert band.current.start_show_ms == 3_000 and band.clamped == 1


heard = st.lists(st.tuples(st.integers(0, MAX_SEQUENCE), st.integers(0, 255), st.sampled_from(Effect),
                           st.integers(0, 0xFFFF), st.integers(0, 6553).map(lambda p: p * 10),
                           st.integers(0, 255)), max_size=30)


@given(heard)
def test_a_band_never_takes_a_copy_older_than_one_it_heard_nor_shows_past_its_rules(
        copies: list[tuple[int, int, Effect, int, int, int]]) -> None:
    band = Band(KEY, 7, zone=0)
    newest = -1
    for i, (sequence, serial, effect, countdown, period, intensity) in enumerate(copies):
        before = band.current
        band.hear(WristbandPacket(7, sequence, serial, effect, countdown, period_ms=period,
                                  intensity=intensity).encode(KEY), i * 0.01)
        if sequence <= newest:
            assert band.current is before  # a replay (or a repeat) changes nothing
        newest = max(newest, sequence)
        shown = band.current.packet if band.current is not None else None
        if shown is not None:
            assert shown.intensity <= MAX_INTENSITY
            assert shown.effect not in FLASHING or shown.period_ms >= MIN_PERIOD_MS
    assert band.refused["replay"] == sum(1 for i, c in enumerate(copies) if c[0] < max(
        (d[0] for d in copies[:i]), default=-1))


def test_a_restarted_gateways_serials_are_new_effects_after_a_minute() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(copy(5, 10_000, 9_000), local(9_000))
    band.hear(copy(5, 100_000, 99_000, effect=Effect.SOLID), local(99_000))  # serial 5 again, 90 s later
    assert band.current is not None and band.current.packet.effect == Effect.SOLID


# -- what the radio sends next ----------------------------------------------------------------------------------

def fired(serial: int, groups: list[tuple[int, int]], kind: str = "solid") -> Fired:
    """An effect with (zone mask, start on the show clock) groups."""
    return Fired(f"e{serial}", serial, None, ShowEffect(kind), (), tuple(Group((), mask, 0, start)
                                                                       for mask, start in groups), 0.0, 0.0)


def test_copies_take_turns_between_groups_and_count_down_to_each_start() -> None:
    streams = Streams(show_id=1, tail_ms=200, heartbeat_ms=0, epoch_ms=4_000)
    streams.add(fired(5, [(0b01, 10_500), (0b10, 10_600)]))
    copies = [streams.next(10_000 + 20 * i) for i in range(4)]
    assert [c.zones for c in copies if c] == [0b10, 0b01, 0b10, 0b01]
    assert [c.countdown_ms for c in copies if c] == [600, 480, 560, 440]
    assert all(c is not None and c.sequence == 6_000 + 20 * i and c.serial == 5 for i, c in enumerate(copies))


def test_sequence_numbers_count_from_the_shows_start_and_never_wrap() -> None:
    streams = Streams(show_id=1, tail_ms=0, heartbeat_ms=500, epoch_ms=1_000_000)
    first = streams.next(1_000_000)
    assert first is not None and first.sequence == 0
    last = streams.next(1_000_000 + MAX_SEQUENCE)
    assert last is not None and last.sequence == MAX_SEQUENCE
    for outside in (999_999, 1_000_000 + MAX_SEQUENCE + 1):
        with pytest.raises(WristbandError, match="from the show's start"):
            streams.next(outside)


def test_a_period_goes_on_the_air_rounded_up_so_an_effect_within_the_cap_stays_within() -> None:
    streams = Streams(show_id=1, tail_ms=0, heartbeat_ms=0)
    streams.add(Fired("e1", 1, None, ShowEffect("strobe", period_ms=334), (), (Group((), 1, 0, 100),), 0.0, 0.0))
    packet = streams.next(0)
    assert packet is not None and packet.period_ms == 340


def test_copies_go_on_for_the_tail_with_no_countdown_then_heartbeats_follow() -> None:
    streams = Streams(show_id=1, tail_ms=200, heartbeat_ms=500)
    streams.add(fired(9, [(0xFFFF, 1_000)]))
    late = streams.next(1_150)
    assert late is not None and late.effect == Effect.SOLID and late.countdown_ms == 0
    beat = streams.next(1_201)
    assert beat is not None and beat.effect == Effect.HEARTBEAT and beat.serial == 9
    assert streams.next(1_300) is None and streams.next(1_701) is not None


def test_a_newer_effect_takes_over_the_zones_it_covers() -> None:
    streams = Streams(show_id=1, tail_ms=0, heartbeat_ms=0)
    streams.add(fired(1, [(0b111, 60_000)]))
    streams.add(fired(2, [(0b001, 1_000)]))
    zones = {(s.template.serial, s.template.zones) for s in streams.active}
    assert zones == {(1, 0b110), (2, 0b001)}


def test_an_effect_further_ahead_than_a_countdown_can_say_waits_its_turn() -> None:
    streams = Streams(show_id=1, tail_ms=0, heartbeat_ms=0)
    streams.add(fired(3, [(1, 100_000)]))
    assert streams.next(30_000) is None
    copy = streams.next(40_000)
    assert copy is not None and copy.countdown_ms == 60_000


def test_a_stop_whose_copies_are_over_still_takes_its_zones_from_an_earlier_effect() -> None:
    streams = Streams(show_id=1, tail_ms=200, heartbeat_ms=0)  # a restarted radio replaying the recent effects
    streams.add(fired(1, [(0xFFFF, 30_000)]))  # fired with a long lead while the radio was down
    streams.add(fired(2, [(0xFFFF, 1_000)], kind="blackout"))  # then a stop, long over when the radio is back
    assert streams.next(5_000) is None and not streams.before_start("e1", 5_000)


def test_period_and_duration_are_rounded_and_a_short_flash_still_ends() -> None:
    packet = WristbandPacket(1, 0, 1, Effect.STROBE, 0, period_ms=469, duration_ms=50)
    decoded = decode(packet.encode(KEY), KEY)
    assert decoded.period_ms == 470 and decoded.duration_ms == 100
