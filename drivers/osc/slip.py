"""SLIP framing (RFC 1055, double-ended as OSC 1.1 asks) for OSC packets over TCP. Pure: no I/O."""

from __future__ import annotations

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
MAX_PACKET = 65536  # a frame larger than this is garbage (or an attack): dropped, counted


def encode(packet: bytes) -> bytes:
    return bytes([END]) + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + bytes([END])


class Decoder:
    """Feed bytes as they arrive; get whole packets. Empty frames (END END) are skipped."""

    def __init__(self) -> None:
        self._frame = bytearray()
        self._escaped = False
        self._oversized = False
        self.dropped = 0  # frames dropped: a bad escape or over MAX_PACKET

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        frame = self._frame
        for byte in data:
            if byte == END:
                if frame and not self._oversized:
                    out.append(bytes(frame))
                frame.clear()
                self._oversized = self._escaped = False
            elif self._oversized:
                continue
            elif self._escaped:
                self._escaped = False
                if byte == ESC_END:
                    frame.append(END)
                elif byte == ESC_ESC:
                    frame.append(ESC)
                else:  # a protocol violation: the frame cannot be trusted
                    self._drop()
            elif byte == ESC:
                self._escaped = True
            else:
                frame.append(byte)
                if len(frame) > MAX_PACKET:
                    self._drop()
        return out

    def _drop(self) -> None:
        self.dropped += 1
        self._frame.clear()
        self._oversized = True
