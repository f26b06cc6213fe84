"""The `modbus` driver: one Modbus RTU bus (RS-485) with its devices, polled by register maps from the config.

One request at a time on the bus, earliest-due device first; a device that stops answering is offline in the
twin and tried again with backoff while the others go on; a value outside its physical range is flagged, not
published; a port that is missing or vanishes is `NotReady`, and is picked up again when it comes back.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from drivers.serial.modbus_codec import ReadRequest
from drivers.serial.modbus_link import ModbusLink
from drivers.serial.registers import Block, RegisterMap
from drivers.serial.scheduler import PollSchedule, PollState
from gateway.driver import Driver, DriverContext, NotReady, Problem, Reading, setting

BACKOFF_INITIAL_S = 1.0
# Exception codes 10 and 11: a gateway on the bus says the device behind it is not there.
NO_DEVICE_EXCEPTIONS = (10, 11)


@dataclass(frozen=True)
class DeviceOptions:
    name: str  # its asset id in the twin, as given
    unit: int = setting(min=1, max=247)
    map: str = setting()
    kind: str = "modbus_device"
    zone: str | None = None
    interval_ms: int = setting(1000, min=0, max=3_600_000)  # 0: as often as the bus allows


@dataclass(frozen=True)
class ModbusOptions:
    port: str  # a stable path (/dev/serial/by-id/...) or any pyserial URL
    baudrate: int = setting(9600, min=300, max=4_000_000)
    parity: Literal["N", "E", "O"] = "E"  # Modbus RTU's default is 8E1
    stopbits: int = setting(1, min=1, max=2)
    timeout_ms: int = setting(250, min=1, max=10_000)  # the device's allowance beyond the wire time
    retries: int = setting(1, min=0, max=5)  # per request, while the device is online
    offline_after: int = setting(3, min=1, max=100)  # consecutive failed polls
    offline_backoff_max_s: float = setting(60.0, min=0.1, max=3600)
    report_s: float = setting(5.0, min=0.2, max=600)  # the bus's counters into the twin
    maps: list[RegisterMap] = field(default_factory=list)
    devices: list[DeviceOptions] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        out = []
        maps: dict[str, int] = {}
        for i, m in enumerate(self.maps):
            if m.name in maps:
                out.append(Problem(f"maps[{i}].name", f"{m.name!r} is already maps[{maps[m.name]}]"))
            maps.setdefault(m.name, i)
        if not self.devices:
            out.append(Problem("devices", "a bus needs at least one device"))
        units: dict[int, int] = {}
        names: dict[str, int] = {}
        for i, d in enumerate(self.devices):
            if d.map not in maps:
                out.append(Problem(f"devices[{i}].map", f"{d.map!r} is not a map of this bus "
                                                        f"(allowed: {', '.join(maps) or 'none: add [[maps]]'})"))
            if d.unit in units:
                out.append(Problem(f"devices[{i}].unit", f"unit {d.unit} is already devices[{units[d.unit]}]"))
            if d.name in names:
                out.append(Problem(f"devices[{i}].name", f"{d.name!r} is already devices[{names[d.name]}]"))
            if not d.name:
                out.append(Problem(f"devices[{i}].name", "must not be empty"))
            units.setdefault(d.unit, i)
            names.setdefault(d.name, i)
        return out


@dataclass
class BusDevice:
    options: DeviceOptions
    blocks: list[Block]
    requests: list[ReadRequest]
    exceptions: int = 0
    last_exception: int | None = None  # of the last poll, as reported in the twin
    out_of_range: int = 0
    flagged: dict[str, float] = field(default_factory=dict)  # metric -> the value when it was flagged


class ModbusBus(Driver[ModbusOptions]):
    Options = ModbusOptions

    def __init__(self, ctx: DriverContext, options: ModbusOptions) -> None:
        super().__init__(ctx, options)
        maps = {m.name: m for m in options.maps}
        self.devices = []
        for d in options.devices:
            blocks = maps[d.map].blocks()
            self.devices.append(BusDevice(d, blocks, [ReadRequest(d.unit, b.function, b.address, b.count)
                                                      for b in blocks]))
        self.bus_asset = f"bus:{ctx.name}"
        self.link = ModbusLink(options.port, options.baudrate, options.parity, options.stopbits,
                               options.timeout_ms / 1000)
        self.schedule = PollSchedule([d.options.interval_ms / 1000 for d in self.devices],
                                     offline_after=options.offline_after, backoff_initial=BACKOFF_INITIAL_S,
                                     backoff_max=options.offline_backoff_max_s, now=time.monotonic())
        self.readings = 0
        self._window = (time.monotonic(), 0)  # (since, bytes on the wire then), for the utilisation
        self.utilisation = 0.0

    async def start(self) -> None:
        await self.link.open()
        self.ctx.declare(self.bus_asset, "serial_bus")
        for dev in self.devices:
            d = dev.options
            self.ctx.declare(d.name, d.kind, d.zone)
            # What a previous run flagged is judged again by this run's first poll.
            self.ctx.report(d.name, {"bus": self.ctx.name, "unit": d.unit, "map": d.map, "out_of_range": None})
        self._window = (time.monotonic(), 0)
        self._report_bus()
        self.ctx.log.info("Modbus bus on %s, %d baud, %d devices", self.options.port, self.options.baudrate,
                          len(self.devices))

    async def run(self) -> None:
        # Not a TaskGroup: NotReady must reach the supervisor as itself, not inside an ExceptionGroup.
        reporter = asyncio.get_running_loop().create_task(self._report_every())
        try:
            await self._poll_forever()
        finally:
            reporter.cancel()

    async def stop(self) -> None:
        self.link.close()
        self._report_bus()
        for dev, state in zip(self.devices, self.schedule.devices, strict=True):
            if state.online:
                self.ctx.report(dev.options.name, {"online": False, "error": "the bus is down"})

    async def _poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            state, due = self.schedule.next_due()
            wait = due - loop.time()
            if wait > 0:
                await self.link.idle(wait)  # cut short if the port goes away, however long the backoff
            if self.link.vanished():
                raise NotReady(f"{self.options.port} went away (unplugged?)")
            self.schedule.start(state, loop.time())
            dev = self.devices[state.index]
            ok = await self._poll(dev, state)
            changed = self.schedule.done(state, ok, loop.time())
            if changed is not None:
                d = dev.options
                error = None if changed else "not answering"
                if changed:
                    self.ctx.log.info("device %s (unit %d) online", d.name, d.unit)
                else:
                    self.ctx.log.warning("device %s (unit %d) offline: not answering; retried with backoff",
                                         d.name, d.unit)
                self.ctx.report(d.name, {"online": changed, "error": error})

    async def _poll(self, dev: BusDevice, state: PollState) -> bool:
        """Read every block of the device; False if it did not answer."""
        attempts = 1 if state.online is False else 1 + self.options.retries
        readings: list[Reading] = []
        flagged: dict[str, float] = {}
        exception = None
        for block, request in zip(dev.blocks, dev.requests, strict=True):
            response = None
            for _ in range(attempts):
                response = await self.link.transact(request)
                if response is not None:
                    break
                if self.link.vanished():
                    raise NotReady(f"{self.options.port} went away (unplugged?)")
            if response is None:
                return False  # its other blocks would only cost the bus more timeouts
            if response.exception is not None:
                dev.exceptions += 1
                if response.exception in NO_DEVICE_EXCEPTIONS:
                    return False
                exception = response.exception  # the device is there, but refuses this read (a wrong map?)
                continue
            ts = time.time()
            for register, value in block.decode(response.registers):
                if register.believable(value):
                    readings.append(Reading(ts, dev.options.name, register.metric, value))
                else:
                    flagged[register.metric] = value
        self.ctx.publish(readings)
        self.readings += len(readings)
        if exception != dev.last_exception:
            if exception is not None:
                self.ctx.log.warning("device %s (unit %d) answers with exception %d", dev.options.name,
                                     dev.options.unit, exception)
            dev.last_exception = exception
            self.ctx.report(dev.options.name, {"exception": exception})
        if flagged:
            dev.out_of_range += len(flagged)
        if flagged.keys() != dev.flagged.keys():
            if flagged:
                self.ctx.log.warning("device %s: out of physical range, not published: %s", dev.options.name,
                                     ", ".join(f"{m}={v:g}" for m, v in flagged.items()))
            # A merge patch: metrics back in range are removed with null.
            patch: dict[str, Any] = dict.fromkeys(dev.flagged)
            patch.update({m: _json_number(v) for m, v in flagged.items()})
            dev.flagged = flagged
            self.ctx.report(dev.options.name, {"out_of_range": patch})
        return True

    async def _report_every(self) -> None:
        while True:
            await asyncio.sleep(self.options.report_s)
            self._report_bus()

    def _report_bus(self) -> None:
        now = time.monotonic()
        on_wire = self.link.bytes_out + self.link.bytes_in
        since, before = self._window
        if now - since > 0.05:
            self.utilisation = (on_wire - before) * self.link.char_s / (now - since)
            self._window = (now, on_wire)
        self.ctx.report(self.bus_asset, self._bus_state())

    def _bus_state(self) -> dict[str, Any]:
        link = self.link
        online = sum(1 for s in self.schedule.devices if s.online)
        return {
            "port": self.options.port, "connected": link.connected, "baudrate": self.options.baudrate,
            "utilisation": round(self.utilisation, 4), "requests": link.requests, "answers": link.answers,
            "timeouts": link.timeouts, "crc_errors": link.decoder.crc_errors,
            "garbage_bytes": link.decoder.garbage_bytes, "exceptions": sum(d.exceptions for d in self.devices),
            "out_of_range": sum(d.out_of_range for d in self.devices),
            "overruns": sum(s.overruns for s in self.schedule.devices),
            "devices_online": online, "devices_offline": len(self.devices) - online,
        }

    def health(self) -> dict[str, Any]:
        devices = {}
        for dev, s in zip(self.devices, self.schedule.devices, strict=True):
            devices[dev.options.name] = {
                "unit": dev.options.unit, "online": s.online, "polls": s.polls, "failed_polls": s.failed_polls,
                "overruns": s.overruns, "exceptions": dev.exceptions, "out_of_range": dev.out_of_range,
                "poll_interval_ms": round(statistics.median(s.gaps) * 1000, 1) if s.gaps else None,
            }
        return {**self._bus_state(), "bytes_out": self.link.bytes_out, "bytes_in": self.link.bytes_in,
                "readings": self.readings, "devices": devices}


def _json_number(value: float) -> float | str:
    return value if value == value and abs(value) != float("inf") else str(value)
