"""Modbus RTU framing for a bus master (bytes <-> messages, no I/O): read requests (functions 3 and 4), their
answers and exception answers, the CRC, and a response decoder that hunts past garbage and counts it.

Our own rather than pymodbus's client framer: that one drops a whole answer when a stray byte precedes it
(a common RS-485 line-turn glitch) and counts nothing; the bus's health needs CRC errors and garbage counted.
From "MODBUS over Serial Line V1.02" (frame layout, CRC-16, timing) and "MODBUS Application Protocol V1.1b3".
"""

from __future__ import annotations

from dataclasses import dataclass

READ_HOLDING, READ_INPUT = 3, 4
MAX_READ = 125  # registers a read may ask for (the answer's byte count must fit in one byte, 250)
EXCEPTION_FLAG = 0x80


class ModbusFrameError(ValueError):
    pass


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (reflected 0xA001, initial 0xFFFF); on the wire low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + crc16(frame).to_bytes(2, "little")


def char_time(baudrate: int, parity: str = "E", stopbits: int = 1) -> float:
    """Seconds one character takes on the wire: start bit, 8 data bits, parity if any, stop bits."""
    return (1 + 8 + (parity != "N") + stopbits) / baudrate


def frame_gap(baudrate: int, parity: str = "E", stopbits: int = 1) -> float:
    """The silence that ends a frame: 3.5 characters, fixed at 1.75 ms above 19200 baud (the spec's 2.5.1.1)."""
    return 3.5 * char_time(baudrate, parity, stopbits) if baudrate <= 19200 else 0.00175


@dataclass(frozen=True)
class ReadRequest:
    unit: int
    function: int  # READ_HOLDING or READ_INPUT
    address: int
    count: int

    def encode(self) -> bytes:
        if not 1 <= self.unit <= 247:
            raise ModbusFrameError(f"unit {self.unit} (allowed: 1 to 247)")
        if self.function not in (READ_HOLDING, READ_INPUT):
            raise ModbusFrameError(f"function {self.function} (allowed: 3, 4)")
        if not 1 <= self.count <= MAX_READ or not 0 <= self.address <= 0x10000 - self.count:
            raise ModbusFrameError(f"{self.count} registers at {self.address} (allowed: 1 to {MAX_READ}, in 0-65535)")
        return with_crc(bytes([self.unit, self.function]) + self.address.to_bytes(2, "big")
                        + self.count.to_bytes(2, "big"))

    @property
    def answer_size(self) -> int:
        """Bytes of a normal answer: unit, function, byte count, the registers, CRC."""
        return 5 + 2 * self.count


@dataclass(frozen=True)
class Response:
    unit: int
    function: int  # without the exception flag
    registers: tuple[int, ...] = ()
    exception: int | None = None  # the exception code of an exception answer

    def encode(self) -> bytes:
        if self.exception is not None:
            return with_crc(bytes([self.unit, self.function | EXCEPTION_FLAG, self.exception]))
        if len(self.registers) > MAX_READ:
            raise ModbusFrameError(f"{len(self.registers)} registers (allowed: at most {MAX_READ})")
        data = b"".join(r.to_bytes(2, "big") for r in self.registers)
        return with_crc(bytes([self.unit, self.function, len(data)]) + data)


class ResponseDecoder:
    """Stream decoder for the answer to one outstanding request: feed bytes as they come, get the answer.

    Only a frame that matches the request (its unit, its function, the byte count asked for, or an exception
    answer of that unit and function) and whose CRC holds is taken; anything else is skipped a byte at a time
    and counted. Bytes that arrive with no request outstanding are garbage too.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._request: ReadRequest | None = None
        self.garbage_bytes = 0  # skipped to find an answer, or with nothing asked
        self.crc_errors = 0  # frames that looked like the answer but failed the CRC

    def expect(self, request: ReadRequest | None) -> None:
        """A new request is on its way (or none is): what is still buffered belongs to no answer."""
        self.garbage_bytes += len(self._buffer)
        self._buffer.clear()
        self._request = request

    def feed(self, data: bytes) -> Response | None:
        buf = self._buffer
        buf += data
        req = self._request
        if req is None:
            self.expect(None)
            return None
        header = bytes([req.unit, req.function, 2 * req.count])
        failed = bytes([req.unit, req.function | EXCEPTION_FLAG])
        while True:
            start = buf.find(req.unit)
            if start < 0:
                self.garbage_bytes += len(buf)
                buf.clear()
                return None
            if start:
                self.garbage_bytes += start
                del buf[:start]
            if len(buf) < 3:
                return None
            if buf[:3] == header:
                size = req.answer_size
            elif buf[:2] == failed:
                size = 5
            else:
                self.garbage_bytes += 1
                del buf[:1]
                continue
            if len(buf) < size:
                return None
            frame = bytes(buf[:size])
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self.crc_errors += 1
                self.garbage_bytes += 1
                del buf[:1]
                continue
            del buf[:size]
            self._request = None  # one answer per request; what follows is garbage
            if size == 5 and frame[1] & EXCEPTION_FLAG:
                return Response(req.unit, req.function, exception=frame[2])
            return Response(req.unit, req.function,
                            tuple(int.from_bytes(frame[3 + 2 * i:5 + 2 * i], "big") for i in range(req.count)))
