"""The patch: a console universe's levels become each crowd fixture's look (set on live only when it changed),
effects fired by the effect channel and presets by macro channels (edge-triggered, through the engine's fire
path), a control channel that gives the zones back to the box, the loss of the console held or faded, and the
configuration's refusals of overlapping fixtures, unknown zones and presets."""

from __future__ import annotations

import asyncio
import time
import tomllib

import pytest

from gateway.schema import check_all
from gateway.show.effects import TooSoon
from gateway.show.engine import ShowEngine
from gateway.show.live import LiveChange, Look
from gateway.show.settings import ShowSection
from gateway.twin import Twin

SHOW = """
max_flash_hz = 3
[[zones]]
name = "floor"
index = 0
[[zones]]
name = "balcony"
index = 1
[[zones]]
name = "bar"
index = 2
[[presets]]
name = "intro"
kind = "pulse"
[[presets]]
name = "drop"
kind = "solid"
[[patch]]
name = "crowd-floor"
universe = 7
address = 1
zones = ["floor"]
[[patch]]
name = "crowd-back"
universe = 7
address = 9
zones = ["balcony", "bar"]
mode = "4ch"
[[macros]]
universe = 7
channel = 20
ranges = [{from = 10, to = 19, preset = "intro"}, {from = 20, to = 29, preset = "drop"}]
"""


def section(text: str = SHOW, extra: str = "") -> ShowSection:
    built, problems = check_all(ShowSection, tomllib.loads(extra + text))
    assert not problems, problems
    assert built is not None
    return built


def problems_of(text: str) -> list[str]:
    return [str(p) for p in check_all(ShowSection, tomllib.loads(text))[1]]


def universe(**channels: int) -> bytes:
    """512 levels with the given channels (c1, c2, ...) set."""
    levels = bytearray(512)
    for name, value in channels.items():
        levels[int(name[1:]) - 1] = value
    return bytes(levels)


async def turn() -> None:
    """Let the loop take the turn's looks."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.fixture
def engine() -> ShowEngine:
    return ShowEngine(section(), Twin("gw", "hall"))


async def test_a_fixtures_channels_become_its_zones_look(engine: ShowEngine) -> None:
    changes: list[LiveChange] = []
    engine.live.subscribe(changes.append)
    # crowd-floor: intensity 128, orange, strobe 255; crowd-back (4ch at 9): full blue
    engine.patch.levels(7, universe(c1=128, c2=255, c3=128, c4=0, c5=255, c9=255, c12=255))
    await turn()
    now = engine.live.current()
    assert set(now) == {"floor", "balcony", "bar"}
    floor = now["floor"].look
    assert floor.colour == (255, 128, 0) and floor.intensity == pytest.approx(128 / 255)
    assert floor.strobe_hz == 3.0 and floor.rgb() == (128, 64, 0)
    assert now["balcony"].look == now["bar"].look == Look((0, 0, 255), 1.0)
    assert (now["floor"].mask, now["balcony"].mask, now["bar"].mask) == (1, 2, 4)
    version = engine.live.version
    engine.patch.levels(7, universe(c1=128, c2=255, c3=128, c4=0, c5=255, c9=255, c12=255, c300=9))
    await turn()
    assert engine.live.version == version, "nothing the fixtures read changed: no change"
    engine.patch.levels(7, universe(c1=128, c2=255, c3=128, c4=0, c5=10, c9=255, c12=255))
    await turn()
    assert engine.live.version == version + 1 and engine.live.current()["floor"].look.strobe_hz == 0.5
    engine.patch.levels(7, b"\xff\x00\x00\xff")  # a short universe: the rest is 0
    await turn()
    assert engine.live.current()["floor"].look == Look((0, 0, 255), 1.0)
    assert engine.live.current()["bar"].look == Look((0, 0, 0), 0.0)
    engine.patch.levels(8, universe(c1=255))  # not patched
    await turn()
    assert engine.patch.universes() == {7}


async def test_the_effect_channel_fires_an_effect_when_it_enters_a_range(engine: ShowEngine) -> None:
    red_full = {"c1": 255, "c2": 255}
    engine.patch.levels(7, universe(**red_full))
    await turn()
    assert "floor" in engine.live.current() and engine.last is None
    engine.patch.levels(7, universe(**red_full, c6=10, c7=255))  # pulse at 180 bpm
    fired = engine.last
    assert fired is not None and fired.zones == ("floor",) and fired.preset is None
    assert fired.effect.kind == "pulse" and fired.effect.colour == (255, 0, 0) and fired.effect.period_ms == 334
    assert "floor" not in engine.live.current(), "the effect took the zone from live"
    engine.patch.levels(7, universe(c1=255, c2=200, c6=49, c7=255))  # same range, another colour
    await turn()
    assert engine.last is fired and "floor" not in engine.live.current(), "not again while it stays in the range"
    engine.patch.levels(7, universe(**red_full, c6=0))  # back to the live look
    await turn()
    assert engine.live.current()["floor"].look == Look((255, 0, 0), 1.0)
    engine.patch.levels(7, universe(**red_full, c6=170, c7=0))  # rainbow at the show's tempo
    assert engine.last is fired, "too soon after the pulse for the flash cap: it waits, not booked ahead"
    await asyncio.sleep(fired.start_mono + 1 / 3 - engine.settings.lead_ms / 1000 - time.monotonic() + 0.05)
    rainbow = engine.last
    assert rainbow is not None and rainbow.effect.kind == "rainbow" and rainbow.effect.period_ms == 500
    assert rainbow.lead_ms == engine.settings.lead_ms and rainbow.start_mono - fired.start_mono >= 1 / 3 - 0.002


async def test_an_effect_the_flash_cap_holds_waits_the_latest_request_replacing_the_last(engine: ShowEngine) -> None:
    fired = []
    engine.on_fire(fired.append)
    for effect in (10, 50, 90):  # pulse, then a chase and a wave straight after: the wave replaces the chase
        engine.patch.levels(7, universe(c1=255, c2=255, c6=effect))
    assert [f.effect.kind for f in fired] == ["pulse"]
    await asyncio.sleep(fired[0].start_mono + 1 / 3 - engine.settings.lead_ms / 1000 - time.monotonic() + 0.05)
    assert [f.effect.kind for f in fired] == ["pulse", "wave"]
    assert fired[1].start_mono - fired[0].start_mono >= 1 / 3 - 0.002 and fired[1].lead_ms == engine.settings.lead_ms
    assert engine.patch.refused == 0 and engine.patch.fired == 2 and engine.patch.dropped == 1


async def test_a_channel_flicked_fast_books_nothing_far_ahead_nor_blocks_other_fires(engine: ShowEngine) -> None:
    gap, lead = 1 / 3, engine.settings.lead_ms / 1000
    ahead = 0.0
    began = time.monotonic()
    flick = 0
    while time.monotonic() - began < 2:  # the effect channel and a macro flicked at 40 Hz for 2 s
        on = flick % 2 == 1
        engine.patch.levels(7, universe(c1=255, c2=255, c6=10 if on else 0, c20=25 if on else 0))
        now = time.monotonic()
        ahead = max(ahead, *(s - now for s in engine.starts("floor")), 0.0)
        flick += 1
        await asyncio.sleep(0.025)
    assert ahead <= lead + gap + 0.05, f"an effect booked {ahead:.2f} s ahead"
    assert engine.patch.fired >= 2 * 3 - 2, "the channels fire as often as the cap allows"
    try:
        engine.fire("drop")
    except TooSoon as exc:
        assert exc.retry_after_s <= gap + 0.05, f"OSC, HTTP and cues blocked for {exc.retry_after_s:.2f} s"


async def test_a_deferred_fire_is_dropped_when_the_channel_leaves_the_console_goes_or_the_show_stops(
        engine: ShowEngine) -> None:
    fired = []
    engine.on_fire(fired.append)
    engine.patch.levels(7, universe(c1=255, c6=10, c20=0))  # a pulse
    engine.patch.levels(7, universe(c1=255, c6=50, c20=0))  # a chase: waits
    engine.patch.levels(7, universe(c1=255, c6=0, c20=0))  # back to the live look: the chase does not start
    engine.patch.levels(7, universe(c1=255, c6=0, c20=25))  # the macro: waits
    engine.patch.lost(7)  # the console gone: the macro does not fire later
    engine.patch.levels(7, universe(c1=255, c6=0, c20=0))
    engine.patch.levels(7, universe(c1=255, c6=0, c20=15))  # intro: waits
    stop = engine.stop()  # ... and the stop drops it
    await asyncio.sleep(fired[0].start_mono + 1 / 3 - engine.settings.lead_ms / 1000 - time.monotonic() + 0.1)
    assert [f.preset or f.effect.kind for f in fired] == ["pulse", "blackout"] and engine.last is stop
    assert engine.patch.dropped == 3 and engine.patch.refused == 0


async def test_a_slow_flash_cap_slows_the_effect_channel_not_refuses_it() -> None:
    slow = section(extra="max_flash_hz = 1\ntempo_bpm = 60\n", text=SHOW.replace("max_flash_hz = 3\n", ""))
    engine = ShowEngine(slow, Twin("gw", "hall"))
    engine.patch.levels(7, universe(c1=255, c6=90, c7=255))  # wave at 180 bpm: over 1 Hz
    assert engine.last is not None and engine.last.effect.period_ms == 1000 and engine.patch.refused == 0


async def test_a_fixture_released_to_the_box_is_not_faded_when_the_console_goes() -> None:
    engine = ShowEngine(section(extra='live = {on_loss = "fade-out"}\n'), Twin("gw", "hall"))
    engine.patch.levels(7, universe(c1=255, c2=255, c8=200))
    fired = engine.fire("drop", zones=["floor"])
    engine.patch.lost(7)
    await turn()
    assert "floor" not in engine.live.current() and engine.last is fired


async def test_the_control_channel_gives_the_zones_to_the_box(engine: ShowEngine) -> None:
    engine.patch.levels(7, universe(c1=255, c3=255))
    await turn()
    assert "floor" in engine.live.current()
    engine.patch.levels(7, universe(c1=255, c3=255, c8=128))
    assert "floor" not in engine.live.current()
    fired = engine.fire("drop", zones=["floor"])
    engine.patch.levels(7, universe(c1=10, c3=255, c8=255))  # the console's look changes: the box's effect stays
    await turn()
    assert "floor" not in engine.live.current() and engine.last is fired
    engine.patch.levels(7, universe(c1=10, c3=255, c8=127))  # live again: the console's look
    await turn()
    assert engine.live.current()["floor"].look == Look((0, 255, 0), 10 / 255)


async def test_macros_fire_presets_when_the_level_enters_a_range(engine: ShowEngine) -> None:
    fired: list[str | None] = []
    engine.on_fire(lambda f: fired.append(f.preset))
    engine.patch.levels(7, universe(c20=15))
    assert fired == [], "the first level heard is where the channel stands: nothing fires"
    engine.patch.levels(7, universe(c20=0))
    engine.patch.levels(7, universe(c20=10))
    engine.patch.levels(7, universe(c20=19))
    engine.patch.levels(7, universe(c20=12))
    assert fired == ["intro"], "fired on entering the range, not while the level stays in it"
    engine.patch.levels(7, universe(c20=25))
    engine.patch.levels(7, universe(c20=25, c1=3))
    await asyncio.sleep(1 / 3 + 0.02)  # (each waits for the flash cap after the one before)
    assert fired == ["intro", "drop"]
    engine.patch.levels(7, universe(c20=40))
    engine.patch.levels(7, universe(c20=28))
    await asyncio.sleep(1 / 3 + 0.02)
    assert fired == ["intro", "drop", "drop"]
    engine.patch.lost(7)
    engine.patch.levels(7, universe(c20=15))
    assert fired == ["intro", "drop", "drop"], "after a loss, the console's first level fires nothing"
    engine.patch.levels(7, universe(c20=25))
    await asyncio.sleep(1 / 3 + 0.02)
    assert fired == ["intro", "drop", "drop", "drop"]


async def test_losing_the_console_holds_the_looks_by_default(engine: ShowEngine) -> None:
    engine.patch.levels(7, universe(c1=255, c2=255))
    await turn()
    before = dict(engine.live.current())
    engine.patch.lost(7)
    await turn()
    assert engine.live.current() == before


async def test_losing_the_console_can_fade_its_fixtures_out() -> None:
    engine = ShowEngine(section(extra='live = {on_loss = "fade-out", loss_fade_ms = 2500}\n'), Twin("gw", "hall"))
    engine.patch.levels(7, universe(c1=255, c2=255, c9=200, c11=100))
    await turn()
    engine.fire("drop", zones=["bar"])  # an effect of the box's own in one zone of the group: the fade takes it
    engine.patch.lost(7)
    await turn()
    now = engine.live.current()
    assert now["floor"].look == Look((255, 0, 0), 0.0) and now["floor"].fade_ms == 2500
    assert now["balcony"].look == now["bar"].look == Look((0, 100, 0), 0.0) and now["bar"].fade_ms == 2500
    version = engine.live.version
    engine.patch.lost(7)  # said again: nothing more to fade
    await turn()
    assert engine.live.version == version
    engine.patch.levels(7, universe(c1=255, c2=255))  # the console is back: its look again
    await turn()
    assert engine.live.current()["floor"].look.intensity == 0, "a rise to full this soon waits for the flash cap"
    await asyncio.sleep(0.1 + 1 / 3)  # from the end of the first look's fade (100 ms)
    assert engine.live.current()["floor"].look == Look((255, 0, 0), 1.0)
    assert engine.live.current()["floor"].fade_ms == 100


@pytest.mark.parametrize(("text", "said"), [
    (SHOW.replace("address = 9", "address = 8"),
     "patch[1]: fixture 'crowd-back' overlaps fixture 'crowd-floor' at universe 7 channel 8"),
    (SHOW.replace('zones = ["balcony", "bar"]', 'zones = ["balcony", "pit"]'),
     "patch[1].zones: no zone 'pit' (allowed: floor, balcony, bar)"),
    (SHOW.replace('zones = ["balcony", "bar"]', 'zones = ["balcony", "floor"]'),
     "patch[1].zones: zone 'floor' is already in fixture 'crowd-floor' (a zone takes one fixture's look)"),
    (SHOW.replace("channel = 20", "channel = 10"),
     "macros[0]: the macro on channel 10 overlaps fixture 'crowd-back' at universe 7 channel 10"),
    (SHOW.replace('preset = "drop"', 'preset = "nope"'),
     "macros[0].ranges[1].preset: no preset 'nope' (allowed: intro, drop)"),
    (SHOW.replace("from = 20", "from = 19"), "macros[0].ranges[1]: 19 to 29 overlaps another range of this channel"),
    (SHOW.replace("to = 29", "to = 256"), "macros[0].ranges[1]: from and to must be levels"),
    (SHOW.replace("address = 9", "address = 510"),
     "patch[1].address: 510: the fixture's 4 channels end at 513 (allowed: 1 to 509 for mode 4ch)"),
    (SHOW.replace("universe = 7\naddress = 1", "universe = 64000\naddress = 1"),
     "patch[0].universe: 64000 is out of range (allowed: from 1 to 63999)"),
    (SHOW.replace('name = "crowd-back"', 'name = "crowd-floor"'), "patch: fixture names must be unique"),
    (SHOW.replace('mode = "4ch"', 'mode = "12ch"'), "patch[1].mode: '12ch' is not allowed (allowed: 8ch, 4ch)"),
    ("live = {fade_ms = 2560}\n" + SHOW, "live.fade_ms: 2560 is out of range (allowed: from 0 to 2550)"),
    ("live = {loss_fade_ms = 5000}\n" + SHOW, "live.loss_fade_ms: 5000 is out of range (allowed: from 0 to 2550)"),
])
def test_the_patch_refuses_overlaps_unknown_zones_and_presets(text: str, said: str) -> None:
    found = problems_of(text)
    assert any(p.startswith(said) for p in found), found


def test_the_example_patch_is_valid() -> None:
    assert problems_of(SHOW) == []
