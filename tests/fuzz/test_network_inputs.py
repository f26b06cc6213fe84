"""Datagrams from the lighting network: Art-Net replies into `ArtNetOutput.received`, OSC packets into
`OscDriver.packet` (and the OSC address pattern compiler behind configured routes). Whatever arrives, from
whatever source, nothing escapes the handler and no traceback is logged, the tables stay bounded and the
driver's state stays servable."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from drivers.dmx.artnet import ArtNetOptions, ArtNetOutput, discover_network
from drivers.dmx.artnet_codec import ID, OP_POLL_REPLY, ArtPollReply
from drivers.osc.driver import OscDriver, OscOptions
from drivers.osc.routes import RouteOptions, pattern
from gateway import config
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.show.engine import ShowEngine
from gateway.twin import Twin
from tests.fuzz.budget import fuzz
from tests.fuzz.support import Tracebacks, encodable

ROOT = Path(__file__).resolve().parents[2]
Call = Callable[[Callable[[], Any]], Any]


def _mutated(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for at, value in edits:
        if out:
            out[at % len(out)] = value
    return bytes(out[:cut])


@contextlib.contextmanager
def caught() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


# -- Art-Net -------------------------------------------------------------------------------------------------------
DISCOVER = "2.255.255.255"
ascii_names = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
replies = st.builds(
    ArtPollReply, ip=st.ip_addresses(v=4).map(str), port=st.integers(0, 0xFFFF), net=st.integers(0, 127),
    sub_net=st.integers(0, 15), short_name=ascii_names, long_name=ascii_names,
    port_types=st.tuples(*[st.sampled_from([0, 0x80, 0xC0, 0x45, 0xFF])] * 4),
    sw_out=st.tuples(*[st.integers(0, 15)] * 4), bind_index=st.integers(0, 255), mac=st.binary(min_size=6, max_size=6))
artnet_datagrams = st.one_of(
    replies.map(lambda r: r.encode()),
    st.builds(_mutated, replies.map(lambda r: r.encode()), st.lists(st.tuples(st.integers(0, 300),
                                                                              st.integers(0, 255)), max_size=4),
              st.integers(0, 300)),
    st.binary(max_size=300).map(lambda tail: ID + struct.pack("<H", OP_POLL_REPLY) + tail),
    st.binary(max_size=300))
# Sources on the discover network (2.0.0.0/8), its edges, and anywhere else.
sources = st.one_of(st.integers(0, 2**24 - 1).map(lambda n: str(ipaddress.IPv4Address(0x02000000 + n))),
                    st.sampled_from(["2.0.0.0", "2.255.255.255", "127.0.0.1", "0.0.0.0", "10.0.0.9"]),
                    st.ip_addresses(v=4).map(str))


@fuzz(30)
@given(st.lists(st.tuples(artnet_datagrams, sources), max_size=40), st.integers(1, 8))
def test_artnet_replies_from_anywhere_are_taken_refused_or_counted(on_loop: Call, datagrams: list[tuple[bytes, str]],
                                                                    max_nodes: int) -> None:
    twin = Twin("gw", "hall")
    options = ArtNetOptions(discover=DISCOVER, max_nodes=max_nodes)
    driver = ArtNetOutput(DriverContext("artnet", twin, None, DmxUniverses(twin, [1]), FrameClock(40), None),  # type: ignore[arg-type]
                          options)

    def feed() -> None:
        for data, ip in datagrams:
            driver.received(data, ip)
    with caught() as tracebacks:
        on_loop(feed)
    assert not tracebacks.lines(), tracebacks.lines()
    network = discover_network(DISCOVER)
    health = driver.health()
    encodable(health)
    twin.snapshot_json()  # the twin as GET /api/v1/twin serves it
    assert len(health["nodes"]) <= max_nodes
    assert all(ipaddress.IPv4Address(node["ip"]) in network for node in health["nodes"])


# -- OSC -----------------------------------------------------------------------------------------------------------
addresses = st.one_of(
    st.sampled_from(["/vg/dmx/1/1", "/vg/dmx/1/512", "/vg/dmx/1/0", "/vg/dmx/1/513", "/vg/dmx/2/1",
                     "/vg/dmx/99999999999999999999/1", "/vg/preset/drop/fire", "/vg/preset/nope/fire",
                     "/vg/effect/stop", "/vg/blackout", "/vg/tempo", "/vg/tempo/tap", "/vg/ping", "/vg/",
                     "/eos/out/event/cue/1/5/fire", "/fader/1", "/fader/x"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(lambda t: "/" + t))
osc_args = st.one_of(st.integers(-(2**31), 2**31 - 1), st.floats(width=32), st.text(max_size=12),
                     st.binary(max_size=12), st.booleans(), st.sampled_from(["floor", "bar", "nowhere"]))


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (4 - len(data) % 4)


def _message(address: str, args: list[Any]) -> bytes:
    """An OSC message as a sender puts it on the wire (python-osc's builder refuses some that a sender may send)."""
    tags, body = ",", b""
    for arg in args:
        if isinstance(arg, bool):
            tags += "T" if arg else "F"
        elif isinstance(arg, int):
            tags, body = tags + "i", body + struct.pack(">i", arg)
        elif isinstance(arg, float):
            tags, body = tags + "f", body + struct.pack(">f", arg)
        elif isinstance(arg, str):
            tags, body = tags + "s", body + _padded(arg.encode())
        else:
            tags, body = tags + "b", body + struct.pack(">i", len(arg)) + arg + b"\x00" * (-len(arg) % 4)
    return _padded(address.encode()) + _padded(tags.encode()) + body


def _bundle(messages: list[bytes], timetag: int) -> bytes:
    """A bundle of messages at an NTP timetag (1: at once)."""
    return b"#bundle\x00" + struct.pack(">Q", timetag) + b"".join(struct.pack(">i", len(m)) + m for m in messages)


def _ntp(ahead_s: float) -> int:
    return int((time.time() + 2_208_988_800 + ahead_s) * 2**32) % 2**64


def _nested(message: bytes, depth: int) -> bytes:
    """A bundle holding a bundle ... `depth` deep, the message at the bottom (each level adds 20 bytes)."""
    heads = [b"#bundle\x00" + struct.pack(">Qi", 1, len(message) + 20 * level) for level in range(depth)]
    return b"".join(reversed(heads)) + message


messages = st.builds(_message, addresses, st.lists(osc_args, max_size=3))
osc_packets = st.one_of(
    messages,
    st.builds(_bundle, st.lists(messages, min_size=1, max_size=6),
              st.just(1) | st.integers(0, 2**64 - 1)
              | (st.floats(-10, 1e6) | st.sampled_from([0.01, 59.0, 61.0, 86_400.0, 1e9])).map(_ntp)),
    st.builds(_nested, messages, st.integers(1, 30) | st.sampled_from([300, 1500, 3000])),
    st.builds(_mutated, messages, st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), max_size=3),
              st.integers(0, 100)),
    st.binary(max_size=200), st.binary(max_size=100).map(lambda b: b"#bundle\x00" + b))
SHOW = config.load(ROOT / "config" / "demo.toml").show
ROUTES = [RouteOptions(match="/eos/out/event/cue/1/*/fire", to="/vg/preset/drop/fire"),
          RouteOptions(match="/fader/[0-9]", to="/vg/dmx/1/7", range=[0, 100])]


@fuzz(40)
@given(st.lists(st.tuples(osc_packets, st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", "not an address"])),
                max_size=12))
def test_osc_packets_are_obeyed_refused_or_counted(on_loop: Call, packets: list[tuple[bytes, str]]) -> None:
    twin = Twin("gw", "hall")
    show = ShowEngine(SHOW, twin)
    dmx = DmxUniverses(twin, [1])
    driver = OscDriver(DriverContext("osc", twin, None, dmx, FrameClock(40), show),  # type: ignore[arg-type]
                       OscOptions(routes=ROUTES, horizon_s=60))

    async def feed() -> None:
        for data, source in packets:
            driver.packet(data, source)
        encodable(driver.health())
        twin.snapshot_json()  # the twin as GET /api/v1/twin serves it
        await driver.stop()  # the timed messages are cancelled with it
        assert driver.health()["pending_timed"] == 0
    with caught() as tracebacks:
        on_loop(feed)
    assert not tracebacks.lines(), tracebacks.lines()


@fuzz(100)
@given(st.text(max_size=40) | st.text(st.sampled_from("/ab*?[]!{},-^\\$.()|+0"), max_size=40), st.text(max_size=40))
@example("/a/[[x]", "/a/[")  # a regular expression's nested set, once passed through as it was
def test_an_osc_address_pattern_compiles_or_is_refused(text: str, address: str) -> None:
    """What a route's `match` may be: a pattern, or ValueError / re.error (which RouteOptions reports); never a
    regular expression that the `re` module warns about."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            regex = pattern(text)
    except (ValueError, re.error):
        return
    assert isinstance(regex, re.Pattern)
    regex.match(address)
