"""A serial port opened by its stable path through pyserial's asyncio transport, for the line-protocol drivers.

Missing, failing or vanished ports raise `NotReady`: the supervisor retries with backoff and picks the device up
again when it comes back. Name ports by /dev/serial/by-id/... so that replugging into another socket changes nothing.
"""

from __future__ import annotations

import asyncio
import os

import serial
import serial_asyncio_fast

from gateway.driver import NotReady

READ_CHUNK = 4096


class SerialPort:
    """One open port: `read` with a timeout, `write`, `close`. Every way of losing the device is `NotReady`."""

    def __init__(self, path: str, baudrate: int) -> None:
        self.path = path
        self.baudrate = baudrate
        self.bytes_in = 0
        self.bytes_out = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def local(self) -> bool:
        """A device file (as opposed to a pyserial URL such as socket://), whose presence can be checked."""
        return self.path.startswith("/")

    async def open(self) -> None:
        if self.vanished():  # a clearer message than pyserial's, for the usual case
            raise NotReady(f"{self.path} is not there (is the device plugged in?)")
        try:
            self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self.path, baudrate=self.baudrate)
        except (OSError, serial.SerialException) as exc:
            raise NotReady(f"cannot open {self.path}: {exc} (is the device plugged in?)") from None

    async def read(self, wait_s: float) -> bytes | None:
        """What arrived within `wait_s` seconds (None if nothing did); NotReady if the device went away."""
        if self._reader is None:
            raise NotReady(f"{self.path} is not open")
        try:
            async with asyncio.timeout(wait_s):
                data = await self._reader.read(READ_CHUNK)
        except TimeoutError:
            if self.vanished():
                raise NotReady(f"{self.path} went away (unplugged?)") from None
            return None
        except (OSError, serial.SerialException):
            data = b""
        if not data:  # how a USB serial device usually leaves: end of file or EIO
            raise NotReady(f"{self.path} went away (unplugged?)")
        self.bytes_in += len(data)
        return data

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            raise NotReady(f"{self.path} went away (unplugged?)")
        writer.write(data)
        self.bytes_out += len(data)

    def vanished(self) -> bool:
        """The device file is gone although no read has failed yet (a stable path's link is removed at once)."""
        return self.local and not os.path.exists(self.path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
