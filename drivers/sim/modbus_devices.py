"""Simulated Modbus RTU devices served by pymodbus's own server: a 3-phase power meter, an amplifier rack's
telemetry and an environmental sensor, with their register maps; values set by name go through the same maps
the gateway reads with (drivers/serial/registers.py).

`SimulatedBus` serves any number of them on a serial port (a socat pty in tests); `VirtualModbusBus` brings its
own pair of pseudo-terminals joined by the simulated wire (drivers/sim/wire.py), for the demo and the bench.
A device can be silenced (it no longer answers, as if unplugged from the bus) and heard again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pymodbus import FramerType
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.serial.registers import TABLES, Register, RegisterMap, RegisterType, Table
from drivers.sim.wire import Wire


def _reg(metric: str, address: int, kind: RegisterType = "uint16", scale: float = 1.0, lo: float | None = None,
         hi: float | None = None, word_order: Literal["big", "little"] = "big", table: Table = "holding") -> Register:
    span = None if lo is None or hi is None else [lo, hi]
    return Register(metric, address, kind, word_order, scale, table=table, range=span)


def _power_meter() -> RegisterMap:
    """A 3-phase meter laid out as many are (Carlo Gavazzi's EM24 family, for one): 32-bit integers with the
    least significant word first, tenths of a volt, milliamps, tenths of a watt; 54 registers in one read."""
    r = []
    for i, ph in enumerate(("l1", "l2", "l3")):
        r += [_reg(f"voltage_{ph}_v", 2 * i, "int32", 0.1, 0, 300, word_order="little"),
              _reg(f"current_{ph}_a", 12 + 2 * i, "int32", 0.001, 0, 200, word_order="little"),
              _reg(f"power_{ph}_kw", 18 + 2 * i, "int32", 0.0001, -60, 60, word_order="little"),
              _reg(f"apparent_{ph}_kva", 24 + 2 * i, "int32", 0.0001, 0, 60, word_order="little"),
              _reg(f"reactive_{ph}_kvar", 30 + 2 * i, "int32", 0.0001, -60, 60, word_order="little"),
              _reg(f"pf_{ph}", 46 + i, "int16", 0.001, -1, 1)]
    for i, pair in enumerate(("l12", "l23", "l31")):
        r.append(_reg(f"voltage_{pair}_v", 6 + 2 * i, "int32", 0.1, 0, 520, word_order="little"))
    r += [_reg("voltage_v", 36, "int32", 0.1, 0, 300, word_order="little"),
          _reg("voltage_ll_v", 38, "int32", 0.1, 0, 520, word_order="little"),
          _reg("power_kw", 40, "int32", 0.0001, -180, 180, word_order="little"),
          _reg("apparent_kva", 42, "int32", 0.0001, 0, 180, word_order="little"),
          _reg("reactive_kvar", 44, "int32", 0.0001, -180, 180, word_order="little"),
          _reg("pf", 49, "int16", 0.001, -1, 1),
          _reg("phase_sequence", 50, "int16", 1, -1, 0),
          _reg("frequency_hz", 51, "int16", 0.1, 45, 65),
          _reg("energy_kwh", 52, "int32", 0.1, 0, 1e8, word_order="little")]
    return RegisterMap("pm3", r)


def _amp_rack() -> RegisterMap:
    """A rack of 4 amplifier channels: rack values, then 8 registers a channel (the last one reserved)."""
    r = [_reg("mains_v", 0, "uint16", 0.1, 0, 300), _reg("rack_temperature_c", 1, "int16", 0.1, -20, 100),
         _reg("status", 2, "uint16"), _reg("uptime_s", 3, "uint32")]
    for c in range(4):
        base, ch = 8 + 8 * c, f"ch{c + 1}"
        r += [_reg(f"{ch}_temperature_c", base, "int16", 0.1, -20, 120),
              _reg(f"{ch}_current_a", base + 1, "uint16", 0.01, 0, 40),
              _reg(f"{ch}_fan_rpm", base + 2, "uint16", 1, 0, 10000),
              _reg(f"{ch}_load_ohm", base + 3, "uint16", 0.01, 0, 100),
              _reg(f"{ch}_protect", base + 4, "uint16", 1, 0, 1),
              _reg(f"{ch}_output_w", base + 5, "float32", 1, 0, 5000)]
    return RegisterMap("amp4", r)


def _environment() -> RegisterMap:
    """An air-quality sensor: six input registers."""
    return RegisterMap("env", [
        _reg("temperature_c", 0, "int16", 0.1, -40, 85, table="input"),
        _reg("humidity_pct", 1, "uint16", 0.1, 0, 100, table="input"),
        _reg("co2_ppm", 2, "uint16", 1, 0, 10000, table="input"),
        _reg("pressure_hpa", 3, "uint16", 0.1, 300, 1100, table="input"),
        _reg("pm25_ugm3", 4, "uint16", 0.1, 0, 1000, table="input"),
        _reg("tvoc_ppb", 5, "uint16", 1, 0, 60000, table="input"),
    ])


POWER_METER, AMP_RACK, ENVIRONMENT = _power_meter(), _amp_rack(), _environment()
MODELS: dict[str, RegisterMap] = {m.name: m for m in (POWER_METER, AMP_RACK, ENVIRONMENT)}
KINDS = {"pm3": "power", "amp4": "amplifier_rack", "env": "environment"}
TYPICAL: dict[str, dict[str, float]] = {  # what a device shows before anything is set
    "pm3": {**{f"voltage_{p}_v": 230.0 for p in ("l1", "l2", "l3")},
            **{f"voltage_{p}_v": 398.4 for p in ("l12", "l23", "l31")}, "voltage_v": 230.0, "voltage_ll_v": 398.4,
            **{f"current_{p}_a": 12.5 for p in ("l1", "l2", "l3")}, **{f"pf_{p}": 0.95 for p in ("l1", "l2", "l3")},
            "pf": 0.95, "frequency_hz": 50.0, "power_kw": 8.19, "energy_kwh": 1234.5},
    "amp4": {"mains_v": 230.0, "rack_temperature_c": 31.5,
             **{f"ch{c}_{m}": v for c in range(1, 5)
                for m, v in (("temperature_c", 38.0), ("current_a", 1.2), ("fan_rpm", 1800), ("load_ohm", 8.0))}},
    "env": {"temperature_c": 21.5, "humidity_pct": 45.0, "co2_ppm": 650, "pressure_hpa": 1013.2},
}


@dataclass(frozen=True)
class SimulatedDevice:
    name: str
    unit: int
    model: RegisterMap
    zone: str | None = None

    @property
    def kind(self) -> str:
        return KINDS.get(self.model.name, "modbus_device")


class SimulatedBus:
    """The devices of one bus, served by pymodbus's RTU server on one port."""

    def __init__(self, devices: Sequence[SimulatedDevice]) -> None:
        self.devices = {d.unit: d for d in devices}
        self.silent: set[int] = set()
        self.requests: dict[int, int] = dict.fromkeys(self.devices, 0)  # answered, per unit
        self._words = {d.unit: {t: [0] * max([r.end for r in d.model.registers if r.table == t], default=1)
                                for t in TABLES} for d in devices}
        for d in devices:
            self.set_values(d.unit, TYPICAL.get(d.model.name, {}))
        self._server: ModbusSerialServer | None = None

    def set_values(self, unit: int, values: Mapping[str, float]) -> None:
        """Values by metric, encoded by the device's register map (a value past its type saturates)."""
        registers = {r.metric: r for r in self.devices[unit].model.registers}
        for metric, value in values.items():
            r = registers[metric]
            self._words[unit][r.table][r.address:r.end] = r.encode(value)

    def set_words(self, unit: int, table: Table, address: int, words: Sequence[int]) -> None:
        """Raw registers, for what no map can express (a corrupt value, a NaN)."""
        self._words[unit][table][address:address + len(words)] = list(words)

    def silence(self, unit: int, silent: bool = True) -> None:
        """The device stops answering (as if unplugged from the bus), or answers again."""
        (self.silent.add if silent else self.silent.discard)(unit)

    async def serve(self, port: str, baudrate: int = 9600, stopbits: int = 1) -> None:
        """Start answering on `port` (a pseudo-terminal: no parity setting, the wire's timing has it)."""
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # an unanswered request is not an error here
        devices = [self._sim_device(unit) for unit in self.devices]
        # Unit 0 stands for every unit not defined: pymodbus 3.16 answers those with exception 4 (a KeyError in
        # its SimCore); a real bus is silent, and NoSuchIdException with ignore_missing_devices is silence.
        devices.append(SimDevice(0, [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)], action=_absent))
        self._server = ModbusSerialServer(devices, framer=FramerType.RTU, port=port, baudrate=baudrate,
                                          stopbits=stopbits, ignore_missing_devices=True)
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    def _sim_device(self, unit: int) -> SimDevice:
        words = self._words[unit]

        async def read(function: int, start: int, address: int, count: int, registers: list[int],
                       values: list[int] | list[bool] | None) -> None:
            if unit in self.silent:
                raise NoSuchIdException(f"unit {unit} is silent")
            table = words["holding" if function in (3, 6, 16, 22, 23) else "input"]
            registers[address - start:address - start + count] = table[address:address + count]
            self.requests[unit] += 1

        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        tables = [SimData(0, count=len(words[t]), values=0, datatype=DataType.REGISTERS) for t in TABLES]
        return SimDevice(unit, (bits, list(bits), [tables[0]], [tables[1]]), action=read)

    def config(self, driver: str, port: str, interval_ms: int = 1000, **bus: Any) -> str:
        """These devices as the gateway's configuration: a `[drivers.<driver>]` table of type modbus."""
        lines = [f"\n[drivers.{driver}]", 'type = "modbus"', f'port = "{port}"']
        lines += [f"{k} = {_toml(v)}" for k, v in bus.items()]
        for model in {d.model.name: d.model for d in self.devices.values()}.values():
            lines += ["", f"[[drivers.{driver}.maps]]", f'name = "{model.name}"', f"max_gap = {model.max_gap}",
                      "registers = ["]
            lines += [f"  {_register_toml(r)}," for r in model.registers] + ["]"]
        for d in self.devices.values():
            lines += ["", f"[[drivers.{driver}.devices]]", f'name = "{d.name}"', f"unit = {d.unit}",
                      f'map = "{d.model.name}"', f'kind = "{d.kind}"', f"interval_ms = {interval_ms}"]
            if d.zone:
                lines.append(f'zone = "{d.zone}"')
        return "\n".join(lines) + "\n"


async def _absent(*_: Any) -> None:
    raise NoSuchIdException("no such unit on this bus")


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _register_toml(r: Register) -> str:
    items = {"metric": r.metric, "address": r.address, "type": r.type}
    defaults = Register("x", 0)
    for key in ("word_order", "scale", "offset", "table", "range"):
        if getattr(r, key) != getattr(defaults, key):
            items[key] = getattr(r, key)
    return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in items.items()) + " }"


class VirtualModbusBus:
    """Simulated devices on a simulated wire: the gateway opens `link` (a symlink to a pseudo-terminal) as it
    would /dev/serial/by-id/..., no socat needed. `baudrate=None` relays without the wire's timing."""

    def __init__(self, devices: Sequence[SimulatedDevice], link: Path, baudrate: int | None = 9600,
                 parity: str = "E", stopbits: int = 1) -> None:
        self.bus = SimulatedBus(devices)
        self.wire = Wire(link, link.with_name(link.name + ".devices"), baudrate, parity, stopbits)
        self.baudrate = baudrate or 115200
        self.stopbits = stopbits

    async def start(self) -> None:
        self.wire.open()
        await self.bus.serve(str(self.wire.devices_link), self.baudrate, self.stopbits)

    async def stop(self) -> None:
        await self.bus.stop()
        self.wire.close()

    def set_values(self, unit: int, values: Mapping[str, float]) -> None:
        self.bus.set_values(unit, values)

    def silence(self, unit: int, silent: bool = True) -> None:
        self.bus.silence(unit, silent)
