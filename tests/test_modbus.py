"""The Modbus RTU bus: framing and register properties (checked against pymodbus's own CRC and conversions),
block planning, the poll schedule, and the real driver in a gateway process against pymodbus's server on a
socat pseudo-terminal pair: values, a device that stops answering, an out-of-range value, a port replugged."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import select
import struct
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pymodbus.client import ModbusSerialClient
from pymodbus.framer import FramerRTU

from drivers.serial.modbus import ModbusOptions
from drivers.serial.modbus_codec import (
    MAX_READ,
    ModbusFrameError,
    ReadRequest,
    Response,
    ResponseDecoder,
    crc16,
    with_crc,
)
from drivers.serial.modbus_link import ModbusLink
from drivers.serial.registers import LAYOUT, Register, plan_blocks
from drivers.serial.scheduler import PollSchedule
from drivers.sim.modbus_devices import (
    AMP_RACK,
    ENVIRONMENT,
    POWER_METER,
    SimulatedBus,
    SimulatedDevice,
    VirtualModbusBus,
)
from drivers.sim.wire import Wire
from gateway.schema import check_all
from peers.socat import SocatPair
from tests.conftest import Daemon

T = TypeVar("T")
DATATYPE = ModbusSerialClient.DATATYPE

# -- framing ---------------------------------------------------------------------------------------------
units = st.integers(1, 247)
requests = st.builds(ReadRequest, units, st.sampled_from([3, 4]), st.integers(0, 65535 - MAX_READ),
                     st.integers(1, MAX_READ))


def answer_to(request: ReadRequest, data: st.DataObject) -> Response:
    if data.draw(st.booleans()):
        return Response(request.unit, request.function, exception=data.draw(st.integers(1, 11)))
    words = data.draw(st.lists(st.integers(0, 65535), min_size=request.count, max_size=request.count))
    return Response(request.unit, request.function, tuple(words))


def test_published_example_frames() -> None:
    # MODBUS Application Protocol V1.1b3, 6.3 (read holding registers 108-110) as an RTU frame to unit 0x11,
    # with its CRC as printed by simplymodbus.ca ("Modbus RTU: Function 03"); both CRCs are also pymodbus's.
    request = ReadRequest(0x11, 3, 0x6B, 3)
    assert request.encode() == bytes.fromhex("1103006B00037687")
    decoder = ResponseDecoder()
    decoder.expect(request)
    assert decoder.feed(bytes.fromhex("110306AE415652434049AD")) == Response(0x11, 3, (0xAE41, 0x5652, 0x4340))
    assert decoder.garbage_bytes == decoder.crc_errors == 0


@given(st.binary(max_size=300))
def test_the_crc_is_pymodbus_s(data: bytes) -> None:
    assert with_crc(data)[-2:] == FramerRTU.compute_CRC(data).to_bytes(2, "big")
    assert crc16(with_crc(data)) == 0  # a frame with its CRC checks to zero


@given(requests, st.data())
def test_an_answer_whole_or_byte_by_byte_decodes_the_same(request: ReadRequest, data: st.DataObject) -> None:
    answer = answer_to(request, data)
    frame = answer.encode()
    whole = ResponseDecoder()
    whole.expect(request)
    assert whole.feed(frame) == answer
    bytewise = ResponseDecoder()
    bytewise.expect(request)
    assert [r for i in range(len(frame)) if (r := bytewise.feed(frame[i:i + 1]))] == [answer]


@given(requests, st.data(), st.binary(max_size=400))
def test_garbage_before_an_answer_is_skipped_and_counted(request: ReadRequest, data: st.DataObject,
                                                         garbage: bytes) -> None:
    answer = answer_to(request, data)
    decoder = ResponseDecoder()
    decoder.expect(request)
    assert decoder.feed(garbage + answer.encode()) == answer
    assert decoder.garbage_bytes == len(garbage)


@given(requests, st.binary(max_size=600))
def test_any_bytes_decode_without_error(request: ReadRequest, data: bytes) -> None:
    decoder = ResponseDecoder()
    decoder.feed(data)  # nothing asked: all garbage
    decoder.expect(request)
    decoder.feed(data)


@given(requests, st.data())
def test_a_corrupted_answer_is_a_crc_error_not_an_answer(request: ReadRequest, data: st.DataObject) -> None:
    frame = bytearray(answer_to(request, data).encode())
    at = data.draw(st.integers(3, len(frame) - 1))  # past the header, which is how it is recognised
    frame[at] ^= data.draw(st.integers(1, 255))
    decoder = ResponseDecoder()
    decoder.expect(request)
    assert decoder.feed(bytes(frame)) is None
    assert decoder.crc_errors == 1


def test_requests_outside_the_protocol_are_refused() -> None:
    for bad in (ReadRequest(0, 3, 0, 1), ReadRequest(248, 3, 0, 1), ReadRequest(1, 5, 0, 1),
                ReadRequest(1, 3, 0, 126), ReadRequest(1, 3, 65535, 2)):
        with pytest.raises(ModbusFrameError):
            bad.encode()


# -- registers -------------------------------------------------------------------------------------------
KIND_TYPES = {"int16": DATATYPE.INT16, "uint16": DATATYPE.UINT16, "int32": DATATYPE.INT32, "uint32": DATATYPE.UINT32,
              "int64": DATATYPE.INT64, "uint64": DATATYPE.UINT64, "float32": DATATYPE.FLOAT32,
              "float64": DATATYPE.FLOAT64}
INT_LIMITS = {"int16": 2**15, "uint16": 2**16, "int32": 2**31, "uint32": 2**32, "int64": 2**63, "uint64": 2**64}


@st.composite
def raw_values(draw: st.DrawFn) -> tuple[str, str, float | int]:
    kind = draw(st.sampled_from(sorted(LAYOUT)))
    order = draw(st.sampled_from(["big", "little"])) if LAYOUT[kind][1] > 1 else "big"
    if kind.startswith("float"):
        value: float | int = draw(st.floats(width=32 if kind == "float32" else 64, allow_nan=False))
    else:
        limit = INT_LIMITS[kind]
        value = draw(st.integers(0, limit - 1) if kind.startswith("u") else st.integers(-limit, limit - 1))
    return kind, order, value


@given(raw_values(), st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.0001, 10.0]), st.sampled_from([0.0, -40.0, 273.15]))
def test_values_encoded_by_pymodbus_decode_to_the_scaled_value(raw: tuple[str, str, float | int], scale: float,
                                                                offset: float) -> None:
    kind, order, value = raw
    words = ModbusSerialClient.convert_to_registers(value, KIND_TYPES[kind], word_order=order)  # type: ignore[arg-type]
    register = Register("x", 0, kind, order, scale, offset)  # type: ignore[arg-type]
    decoded = register.decode(words)
    expected = value * scale + offset
    if math.isinf(expected):
        assert decoded == expected
    elif kind == "float32":  # the same float32, written as briefly as possible
        assert decoded == pytest.approx(expected, rel=1e-6, abs=1e-6 * abs(scale))
        if scale == 1 and offset == 0:
            assert struct.pack(">f", decoded) == struct.pack(">f", value)
            assert len(repr(decoded)) <= len(repr(value))
    else:
        assert decoded == pytest.approx(expected, rel=1e-12, abs=1e-9)


@given(raw_values(), st.sampled_from([1.0, 0.1, 0.001]))
def test_encoding_is_pymodbus_s_and_decodes_back(raw: tuple[str, str, float | int], scale: float) -> None:
    kind, order, value = raw
    register = Register("x", 0, kind, order, scale)  # type: ignore[arg-type]
    if kind.startswith("float"):
        scale, register = 1.0, Register("x", 0, kind, order)  # type: ignore[arg-type]
    # Readings are doubles: 64-bit integers are exact to 2**53, and value * scale / scale to about 2**40.
    assume(abs(value) < (2**53 if scale == 1 else 2**40))
    words = register.encode(value * scale)
    assert words == ModbusSerialClient.convert_to_registers(value, KIND_TYPES[kind], word_order=order)  # type: ignore[arg-type]
    assert register.decode(words) == pytest.approx(value * scale, rel=1e-6)


def test_saturation_nan_and_the_physical_range() -> None:
    r = Register("t", 0, "int16", scale=0.1, range=[-40, 85])
    assert r.decode(r.encode(1e9)) == 3276.7 and not r.believable(3276.7)
    assert r.believable(21.5) and not r.believable(math.nan)
    f = Register("w", 0, "float32", range=[0, 5000])
    assert f.decode(ModbusSerialClient.convert_to_registers(math.nan, DATATYPE.FLOAT32)) != 0
    assert not f.believable(f.decode([0x7FC0, 0]))


@st.composite
def register_sets(draw: st.DrawFn) -> list[Register]:
    out, at = [], {"holding": draw(st.integers(0, 300)), "input": draw(st.integers(0, 300))}
    for i in range(draw(st.integers(1, 60))):
        table = draw(st.sampled_from(["holding", "input"]))
        kind = draw(st.sampled_from(sorted(LAYOUT)))
        at[table] += draw(st.integers(0, 40))
        out.append(Register(f"m{i}", at[table], kind, table=table))  # type: ignore[arg-type]
        at[table] += LAYOUT[kind][1]
    return draw(st.permutations(out))


@given(register_sets(), st.integers(0, 30))
def test_blocks_cover_exactly_the_registers_asked_in_as_few_reads_as_the_gaps_allow(registers: list[Register],
                                                                                     max_gap: int) -> None:
    blocks = plan_blocks(registers, max_gap)
    assert sorted(r.metric for b in blocks for r in b.registers) == sorted(r.metric for r in registers)
    for b in blocks:
        assert 1 <= b.count <= MAX_READ and all(r.table == b.table for r in b.registers)
        assert b.address == b.registers[0].address and b.address + b.count == max(r.end for r in b.registers)
        ends = [b.address] + [r.end for r in b.registers]
        assert all(r.address - ends[i] <= max_gap for i, r in enumerate(b.registers))
    for table in ("holding", "input"):
        mine = [b for b in blocks if b.table == table]
        for a, b in itertools.pairwise(mine):  # a split only where the gap or the size demands it
            assert b.registers[0].address - (a.address + a.count) > max_gap or \
                max(r.end for r in b.registers) - a.address > MAX_READ


def test_the_simulated_models_are_read_in_one_request_each() -> None:
    assert [(b.table, b.address, b.count) for b in POWER_METER.blocks()] == [("holding", 0, 54)]
    assert [(b.table, b.address, b.count) for b in AMP_RACK.blocks()] == [("holding", 0, 39)]
    assert [(b.table, b.address, b.count) for b in ENVIRONMENT.blocks()] == [("input", 0, 6)]


def test_check_config_names_each_bad_key() -> None:
    raw: dict[str, Any] = {"port": "/dev/ttyUSB0", "maps": [
        {"name": "m", "registers": [
            {"metric": "a", "address": 0, "type": "int32"},
            {"metric": "b", "address": 1, "type": "int16", "word_order": "little"},
            {"metric": "a", "address": 9, "range": [5, 1]},
            {"metric": "c", "address": 65535, "type": "float32", "scale": 0},
            {"metric": "Bad name", "address": 20, "type": "int24"},
        ]}],
        "devices": [{"name": "x", "unit": 1, "map": "m"}, {"name": "x", "unit": 1, "map": "nope"},
                    {"name": "y", "unit": 300, "map": "m"}]}
    options, problems = check_all(ModbusOptions, raw)
    text = "\n".join(map(str, problems))
    assert options is None
    for expected in ("maps[0].registers[1].word_order: a int16 is one register",
                     "maps[0].registers[2].range: [5.0, 1.0]",
                     "maps[0].registers[3].address: float32 at 65535 runs past register 65535",
                     "maps[0].registers[3].scale", "maps[0].registers[4].metric: 'Bad name' is not a metric name",
                     "maps[0].registers[4].type: 'int24' is not allowed", "devices[2].unit: 300 is out of range"):
        assert expected in text, text
    # Once each register is well formed, the map's and the bus's own checks run.
    raw["maps"][0]["registers"] = [{"metric": "a", "address": 0, "type": "int32"}, {"metric": "b", "address": 1},
                                   {"metric": "a", "address": 9}]
    raw["devices"] = raw["devices"][:2]
    _, problems = check_all(ModbusOptions, raw)
    text = "\n".join(map(str, problems))
    for expected in ("maps[0].registers[1].address: 1 overlaps registers[0] (int32 at 0, holding table)",
                     "maps[0].registers[2].metric: 'a' is already registers[0]"):
        assert expected in text, text
    raw["maps"][0]["registers"] = [{"metric": "a", "address": 0, "type": "int32"}]
    _, problems = check_all(ModbusOptions, raw)
    assert [str(p) for p in problems] == ["devices[1].map: 'nope' is not a map of this bus (allowed: m)",
                                          "devices[1].unit: unit 1 is already devices[0]",
                                          "devices[1].name: 'x' is already devices[0]"]


# -- the schedule ----------------------------------------------------------------------------------------
def test_a_silent_device_never_starves_the_others_and_is_tried_once_per_backoff() -> None:
    """Simulated time: three devices at 100 ms; one stops answering (each attempt costs a 100 ms timeout)."""
    schedule = PollSchedule([0.1, 0.1, 0.1], offline_after=3, backoff_initial=1.0, backoff_max=4.0, now=0.0,
                            rng=random.Random(1))
    now, attempts, offline_attempts, changes = 0.0, [0, 0, 0], 0, []
    while now < 60:
        state, due = schedule.next_due()
        now = max(now, due)
        schedule.start(state, now)
        ok = state.index != 2 or 20 <= now < 40  # device 2 answers only between 20 s and 40 s
        # An answer takes 20 ms; a failed poll two timeouts (a retry), or one once the device is offline.
        now += 0.02 if ok else 0.1 * (1 if state.online is False else 2)
        attempts[state.index] += 1
        offline_attempts += state.online is False
        if (change := schedule.done(state, ok, now)) is not None and state.index == 2:
            changes.append((now, change))
    assert attempts[0] > 550 and attempts[1] > 550  # their 100 ms rate, give or take the silent one's cost
    assert [c[1] for c in changes] == [False, True, False]
    assert changes[0][0] < 1 and 40 < changes[2][0] < 41  # offline after 3 failed polls
    assert 20 <= changes[1][0] <= 24.1  # back within one backoff period (at most 4 s) of answering again
    # Offline for 40 s in all: one attempt per backoff period (0.5-1 s, 1-2 s, then 2-4 s), never more.
    assert offline_attempts <= 2 * (2 + 20 / 2)


def test_an_oversubscribed_bus_skips_and_counts_instead_of_queueing() -> None:
    schedule = PollSchedule([0.05] * 4, offline_after=3, backoff_initial=1.0, backoff_max=60.0, now=0.0)
    now = 0.0
    for _ in range(400):  # each poll takes 30 ms: four devices want 80 polls/s, the bus does 33
        state, due = schedule.next_due()
        now = max(now, due)
        schedule.start(state, now)
        now += 0.03
        schedule.done(state, True, now)
        # Never further behind than one round of the others (3 x 30 ms): no backlog grows.
        assert min(s.due for s in schedule.devices) >= now - 0.091
    polls = [s.polls for s in schedule.devices]
    assert max(polls) - min(polls) <= 1  # fair
    assert sum(s.overruns for s in schedule.devices) > 200


# -- the real driver against pymodbus's server -----------------------------------------------------------
class ServedBus:
    """A SimulatedBus served by pymodbus on its own event loop, in a thread, for a test that blocks."""

    def __init__(self, devices: list[SimulatedDevice]) -> None:
        self.bus = SimulatedBus(devices)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.call(self.bus.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[SocatPair, ServedBus]]:
    pair = SocatPair(tmp_path, "ttyRS485")
    pair.plug()
    bus = ServedBus([SimulatedDevice("mains-a", 1, POWER_METER, "stage"), SimulatedDevice("rack-1", 2, AMP_RACK),
                     SimulatedDevice("env-floor", 3, ENVIRONMENT, "floor")])
    bus.call(bus.bus.serve(str(pair.far)))
    yield pair, bus
    bus.close()
    pair.close()


def gateway_with(served: tuple[SocatPair, ServedBus], daemon_factory: Any) -> Daemon:
    pair, bus = served
    extra = "\n[supervisor]\nbackoff_initial_s = 0.1\nbackoff_max_s = 0.3\n" + bus.bus.config(
        "rack_bus", str(pair.device), interval_ms=100, timeout_ms=100, offline_after=2, offline_backoff_max_s=0.5,
        report_s=0.3)
    return daemon_factory(extra=extra).start()  # type: ignore[no-any-return]


def wait_for(d: Daemon, asset: str, check: Any, timeout: float = 8.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = d.request("GET", f"/api/v1/twin/assets/{asset}")
        reported = json.loads(body)["reported"] if status == 200 else {}
        if check(reported):
            return dict(reported)
        assert time.monotonic() < deadline, f"{asset}: {reported}"
        time.sleep(0.1)


def polls(d: Daemon) -> dict[str, int]:
    detail = d.get("/api/v1/health")["drivers"]["rack_bus"]["detail"]
    return {name: dev["polls"] for name, dev in detail["devices"].items()}


def test_devices_are_polled_flagged_and_taken_offline_and_back(served: tuple[SocatPair, ServedBus],
                                                               daemon_factory: Any) -> None:
    _, bus = served
    d = gateway_with(served, daemon_factory)
    meter = wait_for(d, "mains-a", lambda r: "voltage_l1_v" in r)
    assert meter["voltage_l1_v"] == 230.0 and meter["current_l2_a"] == 12.5 and meter["frequency_hz"] == 50.0
    assert meter["unit"] == 1 and meter["online"] is True
    bus.bus.set_values(2, {"ch3_output_w": 812.25, "ch1_temperature_c": -3.5})
    bus.bus.set_values(3, {"co2_ppm": 1234, "temperature_c": 22.7})
    rack = wait_for(d, "rack-1", lambda r: r.get("ch3_output_w") == 812.25)
    assert rack["ch1_temperature_c"] == -3.5 and rack["ch1_fan_rpm"] == 1800
    env = wait_for(d, "env-floor", lambda r: r.get("co2_ppm") == 1234)
    assert env["temperature_c"] == 22.7 and env["humidity_pct"] == 45.0
    assert d.get("/api/v1/twin/assets/env-floor")["zone"] == "floor"

    # A value outside its physical range is flagged on the device, not believed; in range again, it is.
    bus.bus.set_values(1, {"voltage_l1_v": 412.0})
    meter = wait_for(d, "mains-a", lambda r: r.get("out_of_range") == {"voltage_l1_v": 412.0})
    assert meter["voltage_l1_v"] == 230.0
    bus.bus.set_values(1, {"voltage_l1_v": 231.5})
    wait_for(d, "mains-a", lambda r: r.get("voltage_l1_v") == 231.5 and r.get("out_of_range") == {})

    # The rack stops answering: offline in the twin, while the others keep their rate (10 polls/s).
    bus.bus.silence(2)
    wait_for(d, "rack-1", lambda r: r.get("online") is False and r.get("error") == "not answering")
    before, t0 = polls(d), time.monotonic()
    time.sleep(1.5)
    after, elapsed = polls(d), time.monotonic() - t0
    for name in ("mains-a", "env-floor"):
        assert (after[name] - before[name]) / elapsed > 7, (before, after)
    assert after["rack-1"] - before["rack-1"] <= 4  # one attempt per backoff period (0.25-0.5 s)
    bus_state = wait_for(d, "bus:rack_bus", lambda r: r.get("devices_offline") == 1)
    assert bus_state["connected"] is True and bus_state["timeouts"] > 0 and bus_state["out_of_range"] >= 1
    assert d.get("/api/v1/twin/assets/bus:rack_bus")["kind"] == "serial_bus"

    bus.bus.silence(2, False)
    wait_for(d, "rack-1", lambda r: r.get("online") is True and "error" not in r)
    assert d.get("/api/v1/health")["drivers"]["rack_bus"]["state"] == "running"
    log = d.log.read_text()
    assert "device rack-1 (unit 2) offline" in log and "Traceback" not in log
    d.terminate()


def test_a_port_that_vanishes_and_comes_back_is_picked_up_without_a_restart(
        served: tuple[SocatPair, ServedBus], daemon_factory: Any) -> None:
    pair, bus = served
    d = gateway_with(served, daemon_factory)
    wait_for(d, "env-floor", lambda r: r.get("online") is True)
    bus.call(bus.bus.stop())
    pair.unplug()
    deadline = time.monotonic() + 10
    while (health := d.get("/api/v1/health"))["drivers"]["rack_bus"]["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert health["drivers"]["venue"]["state"] == "running"
    wait_for(d, "bus:rack_bus", lambda r: r.get("connected") is False)
    wait_for(d, "env-floor", lambda r: r.get("online") is False)

    pair.plug()
    bus.call(bus.bus.serve(str(pair.far)))
    bus.bus.set_values(3, {"humidity_pct": 61.5})
    wait_for(d, "env-floor", lambda r: r.get("humidity_pct") == 61.5 and r.get("online") is True)
    wait_for(d, "bus:rack_bus", lambda r: r.get("connected") is True)
    log = d.log.read_text()
    assert "driver rack_bus not ready: " in log and "went away" in log and "Traceback" not in log
    d.terminate()


# -- the simulated wire ----------------------------------------------------------------------------------
def read_exactly(fd: int, n: int, timeout: float = 2.0) -> tuple[bytes, float, float]:
    """n bytes from `fd`: (the bytes, when the first came, when the last came)."""
    out, first, deadline = b"", 0.0, time.monotonic() + timeout
    while len(out) < n:
        assert select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0], f"{len(out)} of {n} bytes"
        out += os.read(fd, n - len(out))
        first = first or time.monotonic()
    return out, first, time.monotonic()


def test_the_wire_has_a_half_duplex_line_s_timing(tmp_path: Path) -> None:
    wire = Wire(tmp_path / "master", tmp_path / "devices", 9600, "E", 1).open()
    char = 11 / 9600
    master = os.open(tmp_path / "master", os.O_RDWR | os.O_NOCTTY)
    devices = os.open(tmp_path / "devices", os.O_RDWR | os.O_NOCTTY)
    try:
        frame = bytes(range(96))
        sent = time.monotonic()
        os.write(master, frame)
        got, first, last = read_exactly(devices, len(frame))
        assert got == frame
        assert 96 * char - 0.002 <= last - sent < 96 * char + 0.05  # 110 ms of line for 96 characters
        assert first - sent < 0.03  # handed over as it comes, not at the end of the frame
        os.write(devices, b"0123456789")  # at once: the wire holds it for the 3.5-character silence
        answer, _, back = read_exactly(master, 10)
        assert answer == b"0123456789" and back - last >= (3.5 + 10) * char - 0.002
        os.write(master, b"\x01")  # no silence kept before this one: a violation
        read_exactly(devices, 1)
        time.sleep(0.01)
        os.write(master, b"\x02")  # after the silence: fine
        read_exactly(devices, 1)
        stats = wire.stats()
        assert (stats.bytes_down, stats.bytes_up, stats.gap_violations, stats.collisions) == (98, 10, 1, 0)
        assert stats.busy_s == pytest.approx(108 * char)

        wire.unplug()
        assert not (tmp_path / "master").exists()
        with contextlib.suppress(OSError):  # hung up: end of file or EIO, as a USB adapter pulled out
            assert os.read(master, 1) == b""
        wire.plug()
        assert (tmp_path / "master").exists()
    finally:
        os.close(master)
        os.close(devices)
        wire.close()


async def test_the_link_against_the_virtual_bus_answers_refuses_and_times_out(tmp_path: Path) -> None:
    """The master's link and pymodbus's server on the simulated wire, in one process, without pacing."""
    vbus = VirtualModbusBus([SimulatedDevice("env", 5, ENVIRONMENT)], tmp_path / "bus", baudrate=None)
    await vbus.start()
    link = ModbusLink(str(tmp_path / "bus"), 115200, "E", 1, timeout=0.05)
    await link.open()
    try:
        vbus.set_values(5, {"co2_ppm": 777})
        answer = await link.transact(ReadRequest(5, 4, 0, 6))
        assert answer is not None and ENVIRONMENT.blocks()[0].decode(answer.registers)[2][1] == 777
        refused = await link.transact(ReadRequest(5, 4, 0, 7))  # past the sensor's registers
        assert refused == Response(5, 4, exception=2)
        assert await link.transact(ReadRequest(6, 4, 0, 1)) is None  # no unit 6 on this bus: silence
        vbus.silence(5)
        assert await link.transact(ReadRequest(5, 4, 0, 6)) is None
        vbus.silence(5, False)
        assert await link.transact(ReadRequest(5, 4, 0, 6)) is not None
        assert (link.requests, link.answers, link.timeouts, link.decoder.crc_errors) == (5, 3, 2, 0)
    finally:
        link.close()
        await vbus.stop()
