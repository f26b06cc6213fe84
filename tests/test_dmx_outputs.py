"""DMX out, end to end: desired levels over HTTP -> the daemon's frame clock -> Art-Net and sACN on the wire ->
OLA reports the levels; tshark dissects every packet sent; sACN says goodbye on shutdown. Art-Net discovery finds
a real node, and takes no node from a reply it should not trust."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from drivers.dmx.artnet import ArtNetOptions, ArtNetOutput, discover_network
from drivers.dmx.artnet_codec import PORT, ArtDmx, ArtPollReply, decode
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.schema import check_all
from gateway.twin import Twin
from peers.ola import Ola, running_olad
from peers.tshark import read
from tests.conftest import ADMIN, Daemon, require

# OLA takes whatever reaches the machine's Art-Net and sACN ports, from any test's daemon: these run on their own.
pytestmark = pytest.mark.wire

DMX = """
[dmx]
universes = [1, 2]
frame_rate_hz = 40

[drivers.artnet]
type = "artnet"
universes = [1]
targets = ["127.0.0.1"]
sync = true

[drivers.sacn]
type = "sacn"
universes = [2]
multicast = false
targets = ["127.0.0.1"]
source_name = "venue-gateway test"
"""


def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_levels_reach_ola_over_artnet_and_sacn(ola: Ola, daemon_factory: Any, tmp_path: Path) -> None:
    require(shutil.which("tshark") is not None, "tshark (Debian package tshark)")
    ola.patch_input("ArtNet", 1)  # OLA's Art-Net input on OLA universe 1 listens to Port-Address 0:0:1
    ola.patch_input("E1.31", 2)  # and its E1.31 input to sACN universe 2
    capture = tmp_path / "dmx.pcap"
    tshark = subprocess.Popen(["tshark", "-i", "lo", "-f", "udp port 6454 or udp port 5568", "-w", str(capture)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert tshark.stderr is not None
        while "Capturing on" not in tshark.stderr.readline():
            assert tshark.poll() is None
        d: Daemon = daemon_factory(extra=DMX).start()
        status, _, body = d.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN,
                                    {"levels": {"1": 255, "2": 128, "512": 7}})
        assert status == 200, body
        status, _, body = d.request("PATCH", "/api/v1/twin/assets/universe:2/desired", ADMIN, {"levels": [1, 2, 3]})
        assert status == 200, body
        wait_for(lambda: ola.dmx(1)[:2] == [255, 128] and ola.dmx(1)[511] == 7)
        wait_for(lambda: ola.dmx(2)[:3] == [1, 2, 3])
        wait_for(lambda: d.get("/api/v1/twin/assets/universe:1")["reported"]["levels"][:2] == [255, 128])
        time.sleep(2.5)  # unchanged universes are kept alive about once a second
        health = d.get("/api/v1/health")
        assert health["drivers"]["artnet"]["state"] == "running"
        assert health["dmx"]["frames"] > 80
        assert d.terminate() == 0
    finally:
        time.sleep(0.5)  # let the capture take the last packets before it stops
        tshark.send_signal(signal.SIGINT)
        tshark.wait(10)
    text = read(capture, ["--enable-heuristic", "acn", "-o", "acn.dmx_enable:TRUE"])
    artdmx = text.count("OpCode: ArtDMX")
    assert 3 <= artdmx <= 40 * 6, artdmx  # never a frame rate's worth when nothing changes
    assert text.count("OpCode: ArtSync") >= 3
    assert text.count("PDU: Streaming DMX, Universe: 2, Priority: 100") >= 3
    # The goodbye: three stream-terminated packets, as E1.31 asks, and nothing after them. (OLA's HTTP view keeps
    # showing an input universe's last levels after its source left, so the wire is where this is checked.)
    assert text.count("Stream Terminated: True") == 3
    assert "Stream Terminated: False" not in text[text.index("Stream Terminated: True"):]


@contextlib.contextmanager
def lighting_network(name: str) -> Iterator[str]:
    """A lighting network with one node: a veth pair from this host (10.77.0.1/24) into network namespace
    `name` (10.77.0.2/24), so broadcasts and replies cross a real link. Needs root and iproute2."""
    require(os.geteuid() == 0 and shutil.which("ip") is not None, "root and iproute2 (ip netns)")
    host_side = f"{name}h"
    commands = [["ip", "netns", "add", name],
                ["ip", "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", name],
                ["ip", "addr", "add", "10.77.0.1/24", "brd", "+", "dev", host_side],
                ["ip", "link", "set", host_side, "up"],
                ["ip", "-n", name, "addr", "add", "10.77.0.2/24", "brd", "+", "dev", "eth0"],
                ["ip", "-n", name, "link", "set", "eth0", "up"],
                ["ip", "-n", name, "link", "set", "lo", "up"]]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_side], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def test_artnet_discovers_a_node_by_artpoll_and_sends_it_the_universes_it_outputs(daemon_factory: Any,
                                                                                  tmp_path: Path) -> None:
    with lighting_network(f"vg{os.getpid() % 100000}") as netns, \
            running_olad(tmp_path, "10.77.0.2", netns) as node:
        node.patch_input("ArtNet", 1)  # OLA's Art-Net port on universe 0:0:1: its ArtPollReply lists it
        d: Daemon = daemon_factory(extra="""
[dmx]
universes = [1, 2]

[drivers.artnet]
type = "artnet"
discover = "10.77.0.255"
poll_interval_s = 1
node_timeout_s = 3

[drivers.console]
type = "artnet-in"
enabled = false  # the demo's Art-Net input: it cannot share UDP 6454 with discovery
""").start()

        def nodes() -> list[dict[str, Any]]:
            return list(d.get("/api/v1/health")["drivers"]["artnet"]["detail"]["nodes"])

        wait_for(lambda: any(n["ip"] == "10.77.0.2" and 1 in n["universes"] for n in nodes()))
        wait_for(lambda: d.get("/api/v1/twin/assets/artnet:artnet")["reported"].get("nodes"))  # within a second
        twin = d.get("/api/v1/twin/assets/artnet:artnet")["reported"]["nodes"]
        assert twin[0]["ip"] == "10.77.0.2" and "OLA" in twin[0]["long_name"]
        status, _, body = d.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN, {"levels": [9, 8, 7]})
        assert status == 200, body
        wait_for(lambda: node.dmx(1)[:3] == [9, 8, 7])  # unicast to the node that outputs universe 1
        before = d.get("/api/v1/health")["drivers"]["artnet"]["detail"]["packets_sent"]
        time.sleep(1.2)
        after = d.get("/api/v1/health")["drivers"]["artnet"]["detail"]["packets_sent"]
        assert 1 <= after - before <= 3  # universe 1 kept alive once a second; universe 2 has no node: not sent
    wait_for(lambda: not nodes(), timeout=6)  # the node is gone: forgotten after node_timeout_s


def test_the_discover_network_is_the_one_the_broadcast_address_ends() -> None:
    assert str(discover_network("10.77.0.255")) == "10.77.0.0/24"
    assert str(discover_network("2.255.255.255")) == "2.0.0.0/8"
    assert str(discover_network("192.168.1.127")) == "192.168.1.0/25"
    assert str(discover_network("10.0.0.20")) == "10.0.0.20/32"  # one node polled directly
    _, problems = check_all(ArtNetOptions, {"discover": "255.255.255.255"})
    assert [str(p) for p in problems] == [
        "discover: 255.255.255.255 would take replies from 0.0.0.0/0 (allowed: the directed broadcast address of the "
        "lighting network, e.g. 2.255.255.255 or 10.77.0.255)"]


async def test_artnet_replies_make_nodes_only_on_the_discover_network_within_max_nodes_and_frames_go_to_6454(
        caplog: pytest.LogCaptureFixture) -> None:
    """Real UDP on loopback: the driver on 0.0.0.0:6454 discovering 127.77.0.0/24. A node at 127.77.0.2 whose reply
    names port 9999 gets its frames on 6454 (not 9999); replies from outside the network and from its broadcast
    address make no node; a flood of 40 distinct nodes fills max_nodes and no more, with a bounded number of log
    lines and twin updates, and every refused reply counted."""
    twin = Twin("gw", "hall")
    ctx = DriverContext("artnet", twin, None, DmxUniverses(twin, [1]), FrameClock(40), None)  # type: ignore[arg-type]
    reports: list[Any] = []  # what the driver tells the twin of its nodes, update by update
    report = ctx.report

    def counted(asset_id: str, values: Mapping[str, Any]) -> None:
        reports.append(values)
        report(asset_id, values)

    ctx.report = counted  # type: ignore[method-assign]
    driver = ArtNetOutput(ctx, ArtNetOptions(discover="127.77.0.255", max_nodes=8))
    sockets: list[socket.socket] = []

    def udp(ip: str, port: int = 0) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # beside the driver's 0.0.0.0:6454
        s.bind((ip, port))
        s.setblocking(False)
        sockets.append(s)
        return s

    reply = ArtPollReply(ip="0.0.0.0", port=9999, short_name="node", port_types=(0x80,), sw_out=(1,)).encode()

    async def settle(check: Any) -> None:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(driver.health())

    caplog.set_level(logging.INFO, "drivers.artnet")
    await driver.start()
    try:
        node, victim, outsider = udp("127.77.0.2", PORT), udp("127.77.0.2", 9999), udp("127.78.0.2", PORT)
        node.sendto(reply, ("127.77.0.1", PORT))
        outsider.sendto(reply, ("127.77.0.1", PORT))
        udp("127.77.0.255").sendto(reply, ("127.77.0.1", PORT))  # the network's broadcast address: never a node
        await settle(lambda: driver.off_network == 2 and len(driver.nodes) == 1)
        for i in range(40):
            udp(f"127.77.0.{10 + i}").sendto(reply, ("127.77.0.1", PORT))
        await settle(lambda: driver.over_max_nodes == 33)
        health = driver.health()
        assert len(health["nodes"]) == 8 and health["replies_off_network"] == 2
        assert health["replies_over_max_nodes"] == 33
        await settle(lambda: len(reports) == 2 and len(reports[-1]["nodes"]) == 8)
        lines = [r for r in caplog.records if r.name == "drivers.artnet"]
        assert len(lines) <= 9, [r.getMessage() for r in lines]  # a line per node made, one for the refusals

        assert driver.send(1, bytes([7] * 512))
        await asyncio.sleep(0.2)
        frame = decode(node.recv(1024))
        assert isinstance(frame, ArtDmx) and frame.port_address == 1 and frame.data[0] == 7
        for silent in (victim, outsider):
            with pytest.raises(BlockingIOError):
                silent.recv(1024)
        assert len(reports) == 2  # the twin heard of eight new nodes in two updates, not nine
    finally:
        await driver.stop()
        for s in sockets:
            s.close()
