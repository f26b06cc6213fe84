"""The Art-Net codec: properties on any bytes, round trips, and tshark's independent dissector."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.dmx.artnet_codec import (
    PORT,
    ArtDmx,
    ArtNetError,
    ArtPoll,
    ArtPollReply,
    ArtSync,
    decode,
    port_address,
)
from peers.tshark import dissect

dmx_packets = st.builds(ArtDmx, st.integers(0, 0x7FFF), st.binary(min_size=2, max_size=512), st.integers(0, 255),
                        st.integers(0, 255))


@given(st.binary(max_size=600))
def test_any_bytes_decode_or_raise_the_codecs_own_error(data: bytes) -> None:
    with contextlib.suppress(ArtNetError):
        decode(data)


@given(st.binary(max_size=600))
def test_any_bytes_after_the_id_decode_or_raise_the_codecs_own_error(tail: bytes) -> None:
    with contextlib.suppress(ArtNetError):
        decode(b"Art-Net\x00" + tail)


@given(dmx_packets)
def test_artdmx_round_trip(packet: ArtDmx) -> None:
    decoded = decode(packet.encode())
    assert isinstance(decoded, ArtDmx)
    padded = packet.data + b"\x00" * (len(packet.data) % 2)
    assert decoded == ArtDmx(packet.port_address, padded, packet.sequence, packet.physical)
    assert decoded.encode() == packet.encode()


@given(st.tuples(st.integers(0, 127), st.integers(0, 15), st.lists(st.integers(0, 15), min_size=1, max_size=4)))
def test_poll_reply_round_trip_and_subscribed_universes(case: tuple[int, int, list[int]]) -> None:
    net, sub, outs = case
    reply = ArtPollReply("10.0.0.7", net=net, sub_net=sub, short_name="rig", long_name="stage left rig",
                         port_types=tuple(0x80 for _ in outs), sw_out=tuple(outs), mac=b"\x01\x02\x03\x04\x05\x06")
    decoded = decode(reply.encode())
    assert decoded == reply
    assert isinstance(decoded, ArtPollReply)
    assert decoded.output_universes() == {port_address(net, sub, u) for u in outs}


def test_poll_and_sync_round_trip() -> None:
    assert decode(ArtPoll(0x06, 0x10).encode()) == ArtPoll(0x06, 0x10)
    assert decode(ArtSync().encode()) == ArtSync()


@pytest.mark.parametrize("data, message", [
    (b"Art-Net\x00\x00\x50\x00\x0e\x01\x00\x01\x00\x02", "shorter than its header"),
    (b"Art-Net\x00\x00\x50\x00\x0e\x01\x00\x01\x00\x02\x00\x00", "does not fit"),
    (b"Art-Net\x00\x00\x21" + bytes(100), "ArtPollReply of 110 bytes"),
    (b"Art-Net\x00\x00\x99\x00\x0e", "opcode 0x9900"),
    (b"Art-Nyt\x00\x00\x50", "no Art-Net ID"),
])
def test_malformed_packets_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ArtNetError, match=message):
        decode(data)


def test_art_dmx_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ArtNetError):
        ArtDmx(0x8000, b"\x00\x00").encode()
    with pytest.raises(ArtNetError):
        ArtDmx(1, bytes(513)).encode()


def test_tshark_dissects_every_packet_without_a_malformed_frame(tmp_path: Path) -> None:
    packets = [ArtDmx(port_address(0, 0, 1), bytes([255, 128, 0, 7]), 1).encode(),
               ArtDmx(port_address(3, 2, 1), bytes(range(256)) * 2, 200).encode(),
               ArtSync().encode(), ArtPoll().encode(),
               ArtPollReply("127.0.0.1", short_name="vg", long_name="venue-gateway", port_types=(0x80,),
                            sw_out=(1,)).encode()]
    text = dissect(tmp_path, packets, PORT)
    assert text.count("Art-Net") >= 5
    for fragment in ("ArtDMX", "ArtSync", "ArtPoll ", "ArtPollReply", "Universe: 1", "Length: 4",
                     "Short Name: vg"):
        assert fragment in text, fragment


@pytest.mark.parametrize("length", range(200, 240))
def test_poll_replies_of_every_length_decode_or_raise_the_codecs_own_error(length: int) -> None:
    data = ArtPollReply("10.0.0.1", short_name="n", port_types=(0x80,), sw_out=(1,)).encode()[:length]
    with contextlib.suppress(ArtNetError):
        decode(data)
