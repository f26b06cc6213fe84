"""Modbus RTU bus capacity: 32 simulated devices (8 power meters of 54 registers, 16 amplifier racks of 39, 8
environmental sensors of 6) served by pymodbus's server behind the simulated RS-485 wire at 9600 baud 8E1
(drivers/sim/wire.py: one character every 11/9600 s, half duplex, a device answers after the 3.5-character
silence), polled as fast as they can be by the real `modbus` driver in a real gateway process (with the bus alone).

Figures: bytes on the wire over the line's capacity (baud/11 characters a second), measured by the wire,
against the protocol's limit for these frames computed in the same run (each request and its answer cost their
characters plus two 3.5-character silences); polls a second; the spread of the per-device poll intervals
(no device starved); gap violations. For comparison, pymodbus's own async client polls the same devices over the
same wire for a while: it does not keep the master's 3.5-character silence (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient

from bench.common import PYTHON, Figure, child, figures_table, title
from bench.daemon_probe import DaemonApi
from drivers.serial.modbus_codec import ReadRequest, char_time, frame_gap
from drivers.sim.modbus_devices import AMP_RACK, ENVIRONMENT, POWER_METER, SimulatedDevice, VirtualModbusBus
from drivers.sim.wire import WireStats
from peers.ports import LOOPBACK, free_port

TOKEN = "demo-viewer-token"
BAUD, PARITY, STOPBITS = 9600, "E", 1
WINDOW_S = 30.0
PEER_S = 8.0
TARGET_PCT = 90.0


def _devices() -> list[SimulatedDevice]:
    models = [POWER_METER] * 8 + [AMP_RACK] * 16 + [ENVIRONMENT] * 8
    return [SimulatedDevice(f"{m.name}-{i + 1:02d}", i + 1, m) for i, m in enumerate(models)]


def _requests(devices: list[SimulatedDevice]) -> list[ReadRequest]:
    return [ReadRequest(d.unit, b.function, b.address, b.count) for d in devices for b in d.model.blocks()]


def _limit(requests: list[ReadRequest]) -> tuple[float, float]:
    """The best a master can do with these frames, polled in turn: (share of the line carrying characters,
    rounds a second). Each transaction is its request, its answer, and two silences of 3.5 characters."""
    char, gap = char_time(BAUD, PARITY, STOPBITS), frame_gap(BAUD, PARITY, STOPBITS)
    wire = sum(len(r.encode()) + r.answer_size for r in requests) * char
    round_s = wire + 2 * gap * len(requests)
    return wire / round_s, 1 / round_s


def _config(directory: Path, api_port: int, vbus: VirtualModbusBus, link: Path) -> Path:
    """A gateway with the bus alone, so the figure is the driver's and the wire's, nothing else's."""
    text = f"""
[gateway]
id = "bench-modbus"
venue = "bench-hall"
data_dir = "data"
log_level = "warning"

[api]
listen = "{LOOPBACK}:{api_port}"

[[api.tokens]]
role = "viewer"
demo_token = "{TOKEN}"
"""
    text += vbus.bus.config("rs485", str(link), interval_ms=0, baudrate=BAUD, parity=PARITY, stopbits=STOPBITS,
                            timeout_ms=100, report_s=2.0)
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


async def _bus_health(api: DaemonApi) -> dict[str, Any] | None:
    try:
        health = await asyncio.to_thread(api.health)
    except OSError:
        return None
    unit = health["drivers"].get("rs485", {})
    return unit.get("detail") if unit.get("state") == "running" else None


async def _gateway_run(directory: Path, vbus: VirtualModbusBus, link: Path) -> tuple[WireStats, dict[str, Any],
                                                                                      dict[str, Any], float]:
    api_port = free_port()
    path = _config(directory, api_port, vbus, link)
    api = DaemonApi(f"http://{LOOPBACK}:{api_port}", TOKEN)
    with child([PYTHON, "-m", "gateway", "run", "--config", str(path)], directory / "daemon.log") as proc:
        deadline = time.monotonic() + 30
        while (before := await _bus_health(api)) is None or before["devices_online"] < 32:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bus did not come up: {before}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # past start-up
        before = await _bus_health(api)
        wire0, t0 = vbus.wire.stats(), time.monotonic()
        await asyncio.sleep(WINDOW_S)
        after = await _bus_health(api)
        wire, elapsed = vbus.wire.stats() - wire0, time.monotonic() - t0
        await asyncio.sleep(2.5)  # one more of the driver's own reports, over a window inside ours
        reported = (await asyncio.to_thread(api.json, "/api/v1/twin/assets/bus:rs485"))["reported"]
    assert before is not None and after is not None
    after["utilisation_reported"] = reported["utilisation"]
    return wire, before, after, elapsed


async def _pymodbus_peer(link: Path, vbus: VirtualModbusBus, requests: list[ReadRequest]) -> tuple[WireStats, int,
                                                                                                 int]:
    # A pseudo-terminal refuses parity settings: the wire times the line as 8E1 whatever the ends say.
    client = AsyncModbusSerialClient(str(link), framer=FramerType.RTU, baudrate=BAUD, parity="N",
                                     stopbits=STOPBITS, timeout=1.0, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise RuntimeError(f"pymodbus's client could not open {link}")
    done = failed = 0
    try:
        await asyncio.sleep(0.5)  # the line drains what the gateway asked last
        wire0, deadline = vbus.wire.stats(), time.monotonic() + PEER_S
        while time.monotonic() < deadline:
            for r in requests:
                read = client.read_holding_registers if r.function == 3 else client.read_input_registers
                try:
                    await read(r.address, count=r.count, device_id=r.unit)
                    done += 1
                except ModbusException:
                    failed += 1
        return vbus.wire.stats() - wire0, done, failed
    finally:
        client.close()


async def _run() -> list[Figure]:
    devices = _devices()
    requests = _requests(devices)
    limit, rounds_per_s = _limit(requests)
    with tempfile.TemporaryDirectory(prefix="vg-bench-modbus-") as tmp:
        directory = Path(tmp)
        link = directory / "ttyRS485"
        vbus = VirtualModbusBus(devices, link, BAUD, PARITY, STOPBITS)
        await vbus.start()
        try:
            wire, before, after, elapsed = await _gateway_run(directory, vbus, link)
            peer_wire, peer_done, peer_failed = await _pymodbus_peer(link, vbus, requests)
        finally:
            await vbus.stop()

    polls = {name: after["devices"][name]["polls"] - d["polls"] for name, d in before["devices"].items()}
    intervals = [d["poll_interval_ms"] for d in after["devices"].values()]
    wire_bytes = wire.bytes_down + wire.bytes_up
    print(f"{len(devices)} devices, {len(requests)} reads a round ({sum(r.count for r in requests)} registers, "
          f"{sum(len(r.encode()) + r.answer_size for r in requests)} bytes), {BAUD} baud {8}{PARITY}{STOPBITS}: "
          f"capacity {1 / char_time(BAUD, PARITY, STOPBITS):.1f} characters/s")
    print(f"gateway, {elapsed:.1f} s: {wire_bytes} bytes on the wire ({wire.bytes_down} down, {wire.bytes_up} up), "
          f"line busy {100 * wire.utilisation:.2f} % (the driver's own figure: "
          f"{100 * after['utilisation_reported']:.2f} %); limit for these frames {100 * limit:.2f} %")
    print(f"  polls per device in the window: min {min(polls.values())}, max {max(polls.values())}; "
          f"median poll interval per device: min {min(intervals):.0f} ms, max {max(intervals):.0f} ms "
          f"(limit {1000 / rounds_per_s:.0f} ms); timeouts {after['timeouts'] - before['timeouts']}, "
          f"CRC errors {after['crc_errors'] - before['crc_errors']}, overruns {after['overruns']}, "
          f"gap violations {wire.gap_violations}, collisions {wire.collisions}")
    print(f"pymodbus's async client on the same wire, {peer_wire.seconds:.1f} s: {peer_done} reads "
          f"({peer_failed} failed), line busy {100 * peer_wire.utilisation:.2f} %, "
          f"gap violations {peer_wire.gap_violations} "
          f"(it sends at once after an answer: on a real line those requests run into the answer before them)")
    polls_per_s = sum(polls.values()) / elapsed
    figures = [
        Figure("modbus: line busy, 32 devices at 9600 8E1", 100 * wire.utilisation, "%", TARGET_PCT, "higher",
               100 * limit, "protocol limit"),
        Figure("modbus: polls/s, 32 devices", polls_per_s, "/s", None, "higher", rounds_per_s * len(devices),
               "protocol limit"),
        Figure("modbus: slowest device's poll interval", max(intervals), "ms", None, "lower",
               min(intervals), "fastest device"),
        Figure("modbus: master gap violations", float(wire.gap_violations), "", 1.0, "lower",
               float(peer_wire.gap_violations), "pymodbus client"),
    ]
    print(figures_table(figures))
    return figures


def run() -> list[Figure]:
    title("Modbus RTU: 32 devices on one simulated RS-485 line at 9600 baud")
    return asyncio.run(_run())


if __name__ == "__main__":
    run()
