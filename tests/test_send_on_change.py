"""Send on change, on real sockets: a universe changed goes on the wire within a few ms, not at the next frame;
what one turn of the loop sets is one frame (and one ArtSync); a change within `max_rate_hz` of the last send goes
at the end of the interval with the latest levels; unchanged universes are kept alive; `frames` waits for the
clock. sACN sends a new look three times before it goes quiet, each followed by its sync packet, and tshark
dissects every packet."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from sacn.messages.data_packet import DataPacket

from drivers.dmx.artnet import ArtNetOptions, ArtNetOutput
from drivers.dmx.artnet_codec import ArtDmx, ArtSync, decode
from drivers.dmx.e131 import PORT as SACN_PORT
from drivers.dmx.e131 import SacnOptions, SacnOutput
from drivers.dmx.output import DmxOutput
from drivers.osc.driver import OscDriver, OscOptions
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.twin import Twin
from peers.tshark import read
from tests.conftest import free_port

Heard = list[tuple[float, bytes]]  # (time.monotonic() when read, datagram)


def receiver(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def listen(sock: socket.socket, seconds: float) -> Heard:
    """Every datagram that arrives within `seconds`, with when it was read."""
    loop = asyncio.get_running_loop()
    heard: Heard = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1024), left)
        except TimeoutError:
            break
        heard.append((time.monotonic(), data))
    return heard


def pcap(path: Path, payloads: list[bytes], port: int) -> Path:
    """The datagrams as UDP on loopback in a capture file (raw IPv4), for tshark."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        for i, payload in enumerate(payloads):
            udp = struct.pack(">HHHH", 40000, port, 8 + len(payload), 0) + payload
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, bytes([127, 0, 0, 1]),
                             bytes([127, 0, 0, 1]))
            out.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(ip + udp), len(ip + udp)) + ip + udp)
    return path


def artnet(heard: Heard) -> list[tuple[float, Any]]:
    return [(at, decode(data)) for at, data in heard]


@contextlib.asynccontextmanager
async def running(output: DmxOutput[Any]) -> AsyncIterator[DmxOutput[Any]]:
    await output.start()
    output.attach()
    try:
        yield output
    finally:
        output.detach()
        await output.stop()


def context(universes: list[int], clock: FrameClock) -> tuple[DmxUniverses, DriverContext]:
    twin = Twin("gw", "hall")
    dmx = DmxUniverses(twin, universes)
    return dmx, DriverContext("out", twin, None, dmx, clock, None)  # type: ignore[arg-type]


async def test_a_change_goes_out_at_once_and_one_turn_of_the_loop_is_one_frame_with_one_artsync() -> None:
    """The frame clock is not even running: what reaches the wire is sent on change."""
    sock = receiver()
    dmx, ctx = context([1, 2], FrameClock(40))
    options = ArtNetOptions(targets=[f"127.0.0.1:{sock.getsockname()[1]}"], sync=True)
    async with running(ArtNetOutput(ctx, options)):
        first = artnet(await listen(sock, 0.1))  # attached: every universe at once, then the sync
        assert [(type(p).__name__, getattr(p, "port_address", None)) for _, p in first] == [
            ("ArtDmx", 1), ("ArtDmx", 2), ("ArtSync", None)]
        await asyncio.sleep(0.05)  # beyond 1/44 s since those
        changed = time.monotonic()
        for channel in range(1, 11):  # one OSC bundle, or one console packet
            dmx.set_channel(1, channel, channel * 10)
        dmx.set_channel(2, 512, 7)
        heard = artnet(await listen(sock, 0.15))
    sock.close()
    assert [type(p) for _, p in heard] == [ArtDmx, ArtDmx, ArtSync], heard
    one, two = heard[0][1], heard[1][1]
    assert one.port_address == 1 and list(one.data[:11]) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 0]
    assert two.port_address == 2 and two.data[511] == 7
    assert heard[0][0] - changed < 0.010, f"{(heard[0][0] - changed) * 1000:.1f} ms"


async def test_changes_within_the_rate_go_at_the_end_of_the_interval_with_the_latest_levels() -> None:
    sock = receiver()
    dmx, ctx = context([1], FrameClock(40))
    options = ArtNetOptions(targets=[f"127.0.0.1:{sock.getsockname()[1]}"], max_rate_hz=20,  # 50 ms apart
                            keepalive_s=0.3)
    loop = asyncio.get_running_loop()
    ticking = asyncio.create_task(ctx.frames.run())  # keep-alives go on the frame clock's ticks
    async with running(ArtNetOutput(ctx, options)):
        await listen(sock, 0.08)
        listening = asyncio.create_task(listen(sock, 0.2))
        dmx.set_channel(1, 1, 1)
        for value in (2, 3):
            await asyncio.sleep(0.005)
            dmx.set_channel(1, 1, value)
        heard = artnet(await listening)
        kept = decode(await asyncio.wait_for(loop.sock_recv(sock, 1024), 0.5))  # the keep-alive, 0.3 s on
        changed = time.monotonic()
        dmx.set_channel(1, 1, 4)  # right after it: not held back by it
        after = artnet(await listen(sock, 0.03))
    ticking.cancel()
    sock.close()
    assert [p.data[0] for _, p in heard] == [1, 3], heard  # never 2: the latest levels at the interval's end
    gap = heard[1][0] - heard[0][0]
    assert 0.049 <= gap < 0.070, f"{gap * 1000:.1f} ms"
    assert isinstance(kept, ArtDmx) and kept.data[0] == 3
    assert [p.data[0] for _, p in after] == [4] and after[0][0] - changed < 0.010


async def test_unchanged_universes_are_kept_alive_and_frames_mode_waits_for_the_clock() -> None:
    sock, framed = receiver(), receiver()
    clock = FrameClock(40)
    ticks: list[float] = []
    ticked = asyncio.Event()

    def tick(frame: int) -> None:
        ticks.append(time.monotonic())
        ticked.set()

    clock.subscribe(tick)
    dmx, ctx = context([1], clock)
    task = asyncio.create_task(clock.run())
    try:
        async with running(ArtNetOutput(ctx, ArtNetOptions(targets=[f"127.0.0.1:{sock.getsockname()[1]}"],
                                                           keepalive_s=0.2))), \
                running(ArtNetOutput(ctx, ArtNetOptions(targets=[f"127.0.0.1:{framed.getsockname()[1]}"],
                                                        mode="frames", keepalive_s=0.2))):
            alive = await listen(sock, 0.75)  # nothing changes: the attach's send, then one each 0.2 s
            await listen(framed, 0)
            ticked.clear()
            await ticked.wait()  # just after a tick
            changed = time.monotonic()
            dmx.set_channel(1, 1, 99)
            heard = await asyncio.gather(listen(sock, 0.15), listen(framed, 0.15))
            on_change, on_frames = artnet(heard[0]), artnet(heard[1])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
        framed.close()
    assert 4 <= len(alive) <= 5, [round(at - alive[0][0], 3) for at, _ in alive]
    assert all(0.199 <= b[0] - a[0] <= 0.235 for a, b in itertools.pairwise(alive))  # on a tick
    assert on_change[0][1].data[0] == 99 and on_change[0][0] - changed < 0.010
    arrived = next(at for at, p in on_frames if p.data[0] == 99)
    assert any(changed < tick <= arrived < tick + 0.003 for tick in ticks)  # with the first tick after the change


@pytest.mark.wire
async def test_sacn_sends_a_new_look_three_times_each_with_its_sync_and_tshark_reads_every_packet(
        tmp_path: Path) -> None:
    sock = receiver(SACN_PORT)
    dmx, ctx = context([3], FrameClock(40))
    options = SacnOptions(multicast=False, targets=["127.0.0.1"], sync_universe=7, keepalive_s=0.4)
    try:
        async with running(SacnOutput(ctx, options)):
            await listen(sock, 0.1)
            changed = time.monotonic()
            dmx.set_levels(3, bytes([255, 128, 1]))
            heard = await listen(sock, 0.3)
            dmx.set_channel(3, 512, 9)
            heard += await listen(sock, 0.1)
    finally:
        sock.close()
    data = [(at, DataPacket.make_data_packet(raw)) for at, raw in heard if len(raw) > 49]
    syncs = [at for at, raw in heard if len(raw) == 49]  # (an E1.31 sync packet is 49 bytes)
    looks = [p.dmxData[:3] for _, p in data]
    assert looks[:3] == [(255, 128, 1)] * 3 and len(data) == 6, looks  # three, quiet, then the next change's
    assert data[0][0] - changed < 0.010
    assert all(0.0217 <= b[0] - a[0] <= 0.060 for a, b in itertools.pairwise(data[:3]))  # 1/44 s apart, or more
    assert all(p.dmxData[511] == 9 for _, p in data[3:]) and len(syncs) == 6  # a sync after every data packet
    assert all(p.syncAddr == 7 for _, p in data)
    text = read(pcap(tmp_path / "sacn.pcap", [raw for _, raw in heard], SACN_PORT),
                ["--enable-heuristic", "acn", "-o", "acn.dmx_enable:TRUE"])
    assert text.count("Universe: 3") >= 6, text


async def test_one_osc_bundle_is_one_artdmx_sent_at_once() -> None:
    """The OSC driver's real socket: a bundle setting ten channels leaves as one ArtDmx carrying all ten, within a
    few ms of the bundle's arrival."""
    sock = receiver()
    _, ctx = context([1], FrameClock(40))
    port = free_port()
    osc = OscDriver(ctx, OscOptions(listen=f"127.0.0.1:{port}", tcp=False))
    await osc.start()
    builder = OscBundleBuilder(IMMEDIATELY)
    for channel in range(1, 11):
        message = OscMessageBuilder(f"/vg/dmx/1/{channel}")
        message.add_arg(channel)
        builder.add_content(message.build())
    try:
        async with running(ArtNetOutput(ctx, ArtNetOptions(targets=[f"127.0.0.1:{sock.getsockname()[1]}"]))):
            await listen(sock, 0.05)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                sent = time.monotonic()
                out.sendto(builder.build().dgram, ("127.0.0.1", port))
                heard = artnet(await listen(sock, 0.1))
    finally:
        await osc.stop()
        sock.close()
    assert len(heard) == 1 and list(heard[0][1].data[:11]) == [*range(1, 11), 0], heard
    assert heard[0][0] - sent < 0.010
