"""The sACN input's E1.31 reader: what the `sacn` package (an independent encoder) writes reads back field for
field, and any bytes read or raise the reader's own error."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st
from sacn.messages.data_packet import DataPacket
from sacn.messages.sync_packet import SyncPacket

from drivers.console import e131_codec
from drivers.console.e131_codec import E131Error

CID = tuple(range(16))


@given(universe=st.integers(1, 63999), priority=st.integers(0, 200), sequence=st.integers(0, 255),
       sync=st.integers(0, 63999), levels=st.lists(st.integers(0, 255), min_size=1, max_size=512),
       preview=st.booleans(), terminated=st.booleans(), force=st.booleans(),
       name=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
def test_what_the_sacn_package_writes_reads_back(universe: int, priority: int, sequence: int, sync: int,
                                                 levels: list[int], preview: bool, terminated: bool, force: bool,
                                                 name: str) -> None:
    raw = bytes(DataPacket(cid=CID, sourceName=name, universe=universe, dmxData=tuple(levels), priority=priority,
                           sequence=sequence, sync_universe=sync, previewData=preview, streamTerminated=terminated,
                           forceSync=force).getBytes())
    assert e131_codec.kind(raw) == "data"
    data = e131_codec.data(raw)
    assert (data.cid, data.source_name, data.universe, data.priority, data.sequence, data.sync_address) == \
        (bytes(CID), name, universe, priority, sequence, sync)
    assert (data.preview, data.terminated, data.force_sync, data.start_code) == (preview, terminated, force, 0)
    assert data.slots[:len(levels)] == bytes(levels)  # the package pads a universe to 512 slots


def test_a_sync_packet_reads_back() -> None:
    raw = bytes(SyncPacket(cid=CID, syncAddr=7, sequence=3).getBytes())
    assert e131_codec.kind(raw) == "sync"
    assert e131_codec.sync(raw) == e131_codec.Sync(bytes(CID), 3, 7)


def test_bad_layers_and_ranges_are_refused_by_name() -> None:
    raw = bytearray(DataPacket(cid=CID, sourceName="desk", universe=1, dmxData=(1, 2, 3)).getBytes())
    for offset, value, word in ((108, 201, "priority"), (117, 0x03, "DMP"), (40 + 3, 0x05, "framing vector"),
                                (38, 0x00, "framing layer")):
        bad = bytearray(raw)
        bad[offset] = value
        try:
            e131_codec.data(bytes(bad))
        except E131Error as exc:
            assert word in str(exc)
        else:
            raise AssertionError(f"byte {offset} = {value} was taken")
    short = bytes(raw[:125])
    with contextlib.suppress(E131Error):
        e131_codec.data(short)
        raise AssertionError("a packet cut short was taken")


@given(st.binary(max_size=700))
def test_any_bytes_read_or_raise_the_readers_own_error(tail: bytes) -> None:
    head = bytes(DataPacket(cid=CID, sourceName="x", universe=1, dmxData=(0,)).getBytes())[:18]
    for packet in (tail, head + tail):
        with contextlib.suppress(E131Error):
            if e131_codec.kind(packet) == "data":
                e131_codec.data(packet)
            elif e131_codec.kind(packet) == "sync":
                e131_codec.sync(packet)
