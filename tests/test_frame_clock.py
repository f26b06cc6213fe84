"""The frame clock: inputs read at the start of every frame, and work that can wait kept clear of the slots."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

from pythonosc.osc_message_builder import OscMessageBuilder

from drivers.osc.driver import OscDriver, OscOptions
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.twin import DesiredRefused, Twin
from tests.conftest import free_port


async def next_frame(clock: FrameClock) -> None:
    sent = asyncio.Event()
    undo = clock.subscribe(lambda frame: sent.set())
    try:
        await asyncio.wait_for(sent.wait(), 2)
    finally:
        undo()


@contextlib.asynccontextmanager
async def ticking(clock: FrameClock) -> AsyncIterator[FrameClock]:
    task = asyncio.create_task(clock.run())
    try:
        await next_frame(clock)
        yield clock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_levels_out_of_range_are_refused_never_clamped() -> None:
    """One rule for every path to a level: a PATCH of desired levels is refused at once (nothing changes, the API
    answers 422), OSC is refused with an alert; neither is clamped."""
    twin = Twin("gw", "hall")
    dmx = DmxUniverses(twin, [1])
    dmx.declare()
    for levels, why in (({"20": 300}, "level 300 of channel 20 is out of range (allowed: 0 to 255, or null)"),
                        ({"600": 1}, "channel 600 is out of range (allowed: 1 to 512)"),
                        ({"x": 1}, "levels' keys must be channel numbers (allowed: 1 to 512)"),
                        ([True], "level True of channel 1 is out of range (allowed: 0 to 255, or null)")):
        try:
            twin.patch_desired("universe:1", {"levels": levels})
        except DesiredRefused as exc:
            assert str(exc) == why
        else:
            raise AssertionError(f"{levels} was taken")
    try:
        twin.patch_desired("universe:1", {"level": [1]})
    except DesiredRefused as exc:
        assert str(exc) == "no key 'level' (allowed: levels)"
    assert twin.get("universe:1").desired == {}  # type: ignore[union-attr]
    twin.patch_desired("universe:1", {"levels": {"20": 128}})
    assert dmx.get(1).levels[19] == 128
    sent: list[tuple[str, ...]] = []
    driver = OscDriver(DriverContext("osc", twin, None, dmx, FrameClock(40), None),  # type: ignore[arg-type]
                       OscOptions())
    driver.alert = lambda kind, text: sent.append((kind, text))  # type: ignore[method-assign]
    for value in (300, -1, 1.5, float("nan")):
        builder = OscMessageBuilder("/vg/dmx/1/20")
        builder.add_arg(value)
        driver.packet(builder.build().dgram, "127.0.0.1")
    assert dmx.get(1).levels[19] == 128
    assert [kind for kind, _ in sent] == ["bad_arguments"] * 4
    assert sent[0][1] == "/vg/dmx/1/20 takes one int (0-255) or float (0-1); got 300"


async def test_a_message_that_arrived_while_the_loop_was_busy_is_in_the_next_frame() -> None:
    twin = Twin("gw", "hall")
    dmx = DmxUniverses(twin, [1])
    clock = FrameClock(40)
    port = free_port()
    driver = OscDriver(DriverContext("osc", twin, None, dmx, clock, None),  # type: ignore[arg-type]
                       OscOptions(listen=f"127.0.0.1:{port}", tcp=False))
    await driver.start()
    sent: list[int] = []  # channel 1 of universe 1 as each frame goes out
    clock.subscribe(lambda frame: sent.append(dmx.get(1).levels[0]))
    try:
        async with ticking(clock):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                builder = OscMessageBuilder("/vg/dmx/1/1")
                builder.add_arg(200)
                before = len(sent)
                out.sendto(builder.build().dgram, ("127.0.0.1", port))
                time.sleep(0.04)  # noqa: ASYNC251 - the loop held past a slot: its wake-up queued ahead of the socket's
            await next_frame(clock)
            assert sent[before] == 200
    finally:
        await driver.stop()


async def test_clear_waits_out_a_slot_that_is_near_and_never_one_that_is_not() -> None:
    async with ticking(FrameClock(40)) as clock:
        frame = clock.frame
        await asyncio.wait_for(clock.clear(1.0), 1)  # every slot is within a second: wait for the next frame
        assert clock.frame == frame + 1
        assert clock.next_slot is not None and clock.next_slot - time.monotonic() > 0.015
        frame = clock.frame
        await clock.clear(0.0)  # no margin: at once
        assert clock.frame == frame


async def test_a_stopped_clock_holds_nothing_back() -> None:
    clock = FrameClock(1)  # a slot a second: the waiter below would wait for it
    task = asyncio.create_task(clock.run())
    await next_frame(clock)
    waiter = asyncio.create_task(clock.clear(2.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.wait_for(waiter, 0.5)
    assert clock.next_slot is None
    await asyncio.wait_for(clock.clear(2.0), 0.1)
