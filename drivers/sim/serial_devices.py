"""Simulated serial devices for the demo and the tests: line-protocol sensor nodes and an NTi XL2 sound level
meter answering its remote measurement subset, each on the device side of a pseudo-terminal.

The gateway's drivers open the other side exactly as they would a USB serial device, so only the wire is fake.
In the demo the pty is made here (os.openpty and a symlink: no socat at run time); tests put the devices on the
far end of a socat pair, which they can kill to unplug the device.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from drivers.serial import xl2_protocol as xl2
from drivers.serial.lines import LineFramer, encode_line

T = TypeVar("T")
COMMANDS_KEPT = 10_000  # a simulated meter's record of the commands it heard: the latest, not a month of polling


class PtyDevice:
    """The device's end of a serial line. Writes that the line cannot take are dropped, as a UART's would be."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._held: int | None = None  # our own hold on the gateway's side, so its closing is not an error here
        self.link: str | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self.dropped = 0

    def create(self, link: str) -> None:
        """A new pty, its gateway side linked at `link` (where a venue has /dev/serial/by-id/...)."""
        main, side = os.openpty()
        tty.setraw(side)  # no echo, no line discipline until the gateway's pyserial sets the port up itself
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(os.ttyname(side), link)
        self.link, self._held = link, side
        self._use(main)

    def attach(self, path: str) -> None:
        """The far end of a socat pair (or any tty) at `path`."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        self._use(fd)

    def _use(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        assert self.fd is not None
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:  # the other side is gone (socat killed): stop listening until attached again
            data = b""
        if not data:
            self.detach()
        elif self.on_data is not None:
            self.on_data(data)

    def write(self, data: bytes) -> bool:
        if self.fd is None:
            self.dropped += 1
            return False
        try:
            os.write(self.fd, data)
            return True
        except OSError:  # full (nobody reads the gateway's side) or gone
            self.dropped += 1
            return False

    def detach(self) -> None:
        if self.fd is not None:
            asyncio.get_running_loop().remove_reader(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        self.detach()
        if self._held is not None:
            os.close(self._held)
            self._held = None
        if self.link is not None and os.path.islink(self.link):
            os.unlink(self.link)


@dataclass
class SimNode:
    """A microcontroller node printing its reading set every `period_s`. `values` may be changed at any time;
    `inject` puts raw bytes on the line (garbage, a corrupted line)."""

    device: PtyDevice
    node: str
    values: dict[str, float]
    form: Literal["json", "kv"] = "json"
    checksum: bool = True
    period_s: float = 1.0
    sent: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def line(self) -> bytes:
        return encode_line(self.node, self.values, form=self.form, checksum=self.checksum)

    def inject(self, data: bytes) -> None:
        self.device.write(data)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            if self.device.write(self.line()):
                self.sent += 1
            await asyncio.sleep(self.period_s)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class SimXl2:
    """An XL2 in COM mode with the Remote Measurement option: the subset of drivers/serial/xl2_protocol.py.
    Its level is `level_db` (set it, e.g. from the virtual venue's physics); `mode` makes it go silent or babble."""

    def __init__(self, device: PtyDevice, *, serial: str = "A2A-00000-E0", firmware: str = "V4.71",
                 level_db: float = 94.0) -> None:
        self.device = device
        device.on_data = self._received
        self.serial, self.firmware = serial, firmware
        self.framer = LineFramer(256)
        self.mode: Literal["normal", "silent", "garbage"] = "normal"
        self.status: xl2.Status = "ok"
        self.licensed = True  # False: a meter without the Remote Measurement option (no results)
        self.function = "SLMeter"
        self.running = False
        self.errors: list[int] = []
        self.commands: list[str] = []  # the commands heard (the latest COMMANDS_KEPT at most), for tests
        self._level = level_db
        self._since = time.monotonic()
        self._window: tuple[float, float, float] = (0.0, 0.0, -math.inf)  # (start, energy x s, max)
        self._dt: dict[str, float] | None = None
        self._dt_s = 0.0

    @property
    def level_db(self) -> float:
        return self._level

    @level_db.setter
    def level_db(self, value: float) -> None:
        self._accumulate()
        self._level = value

    def _accumulate(self) -> None:
        now = time.monotonic()
        start, energy, peak = self._window
        self._window = (start, energy + 10 ** (self._level / 10) * (now - self._since), max(peak, self._level))
        self._since = now

    def _open_window(self) -> None:
        self._accumulate()
        start, energy, peak = self._window
        now = time.monotonic()
        if self.running and now > start and energy > 0:
            laeq = 10 * math.log10(energy / (now - start))
            # Steady music: fast-weighted maximum a little above the interval's Leq, C-weighted peak well above.
            self._dt = {"LAEQ": laeq, "LAFMAX": peak + 1.5, "LCPKMAX": peak + 15.0}
            self._dt_s = now - start
        self._window = (now, 0.0, self._level)

    def _received(self, data: bytes) -> None:
        for line in self.framer.feed(data):
            text = line.decode("ascii", "replace").strip()
            if not text or self.mode == "silent":
                continue
            if len(self.commands) >= COMMANDS_KEPT:  # a month of polling would not fit
                del self.commands[:COMMANDS_KEPT // 2]
            self.commands.append(text)
            answer = self.answer(text)
            if answer is not None:
                self.device.write(b"\x15#?garbage\xff\r\n" if self.mode == "garbage" else (answer + "\r\n").encode())

    def answer(self, text: str) -> str | None:
        """The meter's answer to one command line (None: it answers nothing, as for every non-query)."""
        header, _, rest = text.partition(" ")
        args = rest.split()
        command = xl2.canonical(header)
        if command is None:
            self.errors.append(-113)  # "Invalid command", into the error queue; the meter says nothing
            return None
        if command == "*IDN?":
            return f"NTiAudio,XL2,{self.serial},{self.firmware}"
        if command == "*RST":
            self.running, self.function, self._dt, self.errors = False, "SLMeter", None, []
        elif command == "MEASure:FUNCtion":
            self.function = "SLMeter" if args and args[0].upper() in ("SLM", "SLMETER") else args[0] if args else ""
        elif command == "MEASure:FUNCtion?":
            return self.function
        elif command == "INITiate" and args and args[0].upper() in ("START", "STOP"):
            self.running = args[0].upper() == "START"
            self._dt = None
            self._open_window()
        elif command == "INITiate:STATe?":
            return "RUNNING" if self.running else "STOPPED"
        elif command == "MEASure:INITiate":
            self._open_window()
        elif command in ("MEASure:SLMeter:123:dt?", "MEASure:SLMeter:123?") and not self.licensed:
            self.errors.append(5)  # "Parameter not available, license not installed"
        elif command in ("MEASure:SLMeter:123:dt?", "MEASure:SLMeter:123?"):
            return self._results(command.endswith("dt?"), [a.upper() for a in args])
        elif command == "MEASure:DTTIme?":
            return f"{self._dt_s:.2f} sec,OK"
        elif command == "SYSTem:ERRor?":
            errors, self.errors = self.errors or [0], []
            return ",".join(map(str, errors))
        else:
            self.errors.append(-109)  # "Missing command or parameter"
        return None

    def _results(self, dt: bool, parameters: list[str]) -> str | None:
        if len(parameters) != 1 or self.function != "SLMeter":
            self.errors.append(-108 if parameters else -109)
            return None
        name = parameters[0]
        if dt:
            if name not in ("LAEQ", "LAFMAX", "LCPKMAX"):
                self.errors.append(6)  # "dt value does not exist for this parameter"
                return None
            value = self._dt.get(name) if self._dt is not None and self.running else None
        else:
            value = self._level if self.running else None
        return xl2.format_level(xl2.Level(None if value is None else round(value, 1), self.status))


class BackgroundLoop:
    """An event loop in a thread: a test process runs the simulated devices there while it waits on the gateway."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim-devices", daemon=True)
        self.thread.start()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the loop and return its result."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=5)

    def close(self) -> None:
        def stop() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.call_soon(self.loop.stop)

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(timeout=5)
