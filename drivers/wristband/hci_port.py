"""A BLE controller on a serial port, spoken to in HCI H4: one command at a time, each answered within a timeout
(so the controller's command credits, at least one by the specification, are never exceeded).

The port is opened with pyserial through its asyncio transport (a USB dongle such as an nRF52840 with Zephyr's
hci_uart firmware: 1 Mbaud, RTS/CTS). A controller that stops answering, reports a hardware error or goes away
raises NotReady, so the supervisor resets it after a backoff while the rest of the box goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import serial
import serial_asyncio_fast

from drivers.wristband import hci
from gateway.driver import NotReady


class HciPort:
    def __init__(self, url: str, baudrate: int, rtscts: bool, timeout_s: float, log: logging.Logger) -> None:
        self.url = url
        self.baudrate = baudrate
        self.rtscts = rtscts
        self.timeout_s = timeout_s
        self.log = log
        self.reader = hci.H4Reader()
        self.commands = 0
        self.unexpected = 0  # completions of commands not waited for (an answer that came after its timeout)
        self._lock = asyncio.Lock()
        self._waiting: tuple[int, asyncio.Future[hci.CommandComplete | hci.CommandStatus]] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: NotReady | None = None

    async def open(self) -> None:
        """Open the port, locked (flock) against anything else that would write to the controller under the show:
        `venue-gateway doctor` then leaves it alone."""
        try:
            stream, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self.url, baudrate=self.baudrate, rtscts=self.rtscts, exclusive=True)
        except (OSError, serial.SerialException) as exc:
            raise NotReady(f"cannot open {self.url}: {exc} (is the BLE dongle plugged in?)") from None
        self._task = asyncio.get_running_loop().create_task(self._read(stream), name=f"hci:{self.url}")

    async def closed(self) -> None:
        """Returns never while the controller is there; raises NotReady when it goes away or fails."""
        assert self._task is not None
        await asyncio.shield(self._task)
        raise NotReady(f"{self.url}: the reader stopped")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, NotReady):
                await self._task
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def command(self, opcode: int, params: bytes = b"") -> bytes:
        """Send one command and wait for its completion; its return parameters after the status."""
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            assert self._writer is not None
            waiting: asyncio.Future[hci.CommandComplete | hci.CommandStatus] = \
                asyncio.get_running_loop().create_future()
            self._waiting = (opcode, waiting)
            self._writer.write(hci.command(opcode, params))
            self.commands += 1
            try:
                async with asyncio.timeout(self.timeout_s):
                    event = await waiting
            except TimeoutError:
                raise NotReady(f"the controller on {self.url} did not answer command 0x{opcode:04x} "
                               f"within {self.timeout_s} s") from None
            finally:
                self._waiting = None
        if event.status:  # refused: the controller is reset (after a backoff) and set up again
            raise NotReady(f"the controller on {self.url} refused command 0x{opcode:04x} "
                           f"(status 0x{event.status:02x})")
        return event.returned if isinstance(event, hci.CommandComplete) else b""

    async def _read(self, stream: asyncio.StreamReader) -> None:
        try:
            while True:
                try:
                    data = await stream.read(4096)
                except (OSError, serial.SerialException):
                    data = b""
                if not data:
                    raise NotReady(f"{self.url} went away (unplugged?)")
                for event in self.reader.feed(data):
                    self._dispatch(event)
        except NotReady as exc:
            self._fail(exc)
            raise
        except BaseException as exc:  # cancelled, or a bug: a waiting command must not wait for its timeout
            self._fail(NotReady(f"{self.url}: the reader stopped ({type(exc).__name__})"))
            raise

    def _dispatch(self, event: hci.Event) -> None:
        if isinstance(event, hci.HardwareError):
            raise NotReady(f"the controller on {self.url} reported hardware error 0x{event.code:02x}")
        waiting = self._waiting
        if waiting is not None and waiting[0] == event.opcode and not waiting[1].done():
            waiting[1].set_result(event)
        elif event.opcode != 0:  # opcode 0: the controller announcing how many commands it takes
            self.unexpected += 1

    def _fail(self, exc: NotReady) -> None:
        self._failure = exc
        if self._waiting is not None and not self._waiting[1].done():
            self._waiting[1].set_exception(exc)
