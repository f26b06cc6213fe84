"""The `sim` driver: runs the virtual venue against the clock (at any speed) and feeds it to the gateway
through the same driver API as real hardware. Amplifiers take desired state (`enabled`, `gain_db`).

With `devices`, what the venue's meters measure goes out through simulated hardware instead (drivers/sim/devices.py:
a Modbus bus of power meters, an XL2 sound level meter and a sensor node per zone, on pseudo-terminals named from
`device_prefix`), and the gateway's own `modbus`, `xl2` and `nodes` drivers read it, as in a venue."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.sim.show import ShowTiming
from drivers.sim.venue import Fault, FaultKind, VenueLayout, VirtualVenue, Zone, random_faults
from gateway.driver import Driver, DriverContext, Problem, importable, setting

if TYPE_CHECKING:
    from drivers.sim.devices import VenueDevices

CHUNK = 400  # readings published per slice of a tick, so a large venue never holds the loop for long


@dataclass(frozen=True)
class ZoneOptions:
    name: str
    capacity: int = setting(500, min=1, max=200_000)
    distance_m: float = setting(20.0, min=0, max=1000)


@dataclass(frozen=True)
class FaultOptions:
    kind: FaultKind
    asset: str
    at_min: float = setting(min=0)
    duration_min: float = setting(0.0, min=0)  # 0: until the end of the night


def _default_zones() -> list[ZoneOptions]:
    return [ZoneOptions("floor", 1200, 10.0), ZoneOptions("balcony", 400, 35.0), ZoneOptions("bar", 150, 45.0)]


@dataclass(frozen=True)
class SimOptions:
    seed: int = 1
    speed: float = setting(1.0, min=0.01, max=1000)  # show seconds per real second
    start_min: float = setting(0.0, min=0)  # where in the night to begin (doors open at 0)
    loop: bool = True  # start the night again after egress
    sample_interval_s: float = setting(1.0, min=0.05, max=60)
    zones: list[ZoneOptions] = field(default_factory=_default_zones)
    racks: int = setting(4, min=0, max=2000)
    channels_per_rack: int = setting(4, min=1, max=16)
    circuits: int = setting(2, min=1, max=26)
    faults: list[FaultOptions] = field(default_factory=list)
    random_faults_per_hour: float = setting(0.0, min=0, max=100)
    timing: ShowTiming = field(default_factory=ShowTiming)
    devices: bool = False
    device_prefix: str = "/tmp/venue-gateway"  # <prefix>-rs485, <prefix>-xl2-<zone>, <prefix>-nodes

    def layout(self) -> VenueLayout:
        return VenueLayout(tuple(Zone(z.name, z.capacity, z.distance_m) for z in self.zones), self.racks,
                           self.channels_per_rack, self.circuits)

    def problems(self) -> list[Problem]:
        out = []
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            out.append(Problem("zones", "zone names must be unique"))
        assets = self.layout().assets()
        for i, f in enumerate(self.faults):
            wanted = "power" if f.kind == "breaker_trip" else "amplifier"
            if assets.get(f.asset, ("",))[0] != wanted:
                examples = [a for a, (kind, _) in assets.items() if kind == wanted][:3]
                out.append(Problem(f"faults[{i}].asset", f"{f.asset!r} is not a {wanted} of this venue "
                                                         f"(allowed: e.g. {', '.join(examples) or 'none'})"))
        return out

    def fault_list(self) -> list[Fault]:
        return [Fault(f.kind, f.asset, f.at_min * 60,
                      f.at_min * 60 + f.duration_min * 60 if f.duration_min else math.inf) for f in self.faults]


class SimVenueDriver(Driver[SimOptions]):
    Options = SimOptions

    @classmethod
    def preflight(cls, options: SimOptions) -> list[Problem]:
        return importable("pymodbus", "devices", "sim") if options.devices else []

    def __init__(self, ctx: DriverContext, options: SimOptions) -> None:
        super().__init__(ctx, options)
        layout = options.layout()
        self.venue = VirtualVenue(options.seed, layout, [], options.timing)
        self.venue.faults = sorted(
            options.fault_list()
            + random_faults(options.seed, layout, self.venue.show, options.random_faults_per_hour),
            key=lambda f: f.start)
        self.show_time = options.start_min * 60
        self.ticks = 0
        self.late_ticks = 0
        self._segment = ""
        self.devices: VenueDevices | None = None

    async def start(self) -> None:
        measured: set[str] = set()
        if self.options.devices:
            from drivers.sim.devices import VenueDevices  # pymodbus is the `sim` extra: only when asked for

            self.devices = VenueDevices(self.venue.layout, self.options.device_prefix)
            await self.devices.start()
            measured = self.devices.assets()  # declared by the drivers that read them
            self.ctx.log.info("venue devices: Modbus on %s-rs485, XL2s and nodes beside it", self.options.device_prefix)
        for asset_id, (kind, zone) in self.venue.layout.assets().items():
            if asset_id not in measured:
                self.ctx.declare(asset_id, kind, zone)
        for z in self.options.zones:  # what occupancy is a share of (the audience-mood model's fill)
            self.ctx.report(f"zone:{z.name}", {"capacity": z.capacity})
        self.ctx.declare("show", "show")

    async def stop(self) -> None:
        if self.devices is not None:
            await self.devices.stop()
            self.devices = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        dt = self.options.sample_interval_s
        period = dt / self.options.speed
        next_at = loop.time()
        while True:
            t = self.show_time + dt
            if t >= self.venue.show.duration:
                if not self.options.loop:
                    self.ctx.report("show", {"segment": "ended"})
                    await asyncio.Future()  # the night is over; the venue stays empty and quiet
                t = dt
            self.show_time = t
            readings = self.venue.step(t, dt, time.time())
            if self.devices is not None:
                readings = self.devices.feed(readings)
            for i in range(0, len(readings), CHUNK):
                self.ctx.publish(readings[i:i + CHUNK])
                await asyncio.sleep(0)
            self._report_show(t)
            self.ticks += 1
            next_at += period
            delay = next_at - loop.time()
            if delay < -5 * period:  # far behind (an overloaded box): carry on from now instead of bursting
                self.late_ticks += 1
                next_at = loop.time()
            await asyncio.sleep(max(0.0, delay))

    def _report_show(self, t: float) -> None:
        segment = self.venue.show.segment_at(t).name
        if segment != self._segment or self.ticks % 10 == 0:
            self._segment = segment
            self.ctx.report("show", {"segment": segment, "show_time_s": round(t, 1),
                                     "attendance": round(self.venue.show.attendance(t), 3)})

    def check_desired(self, asset_id: str, desired: Mapping[str, Any]) -> str | None:
        if self.venue.amp_index(asset_id) is None:
            return f"{asset_id} takes no desired state (allowed: the amplifier channels amp:*)"
        unknown = sorted(set(desired) - {"enabled", "gain_db"})
        enabled, gain = desired.get("enabled", True), desired.get("gain_db", 0.0)
        if unknown or not isinstance(enabled, bool) or isinstance(gain, bool) or not isinstance(gain, int | float) \
                or not -40 <= gain <= 6:
            return "allowed: enabled (true/false), gain_db (-40 to 6)" + (f"; no key {unknown[0]!r}" if unknown else "")
        return None

    async def apply_desired(self, asset_id: str, desired: Mapping[str, Any]) -> None:
        index = self.venue.amp_index(asset_id)
        refused = self.check_desired(asset_id, desired)  # what was set while the driver was down is checked here
        if index is None or refused is not None:
            self.ctx.report(asset_id, {"desired_error": refused})
            return
        enabled, gain = desired.get("enabled", True), desired.get("gain_db", 0.0)
        self.venue.enabled[index] = enabled
        self.venue.gain_db[index] = float(gain)
        self.ctx.report(asset_id, {"enabled": enabled, "gain_db": float(gain), "desired_error": None})

    def health(self) -> dict[str, Any]:
        active = sum(1 for f in self.venue.faults if f.active(self.show_time))
        return {"segment": self.venue.show.segment_at(self.show_time).name, "show_time_s": round(self.show_time, 1),
                "speed": self.options.speed, "ticks": self.ticks, "late_ticks": self.late_ticks,
                "faults_active": active, "assets": len(self.venue.layout.assets()) + 1,
                "amps_enabled": int(np.count_nonzero(self.venue.enabled))}
