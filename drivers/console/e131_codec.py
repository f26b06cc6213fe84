"""Reading E1.31 (sACN) data and synchronisation packets, ours for speed: the `sacn` package's reader checks each
of the 512 slots in Python (some 55 us a packet here), the whole of a console's 8 universes at 44 Hz costing a
frame slot's budget. The layout is fixed (ANSI E1.31-2018, 4.1 and 4.2), so one struct read and a few compares
check a packet; the slots are a slice. The `sacn` package still writes the packets of the tests' consoles, an
encoder independent of this reader."""

from __future__ import annotations

import struct
from dataclasses import dataclass

ROOT_PREAMBLE = b"\x00\x10\x00\x00ASC-E1.17\x00\x00\x00"
VECTOR_ROOT_DATA = 0x04
VECTOR_ROOT_EXTENDED = 0x08
VECTOR_EXTENDED_SYNC = 0x01
VECTOR_EXTENDED_DISCOVERY = 0x02
VECTOR_DATA_PACKET = 0x02
VECTOR_DMP_SET_PROPERTY = 0x02
DMP_ADDRESS_TYPE = 0xA1
OPTION_PREVIEW, OPTION_TERMINATED, OPTION_FORCE_SYNC = 0x80, 0x40, 0x20
MAX_PRIORITY = 200
MAX_UNIVERSE = 63999

# From the root layer's vector to the DMP layer's start code (offsets 18..125).
_DATA = struct.Struct(">I16sHI64sBHBBHHHHHHB")
_SYNC = struct.Struct(">I16sHIBH")  # root vector, CID, framing flags and length, vector, sequence, sync address


class E131Error(ValueError):
    """Bytes that are not an E1.31 packet this reader takes; the message says why."""


@dataclass(frozen=True, slots=True)
class Data:
    cid: bytes
    source_name: str
    priority: int
    sync_address: int
    sequence: int
    options: int
    universe: int
    start_code: int
    slots: bytes  # the levels from slot 1

    @property
    def preview(self) -> bool:
        return bool(self.options & OPTION_PREVIEW)

    @property
    def terminated(self) -> bool:
        return bool(self.options & OPTION_TERMINATED)

    @property
    def force_sync(self) -> bool:
        return bool(self.options & OPTION_FORCE_SYNC)


@dataclass(frozen=True, slots=True)
class Sync:
    cid: bytes
    sequence: int
    sync_address: int


def kind(packet: bytes) -> str:
    """"data", "sync", "discovery" or "other"; E1.31Error for bytes that are not ACN root layer packets."""
    if len(packet) < 44 or packet[:16] != ROOT_PREAMBLE:
        raise E131Error(f"{len(packet)} bytes are not an E1.31 packet")
    root = int.from_bytes(packet[18:22], "big")
    if root == VECTOR_ROOT_DATA:
        return "data"
    if root == VECTOR_ROOT_EXTENDED:
        extended = int.from_bytes(packet[40:44], "big")
        return {VECTOR_EXTENDED_SYNC: "sync", VECTOR_EXTENDED_DISCOVERY: "discovery"}.get(extended, "other")
    return "other"


def _pdu_length(flags_length: int, name: str, rest: int) -> None:
    if flags_length >> 12 != 0x7 or (flags_length & 0x0FFF) > rest:
        raise E131Error(f"the {name} layer's flags and length ({flags_length:#06x}) do not fit the packet")


def data(packet: bytes) -> Data:
    if len(packet) < 126:
        raise E131Error(f"{len(packet)} bytes: an E1.31 data packet has at least 126")
    (_, cid, framing, vector, name, priority, sync, sequence, options, universe, dmp, dmp_vector_type, first,
     increment, count, start) = _DATA.unpack_from(packet, 18)
    _pdu_length(int.from_bytes(packet[16:18], "big"), "root", len(packet) - 16)
    _pdu_length(framing, "framing", len(packet) - 38)
    _pdu_length(dmp, "DMP", len(packet) - 115)
    if vector != VECTOR_DATA_PACKET:
        raise E131Error(f"framing vector {vector:#x} is not a data packet's")
    if dmp_vector_type >> 8 != VECTOR_DMP_SET_PROPERTY or dmp_vector_type & 0xFF != DMP_ADDRESS_TYPE or \
            increment != 1 or first != 0:
        raise E131Error("the DMP layer is not a Set Property of slots from 0 by 1")
    if priority > MAX_PRIORITY:
        raise E131Error(f"priority {priority} is out of range (allowed: 0 to {MAX_PRIORITY})")
    if not 1 <= universe <= MAX_UNIVERSE:
        raise E131Error(f"universe {universe} is out of range (allowed: 1 to {MAX_UNIVERSE})")
    if not 1 <= count <= 513 or len(packet) < 125 + count:
        raise E131Error(f"{count} property values do not fit {len(packet)} bytes")
    source = name.split(b"\x00", 1)[0].decode("utf-8", "replace")
    return Data(cid, source, priority, sync, sequence, options, universe, start, packet[126:125 + count])


def sync(packet: bytes) -> Sync:
    if len(packet) < 49:
        raise E131Error(f"{len(packet)} bytes: an E1.31 synchronisation packet has 49")
    _, cid, framing, _vector, sequence, address = _SYNC.unpack_from(packet, 18)
    _pdu_length(framing, "framing", len(packet) - 38)
    if not 1 <= address <= MAX_UNIVERSE:
        raise E131Error(f"synchronisation address {address} is out of range (allowed: 1 to {MAX_UNIVERSE})")
    return Sync(cid, sequence, address)
