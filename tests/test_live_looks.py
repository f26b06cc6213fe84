"""Live looks: changes coalesced to one per zone per turn of the loop, shown `delay_ms` after they arrive, strobe
clamped to the flash cap, a flash (a rise of more than half of full scale) too soon after the last held back to
the moment the cap allows, released by an effect, and reported on the twin a few times a second at most."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.show.effects import TooSoon
from gateway.show.engine import ShowEngine
from gateway.show.live import LiveChange, Look
from gateway.show.settings import ShowSection, ShowZone
from gateway.twin import Twin

RED, DIM, DARK = Look((255, 0, 0), 1.0), Look((255, 0, 0), 0.3), Look((255, 0, 0), 0.0)


def engine(**show: object) -> tuple[ShowEngine, Twin]:
    twin = Twin("gw", "hall")
    zones = [ShowZone("floor", 0), ShowZone("balcony", 1), ShowZone("bar", 2)]
    return ShowEngine(ShowSection(zones=zones, **show), twin), twin  # type: ignore[arg-type]


async def turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_changes_in_one_turn_are_one_change_per_zone_shown_after_the_delay() -> None:
    show, _ = engine()
    changes: list[LiveChange] = []
    show.live.subscribe(changes.append)
    arrived = time.monotonic()
    show.live.set(("floor", "balcony"), DIM, at_mono=arrived)
    show.live.set(("floor",), Look((0, 255, 0), 0.3), at_mono=arrived + 0.001)
    show.live.set(("floor",), Look((0, 0, 255), 0.3), at_mono=arrived + 0.002)
    assert changes == [] and show.live.current() == {}, "taken when the loop turns"
    await turn()
    assert [(c.zone, c.look) for c in changes] == [("floor", Look((0, 0, 255), 0.3)), ("balcony", DIM)]
    floor = show.live.current()["floor"]
    assert floor.show_ms == show.show_ms(arrived + 0.002) + 50 and floor.fade_ms == 100 and floor.mask == 1
    assert [c.version for c in changes] == [1, 2] and show.live.version == 2
    assert show.live.current()["balcony"].mask == 2


async def test_strobe_is_clamped_to_the_flash_cap() -> None:
    show, _ = engine(max_flash_hz=2.0)
    show.live.set(("bar",), Look((255, 255, 255), 0.2, strobe_hz=25))
    await turn()
    assert show.live.current()["bar"].look.strobe_hz == 2.0 and show.live.strobe_clamped == 1


async def test_a_flash_too_soon_after_the_last_is_held_back_to_the_allowed_moment() -> None:
    show, _ = engine()  # 3 Hz: a rise to more than half brightness at most every 333 ms in a zone
    changes: list[LiveChange] = []
    show.live.subscribe(changes.append)
    show.live.set(("floor",), RED)
    await turn()
    risen = changes[-1].at_mono
    show.live.set(("floor",), DARK)  # a fall: at once
    await turn()
    assert show.live.current()["floor"].look == DARK
    show.live.set(("floor",), RED)  # up again, too soon: held
    show.live.set(("balcony",), RED)  # another zone: its own count
    await turn()
    assert show.live.current()["floor"].look == DARK and show.live.current()["balcony"].look == RED
    show.live.set(("floor",), Look((0, 0, 255), 1.0))  # the latest while held is what shows
    await turn()
    assert show.live.held_back == 1
    await asyncio.sleep(risen + 0.1 + 1 / 3 - time.monotonic() + 0.02)  # a flash has risen when its fade (100) ends
    let_out = show.live.current()["floor"]
    assert let_out.look == Look((0, 0, 255), 1.0)
    assert 0.1 + 1 / 3 - 0.002 <= let_out.at_mono - risen < 0.1 + 1 / 3 + 0.1  # (the loop's timer, loaded)
    assert let_out.show_ms == show.show_ms(let_out.at_mono) + 50
    show.live.set(("floor",), DIM)  # a small step is no flash
    show.live.set(("bar",), DIM)
    await turn()
    assert show.live.current()["floor"].look == DIM and show.live.held_back == 1


async def test_an_effect_fired_in_a_zone_releases_it_from_live() -> None:
    show, _ = engine()
    show.live.set(("floor", "bar"), RED)
    await turn()
    show.live.set(("floor",), DARK)
    show.live.set(("floor",), RED)  # held back...
    await turn()
    show.fire(inline={"kind": "solid"}, zones=["floor"], lead_ms=1000)
    assert set(show.live.current()) == {"bar"}
    await asyncio.sleep(0.4)
    assert set(show.live.current()) == {"bar"}, "...and dropped with the release"
    show.live.set(("floor",), DIM)  # the console changes it again: live again
    await turn()
    assert show.live.current()["floor"].look == DIM


async def test_the_live_looks_are_on_the_twin_a_few_times_a_second_at_most() -> None:
    show, twin = engine()
    show.live.set(("floor",), DIM)
    await turn()
    live = twin.get("show_control").reported["live"]  # type: ignore[union-attr]
    assert live["zones"] == {"floor": {"colour": "#ff0000", "intensity": 0.3, "strobe_hz": 0.0,
                                       "show_ms": show.live.current()["floor"].show_ms, "fade_ms": 100}}
    versions = []
    began = time.monotonic()
    for level in range(20):  # a fader moved for 200 ms
        show.live.set(("floor",), Look((255, 0, 0), 0.3 + level / 100))
        await asyncio.sleep(0.01)
        versions.append(twin.get("show_control").version)  # type: ignore[union-attr]
    assert len(set(versions)) <= 1 + (time.monotonic() - began) // 0.25, "at most one report each 250 ms"
    assert len(show.live.current()) == 1 and show.live.version == 21
    await asyncio.sleep(0.3)
    live = twin.get("show_control").reported["live"]  # type: ignore[union-attr]
    assert live["zones"]["floor"]["intensity"] == 0.49 and live["version"] == show.live.version
    show.fire(inline={"kind": "solid"}, zones=["floor"])
    await asyncio.sleep(0.3)
    assert twin.get("show_control").reported["live"]["zones"] == {}  # type: ignore[union-attr]


async def test_a_rise_in_steps_flashes_no_faster_than_the_cap() -> None:
    show, _ = engine()  # 3 Hz
    shown: list[float] = []
    show.live.subscribe(lambda change: shown.append(change.look.brightness))
    stairs = [DARK, Look((255, 0, 0), 0.45), Look((255, 0, 0), 0.9), DARK]  # black, 45 %, 90 %, black at 40 Hz
    began = time.monotonic()
    step = 0
    while time.monotonic() - began < 2:
        show.live.set(("floor",), stairs[step % len(stairs)])
        step += 1
        await asyncio.sleep(0.025)
    seconds = time.monotonic() - began
    flashes, low = 0, 0.0  # a flash: a rise of over half of full scale from the lowest since the last flash
    for brightness in shown:
        if brightness - low > 0.5:
            flashes, low = flashes + 1, brightness
        else:
            low = min(low, brightness)
    assert flashes <= 3 * seconds + 1, f"{flashes} flashes in {seconds:.1f} s"
    assert show.live.held_back > 0


async def test_an_effects_start_counts_as_a_flash_for_the_live_look() -> None:
    show, _ = engine()
    fired = show.fire(inline={"kind": "solid"}, zones=["floor"], lead_ms=0)
    await asyncio.sleep(0.1)
    show.live.set(("floor",), RED)  # the console takes the zone back, rising to full 0.1 s after the effect lit it
    await turn()
    assert "floor" not in show.live.current() and show.live.held_back == 1
    await asyncio.sleep(fired.start_mono + 1 / 3 - time.monotonic() + 0.05)
    shown = show.live.current()["floor"]
    assert shown.look == RED and shown.at_mono + 0.05 - fired.start_mono >= 1 / 3 - 0.002  # shown delay_ms on


async def test_a_live_flash_holds_back_an_effect_as_an_effect_would() -> None:
    show, _ = engine()
    show.live.set(("floor",), RED)  # a flash on the bands at its instant, 50 ms on, risen at its fade's end (100 ms)
    await turn()
    with pytest.raises(TooSoon) as refused:
        show.fire(inline={"kind": "solid", "colour": "#0000ff"}, zones=["floor"], lead_ms=0)
    assert 0.3 < refused.value.retry_after_s < 0.5
    show.fire(inline={"kind": "solid"}, zones=["balcony"], lead_ms=0)  # another zone: its own count


async def test_an_effect_booked_far_ahead_does_not_hold_a_rise_now() -> None:
    show, _ = engine()
    show.fire(inline={"kind": "solid"}, zones=["floor"], lead_ms=3000)  # starts in 3 s: no flash near now
    show.live.set(("floor",), RED)  # the console rises to full now (and so takes the zone back)
    await turn()
    assert show.live.current()["floor"].look == RED and show.live.held_back == 0


async def test_a_release_moves_the_version() -> None:
    show, _ = engine()
    show.live.set(("floor",), DIM)
    await turn()
    version = show.live.version
    show.fire(inline={"kind": "solid"}, zones=["floor"])
    assert "floor" not in show.live.current() and show.live.version == version + 1
    show.fire(inline={"kind": "solid"}, zones=["bar"], lead_ms=1000)  # not under live: nothing released
    assert show.live.version == version + 1
