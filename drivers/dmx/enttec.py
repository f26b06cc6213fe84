"""The `enttec` driver: one universe out of an Enttec DMX USB Pro widget on a serial port (label 6 frames).

The widget refreshes its DMX port with the last frame it was given by itself, so a frame is written only when the
universe changes (at most `max_rate_hz` a second: faster than DMX's 44 Hz would only replace frames the widget
had not put on the wire yet), or with the frame clock's ticks (`mode = "frames"`), and again every `keepalive_s`.
The port is opened with pyserial through its asyncio transport. A widget that is not there is 'not ready';
one that goes away mid-show ends the run, and the supervisor opens it again, with backoff, when it is back.
Name the port by its stable path (/dev/serial/by-id/...) so that replugging it elsewhere changes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import serial
import serial_asyncio_fast

from drivers.dmx.enttec_codec import Decoder, dmx_frame
from drivers.dmx.output import DmxOutput, Mode
from gateway.driver import DriverContext, NotReady, setting

BACKLOG_BYTES = 2048  # about four frames waiting: the next one waits too, never a growing queue of old levels


@dataclass(frozen=True)
class EnttecOptions:
    port: str
    universe: int = setting(1, min=0, max=32767)
    mode: Mode = "on-change"  # or "frames": with the frame clock's ticks
    max_rate_hz: float = setting(44.0, min=1, max=44)  # on change: frames a second, at most
    keepalive_s: float = setting(1.0, min=0.1, max=10)  # the widget repeats the last frame by itself

    @property
    def universes(self) -> list[int]:
        return [self.universe]


class EnttecOutput(DmxOutput[EnttecOptions]):
    Options = EnttecOptions

    def __init__(self, ctx: DriverContext, options: EnttecOptions) -> None:
        super().__init__(ctx, options)
        self.decoder = Decoder()
        self.replies = 0
        self.skipped = 0  # frames not written while the widget had not taken the ones before
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        self.check_universes()
        try:
            self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self.options.port, baudrate=57600)
        except (OSError, serial.SerialException) as exc:
            raise NotReady(f"cannot open {self.options.port}: {exc} (is the widget plugged in?)") from None
        self.ctx.log.info("Enttec widget on %s", self.options.port)

    async def run(self) -> None:
        """Read what the widget says (it rarely speaks unasked), and notice when it goes away."""
        assert self._reader is not None
        while True:
            try:
                data = await self._reader.read(1024)
            except (OSError, serial.SerialException):
                data = b""
            if not data:  # the usual way a USB serial device leaves: retried with backoff, no traceback
                raise NotReady(f"{self.options.port} went away (unplugged?)")
            self.replies += len(self.decoder.feed(data))

    def send(self, universe: int, levels: bytes) -> bool:
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            return False
        if writer.transport.get_write_buffer_size() > BACKLOG_BYTES:  # the widget is not taking frames
            self.skipped += 1
            return False
        writer.write(dmx_frame(levels))
        self.sent += 1
        return True

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def health(self) -> dict[str, Any]:
        return {"port": self.options.port, "universe": self.options.universe, "frames_sent": self.sent,
                "replies": self.replies, "garbage_bytes": self.decoder.dropped, "frames_skipped": self.skipped}
