"""Enttec DMX USB Pro framing (bytes <-> messages, no I/O): 0x7E, label, length (LSB, MSB), data, 0xE7.

Small enough to write here, and the libraries that exist for the widget each own a thread and a port; this
codec is what the asyncio transport needs. From Enttec's "DMX USB Pro Widget API Specification" v1.44.
"""

from __future__ import annotations

from dataclasses import dataclass

START, END = 0x7E, 0xE7
LABEL_GET_PARAMETERS = 3
LABEL_RECEIVED_DMX = 5
LABEL_SEND_DMX = 6
LABEL_SERIAL_NUMBER = 10
MAX_DATA = 600  # the largest message the widget sends or takes


class EnttecError(ValueError):
    pass


@dataclass(frozen=True)
class Message:
    label: int
    data: bytes


def encode(label: int, data: bytes) -> bytes:
    if len(data) > MAX_DATA:
        raise EnttecError(f"{len(data)} bytes of data, the widget takes at most {MAX_DATA}")
    return bytes([START, label & 0xFF, len(data) & 0xFF, len(data) >> 8]) + data + bytes([END])


def dmx_frame(levels: bytes) -> bytes:
    """Label 6, 'Output Only Send DMX Packet': start code 0, then the channels (24 at least, as DMX needs)."""
    if len(levels) > 512:
        raise EnttecError(f"{len(levels)} channels, a universe has 512")
    return encode(LABEL_SEND_DMX, b"\x00" + levels.ljust(24, b"\x00"))


class Decoder:
    """Stream decoder: feed bytes as they come, get whole messages; garbage is skipped and counted."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.dropped = 0  # bytes skipped to find the next message

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buffer
        buf += data
        out: list[Message] = []
        while True:
            start = buf.find(START)
            if start < 0:
                self.dropped += len(buf)
                buf.clear()
                return out
            if start:
                self.dropped += start
                del buf[:start]
            if len(buf) < 4:
                return out
            length = buf[2] | buf[3] << 8
            if length > MAX_DATA:  # not a real header: resynchronise on the next start byte
                self.dropped += 1
                del buf[:1]
                continue
            if len(buf) < length + 5:
                return out
            if buf[length + 4] != END:
                self.dropped += 1
                del buf[:1]
                continue
            out.append(Message(buf[1], bytes(buf[4:4 + length])))
            del buf[:length + 5]
