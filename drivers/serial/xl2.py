"""The `xl2` driver: an NTi Audio XL2 sound level meter on its USB serial port (Remote Measurement), logging the
LAeq of every interval (and LAFmax, LCpeak) for the compliance monitor, as asset `spl:<zone>` (kind spl_meter).

Each interval's readings are stamped with its end. A meter that does not answer, or answers garbage, a few times
in a row is reported offline and asked who it is once an interval; when it answers it is set up again. A level
outside 0..150 dB is flagged, not believed. A port that goes away is `NotReady` (the supervisor reconnects).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from drivers.serial import xl2_protocol as xl2
from drivers.serial.lines import LineFramer
from drivers.serial.port import SerialPort
from gateway.driver import Driver, DriverContext, Problem, Reading, setting

PHYSICAL_DB = (0.0, 150.0)  # what a sound level in air at a venue can be; beyond it the meter is wrong
MAX_ANSWER = 256  # longer than any answer to the commands used; longer lines are garbage


@dataclass(frozen=True)
class Xl2Options:
    port: str  # /dev/serial/by-id/usb-NTiAudio_XL2_...-if00 (vendor 1a2b, product 0004 in COM mode)
    zone: str
    asset: str | None = None  # default spl:<zone>
    baudrate: int = setting(115200, min=1200, max=4_000_000)  # a USB CDC port: the rate does not matter
    interval_s: float = setting(1.0, min=0.1, max=60)
    timeout_s: float = setting(0.5, min=0.05, max=10)  # for each answer
    setup_timeout_s: float = setting(3.0, min=0.1, max=30)  # for the answer that ends the setup (*RST is slow)
    offline_after: int = setting(3, min=1, max=100)  # failed intervals in a row
    reset: bool = True  # *RST before starting: the manual's advice for a remote session; false keeps a profile
    lcpeak: bool = True  # also log LCPKMAX each interval
    lafmax: bool = True  # also log LAFMAX each interval

    def problems(self) -> list[Problem]:
        if self.timeout_s >= self.interval_s:
            return [Problem("timeout_s", f"{self.timeout_s} is not shorter than interval_s (allowed: less)")]
        return []


class Xl2Meter(Driver[Xl2Options]):
    Options = Xl2Options

    def __init__(self, ctx: DriverContext, options: Xl2Options) -> None:
        super().__init__(ctx, options)
        self.port = SerialPort(options.port, options.baudrate)
        self.asset = options.asset or f"spl:{options.zone}"
        self.metrics = {m: p for m, p in xl2.DT_PARAMETERS.items()
                        if m == "laeq_db" or (m == "lafmax_db" and options.lafmax)
                        or (m == "lcpeak_db" and options.lcpeak)}
        self.framer = LineFramer(MAX_ANSWER)
        self._lines: deque[bytes] = deque()
        self.online = False
        self.identity: xl2.Identity | None = None
        self.failures = 0  # failed intervals in a row
        self.good_since_setup = 0
        self.futile_setups = 0  # set-ups in a row after which no interval gave a result
        self._skip = 0  # intervals to let pass before the next set-up, after futile ones
        self.status: xl2.Status = "ok"
        self.out_of_range: list[str] = []
        self.counts = dict.fromkeys(("intervals", "readings", "timeouts", "bad_answers", "no_value", "stray_lines",
                                     "out_of_range", "overload", "underrange", "setups", "overruns"), 0)

    async def start(self) -> None:
        self.ctx.declare(self.asset, "spl_meter", self.options.zone)
        try:
            await self.port.open()
        except BaseException:
            self.ctx.report(self.asset, {"online": False, "connected": False})
            raise
        self.ctx.report(self.asset, {"online": False, "connected": True, "port": self.options.port})
        self.ctx.log.info("XL2 port %s open", self.options.port)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if self.online:
                await self._interval()
            elif self._skip:
                self._skip -= 1
            else:
                await self._set_up()
            due += self.options.interval_s
            if due < loop.time():  # the meter took longer than an interval: start afresh, never catch up
                self.counts["overruns"] += 1
                due = loop.time() + self.options.interval_s
            await self._wait_until(due)

    async def stop(self) -> None:
        self.port.close()
        self.ctx.report(self.asset, {"online": False, "connected": False})

    # -- talking -------------------------------------------------------------------------------------------
    async def _wait_until(self, due: float) -> None:
        """Sleep until `due`, reading meanwhile so that a vanished port is noticed and strays are counted."""
        loop = asyncio.get_running_loop()
        while (left := due - loop.time()) > 0:
            data = await self.port.read(left)
            if data:
                self._take(data)
        self._drop_strays()

    def _drop_strays(self) -> None:
        """Lines nobody asked for (a late answer to a query that timed out): dropped, so answers stay in step."""
        self.counts["stray_lines"] += len(self._lines)
        self._lines.clear()

    async def _ask(self, query: bytes, wait_s: float) -> bytes | None:
        self._drop_strays()
        self.port.write(query)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not self._lines:
            left = deadline - loop.time()
            data = await self.port.read(left) if left > 0 else None
            if data is None:
                self.counts["timeouts"] += 1
                return None
            self._take(data)
        return self._lines.popleft()

    def _take(self, data: bytes) -> None:
        self._lines.extend(line for line in self.framer.feed(data) if line.strip())

    async def _set_up(self) -> None:
        """Who is there? If an XL2 answers: SLMeter, measurement running, first interval open."""
        answer = await self._ask(xl2.command(xl2.IDENTIFY), self.options.timeout_s)
        if answer is None:
            return
        try:
            identity = xl2.parse_identity(answer)
        except xl2.Xl2Error as exc:
            self.counts["bad_answers"] += 1
            self.ctx.log.debug("not an identity: %s", exc)
            return
        steps = ([xl2.RESET] if self.options.reset else []) + [xl2.FUNCTION_SLM, xl2.START, xl2.TRIGGER]
        self.port.write(b"".join(xl2.command(c) for c in steps))  # the meter answers none of these
        answer = await self._ask(xl2.command(xl2.STATE), self.options.setup_timeout_s)
        try:
            state = xl2.parse_state(answer) if answer is not None else None
        except xl2.Xl2Error:
            self.counts["bad_answers"] += 1
            return
        if state not in xl2.RUNNING_STATES:
            self.ctx.log.warning("XL2 %s did not start measuring (state %s)", identity.serial, state)
            return
        self.identity, self.online, self.failures, self.good_since_setup = identity, True, 0, 0
        self.counts["setups"] += 1
        self.ctx.log.info("XL2 %s (firmware %s) measuring on %s", identity.serial, identity.firmware,
                          self.options.port)
        self.ctx.report(self.asset, {"online": True, "identity": str(identity), "state": state})

    async def _interval(self) -> None:
        """Close the interval, ask for its results, publish what is believable, stamped with its end."""
        self._drop_strays()
        self.port.write(xl2.command(xl2.TRIGGER))
        end = time.time()
        readings: list[Reading] = []
        flagged: list[str] = []
        status: xl2.Status = "ok"
        failed = False
        for metric, parameter in self.metrics.items():
            answer = await self._ask(xl2.dt_query(parameter), self.options.timeout_s)
            if answer is None:
                failed = True
                break
            try:
                level = xl2.parse_level(answer)
            except xl2.Xl2Error as exc:
                self.counts["bad_answers"] += 1
                self.ctx.log.debug("bad answer to %s: %s", parameter, exc)
                failed = True
                break
            if level.value is None:  # the meter answers but does not measure (stopped at its keys, say)
                self.counts["no_value"] += 1
                failed = True
                break
            if level.status != "ok":
                status = level.status
                self.counts[level.status] += 1
            if PHYSICAL_DB[0] <= level.value <= PHYSICAL_DB[1]:
                readings.append(Reading(end, self.asset, metric, level.value))
            else:
                self.counts["out_of_range"] += 1
                flagged.append(metric)
        self.counts["intervals"] += 1
        if readings:  # an overloaded level is a lower bound, still the best there is: published, flagged
            self.counts["readings"] += len(readings)
            self.ctx.publish(readings)
        self._flag(flagged, status)
        self.failures = self.failures + 1 if failed else 0
        if not failed:
            self.good_since_setup += 1
            self.futile_setups = 0
        if failed and self.failures >= self.options.offline_after:
            self.online = False
            self.ctx.log.warning("XL2 on %s: no good answer %d intervals in a row; offline", self.options.port,
                                 self.failures)
            self.ctx.report(self.asset, {"online": False})
            if not self.good_since_setup:
                # It answers *IDN? and starts, yet gives no results (no Remote Measurement option?): set it up
                # again less and less often rather than resetting it every few seconds.
                self.futile_setups += 1
                self._skip = min(2 ** self.futile_setups, max(1, round(60 / self.options.interval_s)))
                self.ctx.log.warning("XL2 set up but no results: is its Remote Measurement option installed? "
                                     "next set-up in %d intervals", self._skip)

    def _flag(self, out_of_range: list[str], status: xl2.Status) -> None:
        changes: dict[str, Any] = {}
        if out_of_range != self.out_of_range:
            if out_of_range:
                self.ctx.log.warning("XL2 %s outside %s dB: not believed", out_of_range, PHYSICAL_DB)
            self.out_of_range = out_of_range
            changes["out_of_range"] = out_of_range
        if status != self.status:
            self.status = status
            changes["status"] = status
        if changes:
            self.ctx.report(self.asset, changes)

    def health(self) -> dict[str, Any]:
        return {"port": self.options.port, "online": self.online, "futile_setups": self.futile_setups,
                "identity": str(self.identity) if self.identity else None, **self.counts,
                "overlong_answers": self.framer.overlong}
