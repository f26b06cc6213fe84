"""Feedback of what each zone shows, whatever drives it: the latest of the console's live look and the effect fired
there, out as OSC `/vg/out/zone/{zone}/look ,ffff` to a real socket on change and at most `rate_hz` a second, and
as a DMX universe (zone index i's red, green, blue at 3i+1..3i+3) that an Art-Net output sends on change."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pythonosc.osc_message import OscMessage

from drivers.dmx.artnet import ArtNetOptions, ArtNetOutput
from drivers.dmx.artnet_codec import ArtDmx, decode
from drivers.osc.driver import OscDriver, OscOptions
from gateway import config
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.show.engine import ShowEngine
from gateway.show.live import Look
from gateway.show.settings import PresetSection, ShowSection, ShowZone
from gateway.show.zone_looks import FeedbackSection, ZoneLook
from gateway.twin import Twin
from tests.conftest import free_port

Looks = list[tuple[float, str, tuple[float, ...]]]  # (when read, zone, r g b intensity)


def engine(rate_hz: float, universe: int = 0) -> ShowEngine:
    zones = [ShowZone("floor", 0), ShowZone("balcony", 1, 34.3), ShowZone("bar", 2)]
    presets = [PresetSection("red", colour="#ff0000", intensity=0.5),
               PresetSection("breathe", kind="pulse", colour="#00ff00", period_ms=1000)]
    return ShowEngine(ShowSection(lead_ms=0, zones=zones, presets=presets,
                                  feedback=FeedbackSection(rate_hz, universe)), Twin("gw", "hall"))


@contextlib.asynccontextmanager
async def osc_feedback(show: ShowEngine) -> AsyncIterator[socket.socket]:
    """A running OSC driver whose destination is a socket of the test's."""
    feedback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    feedback.bind(("127.0.0.1", 0))
    feedback.setblocking(False)
    twin = Twin("gw", "hall")
    ctx = DriverContext("osc", twin, None, DmxUniverses(twin, [1]), FrameClock(40), show)  # type: ignore[arg-type]
    driver = OscDriver(ctx, OscOptions(listen=f"127.0.0.1:{free_port()}", tcp=False,
                                       destinations=[f"127.0.0.1:{feedback.getsockname()[1]}"]))
    await driver.start()
    task = asyncio.create_task(driver.run())
    try:
        yield feedback
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.stop()
        feedback.close()


async def looks(feedback: socket.socket, seconds: float) -> Looks:
    loop = asyncio.get_running_loop()
    out: Looks = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(feedback, 1024), left)
        except TimeoutError:
            break
        message = OscMessage(data)
        assert message.address.endswith("/look") and [type(p) for p in message.params] == [float] * 4, message
        out.append((time.monotonic(), message.address.split("/")[4], tuple(message.params)))
    return out


def near(got: tuple[float, ...], want: tuple[float, ...]) -> bool:
    return all(abs(a - b) < 1e-3 for a, b in zip(got, want, strict=True))


async def test_each_zone_s_look_goes_out_as_osc_whatever_drives_it_on_change_and_at_most_rate_hz() -> None:
    show = engine(rate_hz=10)
    async with osc_feedback(show) as feedback:
        first = await looks(feedback, 0.1)  # every zone at once: dark
        assert sorted(zone for _, zone, _ in first) == ["balcony", "bar", "floor"]
        assert all(near(look, (0, 0, 0, 0)) for _, _, look in first)
        fired_at = time.monotonic()
        show.fire("red", zones=["floor", "balcony"])
        show.live.set(("bar",), Look((0, 0, 255), 0.25))
        changed = await looks(feedback, 0.25)
        by_zone = {zone: (at, look) for at, zone, look in changed}
        assert near(by_zone["floor"][1], (1, 0, 0, 0.5)) and near(by_zone["bar"][1], (0, 0, 1, 0.25))
        assert by_zone["floor"][0] - fired_at < 0.12  # within a sample: not a poll of a second
        # balcony starts 100 ms later (34.3 m of sound): it is still dark at the first sample after the fire
        assert by_zone["balcony"][0] - fired_at >= 0.095 and near(by_zone["balcony"][1], (1, 0, 0, 0.5))
        assert len(changed) == 3, changed  # nothing is told twice
        assert await looks(feedback, 0.3) == []  # nothing changes: nothing is sent

        show.fire("breathe", zones=["floor"])  # a pulse moves: every sample, never more than rate_hz
        moving = await looks(feedback, 1.0)
        assert {zone for _, zone, _ in moving} == {"floor"}
        assert 8 <= len(moving) <= 11, len(moving)
        assert all(b[0] - a[0] > 0.08 for a, b in itertools.pairwise(moving))
        assert all(near(look[:3], (0, 1, 0)) for _, _, look in moving)
        assert max(look[3] for _, _, look in moving) - min(look[3] for _, _, look in moving) > 0.5

        show.live.set(("floor",), Look((255, 255, 255), 1.0))  # the console takes the zone back: the latest wins
        after = await looks(feedback, 0.4)
        assert near(after[-1][2], (1, 1, 1, 1)) and await looks(feedback, 0.25) == []  # and the pulse is over
        assert show.looks.looks()[0]["floor"] == ZoneLook((1.0, 1.0, 1.0), 1.0, (255, 255, 255))


async def test_the_feedback_universe_carries_each_zone_s_rgb_and_goes_out_on_change() -> None:
    show = engine(rate_hz=20, universe=2)
    twin = Twin("gw", "hall")
    dmx = DmxUniverses(twin, [1, 2])
    wire = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wire.bind(("127.0.0.1", 0))
    wire.setblocking(False)
    ctx = DriverContext("artnet", twin, None, dmx, FrameClock(40), show)  # type: ignore[arg-type]
    output = ArtNetOutput(ctx, ArtNetOptions(universes=[2], targets=[f"127.0.0.1:{wire.getsockname()[1]}"]))
    await output.start()
    output.attach()
    feeding = asyncio.create_task(show.looks.feed(dmx))
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(0.1)
        with contextlib.suppress(BlockingIOError):
            while True:
                wire.recv(1024)
        show.live.set(("balcony",), Look((255, 128, 0), 0.5))
        show.fire("red", zones=["bar"])
        frames: list[ArtDmx] = []
        while not frames or frames[-1].data[6:9] != bytes([128, 0, 0]) or frames[-1].data[3:6] != bytes([128, 64, 0]):
            packet = decode(await asyncio.wait_for(loop.sock_recv(wire, 1024), 1.0))
            assert isinstance(packet, ArtDmx)
            frames.append(packet)
    finally:
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding
        output.detach()
        await output.stop()
        wire.close()
    assert frames[-1].port_address == 2 and frames[-1].data[:3] == bytes(3)  # floor (index 0) dark
    assert list(dmx.get(2).levels[:9]) == [0, 0, 0, 128, 64, 0, 128, 0, 0] and not any(dmx.get(2).levels[9:])
    assert len(frames) <= 2  # both zones' change in one frame, or (a sample apart) in two


def test_the_feedback_universe_must_be_one_of_dmx(tmp_path: Path) -> None:
    text = '[gateway]\nid = "gw"\nvenue = "hall"\n\n[dmx]\nuniverses = [1, 2]\n\n[show.feedback]\nuniverse = {}\n'
    assert config.parse(tmp_path / "gw.toml", text.format(2)).show.feedback.universe == 2
    with pytest.raises(config.ConfigError) as err:
        config.parse(tmp_path / "gw.toml", text.format(5))
    assert "show.feedback.universe: universe 5 is not in dmx.universes (allowed: 1, 2; or add it)" in str(err.value)


async def test_nobody_following_keeps_nothing_but_what_each_zone_shows() -> None:
    """A console streams a fader with no OSC destination and no feedback universe: what the zone showed before its
    latest look to start is not kept, only that and the looks still to start (within [show.live] delay_ms, 50)."""
    show = engine(rate_hz=10)
    for level in range(40):  # 200 ms of a fader moving
        show.live.set(("floor",), Look((255, 0, 0), (level + 1) / 40), fade_ms=0)
        await asyncio.sleep(0.005)
    assert len(show.looks._sources["floor"]) <= 14, len(show.looks._sources["floor"])
    await asyncio.sleep(0.06)
    assert show.looks.looks()[0]["floor"] == ZoneLook((1.0, 0.0, 0.0), 1.0, (255, 0, 0))
    assert len(show.looks._sources["floor"]) == 1
