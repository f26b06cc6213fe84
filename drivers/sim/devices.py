"""The virtual venue's measuring devices: what its physics says goes out through simulated hardware on
pseudo-terminals, for the gateway's real drivers to read, as in a venue. A power meter per mains circuit on a
Modbus RTU bus (pymodbus's server behind a simulated 9600-baud wire), an NTi XL2 sound level meter per zone, and an
environmental sensor node per zone printing its reading set once a second. Needs the `sim` extra (pymodbus).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from drivers.sim.modbus_devices import MODELS, SimulatedDevice, VirtualModbusBus
from drivers.sim.serial_devices import PtyDevice, SimNode, SimXl2
from drivers.sim.venue import VenueLayout, circuit_id
from gateway.driver import Reading

NODE_FIELDS = {"temperature_c": "t", "humidity_pct": "rh", "co2_ppm": "co2"}  # the nodes' own short names


class VenueDevices:
    """Built from the venue's layout; `feed` takes a tick's readings, sets the devices by those they measure and
    returns the rest, which the venue driver publishes itself."""

    def __init__(self, layout: VenueLayout, prefix: str) -> None:
        self.prefix = prefix
        self.meters = [SimulatedDevice(circuit_id(i), i + 1, MODELS["pm3"]) for i in range(layout.circuits)]
        self.units = {d.name: d.unit for d in self.meters}
        self.bus = VirtualModbusBus(self.meters, Path(f"{prefix}-rs485"), 9600, "E")
        self.zones = [z.name for z in layout.zones]
        self.xl2_devices = {z: PtyDevice() for z in self.zones}
        self.xl2: dict[str, SimXl2] = {}
        self.nodes_device = PtyDevice()
        self.nodes: dict[str, SimNode] = {}

    def assets(self) -> set[str]:
        """The venue's assets these devices report (through the gateway's drivers, which declare them)."""
        return {*self.units, *(f"spl:{z}" for z in self.zones), *(f"env:{z}" for z in self.zones)}

    async def start(self) -> None:
        try:
            await self.bus.start()
            for zone, device in self.xl2_devices.items():
                device.create(f"{self.prefix}-xl2-{zone}")
                self.xl2[zone] = SimXl2(device, serial=f"A2A-{10000 + len(self.xl2):05d}-E0")
            self.nodes_device.create(f"{self.prefix}-nodes")
        except BaseException:
            await self.stop()
            raise
        for zone in self.zones:
            node = self.nodes[zone] = SimNode(self.nodes_device, f"env-{zone}", {}, period_s=1.0)
            node.start()

    async def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for device in (*self.xl2_devices.values(), self.nodes_device):
            device.close()
        await self.bus.stop()

    def feed(self, readings: Sequence[Reading]) -> list[Reading]:
        rest: list[Reading] = []
        mains: dict[str, dict[str, float]] = {}
        for r in readings:
            kind, _, name = r.asset.partition(":")
            if kind == "spl" and name in self.xl2 and r.metric == "laeq_db":
                self.xl2[name].level_db = r.value
            elif kind == "env" and name in self.nodes and r.metric in NODE_FIELDS:
                self.nodes[name].values[NODE_FIELDS[r.metric]] = r.value
            elif r.asset in self.units:
                mains.setdefault(r.asset, {})[r.metric] = r.value
            else:
                rest.append(r)
        for asset, values in mains.items():
            self.bus.set_values(self.units[asset], _three_phase(values))
        return rest


def _three_phase(values: dict[str, float]) -> dict[str, float]:
    """The venue's circuit (volts, amps, kW, Hz as one figure) as a 3-phase meter shows it, load shared evenly."""
    out: dict[str, float] = {}
    if "voltage_v" in values:
        v = values["voltage_v"]
        out |= {"voltage_v": v, "voltage_ll_v": v * math.sqrt(3),
                **{f"voltage_{p}_v": v for p in ("l1", "l2", "l3")},
                **{f"voltage_{p}_v": v * math.sqrt(3) for p in ("l12", "l23", "l31")}}
    if "current_a" in values:
        out |= {f"current_{p}_a": values["current_a"] / 3 for p in ("l1", "l2", "l3")}
    if "power_kw" in values:
        kw = values["power_kw"]
        out |= {"power_kw": kw, **{f"power_{p}_kw": kw / 3 for p in ("l1", "l2", "l3")}}
    if "frequency_hz" in values:
        out["frequency_hz"] = values["frequency_hz"]
    return out
