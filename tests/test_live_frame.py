"""The live frame (wristband protocol version 2): its codec, the reference band rendering live looks within the
firmware's rules, and the streams that send the console's looks in turn with the effects' copies."""

from __future__ import annotations

import bisect
import collections
import contextlib
import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.wristband.band import FLASHING, MAX_INTENSITY, MIN_PERIOD_MS, Band, Shown
from drivers.wristband.protocol import (
    ADV_SIZE,
    AuthenticationError,
    Effect,
    LiveFrame,
    LiveLook,
    WristbandError,
    WristbandPacket,
    decode,
    decode_any,
    tag,
)
from drivers.wristband.streams import Streams, strobe_ms
from gateway.driver import LiveChange, Look
from gateway.show.effects import Effect as ShowEffect
from gateway.show.engine import Fired, Group

KEY = bytes(range(16))
STRANGER = bytes(16)
OFFSET = -100_000  # the band's clock reads 100 s when the show clock reads 0

rgbs = st.tuples(*[st.integers(0, 255)] * 3)
looks = st.builds(LiveLook, zones=st.integers(1, 0xFFFF), rgb=rgbs, strobe_ms=st.integers(0, 255).map(lambda p: p * 10))
frames = st.builds(LiveFrame, show_id=st.integers(0, 0xFFFF), sequence=st.integers(0, 2**32 - 1),
                   countdown_ms=st.integers(0, 255), fade_ms=st.integers(0, 255).map(lambda f: f * 10),
                   looks=st.lists(looks, min_size=1, max_size=2).map(tuple))


def local(show_ms: float, delay_s: float = 0.0) -> float:
    return (show_ms - OFFSET) / 1000 + delay_s


def frame(sent_at_ms: int, instant_ms: int, *looks: tuple[int, tuple[int, int, int]] | LiveLook,
          fade_ms: int = 0) -> bytes:
    """The live frame the gateway sends at `sent_at_ms` for looks shown at `instant_ms`: (zones, rgb) or looks."""
    made = tuple(look if isinstance(look, LiveLook) else LiveLook(*look) for look in looks)
    return LiveFrame(7, sent_at_ms, instant_ms - sent_at_ms, fade_ms, made).encode(KEY)


def effect(serial: int, start_ms: int, sent_at_ms: int, kind: Effect = Effect.SOLID, **kw: object) -> bytes:
    return WristbandPacket(7, sent_at_ms, serial, kind, start_ms - sent_at_ms, **kw).encode(KEY)  # type: ignore[arg-type]


# -- the codec ----------------------------------------------------------------------------------------------------

@given(frames)
def test_a_live_frame_fits_one_legacy_advertisement_and_round_trips(live: LiveFrame) -> None:
    adv = live.encode(KEY)
    assert len(adv) == ADV_SIZE and adv[4] == 0x20  # version 2, kind 0
    assert decode_any(adv, KEY) == live


@given(frames, st.integers(0, ADV_SIZE - 1), st.integers(1, 255))
def test_any_changed_byte_of_a_live_frame_is_refused(live: LiveFrame, index: int, flip: int) -> None:
    adv = bytearray(live.encode(KEY))
    adv[index] ^= flip
    with pytest.raises(WristbandError):
        decode_any(bytes(adv), KEY)


@given(st.binary(max_size=40))
def test_any_bytes_decode_as_either_version_or_raise_the_codecs_own_error(data: bytes) -> None:
    with contextlib.suppress(WristbandError):
        decode_any(data, KEY)


def test_forged_short_foreign_and_unknown_frames_are_refused() -> None:
    live = LiveFrame(7, 1000, 50, 100, (LiveLook(1, (255, 0, 0)),))
    with pytest.raises(AuthenticationError):
        decode_any(live.encode(STRANGER), KEY)
    with pytest.raises(WristbandError, match="30 bytes"):
        decode_any(live.encode(KEY)[:30], KEY)
    foreign = bytearray(live.encode(KEY))
    foreign[2:4] = b"\x59\x00"  # another company's manufacturer data
    with pytest.raises(WristbandError, match="company id"):
        decode_any(bytes(foreign), KEY)
    for head in (0x21, 0x30):  # a kind of version 2 this band does not know; a version it does not speak
        raw = bytearray(live.encode(KEY))
        raw[4] = head
        signed = bytes(raw[:25])
        with pytest.raises(WristbandError, match=r"kind 1|version 3"):
            decode_any(signed + tag(KEY, signed), KEY)
    with pytest.raises(WristbandError, match="1 or 2 looks"):
        LiveFrame(7, 1000, 50, 100, ()).encode(KEY)
    with pytest.raises(WristbandError, match="out of range"):
        LiveFrame(7, 1000, 256, 100, (LiveLook(1, (1, 2, 3)),)).encode(KEY)


def test_effect_packets_stay_version_1_byte_for_byte_and_a_version_1_band_ignores_live_frames() -> None:
    packet = WristbandPacket(7, 123456, 9, Effect.STROBE, 500, 0b101, (255, 10, 3), 200, 340, 2000, 4)
    assert packet.encode(KEY).hex() == "1effffff12070040e20100090500ff0a03c82200140004f4013abf385fbf86"
    assert decode_any(packet.encode(KEY), KEY) == packet == decode(packet.encode(KEY), KEY)
    with pytest.raises(WristbandError, match="version 2, this is 1"):  # what a version 1 band's firmware does
        decode(frame(1000, 1050, (1, (255, 0, 0))), KEY)


# -- the band -----------------------------------------------------------------------------------------------------

def test_a_live_look_shows_at_its_instant_on_the_bands_clock_fading_from_what_it_showed() -> None:
    band = Band(KEY, 7, zone=2)
    first = frame(10_000, 10_050, (0b0011, (0, 0, 200)), (0b0100, (200, 0, 0)), fade_ms=100)
    band.hear(first, local(10_000, 0.006))
    band.hear(frame(10_010, 10_050, (0b0100, (200, 0, 0)), fade_ms=100), local(10_010, 0.001))  # less delayed
    assert band.shows(local(10_049)) is None
    shown = band.shows(local(10_052))
    assert shown is not None and shown.live and shown.rgb == (200, 0, 0) and shown.from_rgb == (0, 0, 0)
    assert band.began(10_000, 1) == pytest.approx(local(10_050, 0.001))  # the least-delayed copy set the clock
    assert shown.rgb_at(50) == (100, 0, 0) and shown.rgb_at(100) == (200, 0, 0)
    band.hear(frame(10_500, 10_500, (0b0100, (0, 200, 0)), fade_ms=100), local(10_500))  # heard late: at once
    now = band.shows(local(10_501))
    assert now is not None and now.from_rgb == (200, 0, 0) and now.rgb_at(30) == (140, 60, 0)
    assert band.began(10_500, 0) == pytest.approx(local(10_500))  # a copy with no delay: the clock sharpened


def test_a_refresh_of_the_look_shown_changes_nothing_and_other_zones_looks_are_not_its_own() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(frame(1_000, 1_050, (1, (10, 20, 30))), local(1_000))
    for sent in range(1_010, 2_000, 40):  # the gateway repeats it, in turn with another zone's look
        band.hear(frame(sent, sent, (0b10, (200, 0, 0)), (1, (10, 20, 30))), local(sent))
    assert len(band.history) == 1 and band.history[0].began == pytest.approx(local(1_050))
    assert band.began(1_010, 1) is None  # a repeat: not a look of its own


def test_the_latest_of_a_live_look_and_an_effect_wins_by_their_starts() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(effect(1, 2_000, 1_500, intensity=100), local(1_500))  # an effect fired with a 500 ms lead
    band.hear(frame(1_510, 1_560, (1, (0, 0, 90))), local(1_510))  # a live look starting before it
    first, second = band.shows(local(1_600)), band.shows(local(2_100))
    assert first is not None and first.live and second is not None and second.effect is not None
    band.hear(frame(2_400, 2_450, (1, (0, 90, 0))), local(2_400))  # the console takes the zone again
    again = band.shows(local(2_500))
    assert again is not None and again.live and again.rgb == (0, 90, 0)
    # after an effect, the look it had before is new again
    band.hear(effect(2, 3_000, 2_500, intensity=100), local(2_500))
    band.hear(frame(3_400, 3_450, (1, (0, 90, 0))), local(3_400))
    last = band.shows(local(3_500))
    assert last is not None and last.live and last.rgb == (0, 90, 0) and last.start_ms == 3_450


def test_live_looks_are_held_to_the_led_ceiling_and_the_flash_rate() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(frame(1_000, 1_000, LiveLook(1, (255, 128, 0), strobe_ms=100)), local(1_000))
    shown = band.shows(local(1_000))
    assert shown is not None and shown.rgb == (204, 102, 0) and shown.strobe_ms == MIN_PERIOD_MS
    assert band.clamped == 1
    assert shown.rgb_at(10) == (204, 102, 0) and shown.rgb_at(200) == (0, 0, 0)  # lit for half of each period


def test_a_brightness_rise_is_a_flash_deferred_to_the_cap_showing_the_latest_look_then() -> None:
    band = Band(KEY, 7, zone=0)
    bright, dark, blue, dim = (200, 200, 200), (0, 0, 0), (0, 0, 200), (40, 40, 40)
    band.hear(frame(900, 1_000, (1, bright)), local(900))
    band.hear(frame(1_050, 1_100, (1, dark)), local(1_050))  # a bump button flicked at 10 Hz
    band.hear(frame(1_150, 1_200, (1, bright)), local(1_150))
    band.hear(frame(1_200, 1_250, (1, blue)), local(1_200))  # the latest look while the rise waits
    assert [s.rgb for s in band.history] == [bright, dark]
    waited = band.shows(local(1_339))
    assert waited is not None and waited.rgb == dark
    shown = band.shows(local(1_340))
    assert shown is not None and shown.rgb == blue and shown.start_ms == 1_000 + MIN_PERIOD_MS
    assert shown.instant_ms == 1_250
    band.hear(frame(1_400, 1_450, (1, dark)), local(1_400))
    band.hear(frame(1_460, 1_500, (1, bright)), local(1_460))  # waits for 1,680 ...
    band.hear(frame(1_520, 1_560, (1, dim)), local(1_520))  # ... and never shows: a dim look came first
    band.settle(local(3_000))
    assert [s.rgb for s in band.history] == [bright, dark, blue, dark, dim]


def test_live_frames_and_effects_share_one_sequence_space() -> None:
    band = Band(KEY, 7, zone=0)
    band.hear(frame(5_000, 5_050, (1, (9, 9, 9))), local(5_000))
    band.hear(effect(1, 4_500, 4_000), local(5_010))  # a recording of an older effect
    band.hear(frame(4_990, 5_000, (1, (90, 9, 9))), local(5_020))  # and of an older frame
    assert band.refused["replay"] == 2 and serial(band) is None and [s.rgb for s in band.history] == []
    band.hear(effect(2, 5_500, 5_100), local(5_100))
    assert serial(band) == 2


def serial(band: Band) -> int | None:
    return band.current.packet.serial if band.current is not None else None


# -- the band's rules over any sequence of packets ----------------------------------------------------------------

def flashes(history: list[Shown], until_ms: float) -> list[float]:
    """Every flash the band showed. An effect that lights it and each flash of a flashing effect count as such. Live
    looks are measured as the band renders them, every 5 ms (and at every start, fade's end and strobe flash): a
    rise of the brightest LED by more than half of full scale above the lowest it showed since the last rise,
    within MIN_PERIOD_MS, is a flash, when it has risen so far. An effect's time counts as dark (not rendered)."""
    out: list[float] = []
    starts = [s.start_ms for s in history]
    samples: set[int] = set()
    for i, shown in enumerate(history):
        end = starts[i + 1] if i + 1 < len(history) else until_ms
        if shown.effect is None:
            samples.update((shown.start_ms, shown.start_ms + shown.fade_ms))
            if shown.strobe_ms:
                samples.update(range(shown.start_ms, math.ceil(min(end, shown.start_ms + 3_000)), shown.strobe_ms))
            continue
        period = shown.effect.period_ms if shown.effect.effect in FLASHING else 0
        if shown.effect.duration_ms:
            end = min(end, shown.start_ms + shown.effect.duration_ms)
        if shown.effect.effect != Effect.BLACKOUT:
            out.append(shown.start_ms)
        if period:
            out.extend(shown.start_ms + k * period for k in range(1, math.ceil((end - shown.start_ms) / period)))
    if history:  # after the last start, only a strobe changes: a few of its periods tell
        samples.update(range(starts[0], math.ceil(min(until_ms, starts[-1] + 3_000)), 5))
    window: collections.deque[tuple[int, int]] = collections.deque()  # (ms, brightness) rising: its head the lowest
    for ms in sorted(samples):
        if ms > until_ms:
            break
        shown = history[bisect.bisect_right(starts, ms) - 1]
        level = max(shown.rgb_at(ms - shown.start_ms)) if shown.live else 0
        while window and window[0][0] < ms - MIN_PERIOD_MS:
            window.popleft()
        while window and window[-1][1] >= level:
            window.pop()
        window.append((ms, level))
        if level - window[0][1] > 255 / 2:
            out.append(ms)
            window.clear()  # the next rise is measured from what shows after this one
            window.append((ms, level))
    return sorted(out)


def spaced(seen: list[float]) -> bool:
    """Never four flashes within a second, nor two within MIN_PERIOD_MS."""
    return all(b - a >= 1000 for a, b in zip(seen, seen[3:], strict=False)) and \
        all(b - a >= MIN_PERIOD_MS for a, b in itertools.pairwise(seen))


@pytest.mark.parametrize(("step_ms", "fade_ms"), [(42, 0), (100, 100)])
def test_a_rise_in_steps_is_a_flash_too(step_ms: int, fade_ms: int) -> None:
    """Black, 45 %, 90 % (the LED ceiling), black, a step at a time, none of them rising half of full scale: at 8 Hz
    with no fade, at 3.3 Hz with the 100 ms fade. The band flashes no more than 3 times a second all the same."""
    band = Band(KEY, 7, zone=0)
    stairs = [(0, 0, 0), (115, 115, 115), (230, 230, 230)]
    sent = 1_000
    for k in range(39):
        band.hear(frame(sent, sent + 50, (1, stairs[k % 3]), fade_ms=fade_ms), local(sent))
        sent += step_ms
    band.settle(local(sent + 1_000))
    seen = flashes(list(band.history), sent + 1_000)
    assert len(seen) >= 3 and spaced(seen), seen
    assert band.history[-1].rgb == (204, 204, 204)  # the last look heard, at the ceiling


def test_a_fader_still_rising_after_a_flash_is_that_flash_not_held_back() -> None:
    """Up from black in 92 ms with the 100 ms fade, as the gateway sends a fast fader: one rise, counted once, and
    the fader's last look shows at its instant."""
    band = Band(KEY, 7, zone=0)
    band.hear(frame(900, 900, (1, (0, 0, 0))), local(900))
    for k, level in enumerate((50, 90, 130, 170, 200)):
        sent = 1_000 + 23 * k
        band.hear(frame(sent, sent + 50, (1, (level, 0, 0)), fade_ms=100), local(sent))
    band.settle(local(2_000))
    assert [(s.rgb[0], s.start_ms) for s in band.history][1:] == [(50 + 40 * k, 1_050 + 23 * k) for k in range(4)] \
        + [(200, 1_142)]
    assert band.clamped == 0 and len(flashes(list(band.history), 2_000)) == 1


def test_a_live_look_heard_over_a_second_behind_the_bands_clock_is_stale() -> None:
    band = Band(KEY, 7, zone=0)
    blue, red = (0, 0, 90), (90, 0, 0)
    band.hear(frame(10_000, 10_050, (1, blue)), local(10_000))
    withheld = [frame(sent, 10_150, (1, look)) for sent, look in ((10_100, red), (10_110, blue))]  # not heard
    band.hear(frame(10_090, 10_090, (0b10, red)), local(10_090))  # another zone's
    band.hear(withheld[0], local(11_200))  # played 1.05 s after its instant: still newer than anything heard
    assert band.refused["late"] == 1 and [s.rgb for s in band.history] == [blue]
    band.hear(withheld[1], local(11_300))  # the look that shows: a refresh, not counted
    assert band.refused["late"] == 1 and [s.rgb for s in band.history] == [blue]
    band.hear(frame(11_400, 11_400, (1, red)), local(12_350))  # 0.95 s behind: within the bound, shown at once
    assert band.shows(local(12_350)) is not None and band.refused["late"] == 1
    assert [s.rgb for s in band.history] == [blue, red]


heard = st.lists(st.one_of(
    st.tuples(st.just("live"), st.integers(-100, 400), st.integers(0, 255), st.integers(0, 20),
              st.sampled_from([1, 0b11, 0b10]), rgbs, st.sampled_from([0, 0, 0, 50, 340, 700])),
    st.tuples(st.just("effect"), st.integers(-100, 400), st.integers(0, 2000), st.integers(0, 255),
              st.sampled_from(Effect), st.integers(0, 255), st.integers(0, 100).map(lambda p: p * 10))),
    max_size=40)


@settings(max_examples=150, deadline=None)
@given(heard)
def test_a_band_never_flashes_over_3_hz_nor_above_its_ceiling_never_takes_an_older_copy_and_ends_on_the_latest_look(
        packets: list[tuple]) -> None:  # type: ignore[type-arg]
    band = Band(KEY, 7, zone=0)
    sequence, newest, t, latest = 10_000, -1, local(10_000), None
    for kind, step, *rest in packets:
        sequence = max(0, sequence + step)
        t = max(t, local(sequence, 0.002))
        if kind == "live":
            countdown, fade, zones, rgb, strobe = rest
            adv = LiveFrame(7, sequence, countdown, fade * 10, (LiveLook(zones, rgb, strobe),)).encode(KEY)
        else:
            countdown, serial, effect_kind, intensity, period = rest
            adv = WristbandPacket(7, sequence, serial, effect_kind, countdown, intensity=intensity,
                                  period_ms=period).encode(KEY)
        band.settle(t)
        before = (len(band.history), band.current, band.upcoming())
        band.hear(adv, t)
        if sequence <= newest:
            assert (len(band.history), band.current, band.upcoming()) == before  # a replay changes nothing
            continue
        newest = sequence
        if kind == "live" and zones & 1:
            latest = (rgb, strobe)
    end = t + 10
    band.settle(end)
    history = list(band.history)
    for shown in history:
        if shown.effect is None:
            assert max(shown.rgb) <= MAX_INTENSITY and (not shown.strobe_ms or shown.strobe_ms >= MIN_PERIOD_MS)
        else:
            assert shown.effect.intensity <= MAX_INTENSITY
    seen = flashes(history, (end * 1000) + OFFSET)
    assert spaced(seen), seen
    if latest is not None:
        lives = [s for s in history if s.live]
        rgb, strobe = latest
        top = max(rgb)
        expected = tuple(c * MAX_INTENSITY // top for c in rgb) if top > MAX_INTENSITY else rgb
        assert lives and (lives[-1].rgb, lives[-1].strobe_ms) == (expected, max(strobe, MIN_PERIOD_MS) if strobe
                                                                   else 0)
        final = band.shows(end)
        assert final is lives[-1] or (final is not None and final.effect is not None
                                      and final.start_ms >= lives[-1].start_ms)


# -- the streams ----------------------------------------------------------------------------------------------------

def change(zone: int, rgb: tuple[int, int, int], show_ms: int, strobe_hz: float = 0.0, version: int = 1) -> LiveChange:
    return LiveChange(f"z{zone}", 1 << zone, Look(rgb, 1.0, strobe_hz), 0.0, show_ms, 100, version)


def test_zones_of_one_look_share_a_mask_and_a_frame_carries_two_looks_counting_down_to_their_instant() -> None:
    streams = Streams(show_id=7, tail_ms=200, heartbeat_ms=500, epoch_ms=1_000)
    streams.set_live([change(0, (100, 0, 0), 10_050), change(1, (100, 0, 0), 10_050),
                      change(2, (0, 50, 0), 10_050, strobe_hz=3)])
    live = streams.next(10_000)
    assert isinstance(live, LiveFrame) and live.sequence == 9_000 and live.countdown_ms == 50
    assert live.fade_ms == 100 and set(live.looks) == {LiveLook(0b011, (100, 0, 0)), LiveLook(0b100, (0, 50, 0), 340)}


def test_more_looks_than_a_frame_carries_take_turns_then_every_zone_is_refreshed_instead_of_heartbeats() -> None:
    streams = Streams(show_id=7, tail_ms=200, heartbeat_ms=500, live_tail_ms=100)
    streams.set_live([change(z, (10 * z, 0, 0), 1_050) for z in range(5)])
    pending = [streams.next(1_000 + 10 * i) for i in range(5)]
    assert all(isinstance(f, LiveFrame) and f.countdown_ms == 50 - 10 * i for i, f in enumerate(pending))
    carried = [look.zones for f in pending if isinstance(f, LiveFrame) for look in f.looks]
    assert all(len(f.looks) == 2 for f in pending if isinstance(f, LiveFrame))
    assert all(carried.count(1 << z) == 2 for z in range(5))  # each look in every second frame or so
    refreshed = [streams.next(1_200 + 10 * i) for i in range(10)]  # the tail is over: refreshes, no heartbeat
    assert all(isinstance(f, LiveFrame) and f.countdown_ms == 0 for f in refreshed)
    zones = [look.zones for f in refreshed if isinstance(f, LiveFrame) for look in f.looks]
    assert all(zones.count(1 << z) == 4 for z in range(5))  # round robin
    streams.set_live([])
    beat = streams.next(1_400)
    assert isinstance(beat, WristbandPacket) and beat.effect == Effect.HEARTBEAT


def test_looks_of_different_instants_do_not_share_a_countdown_and_one_too_far_ahead_waits() -> None:
    streams = Streams(show_id=7, tail_ms=200, heartbeat_ms=0)
    streams.set_live([change(0, (1, 0, 0), 1_050), change(1, (2, 0, 0), 1_080), change(2, (3, 0, 0), 1_400)])
    sent = [streams.next(1_000 + 10 * i) for i in range(4)]
    assert [(f.countdown_ms, [look.zones for look in f.looks]) for f in sent if isinstance(f, LiveFrame)] == [
        (50, [1]), (70, [2]), (30, [1]), (50, [2])]
    streams.set_live([change(2, (3, 0, 0), 1_400)])
    assert streams.next(1_100) is None  # 300 ms ahead: more than a countdown says; no heartbeats configured
    later = streams.next(1_150)
    assert isinstance(later, LiveFrame) and later.countdown_ms == 250


def test_live_takes_turns_with_effects_and_an_effect_takes_its_zones_from_live() -> None:
    streams = Streams(show_id=7, tail_ms=200, heartbeat_ms=500)
    streams.set_live([change(0, (1, 0, 0), 1_050), change(1, (2, 0, 0), 1_050)])
    streams.add(Fired("e1", 3, None, ShowEffect("solid"), (), (Group((), 0b10, 0, 1_500),), 0.0, 0.0))
    sent = [streams.next(1_000 + 10 * i) for i in range(4)]
    assert [type(f).__name__ for f in sent] == ["LiveFrame", "WristbandPacket"] * 2
    assert all(look.zones == 1 for f in sent if isinstance(f, LiveFrame) for look in f.looks)  # zone 1: the effect's
    assert set(streams.live) == {"z0"}
    later = [streams.next(1_200 + 10 * i) for i in range(4)]  # nothing pending: refreshes wait for idle slots
    assert all(isinstance(f, WristbandPacket) and f.effect == Effect.SOLID for f in later)
    idle = streams.next(1_701)  # the effect's copies are over
    assert isinstance(idle, LiveFrame) and idle.looks == (LiveLook(1, (1, 0, 0)),)


def test_a_strobe_goes_on_the_air_no_faster_than_asked() -> None:
    assert [strobe_ms(hz) for hz in (0, 3, 2.9, 1, 0.4)] == [0, 340, 350, 1000, 2500]
    assert strobe_ms(0.39) == strobe_ms(0.1) == 0  # slower than the frame can say (2.55 s): steady, never faster


def test_through_30_percent_loss_every_band_shows_a_change_at_its_instant() -> None:
    """The copies a band gets before the instant (a frame every 10 ms, the look pending for 50 ms): one is enough.
    Three looks take turns two a frame, so each is in about 3.3 of the 5 frames before its instant: a band misses
    all of them with a chance of 0.3^3.3 = 2 %, and shows the look at the first copy it hears after."""
    rng = random.Random(5)
    streams = Streams(show_id=7, tail_ms=200, heartbeat_ms=500)
    bands = [Band(KEY, 7, zone=z % 3) for z in range(1000)]
    offsets = [rng.uniform(-5, 5) for _ in bands]  # each band's clock, s
    for ms in range(0, 400, 10):  # heartbeats first: the bands learn the clock
        beat = streams.next(ms)
        for band, offset in zip(bands, offsets, strict=True):
            if beat is not None and rng.random() >= 0.3:
                band.accept(beat, (ms + rng.uniform(0, 2)) / 1000 + offset)
    streams.set_live([change(z, (50 * z + 50, 0, 0), 1_050) for z in range(3)])
    for ms in range(1_000, 1_300, 10):
        live = streams.next(ms)
        assert live is not None
        for band, offset in zip(bands, offsets, strict=True):
            if rng.random() >= 0.3:
                band.accept(live, (ms + rng.uniform(0, 2)) / 1000 + offset)
    errors = []
    for band, offset in zip(bands, offsets, strict=True):
        shown = band.shows(2 + offset)
        assert shown is not None and shown.rgb == (50 * band.zone + 50, 0, 0)
        assert shown.began is not None
        errors.append((shown.began - offset) * 1000 - 1_050)
    on_time = sorted(errors)[int(0.97 * len(errors))]
    assert min(errors) >= 0 and on_time < 3, on_time  # the least-delayed copy: 0-2 ms late
    assert max(errors) < 100
