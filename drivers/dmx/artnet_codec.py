"""Art-Net 4 codec (bytes <-> typed packets, no I/O): ArtDmx, ArtSync, ArtPoll, ArtPollReply and ArtTimeCode.

Written here rather than taken from a library: the maintained Python Art-Net packages send ArtDmx from their
own threads or loops and none decodes ArtPollReply, which discovery needs. The layouts are fixed-offset
records from the Art-Net 4 specification (Artistic Licence, rev. 1.4dj); tshark's dissector checks them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PORT = 6454
ID = b"Art-Net\x00"
PROTOCOL_VERSION = 14
OP_POLL = 0x2000
OP_POLL_REPLY = 0x2100
OP_DMX = 0x5000
OP_SYNC = 0x5200
OP_TIMECODE = 0x9700
TIMECODE_SIZE = 19
POLL_REPLY_SIZE = 239
POLL_REPLY_MIN = 213  # through Status2: what every Art-Net 3 and 4 node sends

_VERSION = struct.Struct(">H")


class ArtNetError(ValueError):
    """Bytes that are not a well-formed Art-Net packet of a kind this codec reads."""


class UnreadOpcode(ArtNetError):
    """A well-formed Art-Net header with an opcode this codec does not read (ArtAddress, ArtTodData, ...)."""


def port_address(net: int, sub_net: int, universe: int) -> int:
    """The 15-bit Port-Address: Net (7 bits), Sub-Net (4 bits), Universe (4 bits)."""
    return (net & 0x7F) << 8 | (sub_net & 0x0F) << 4 | (universe & 0x0F)


@dataclass(frozen=True)
class ArtDmx:
    port_address: int  # 0..32767
    data: bytes  # 2..512 bytes; sent with an even length as the specification asks
    sequence: int = 0  # 1..255 cycling; 0 disables re-ordering at the receiver
    physical: int = 0

    def encode(self) -> bytes:
        if not 0 <= self.port_address <= 0x7FFF:
            raise ArtNetError(f"port address {self.port_address} out of range 0..32767")
        data = self.data + b"\x00" * (len(self.data) % 2)
        if not 2 <= len(data) <= 512:
            raise ArtNetError(f"ArtDmx carries 2..512 channels, not {len(self.data)}")
        return (ID + struct.pack("<H", OP_DMX) + _VERSION.pack(PROTOCOL_VERSION)
                + struct.pack(">BBBBH", self.sequence & 0xFF, self.physical & 0xFF, self.port_address & 0xFF,
                              self.port_address >> 8, len(data)) + data)


@dataclass(frozen=True)
class ArtSync:
    def encode(self) -> bytes:
        return ID + struct.pack("<H", OP_SYNC) + _VERSION.pack(PROTOCOL_VERSION) + b"\x00\x00"


@dataclass(frozen=True)
class ArtPoll:
    flags: int = 0x02  # bit 1: send ArtPollReply whenever node conditions change
    diag_priority: int = 0

    def encode(self) -> bytes:
        return ID + struct.pack("<H", OP_POLL) + _VERSION.pack(PROTOCOL_VERSION) + bytes(
            [self.flags & 0xFF, self.diag_priority & 0xFF])


@dataclass(frozen=True)
class ArtPollReply:
    ip: str
    port: int = PORT
    net: int = 0
    sub_net: int = 0
    short_name: str = ""
    long_name: str = ""
    port_types: tuple[int, ...] = (0, 0, 0, 0)  # bit 7: the port outputs DMX received over Art-Net
    sw_out: tuple[int, ...] = (0, 0, 0, 0)
    bind_index: int = 0
    mac: bytes = field(default=b"\x00" * 6)

    def output_universes(self) -> set[int]:
        """Port-Addresses this node outputs: where ArtDmx for it should be sent (unicast)."""
        count = len(self.port_types)
        return {port_address(self.net, self.sub_net, self.sw_out[i])
                for i in range(count) if self.port_types[i] & 0x80 and i < len(self.sw_out)}

    def encode(self) -> bytes:
        ip = bytes(int(p) for p in self.ip.split("."))
        body = bytearray(POLL_REPLY_SIZE)
        body[0:10] = ID + struct.pack("<H", OP_POLL_REPLY)
        body[10:14] = ip
        body[14:16] = struct.pack("<H", self.port)
        body[18], body[19] = self.net & 0x7F, self.sub_net & 0x0F
        body[26:44] = _fixed(self.short_name, 18)
        body[44:108] = _fixed(self.long_name, 64)
        body[172:174] = struct.pack(">H", len(self.port_types))
        body[174:178] = bytes((list(self.port_types) + [0] * 4)[:4])
        body[190:194] = bytes((list(self.sw_out) + [0] * 4)[:4])
        body[201:207] = self.mac
        body[207:211] = ip
        body[211] = self.bind_index & 0xFF
        return bytes(body)


@dataclass(frozen=True)
class ArtTimeCode:
    """One timecode frame. `kind` is Art-Net's Type: 0 Film (24 fps), 1 EBU (25), 2 DF (29.97 drop-frame),
    3 SMPTE (30)."""

    hours: int
    minutes: int
    seconds: int
    frames: int
    kind: int
    stream: int = 0  # Art-Net 4's stream id (0: the master)

    def check(self) -> ArtTimeCode:
        """Itself, or ArtNetError naming the field out of range for its type."""
        if not 0 <= self.kind <= 3:
            raise ArtNetError(f"ArtTimeCode type {self.kind} (allowed: 0 Film, 1 EBU, 2 DF, 3 SMPTE)")
        limit = (24, 25, 30, 30)[self.kind]
        for name, value, top in (("hours", self.hours, 23), ("minutes", self.minutes, 59),
                                 ("seconds", self.seconds, 59), ("frames", self.frames, limit - 1)):
            if not 0 <= value <= top:
                raise ArtNetError(f"ArtTimeCode {name} {value} out of range 0..{top}")
        return self

    def encode(self) -> bytes:
        self.check()
        return ID + struct.pack("<H", OP_TIMECODE) + _VERSION.pack(PROTOCOL_VERSION) + bytes(
            [0, self.stream & 0xFF, self.frames, self.seconds, self.minutes, self.hours, self.kind])


Packet = ArtDmx | ArtSync | ArtPoll | ArtPollReply | ArtTimeCode


def _fixed(text: str, size: int) -> bytes:
    raw = text.encode("ascii", "replace")[:size - 1]
    return raw + b"\x00" * (size - len(raw))


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace")


def decode(data: bytes) -> Packet:
    """One UDP payload to a packet; ArtNetError for anything malformed or of another kind."""
    if len(data) < 10 or data[:8] != ID:
        raise ArtNetError("not Art-Net (no Art-Net ID)")
    (opcode,) = struct.unpack_from("<H", data, 8)
    if opcode == OP_POLL_REPLY:  # the only packet without a protocol version after the opcode
        if len(data) < POLL_REPLY_MIN:
            raise ArtNetError(f"ArtPollReply of {len(data)} bytes (at least {POLL_REPLY_MIN})")
        num_ports = min(4, struct.unpack_from(">H", data, 172)[0])
        return ArtPollReply(
            ip=".".join(str(b) for b in data[10:14]), port=struct.unpack_from("<H", data, 14)[0],
            net=data[18] & 0x7F, sub_net=data[19] & 0x0F, short_name=_text(data[26:44]),
            long_name=_text(data[44:108]), port_types=tuple(data[174:174 + num_ports]),
            sw_out=tuple(data[190:190 + num_ports]), bind_index=data[211], mac=bytes(data[201:207]))
    if len(data) < 12:
        raise ArtNetError("Art-Net packet too short for its protocol version")
    if opcode == OP_DMX:
        if len(data) < 18:
            raise ArtNetError("ArtDmx shorter than its header")
        sequence, physical, sub_uni, net, length = struct.unpack_from(">BBBBH", data, 12)
        if not 2 <= length <= 512 or len(data) < 18 + length:
            raise ArtNetError(f"ArtDmx length {length} does not fit the packet ({len(data) - 18} data bytes)")
        return ArtDmx((net & 0x7F) << 8 | sub_uni, bytes(data[18:18 + length]), sequence, physical)
    if opcode == OP_SYNC:
        return ArtSync()
    if opcode == OP_TIMECODE:
        if len(data) < TIMECODE_SIZE:
            raise ArtNetError(f"ArtTimeCode of {len(data)} bytes (at least {TIMECODE_SIZE})")
        frames, seconds, minutes, hours, kind = data[14:19]
        return ArtTimeCode(hours, minutes, seconds, frames, kind, data[13]).check()
    if opcode == OP_POLL:
        if len(data) < 14:
            raise ArtNetError("ArtPoll shorter than 14 bytes")
        return ArtPoll(data[12], data[13])
    raise UnreadOpcode(f"Art-Net opcode 0x{opcode:04x} is not read here")
