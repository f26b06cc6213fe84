"""A simulated RS-485 wire: two pseudo-terminals (the master's and the devices') joined by a relay that gives
them a real line's timing, so that bus-capacity figures mean something.

The line is half duplex: whatever either side writes goes onto one timeline, a character every
(1 start + 8 data + parity + stop bits) / baud seconds, and reaches the other side as a real UART would hand it
over (a couple of milliseconds' worth at a time). A device cannot answer before the 3.5-character silence
that tells it the request has ended, so the devices' side is held back until then; a master that starts a
frame before that silence, or while the line still carries one, is counted (`gap_violations`, `collisions`).
`baudrate=None` relays at once, like socat. Runs in a thread of its own: its timing does not wait on any
event loop.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from drivers.serial.modbus_codec import char_time, frame_gap

SLICE_S = 0.002  # how much of a frame a receiving UART (and its USB adapter) hands over at a time
MASTER, DEVICES = 0, 1


@dataclass(frozen=True)
class WireStats:
    """What went over the line since the wire opened (or since `since`)."""

    seconds: float
    bytes_down: int  # master -> devices
    bytes_up: int  # devices -> master
    busy_s: float  # time the line carried characters
    gap_violations: int
    collisions: int

    @property
    def utilisation(self) -> float:
        """Share of the time the line carried characters: bytes on the wire over the baud rate's capacity."""
        return self.busy_s / self.seconds if self.seconds > 0 else 0.0

    def __sub__(self, other: WireStats) -> WireStats:
        return WireStats(self.seconds - other.seconds, self.bytes_down - other.bytes_down,
                         self.bytes_up - other.bytes_up, self.busy_s - other.busy_s,
                         self.gap_violations - other.gap_violations, self.collisions - other.collisions)


class _Pty:
    """One pseudo-terminal: we keep the controlling side, a program opens the other by the path `link`."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.fd, self._slave = os.openpty()
        tty.setraw(self._slave)  # until the program sets its own modes, no echo and no line editing
        # Holding the other side open keeps the terminal (and its modes) alive while the program reopens it.
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(os.ttyname(self._slave))

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self.fd, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class Wire:
    def __init__(self, master_link: Path, devices_link: Path, baudrate: int | None = 9600, parity: str = "E",
                 stopbits: int = 1) -> None:
        self.master_link, self.devices_link = master_link, devices_link
        self.baudrate = baudrate
        self.char_s = char_time(baudrate, parity, stopbits) if baudrate else 0.0
        self.gap_s = frame_gap(baudrate, parity, stopbits) if baudrate else 0.0
        self._ptys: list[_Pty | None] = [None, None]
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = False
        self._opened = 0.0
        self._bytes = [0, 0]
        self._busy = 0.0
        self._line_free = 0.0
        self._violations = 0
        self._collisions = 0

    def open(self) -> Wire:
        self._ptys = [_Pty(self.master_link), _Pty(self.devices_link)]
        self._wake_r, self._wake_w = os.pipe()
        self._opened = time.monotonic()
        self._thread = threading.Thread(target=self._relay, name="rs485-wire", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping = True
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(5)
        with self._lock:
            for pty in self._ptys:
                if pty is not None:
                    pty.close()
            self._ptys = [None, None]
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def unplug(self) -> None:
        """The master's adapter goes away: its device file vanishes and an open one fails."""
        with self._lock:
            pty = self._ptys[MASTER]
            self._ptys[MASTER] = None
        if pty is not None:
            pty.close()
        os.write(self._wake_w, b"x")

    def plug(self) -> None:
        with self._lock:
            self._ptys[MASTER] = _Pty(self.master_link)
        os.write(self._wake_w, b"x")

    def stats(self) -> WireStats:
        with self._lock:
            now = time.monotonic()
            # Busy time is booked when bytes are placed on the line; what is still to come is not yet spent.
            busy = self._busy - max(0.0, self._line_free - now)
            return WireStats(now - self._opened, self._bytes[MASTER], self._bytes[DEVICES], busy, self._violations,
                             self._collisions)

    def _relay(self) -> None:
        pending: deque[tuple[float, int, bytes]] = deque()  # (when, to side, bytes), in time order
        line_free = 0.0  # when the line's last character ends
        talker: int | None = None
        while not self._stopping:
            with self._lock:
                fds = {p.fd: side for side, p in enumerate(self._ptys) if p is not None}
            timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
            ready, _, _ = select.select([*fds, self._wake_r], [], [], timeout)
            now = time.monotonic()
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            for fd in ready:
                if fd not in fds:
                    continue
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                side = fds[fd]
                start = self._place(side, talker, now, line_free)
                talker = side
                line_free = start + len(data) * self.char_s
                with self._lock:
                    self._bytes[side] += len(data)
                    self._busy += len(data) * self.char_s
                    self._line_free = line_free
                step = max(1, int(SLICE_S / self.char_s)) if self.char_s else len(data)
                for i in range(0, len(data), step):
                    piece = data[i:i + step]
                    pending.append((start + (i + len(piece)) * self.char_s, 1 - side, piece))
            while pending and pending[0][0] <= time.monotonic() + 0.00005:
                _, to, piece = pending.popleft()
                with self._lock:
                    pty = self._ptys[to]
                if pty is not None:
                    with contextlib.suppress(OSError):  # nobody listening there: lost, as on a wire
                        os.write(pty.fd, piece)

    def _place(self, side: int, talker: int | None, now: float, line_free: float) -> float:
        """When bytes written at `now` by `side` go onto the line."""
        if side == talker and now <= line_free:
            return line_free  # more of the same frame
        if side == DEVICES:
            return max(now, line_free + self.gap_s)  # a device hears the request end by the silence
        if talker is not None and now < line_free + self.gap_s:
            with self._lock:
                self._violations += 1
                self._collisions += now < line_free
        return max(now, line_free)
