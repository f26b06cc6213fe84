"""The Modbus RTU master's side of one serial port: one request at a time, the wire's silences kept, answers
awaited with a timeout, every byte and every fault counted. A port that is missing or goes away is `NotReady`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios

import serial
import serial_asyncio_fast

from drivers.serial.modbus_codec import ReadRequest, Response, ResponseDecoder, char_time, frame_gap
from gateway.driver import NotReady


class ModbusLink(asyncio.Protocol):
    """`timeout` is the device's allowance on top of the wire time of the request and of its answer, so one
    setting fits a 2-register read and a 125-register read at any baud rate."""

    def __init__(self, port: str, baudrate: int, parity: str, stopbits: int, timeout: float) -> None:
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.timeout = timeout
        self.char_s = char_time(baudrate, parity, stopbits)
        self.gap_s = frame_gap(baudrate, parity, stopbits)
        self.decoder = ResponseDecoder()
        self.requests = 0
        self.answers = 0
        self.timeouts = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self._transport: asyncio.Transport | None = None
        self._lost: str | None = None
        self._gone = asyncio.Event()
        self._quiet_at = 0.0  # when the line last carried a byte (or will have, for what we sent)
        self._answer: asyncio.Future[Response | None] | None = None
        self._expected = 0  # bytes of the awaited answer
        self._heard = False  # whether any of it has come yet
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def local(self) -> bool:
        """A device file (as opposed to a pyserial URL such as socket://), whose presence can be checked."""
        return self.port.startswith("/")

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._lost is None

    def pseudo_terminal(self) -> bool:
        return self.local and os.path.realpath(self.port).startswith("/dev/pts/")

    def vanished(self) -> bool:
        """The port is gone: its transport failed, or its device file (a stable by-id link) was removed."""
        return (self._transport is not None and self._lost is not None) or (
            self.local and not os.path.exists(self.port))

    async def idle(self, seconds: float) -> None:
        """Wait `seconds`, or less if the port goes away meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._gone.wait()

    async def open(self) -> None:
        if self.vanished():
            raise NotReady(f"{self.port} is not there (is the adapter plugged in?)")
        loop = asyncio.get_running_loop()
        # A pseudo-terminal (the simulated bus) has no wire, and Linux refuses parity on one; the timing still
        # follows the configured framing.
        parity = "N" if self.pseudo_terminal() else self.parity
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop, lambda: self, self.port, baudrate=self.baudrate, parity=parity, stopbits=self.stopbits,
                exclusive=True)
        except (OSError, ValueError, termios.error, serial.SerialException) as exc:
            raise NotReady(f"cannot open {self.port}: {exc}") from None
        self._transport = transport  # connection_made comes a loop pass later; a request may not wait for it

    def close(self) -> None:
        if self._transport is not None and self._lost is None:
            self._transport.close()
        self._lost = self._lost or "closed"

    async def transact(self, request: ReadRequest) -> Response | None:
        """Send `request` once, after the line's 3.5-character silence; the answer, or None if none came."""
        if self._transport is None or self._lost is not None:
            raise NotReady(f"{self.port} went away ({self._lost or 'not open'})")
        loop = asyncio.get_running_loop()
        wait = self._quiet_at + self.gap_s - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = request.encode()
        self.decoder.expect(request)
        answer: asyncio.Future[Response | None] = loop.create_future()
        self._answer = answer
        self._expected = request.answer_size
        self._heard = False
        self._transport.write(frame)
        self.requests += 1
        self.bytes_out += len(frame)
        self._quiet_at = loop.time() + len(frame) * self.char_s
        self._expiry = loop.call_at(self._quiet_at + self.timeout, self._expire)
        try:
            response = await answer
        finally:
            self._expiry.cancel()
            self._answer = None
            self.decoder.expect(None)
        if response is None:
            self.timeouts += 1
        else:
            self.answers += 1
        return response

    def _expire(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.bytes_in += len(data)
        self._quiet_at = max(self._quiet_at, now)
        answer = self._answer
        response = self.decoder.feed(data)
        if answer is None or answer.done():
            return
        if response is not None:
            answer.set_result(response)
        elif not self._heard and self._expiry is not None:
            self._heard = True
            # The answer has begun: give it the wire time of the whole answer, and the allowance again.
            self._expiry.cancel()
            self._expiry = loop.call_at(now + self._expected * self.char_s + self.timeout, self._expire)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = str(exc) if exc else "closed"
        self._gone.set()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(NotReady(f"{self.port} went away ({self._lost})"))
