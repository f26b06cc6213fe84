"""DMX in with OLA as the console: `ola_streaming_client` out over sACN (multicast) and `ola_set_dmx` over Art-Net
into the drivers on the machine's own ports, beside a second sACN source of higher priority that then says goodbye;
`ola_timecode` out as ArtTimeCode into the cue list; OLA on a network of its own, sending only to the nodes it
found, finds the box by its ArtPollReply. tshark dissects every packet the drivers took from OLA.
Multicast here (unicast is in test_console_in.py, on ports of its own): a socket bound to 5568 later, by anything
else on the machine, would take the unicast."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sacn.messages.data_packet import DataPacket

from drivers.console.artnet_in import ArtNetInput
from drivers.console.options import ArtNetInOptions, SacnInOptions
from drivers.console.receiver import ConsoleInput
from drivers.console.sacn_in import SacnInput
from gateway.driver import Rate, Timecode
from peers.ola import CLIENT_RPC_PORT, Ola, console_sender, running_olad
from peers.tshark import dissect
from tests.conftest import require
from tests.test_console_in import Show, context
from tests.test_dmx_outputs import lighting_network

# The drivers listen on the machine's sACN and Art-Net ports, where every test's daemon sends: run on their own.
pytestmark = pytest.mark.wire


@pytest.fixture(scope="module")
def ola(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ola]:
    """One olad for the module, as a console (its clients reach it on CLIENT_RPC_PORT alone)."""
    with running_olad(tmp_path_factory.mktemp("olad"), plugins=console_sender(), rpc_port=CLIENT_RPC_PORT) as peer:
        yield peer


class Recorded:
    """What a driver took from the wire, kept for tshark."""

    def __init__(self, driver: ConsoleInput[Any]) -> None:
        self.packets: list[bytes] = []
        take = driver.datagram

        def datagram(data: bytes, ip: str, arrival: float) -> None:
            self.packets.append(data)
            take(data, ip, arrival)

        driver.datagram = datagram  # type: ignore[method-assign]


async def settle(check: Callable[[], Any], driver: ConsoleInput[Any]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(driver.health())


async def until(send: Callable[[], Any], check: Callable[[], Any], driver: ConsoleInput[Any]) -> None:
    """`send` (one of OLA's clients) again until `check` holds: a client that exits at once may leave olad before
    its last message was read."""
    for _ in range(10):
        await asyncio.to_thread(send)
        for _ in range(50):
            if check():
                return
            await asyncio.sleep(0.01)
    raise AssertionError(driver.health())


def full(*first: int) -> list[int]:
    """A whole universe (tshark's E1.31 dissector calls a packet of fewer slots malformed; OLA sends what it is
    given)."""
    return [*first, *[0] * (512 - len(first))]


def levels(show: Show, universe: int) -> bytes:
    return show.patch.last(universe) or b""


async def test_ola_over_sacn_beside_a_source_of_higher_priority(ola: Ola, tmp_path: Path) -> None:
    require(shutil.which("tshark") is not None, "tshark (Debian package tshark)")
    ctx, show = context()
    # OLA multicasts on the interface of its choice (the first up, not lo): the groups are joined on the kernel's.
    driver = SacnInput(ctx, SacnInOptions(listen_universes=[1], allow=["0.0.0.0/0"]))
    recorded = Recorded(driver)
    await driver.start()
    run = asyncio.get_running_loop().create_task(driver.run())
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ola.patch(1, ola.port("E1.31", output=True))
        await until(lambda: ola.stream(1, full(10, 20, 30), 100), lambda: levels(show, 1)[:3] == bytes([10, 20, 30]),
                    driver)
        cid = tuple(b"\x5a" * 16)
        packet = DataPacket(cid, "desk two", 1, (200, 0, 0), 150, 1)
        sender.sendto(bytes(packet.getBytes()), ("239.255.0.1", 5568))  # at priority 150: it wins alone
        await settle(lambda: levels(show, 1)[:3] == bytes([200, 0, 0]), driver)
        sources = driver.health()["universes"]["1"]["sources"]
        await until(lambda: ola.stream(1, full(11, 21, 31), 100),
                    lambda: driver.health()["universes"]["1"]["sources"] != sources, driver)
        assert levels(show, 1)[:3] == bytes([200, 0, 0])  # OLA, below, changes nothing heard
        packet = DataPacket(cid, "desk two", 1, (200, 0, 0), 150, 2, streamTerminated=True)
        sender.sendto(bytes(packet.getBytes()), ("239.255.0.1", 5568))  # goodbye: OLA's levels at once
        await settle(lambda: levels(show, 1)[:3] == bytes([11, 21, 31]), driver)
        health = driver.health()
        assert health["terminated"] == 1 and "239.255.0.1" in health["multicast_groups"]
        assert [s["priority"] for s in health["universes"]["1"]["sources"]] == [100]
        # OLA sends on change alone: silent from here, it is dropped 2.5 s after its last packet (E1.31's loss).
        heard = next(iter(driver.universes[1].sources.values())).heard
        await settle(lambda: show.patch.calls[-1] == (1, None), driver)
        assert 2.5 <= time.monotonic() - heard < 2.5 + 0.3
        assert driver.health()["sources_lost"] == 1
    finally:
        run.cancel()
        await driver.stop()
        sender.close()
    # (what else on the machine sends to 5568 meanwhile, another universe, is left out)
    from_ola = [p for p in recorded.packets if b"desk two" not in p and p[113:115] == b"\x00\x01"]
    text = await asyncio.to_thread(dissect, tmp_path, from_ola, 5568, None,
                                     ["--enable-heuristic", "acn", "-o", "acn.dmx_enable:TRUE"])
    assert text.count("Universe: 1") >= len(from_ola) >= 2


async def test_ola_over_artnet_and_its_timecode(ola: Ola, tmp_path: Path) -> None:
    require(shutil.which("tshark") is not None, "tshark (Debian package tshark)")
    ctx, show = context()
    driver = ArtNetInput(ctx, ArtNetInOptions(listen_universes=[3]))
    recorded = Recorded(driver)
    await driver.start()  # bound after olad's own Art-Net socket: unicast to 127.0.0.1 comes here
    try:
        ola.patch(3, ola.port("ArtNet", output=True))  # OLA universe 3 out as Port-Address 0:0:3
        await until(lambda: ola.set_dmx(3, [9, 8, 7]), lambda: levels(show, 3)[:3] == bytes([9, 8, 7]), driver)
        for frame, rate in (("10:00:01:05", "EBU"), ("01:02:03:29", "DF"), ("00:00:00:23", "FILM")):
            heard = len(show.cues.frames)
            await until(lambda f=frame, r=rate: ola.timecode(f, r),  # type: ignore[misc]
                        lambda h=heard: len(show.cues.frames) > h, driver)  # type: ignore[misc]
        assert list(dict.fromkeys(tc for tc, _ in show.cues.frames)) == [
            Timecode(10, 0, 1, 5, Rate.EBU), Timecode(1, 2, 3, 29, Rate.DF), Timecode(0, 0, 0, 23, Rate.FILM)]
        assert driver.health()["timecode"] == "00:00:00:23 24"
    finally:
        await driver.stop()
    text = await asyncio.to_thread(dissect, tmp_path, recorded.packets, 6454)
    assert "OpCode: ArtDMX" in text and text.count("OpCode: ArtTimeCode") >= 3


async def test_a_console_that_sends_only_to_nodes_it_found_finds_the_box_by_its_artpollreply(tmp_path: Path) -> None:
    """OLA on a lighting network of its own (a network namespace, a veth link) sends ArtDmx only to the nodes whose
    ArtPollReply lists the universe (always_broadcast off): without the reply nothing would come."""
    ctx, show = context()
    driver = ArtNetInput(ctx, ArtNetInOptions(listen_universes=[1], allow=["10.77.0.0/24"]))
    plugins = {"artnet": "enabled = true\nip = 10.77.0.2\nuse_limited_broadcast = false\nalways_broadcast = false\n"}
    with lighting_network(f"vgc{os.getpid() % 100000}") as netns:
        await driver.start()  # listening before OLA's first ArtPoll, at its start
        olad = running_olad(tmp_path, "10.77.0.2", netns, plugins=plugins)
        node = await asyncio.to_thread(olad.__enter__)
        try:
            await asyncio.to_thread(node.patch, 1, node.port("ArtNet", output=True))
            await until(lambda: node.post_dmx(1, [5, 6, 7]), lambda: levels(show, 1)[:3] == bytes([5, 6, 7]), driver)
            assert driver.counts["polls"] >= 1
            assert driver.health()["universes"]["1"]["sources"][0]["address"] == "10.77.0.2"
        finally:
            await asyncio.to_thread(olad.__exit__, None, None, None)
            await driver.stop()
