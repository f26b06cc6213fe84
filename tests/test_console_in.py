"""DMX in from consoles, over real UDP on loopback (the drivers on free ports, the consoles' packets built by the
`sacn` package's codec and our Art-Net codec): sACN's priorities and HTP merge, the sequence rule, preview data,
stream termination and loss, max_sources, synchronisation and what it holds; Art-Net's merge of two (HTP, LTP), a
third refused, ArtSync per sender, ArtTimeCode to the cue list, ArtPollReply; DMX thru; the rate limit after the
universe filter; garbage and forged sources counted, never a traceback; bad options and an artnet-in beside Art-Net
discovery refused by check-config."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sacn.messages.data_packet import DataPacket
from sacn.messages.sync_packet import SyncPacket

from drivers.console.artnet_in import ArtNetInput
from drivers.console.options import ArtNetInOptions, SacnInOptions
from drivers.console.receiver import ConsoleInput
from drivers.console.sacn_in import SacnInput
from drivers.dmx.artnet_codec import ArtDmx, ArtPoll, ArtPollReply, ArtSync, ArtTimeCode, decode
from gateway.config import ConfigError, parse
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext, Rate, Timecode
from gateway.schema import check_all
from gateway.twin import Twin
from peers.ports import free_port
from peers.tshark import dissect
from tests.conftest import require

CID_A, CID_B, CID_C = (tuple(bytes([n]) * 16) for n in (0xA1, 0xB2, 0xC3))


class Patch:
    """The show's side of a console universe, as the drivers call it: every call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bytes | None]] = []  # (universe, levels), None: lost

    def universes(self) -> set[int]:
        return {1}

    def levels(self, universe: int, levels: bytes) -> None:
        self.calls.append((universe, levels))

    def lost(self, universe: int) -> None:
        self.calls.append((universe, None))

    def last(self, universe: int) -> bytes | None:
        return next((levels for u, levels in reversed(self.calls) if u == universe), None)


class Cues:
    def __init__(self) -> None:
        self.frames: list[tuple[Timecode, float]] = []

    def timecode(self, tc: Timecode, arrival_mono: float) -> None:
        self.frames.append((tc, arrival_mono))


class Show:
    def __init__(self) -> None:
        self.patch, self.cues = Patch(), Cues()


def context() -> tuple[DriverContext, Show]:
    twin = Twin("gw", "hall")
    show = Show()
    return DriverContext("console", twin, None, DmxUniverses(twin, [5]), FrameClock(40), show), show  # type: ignore[arg-type]


async def settle(check: Callable[[], Any], driver: ConsoleInput[Any]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(driver.health())


def sacn(cid: tuple[int, ...], universe: int, levels: list[int], priority: int = 100, sequence: int = 0,
         **flags: Any) -> bytes:
    packet = DataPacket(cid, f"console {cid[0]:x}", universe, tuple(levels), priority, sequence, **flags)
    return bytes(packet.getBytes())


@pytest.fixture
async def sender() -> AsyncIterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


async def test_sacn_priorities_htp_sequence_preview_termination_loss_and_thru(sender: socket.socket) -> None:
    ctx, show = context()
    port = free_port()
    driver = SacnInput(ctx, SacnInOptions(port=port, multicast=False, thru={"1": 5}, max_sources=2))
    await driver.start()
    to = ("127.0.0.1", port)
    try:
        sender.sendto(sacn(CID_A, 1, [10, 200, 0], priority=100, sequence=1), to)
        await settle(lambda: show.patch.calls, driver)
        assert show.patch.last(1)[:4] == bytes([10, 200, 0, 0])  # type: ignore[index]
        assert len(show.patch.last(1) or b"") == 512
        sender.sendto(sacn(CID_B, 1, [50, 50, 50], priority=150, sequence=1), to)  # the higher priority wins alone
        await settle(lambda: show.patch.last(1)[:3] == bytes([50, 50, 50]), driver)  # type: ignore[index]
        sender.sendto(sacn(CID_A, 1, [99, 99, 99], priority=150, sequence=2), to)  # same priority: HTP
        await settle(lambda: show.patch.last(1)[:3] == bytes([99, 99, 99]), driver)  # type: ignore[index]
        sender.sendto(sacn(CID_A, 1, [20, 0, 70], priority=150, sequence=3), to)
        await settle(lambda: show.patch.last(1)[:3] == bytes([50, 50, 70]), driver)  # type: ignore[index]
        assert ctx.dmx.get(5).levels[:3] == bytes([50, 50, 70])  # thru: input 1 -> the box's universe 5
        health = driver.health()["universes"]["1"]
        assert sorted(health["merged"]) == [bytes(CID_A).hex(), bytes(CID_B).hex()]

        calls = len(show.patch.calls)
        sender.sendto(sacn(CID_A, 1, [255, 255, 255], priority=150, sequence=2), to)  # behind: out of order
        sender.sendto(sacn(CID_A, 1, [255, 255, 255], priority=150, sequence=3), to)  # a duplicate
        sender.sendto(sacn(CID_A, 1, [255, 255, 255], priority=150, sequence=4, previewData=True), to)
        sender.sendto(sacn(CID_C, 1, [255, 255, 255], priority=200, sequence=1), to)  # a third: max_sources = 2
        sender.sendto(sacn(CID_A, 2, [255], sequence=9), to)  # a universe not listened to
        sender.sendto(b"\x00\x10\x00\x00ASC-E1.17\x00\x00\x00" + b"\xff" * 30, to)  # garbage after the preamble
        sender.sendto(b"junk", to)
        sender.sendto(sacn(CID_A, 1, [1], priority=150, sequence=5, dmxStartCode=0xDD), to)  # per-address priority
        await settle(lambda: driver.counts["received"] == 12, driver)
        assert len(show.patch.calls) == calls
        assert (driver.counts["out_of_order"], driver.counts["preview"], driver.counts["too_many_sources"],
                driver.counts["other_universe"], driver.counts["malformed"], driver.counts["start_code"]) == \
            (2, 1, 1, 1, 2, 1)

        sender.sendto(sacn(CID_B, 1, [50, 50, 50], priority=150, sequence=2, streamTerminated=True), to)
        await settle(lambda: show.patch.last(1)[:3] == bytes([20, 0, 70]), driver)  # type: ignore[index]
        assert driver.counts["terminated"] == 1
        driver.tick(time.monotonic() + 2.4)
        assert show.patch.calls[-1][1] is not None  # silent 2.4 s: still there
        driver.tick(time.monotonic() + 2.6)  # silent past E1.31's 2.5 s: gone, and the universe lost
        assert show.patch.calls[-1] == (1, None)
        assert driver.health()["universes"]["1"] == {"sources": [], "merged": [], "lost": True}
    finally:
        await driver.stop()


async def test_sacn_synchronisation_holds_until_the_sync_packet_and_falls_back_when_it_is_lost(
        sender: socket.socket) -> None:
    ctx, show = context()
    port = free_port()
    driver = SacnInput(ctx, SacnInOptions(port=port, multicast=False, listen_universes=[1, 2]))
    await driver.start()
    to = ("127.0.0.1", port)
    try:
        sender.sendto(sacn(CID_A, 1, [1], sequence=1, sync_universe=7), to)  # no sync heard yet: at once
        await settle(lambda: len(show.patch.calls) == 1, driver)
        sender.sendto(bytes(SyncPacket(CID_A, 7, 1).getBytes()), to)
        sender.sendto(sacn(CID_A, 1, [2], sequence=2, sync_universe=7), to)
        sender.sendto(sacn(CID_A, 2, [3], sequence=1, sync_universe=7), to)
        await settle(lambda: driver.counts["held"] == 2, driver)
        assert len(show.patch.calls) == 1  # held for the sync packet
        sender.sendto(bytes(SyncPacket(CID_A, 7, 2).getBytes()), to)
        await settle(lambda: len(show.patch.calls) == 3, driver)
        assert {(u, levels[0]) for u, levels in show.patch.calls[1:] if levels} == {(1, 2), (2, 3)}
        driver._sync_seen[7] -= 2.6  # the last sync packet was 2.6 s ago: synchronisation lost
        sender.sendto(sacn(CID_A, 1, [4], sequence=3, sync_universe=7), to)
        await settle(lambda: len(show.patch.calls) == 4, driver)
        assert show.patch.last(1)[0] == 4  # type: ignore[index]
    finally:
        await driver.stop()


async def test_artnet_merge_of_two_third_refused_ltp_sync_timecode_and_poll_reply() -> None:
    ctx, show = context()
    port = free_port()
    driver = ArtNetInput(ctx, ArtNetInOptions(port=port, listen_universes=[1, 0x123]))
    await driver.start()
    sockets = []

    def node(ip: str) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        sockets.append(s)
        return s

    to = ("127.0.0.1", port)
    a, b, c = node("127.0.0.2"), node("127.0.0.3"), node("127.0.0.4")
    try:
        a.sendto(ArtDmx(1, bytes([100, 0, 30, 0]), 1).encode(), to)
        b.sendto(ArtDmx(1, bytes([0, 200, 10, 0]), 1).encode(), to)
        await settle(lambda: (show.patch.last(1) or b"")[:3] == bytes([100, 200, 30]), driver)
        c.sendto(ArtDmx(1, bytes([255] * 4), 1).encode(), to)  # a third source: refused
        a.sendto(ArtDmx(1, bytes([255] * 4), 1).encode(), to)  # out of order
        a.sendto(ArtDmx(7, bytes([255] * 4), 2).encode(), to)  # not listened to
        a.sendto(b"Art-Net\x00\x00\x50\x00\x0e\x01\x00\x01\x00\x02\x00", to)  # a length beyond its bytes
        await settle(lambda: driver.counts["malformed"] == 1, driver)
        assert show.patch.last(1)[:3] == bytes([100, 200, 30])  # type: ignore[index]
        assert (driver.counts["too_many_sources"], driver.counts["out_of_order"], driver.counts["other_universe"]) \
            == (1, 1, 1)
        driver.tick(time.monotonic() + 10.1)  # both silent for Art-Net's 10 s
        assert show.patch.calls[-1] == (1, None)

        a.sendto(ArtTimeCode(3, 0, 0, 0, 1, stream=7).encode(), to)  # another stream: not the master's
        a.sendto(ArtTimeCode(10, 0, 1, 5, 1).encode(), to)
        await settle(lambda: show.cues.frames, driver)
        tc, arrival = show.cues.frames[0]
        assert tc == Timecode(10, 0, 1, 5, Rate.EBU) and abs(arrival - time.monotonic()) < 1
        assert len(show.cues.frames) == 1 and driver.counts["other_timecode_stream"] == 1

        a.sendto(ArtDmx(0x123, bytes([9, 9]), 0).encode(), to)  # a source: its ArtSync counts
        await settle(lambda: show.patch.calls[-1][0] == 0x123, driver)
        a.sendto(ArtSync().encode(), to)  # synchronous mode: a's ArtDmx held until its next ArtSync
        a.sendto(ArtDmx(0x123, bytes([1, 2]), 0).encode(), to)
        await settle(lambda: driver.counts["held"] == 1, driver)
        assert show.patch.last(0x123)[:2] == bytes([9, 9])  # type: ignore[index]
        b.sendto(ArtSync().encode(), to)  # from an address sending no ArtDmx: ignored, applies nothing of a's
        await settle(lambda: driver.counts["syncs_ignored"] == 1, driver)
        assert show.patch.last(0x123)[:2] == bytes([9, 9])  # type: ignore[index]
        a.sendto(ArtSync().encode(), to)
        await settle(lambda: show.patch.calls[-1] == (0x123, bytes([1, 2]) + bytes(510)), driver)
        assert driver.counts["syncs"] == 2

        poller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sockets.append(poller)
        poller.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        poller.bind(("127.0.0.7", port))  # replies go to the poller's Art-Net port (6454; here the driver's)
        poller.sendto(ArtPoll().encode(), to)
        await settle(lambda: driver.counts["polls"] == 1, driver)
        poller.settimeout(2)
        replies = [decode(poller.recv(1024)) for _ in range(2)]  # one for 0:0:1, one for 1:2:3
        for _ in range(20):  # a flood of polls: ten a second answered
            poller.sendto(ArtPoll().encode(), to)
        await settle(lambda: driver.counts["polls"] + driver.counts["polls_unanswered"] == 21, driver)
        assert driver.counts["polls_unanswered"] >= 10
    finally:
        await driver.stop()
        for s in sockets:
            s.close()
    assert all(isinstance(r, ArtPollReply) for r in replies)
    assert set().union(*(r.output_universes() for r in replies if isinstance(r, ArtPollReply))) == {1, 0x123}


async def test_artnet_ltp_takes_each_channel_from_the_source_that_changed_it_last() -> None:
    ctx, show = context()
    port = free_port()
    driver = ArtNetInput(ctx, ArtNetInOptions(port=port, merge="ltp"))
    await driver.start()
    to = ("127.0.0.1", port)
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.2", 0))
    b.bind(("127.0.0.3", 0))
    try:
        a.sendto(ArtDmx(1, bytes([100, 100]), 1).encode(), to)
        await settle(lambda: show.patch.calls, driver)
        b.sendto(ArtDmx(1, bytes([0, 0]), 1).encode(), to)  # joins: the latest holds every channel
        await settle(lambda: show.patch.last(1)[:2] == bytes([0, 0]), driver)  # type: ignore[index]
        a.sendto(ArtDmx(1, bytes([100, 50]), 2).encode(), to)  # a moved channel 2 only
        await settle(lambda: show.patch.last(1)[:2] == bytes([0, 50]), driver)  # type: ignore[index]
    finally:
        await driver.stop()
        a.close()
        b.close()


async def test_artnet_sync_mode_is_per_sender_an_artsync_holds_none_of_another_consoles_levels() -> None:
    ctx, show = context()
    port = free_port()
    driver = ArtNetInput(ctx, ArtNetInOptions(port=port, listen_universes=[1, 0x123]))
    await driver.start()
    to = ("127.0.0.1", port)
    syncing, other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET,
                                                                                       socket.SOCK_DGRAM)
    syncing.bind(("127.0.0.9", 0))
    other.bind(("127.0.0.5", 0))
    try:
        syncing.sendto(ArtDmx(1, bytes([1]), 0).encode(), to)
        await settle(lambda: show.patch.last(1), driver)
        for level in range(2, 5):  # the syncing console's ArtSync every 2 s (its 4 s of synchronous mode go on)
            syncing.sendto(ArtSync().encode(), to)
            syncing.sendto(ArtDmx(1, bytes([level]), 0).encode(), to)  # held until its own next ArtSync
            other.sendto(ArtDmx(0x123, bytes([level]), 0).encode(), to)  # another console's: applied at once
            await settle(lambda: (show.patch.last(0x123) or b"\0")[0] == level, driver)  # noqa: B023
            assert show.patch.last(1)[0] == level - 1  # type: ignore[index]
            assert list(driver._held) == [(1, "127.0.0.9")]
            driver.tick(time.monotonic() + 2)
        assert driver.counts["held"] == 3
        driver.tick(time.monotonic() + 4.1)  # no ArtSync for 4 s: its held ArtDmx applied, and it back to at once
        assert show.patch.last(1)[0] == 4 and not driver._held  # type: ignore[index]
        syncing.sendto(ArtDmx(1, bytes([5]), 0).encode(), to)
        await settle(lambda: show.patch.last(1)[0] == 5, driver)  # type: ignore[index]
    finally:
        await driver.stop()
        syncing.close()
        other.close()


async def test_sacn_data_forced_to_wait_for_synchronisation_is_held_for_max_sources_per_universe(
        sender: socket.socket) -> None:
    ctx, show = context()
    port = free_port()
    driver = SacnInput(ctx, SacnInOptions(port=port, multicast=False, listen_universes=[1], max_sources=2))
    await driver.start()
    to = ("127.0.0.1", port)
    rng = random.Random(22)
    try:
        sender.sendto(sacn(CID_A, 1, [1], sequence=1, sync_universe=7), to)  # a known source
        sender.sendto(bytes(SyncPacket(CID_A, 7, 1).getBytes()), to)
        await settle(lambda: driver.counts["syncs"] == 1 and show.patch.calls, driver)
        for i in range(50):  # a flood of new CIDs, each forcing synchronisation
            cid = tuple(rng.randbytes(16))
            sender.sendto(sacn(cid, 1, [100 + i], sequence=1, sync_universe=7, forceSync=True), to)
            sender.sendto(sacn(cid, 2, [100 + i], sequence=1, sync_universe=7, forceSync=True), to)
            if i % 10 == 0:
                await asyncio.sleep(0)
        sender.sendto(sacn(CID_A, 1, [2], sequence=2, sync_universe=7, forceSync=True), to)  # known: held first
        await settle(lambda: driver.counts["received"] == 103, driver)
        assert (driver.counts["held"], driver.counts["too_many_sources"], driver.counts["other_universe"]) == \
            (2, 49, 50)
        assert sum(len(cids) for held in driver._held.values() for cids in held.values()) == 2
        sender.sendto(bytes(SyncPacket(CID_A, 7, 2).getBytes()), to)  # both applied: the universe's two sources
        await settle(lambda: len(driver.health()["universes"]["1"]["sources"]) == 2, driver)
        assert show.patch.last(1)[0] == 100  # type: ignore[index]
        assert not driver._held
    finally:
        await driver.stop()


async def test_the_rate_limit_counts_only_packets_of_universes_listened_to(sender: socket.socket) -> None:
    def sacn_driver(ctx: DriverContext, port: int) -> ConsoleInput[Any]:
        return SacnInput(ctx, SacnInOptions(port=port, multicast=False, rate_limit_pps=50))

    def artnet_driver(ctx: DriverContext, port: int) -> ConsoleInput[Any]:
        return ArtNetInput(ctx, ArtNetInOptions(port=port, rate_limit_pps=50))

    def sacn_packet(universe: int, sequence: int) -> bytes:
        return sacn(CID_A, universe, [sequence], sequence=sequence)

    def artnet_packet(universe: int, sequence: int) -> bytes:
        return ArtDmx(universe, bytes([sequence, 0]), sequence).encode()

    for make_driver, packet in ((sacn_driver, sacn_packet), (artnet_driver, artnet_packet)):
        ctx, show = context()
        port = free_port()
        driver = make_driver(ctx, port)
        await driver.start()
        try:
            for i in range(100):  # a desk's 100 other universes, for other nodes
                sender.sendto(packet(2 + i, 1), ("127.0.0.1", port))
                if i % 20 == 0:
                    await asyncio.sleep(0)
            for sequence in range(1, 4):
                sender.sendto(packet(1, sequence), ("127.0.0.1", port))
            await settle(lambda: driver.counts["received"] == 103, driver)  # noqa: B023
            assert (driver.counts["other_universe"], driver.counts["rate_limited"]) == (100, 0)
            assert show.patch.last(1)[0] == 3  # type: ignore[index]
        finally:
            await driver.stop()


async def test_forged_sources_and_floods_are_counted_and_logged_at_a_bounded_rate(
        caplog: pytest.LogCaptureFixture) -> None:
    ctx, show = context()
    port = free_port()
    driver = SacnInput(ctx, SacnInOptions(port=port, multicast=False, allow=["127.0.0.5"], rate_limit_pps=50))
    await driver.start()
    to = ("127.0.0.1", port)
    stranger, friend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET,
                                                                                        socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.6", 0))
    friend.bind(("127.0.0.5", 0))
    try:
        for i in range(200):
            stranger.sendto(sacn(CID_A, 1, [255], sequence=i % 256), to)
            friend.sendto(b"\x00" * (i % 700), to)
            if i % 50 == 0:
                await asyncio.sleep(0)
        await settle(lambda: driver.counts["not_allowed"] == 200, driver)
        await settle(lambda: driver.counts["malformed"] + driver.counts["rate_limited"] == 200, driver)
        assert 50 <= driver.counts["malformed"] <= 60  # a second's worth let through, the rest rate-limited
        assert not show.patch.calls
        lines = [r for r in caplog.records if r.name == "drivers.console"]
        assert len(lines) <= 3, [r.getMessage() for r in lines]  # a line per reason
    finally:
        await driver.stop()
        stranger.close()
        friend.close()


def test_bad_options_are_refused_with_the_key_and_what_is_allowed(tmp_path: Path) -> None:
    _, problems = check_all(SacnInOptions, {"allow": ["nonsense"], "max_sources": 0, "listen_universes": [0],
                                            "thru": {"x": 1}, "interface": "eth0", "colour": 1})
    text = "\n".join(map(str, problems))
    for expected in ("colour:", "max_sources:", "allow[0]: 'nonsense' is not a network (allowed:",
                     "listen_universes[0]: universe 0 is out of range (allowed: 1 to 63999)",
                     "thru.x: 'x' is not an input universe (allowed: 1 to 63999)", "interface: 'eth0'"):
        assert expected in text, text
    _, problems = check_all(SacnInOptions, {"listen_universes": [1], "thru": {"2": 1}})
    assert [str(p) for p in problems] == ["thru.2: universe 2 is not listened to (allowed: one of listen_universes, "
                                          "or leave listen_universes empty)"]
    _, problems = check_all(ArtNetInOptions, {"merge": "newest", "short_name": "x" * 30})
    assert [p.path for p in problems] == ["merge", "short_name"], problems


def test_check_config_refuses_artnet_in_beside_artnet_discovery_on_6454(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(tmp_path / "c.toml", '[drivers.console]\ntype = "artnet-in"\n[drivers.artnet]\ntype = "artnet"\n'
                                   'discover = "2.255.255.255"\n')
    assert "drivers.console.type: artnet-in cannot share UDP 6454 with the discovery of drivers.artnet" in \
        "\n".join(refused.value.lines())


async def test_mutated_packets_are_dropped_and_counted_never_a_traceback() -> None:
    """Valid packets of every kind with bytes changed, cut short or run on: each one taken, ignored or counted,
    and nothing raised."""
    rng = random.Random(22)
    sync = bytes(SyncPacket(CID_A, 7).getBytes())
    seeds = {SacnInput: [sacn(CID_A, 1, [1, 2, 3], sequence=5, sync_universe=7), sync],
             ArtNetInput: [ArtDmx(1, bytes(range(16)), 3).encode(), ArtSync().encode(), ArtPoll().encode(),
                           ArtTimeCode(1, 2, 3, 4, 2).encode()]}
    for cls, packets in seeds.items():
        ctx, _ = context()
        options = SacnInOptions(multicast=False) if cls is SacnInput else ArtNetInOptions(poll_reply=False)
        driver = cls(ctx, options)
        driver.listened = {1}
        for _ in range(1500):
            data = bytearray(rng.choice(packets))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            cut = rng.choice((len(data), rng.randrange(len(data) + 1), len(data) + rng.randrange(64)))
            data = (data + bytes(rng.randrange(256) for _ in range(64)))[:cut]
            driver.datagram(bytes(data), "127.0.0.9", time.monotonic())
        assert sum(driver.counts.values()) >= 1500, driver.counts
        assert driver.counts["malformed"] > 100, driver.counts


async def test_the_artpollreply_and_the_timecode_codec_read_as_tshark_reads_them(tmp_path: Path) -> None:
    require(shutil.which("tshark") is not None, "tshark (Debian package tshark)")
    ctx, _ = context()
    driver = ArtNetInput(ctx, ArtNetInOptions(listen_universes=[1, 2, 0x7FFF]))
    sent: list[bytes] = []
    driver.sendto = lambda payload, address: sent.append(payload)  # type: ignore[method-assign]
    driver.listened = {1, 2, 0x7FFF}
    driver.datagram(ArtPoll().encode(), "127.0.0.9", time.monotonic())
    timecodes = [ArtTimeCode(23, 59, 59, 29, 2).encode(), ArtTimeCode(0, 0, 0, 0, 0, stream=1).encode()]
    text = await asyncio.to_thread(dissect, tmp_path, sent + timecodes, 6454)
    assert text.count("OpCode: ArtPollReply") == 2 == len(sent)
    assert text.count("OpCode: ArtTimeCode") == 2  # (tshark names the opcode and shows the fields as bytes)
    assert text.count("Type of Port 1: Art-Net -> DMX512") == 2 and "Type of Port 2: Art-Net -> DMX512" in text


async def test_an_input_stopped_is_the_console_lost(sender: socket.socket) -> None:
    """Stopped (a restart, the box going down), the input tells the show every universe it had is lost, so nothing the
    console asked for (a fire waiting for the flash cap) happens after it."""
    ctx, show = context()
    port = free_port()
    driver = SacnInput(ctx, SacnInOptions(port=port, multicast=False))
    await driver.start()
    sender.sendto(sacn(CID_A, 1, [10]), ("127.0.0.1", port))
    await settle(lambda: show.patch.calls, driver)
    await driver.stop()
    assert show.patch.calls[-1] == (1, None)
