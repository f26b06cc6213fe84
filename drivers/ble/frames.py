"""Codecs of the advertisements our beacons and sensor tags send: iBeacon, Eddystone UID and TLM, Ruuvi data
format 5 and BTHome v2, from bleak's manufacturer and service data to typed frames, and back for the sim devices."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

__all__ = ["BTHOME_UUID", "EDDYSTONE_UUID", "PHYSICAL_RANGE", "Beacon", "FrameError", "SensorFrame", "bthome_v2",
           "decode", "eddystone_tlm", "eddystone_uid", "ibeacon", "ruuvi_v5"]

APPLE, RUUVI = 0x004C, 0x0499  # Bluetooth SIG company identifiers
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"


class FrameError(ValueError):
    """A frame of a kind we decode that does not decode (malformed, or refused): the driver counts it."""


@dataclass(frozen=True, slots=True)
class Beacon:
    """A placed beacon's identity frame."""

    kind: Literal["ibeacon", "eddystone_uid"]
    id: str  # ibeacon: "<uuid>/<major>/<minor>"; eddystone_uid: "<namespace 20 hex>/<instance 12 hex>"
    measured_power_dbm: int  # iBeacon: RSSI at 1 m; Eddystone UID: tx power at 0 m (as in the frame)


@dataclass(frozen=True, slots=True)
class SensorFrame:
    """Telemetry: Eddystone TLM, Ruuvi data format 5, BTHome v2."""

    kind: Literal["eddystone_tlm", "ruuvi_v5", "bthome_v2"]
    values: dict[str, float]  # metric names end with their unit, as elsewhere in the repo: temperature_c, ...
    packet_id: int | None = None  # Ruuvi measurement sequence, BTHome packet id, TLM advertisement count
    counter: int | None = None  # BTHome encrypted: the 32-bit replay counter
    encrypted: bool = False


# -- iBeacon (Apple: manufacturer data 0x004C, type 0x02, length 0x15; all fields big-endian) ------------------
_IBEACON = struct.Struct(">2x16sHHb")
_IBEACON_BODY = struct.Struct(">16sHHb")


def _ibeacon(p: bytes) -> Beacon | None:
    if p[:2] != b"\x02\x15":  # Apple's other messages: the attendees' phones
        return None
    if len(p) < 23:
        raise FrameError(f"iBeacon of {len(p)} bytes, 23 expected")
    uuid, major, minor, power = _IBEACON.unpack_from(p)
    h = uuid.hex()
    return Beacon("ibeacon", f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}/{major}/{minor}", power)


# -- Eddystone (github.com/google/eddystone: service 0xFEAA; UID and plain TLM; big-endian) ---------------------
_UID = struct.Struct(">xb10s6s")
_TLM = struct.Struct(">xxHhII")
_TLM_BODY = struct.Struct(">HhII")
_TLM_NO_TEMPERATURE = -0x8000


def _eddystone(p: bytes) -> Beacon | SensorFrame | None:
    if not p:
        raise FrameError("empty Eddystone frame")
    frame_type = p[0]
    if frame_type == 0x00:
        if not 18 <= len(p) <= 20:  # the two RFU bytes at the end are left out by some beacons
            raise FrameError(f"Eddystone UID of {len(p)} bytes, 18 to 20 expected")
        tx, namespace, instance = _UID.unpack_from(p)
        return Beacon("eddystone_uid", f"{namespace.hex()}/{instance.hex()}", tx)
    if frame_type == 0x20:
        version = p[1] if len(p) > 1 else -1
        if version == 1:  # encrypted TLM: the beacon owner's business, not ours
            return None
        if version != 0 or len(p) != 14:
            raise FrameError(f"Eddystone TLM version {version} of {len(p)} bytes, version 0 of 14 expected")
        battery_mv, temperature, adv_count, sec_count = _TLM.unpack(p)
        values = {"uptime_s": sec_count / 10}
        if battery_mv:  # zero: no battery (a powered beacon)
            values["battery_v"] = battery_mv / 1000
        if temperature != _TLM_NO_TEMPERATURE:
            values["temperature_c"] = temperature / 256
        return SensorFrame("eddystone_tlm", values, packet_id=adv_count)
    return None  # URL, EID, and frame types yet to come


# -- Ruuvi data format 5 (docs.ruuvi.com "Data format 5 (RAWv2)": manufacturer 0x0499; big-endian) --------------
_RUUVI = struct.Struct(">xhHHhhhHBH6x")
_RUUVI_BODY = struct.Struct(">BhHHhhhHBH6s")


def _ruuvi(p: bytes) -> SensorFrame | None:
    if not p:
        raise FrameError("empty Ruuvi frame")
    if p[0] != 5:  # formats 3, 6, E1, C5: other tags
        return None
    if len(p) != 24:
        raise FrameError(f"Ruuvi data format 5 of {len(p)} bytes, 24 expected")
    t, h, pa, ax, ay, az, power, movement, sequence = _RUUVI.unpack(p)
    # "Not available" is the largest unsigned or the smallest signed value of each field: no value at all.
    values: dict[str, float] = {}
    if t != -0x8000:
        values["temperature_c"] = t / 200
    if h != 0xFFFF:
        values["humidity_pct"] = h / 400
    if pa != 0xFFFF:
        values["pressure_hpa"] = (pa + 50000) / 100
    if ax != -0x8000:
        values["acceleration_x_g"] = ax / 1000
    if ay != -0x8000:
        values["acceleration_y_g"] = ay / 1000
    if az != -0x8000:
        values["acceleration_z_g"] = az / 1000
    if power >> 5 != 0x7FF:
        values["battery_v"] = ((power >> 5) + 1600) / 1000
    if power & 0x1F != 0x1F:
        values["tx_power_dbm"] = (power & 0x1F) * 2 - 40.0
    if movement != 0xFF:
        values["movement_count"] = float(movement)
    return SensorFrame("ruuvi_v5", values, packet_id=None if sequence == 0xFFFF else sequence)


# -- BTHome v2 (bthome.io/format, bthome.io/encryption: service 0xFCD2; little-endian) --------------------------
_ENCRYPTED, _MAC_INCLUDED, _VERSION_MASK, _VERSION_2 = 0x01, 0x02, 0xE0, 0x40
_VALUE, _PACKET_ID, _DIMMER, _SKIP = 0, 1, 2, 3
_DUPLICATES = 4  # a frame may carry several objects of a kind (a 4-button remote): button, button_2, ...

# id: (metric, unit, bytes, signed, divisor), value = raw / divisor (a divisor keeps 25.06 exact, 0.01 would not)
_SENSORS: dict[int, tuple[str, str, int, bool, float]] = {
    0x01: ("battery", "pct", 1, False, 1), 0x02: ("temperature", "c", 2, True, 100),
    0x03: ("humidity", "pct", 2, False, 100), 0x04: ("pressure", "hpa", 3, False, 100),
    0x05: ("illuminance", "lux", 3, False, 100), 0x06: ("mass", "kg", 2, False, 100),
    0x07: ("mass", "lb", 2, False, 100), 0x08: ("dewpoint", "c", 2, True, 100),
    0x09: ("count", "", 1, False, 1), 0x0A: ("energy", "kwh", 3, False, 1000),
    0x0B: ("power", "w", 3, False, 100), 0x0C: ("voltage", "v", 2, False, 1000),
    0x0D: ("pm25", "ugm3", 2, False, 1), 0x0E: ("pm10", "ugm3", 2, False, 1),
    0x12: ("co2", "ppm", 2, False, 1), 0x13: ("tvoc", "ugm3", 2, False, 1),
    0x14: ("moisture", "pct", 2, False, 100), 0x2E: ("humidity", "pct", 1, False, 1),
    0x2F: ("moisture", "pct", 1, False, 1), 0x3A: ("button", "", 1, False, 1),
    0x3D: ("count", "", 2, False, 1), 0x3E: ("count", "", 4, False, 1),
    0x3F: ("rotation", "deg", 2, True, 10), 0x40: ("distance", "mm", 2, False, 1),
    0x41: ("distance", "m", 2, False, 10), 0x42: ("duration", "s", 3, False, 1000),
    0x43: ("current", "a", 2, False, 1000), 0x44: ("speed", "m_s", 2, False, 100),
    0x45: ("temperature", "c", 2, True, 10), 0x46: ("uv_index", "", 1, False, 10),
    0x47: ("volume", "l", 2, False, 10), 0x48: ("volume", "ml", 2, False, 1),
    0x49: ("flow", "m3_h", 2, False, 1000), 0x4A: ("voltage", "v", 2, False, 10),
    0x4B: ("gas", "m3", 3, False, 1000), 0x4C: ("gas", "m3", 4, False, 1000),
    0x4D: ("energy", "kwh", 4, False, 1000), 0x4E: ("volume", "l", 4, False, 1000),
    0x4F: ("water", "l", 4, False, 1000), 0x50: ("timestamp", "s", 4, False, 1),
    0x51: ("acceleration", "m_s2", 2, False, 1000), 0x52: ("gyroscope", "deg_s", 2, False, 1000),
    0x55: ("volume_storage", "l", 4, False, 1000), 0x56: ("conductivity", "us_cm", 2, False, 1),
    0x57: ("temperature", "c", 1, True, 1), 0x58: ("temperature", "c", 1, True, 1 / 0.35),
    0x59: ("count", "", 1, True, 1), 0x5A: ("count", "", 2, True, 1), 0x5B: ("count", "", 4, True, 1),
    0x5C: ("power", "w", 4, True, 100), 0x5D: ("current", "a", 2, True, 1000),
    0x5E: ("direction", "deg", 2, False, 100), 0x5F: ("precipitation", "mm", 2, False, 10),
    0x60: ("channel", "", 1, False, 1), 0x61: ("rotational_speed", "rpm", 2, False, 1),
    0x62: ("speed", "m_s", 4, True, 1_000_000), 0x63: ("acceleration", "m_s2", 4, True, 1_000_000),
    0x64: ("light_level", "", 1, False, 1),
}
# Binary sensors: 0 or 1, with BTHome's meaning per id (e.g. opening 1 = open, battery_low 1 = low).
_BINARY = {0x0F: "generic", 0x10: "power", 0x11: "opening", 0x15: "battery_low", 0x16: "battery_charging",
           0x17: "carbon_monoxide", 0x18: "cold", 0x19: "connectivity", 0x1A: "door", 0x1B: "garage_door",
           0x1C: "gas", 0x1D: "heat", 0x1E: "light", 0x1F: "lock", 0x20: "moisture", 0x21: "motion",
           0x22: "moving", 0x23: "occupancy", 0x24: "plug", 0x25: "presence", 0x26: "problem", 0x27: "running",
           0x28: "safety", 0x29: "smoke", 0x2A: "sound", 0x2B: "tamper", 0x2C: "vibration", 0x2D: "window"}
_DIMMER_NAMES = ("dimmer_steps", "dimmer_2_steps", "dimmer_3_steps", "dimmer_4_steps")
_RANGES = {(1, False): (0, 0xFF), (1, True): (-0x80, 0x7F), (2, False): (0, 0xFFFF), (2, True): (-0x8000, 0x7FFF),
           (3, False): (0, 0xFFFFFF), (4, False): (0, 0xFFFFFFFF), (4, True): (-0x80000000, 0x7FFFFFFF)}
_FORMATS = {(1, False): "<B", (1, True): "<b", (2, False): "<H", (2, True): "<h", (4, False): "<I", (4, True): "<i"}
_Reader = Callable[[bytes, int], tuple[Any, ...]]


def _u24(p: bytes, offset: int) -> tuple[int]:
    return (p[offset] | p[offset + 1] << 8 | p[offset + 2] << 16,)


def _names(metric: str, unit: str) -> tuple[str, ...]:
    """temperature_c, temperature_2_c, ...: the unit stays last, as every metric name in the repo has it."""
    tail = f"_{unit}" if unit else ""
    return (f"{metric}{tail}", *(f"{metric}_{n}{tail}" for n in range(2, _DUPLICATES + 1)))


def _build() -> tuple[dict[int, tuple[int, tuple[str, ...], int, _Reader, float]],
                      dict[str, list[tuple[int, int, bool, float, int]]]]:
    readers: dict[tuple[int, bool], _Reader] = {k: struct.Struct(f).unpack_from for k, f in _FORMATS.items()}
    readers[(3, False)] = _u24
    objects: dict[int, tuple[int, tuple[str, ...], int, _Reader, float]] = {
        0x00: (_PACKET_ID, (), 1, readers[(1, False)], 1),
        0x3C: (_DIMMER, _DIMMER_NAMES, 2, readers[(1, False)], 1),
        0x53: (_SKIP, (), 0, readers[(1, False)], 1), 0x54: (_SKIP, (), 0, readers[(1, False)], 1),  # text, raw
    }
    encoders: dict[str, list[tuple[int, int, bool, float, int]]] = {}
    rows = {**_SENSORS, **{i: (name, "", 1, False, 1.0) for i, name in _BINARY.items()}}
    for object_id, (metric, unit, size, signed, divisor) in sorted(rows.items()):
        names = _names(metric, unit)
        objects[object_id] = (_VALUE, names, size, readers[(size, signed)], divisor)
        for dup, name in enumerate(names):
            encoders.setdefault(name, []).append((object_id, size, signed, divisor, dup))
    for choices in encoders.values():  # the finest resolution first, then the fewest bytes
        choices.sort(key=lambda c: (-c[3], c[1], c[0]))
    return objects, encoders


_OBJECTS, _ENCODERS = _build()
_CIPHERS: dict[bytes, AESCCM] = {}
_COUNTER, _U8 = struct.Struct("<I"), struct.Struct("<B")


def _cipher(key: bytes) -> AESCCM:
    cipher = _CIPHERS.get(key)
    if cipher is None:
        if len(key) != 16:
            raise FrameError(f"a BTHome key is 16 bytes, not {len(key)}")
        if len(_CIPHERS) >= 256:
            _CIPHERS.clear()
        cipher = _CIPHERS[key] = AESCCM(key, tag_length=4)
    return cipher


def _mac(address: str) -> bytes:
    try:
        mac = bytes.fromhex(address.replace(":", ""))
    except ValueError:
        mac = b""
    if len(mac) != 6:
        raise FrameError(f"address {address!r} is not a MAC address (AA:BB:CC:DD:EE:FF)")
    return mac


def _bthome(address: str, p: bytes, key: bytes | None) -> SensorFrame:
    if not p:
        raise FrameError("empty BTHome frame")
    info = p[0]
    if info & _VERSION_MASK != _VERSION_2:
        raise FrameError(f"BTHome version {info >> 5}, 2 expected")
    start, mac = 1, b""
    if info & _MAC_INCLUDED:  # early v2 firmware put its MAC, reversed, before the objects
        if len(p) < 7:
            raise FrameError("BTHome frame too short for the MAC it announces")
        start, mac = 7, p[6:0:-1]
    if not info & _ENCRYPTED:
        if key is not None:
            raise FrameError("plain BTHome frame from a device that has a key (downgrade refused)")
        values, packet_id = _objects(p, start)
        return SensorFrame("bthome_v2", values, packet_id)
    if key is None:
        raise FrameError("encrypted BTHome frame and no key for it")
    if len(p) < start + 8:
        raise FrameError("encrypted BTHome frame too short for its counter and MIC")
    counter = p[-8:-4]
    nonce = (mac or _mac(address)) + b"\xd2\xfc" + p[:1] + counter
    try:
        plain = _cipher(key).decrypt(nonce, p[start:-8] + p[-4:], None)
    except InvalidTag:
        raise FrameError("BTHome MIC check failed (wrong key, or the frame was altered)") from None
    values, packet_id = _objects(plain, 0)
    return SensorFrame("bthome_v2", values, packet_id, _COUNTER.unpack(counter)[0], True)


def _objects(p: bytes, i: int) -> tuple[dict[str, float], int | None]:
    values: dict[str, float] = {}
    packet_id: int | None = None
    decoded, n, start = False, len(p), i
    while i < n:
        obj = _OBJECTS.get(p[i])
        if obj is None:  # its length is unknown, so nothing after it can be read (bthome.io/format)
            break
        kind, names, size, read, divisor = obj
        i += 1
        if kind == _SKIP:  # text and raw carry their length; neither is telemetry
            size = p[i] + 1 if i < n else 1
        if i + size > n:  # truncated: what came before stands
            break
        if kind == _VALUE:
            value = read(p, i)[0] / divisor
            if names[0] not in values:
                values[names[0]] = value
            else:
                _put_duplicate(values, names, value)
        elif kind == _PACKET_ID:
            if packet_id is None:
                packet_id = p[i]
        elif kind == _DIMMER:  # event 1 = rotate left, 2 = right, then the steps
            event, steps = p[i], p[i + 1]
            _put_duplicate(values, names, steps if event == 2 else -steps if event == 1 else 0)
        i += size
        decoded = True
    if not decoded:  # the message stays the same frame after frame: the driver reports it when it changes
        raise FrameError(f"no BTHome object decodes (first id {f'0x{p[start]:02x}' if start < n else 'none'})")
    return values, packet_id


def _put_duplicate(values: dict[str, float], names: tuple[str, ...], value: float) -> None:
    for name in names:
        if name not in values:
            values[name] = value
            return


# -- decoding ---------------------------------------------------------------------------------------------------
_BY_COMPANY: dict[int, Callable[[bytes], Beacon | SensorFrame | None]] = {APPLE: _ibeacon, RUUVI: _ruuvi}


def decode(address: str, manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes],
           bthome_key: bytes | None = None) -> Beacon | SensorFrame | None:
    """None: nothing of ours (an attendee's phone); raises FrameError for a known kind that is malformed,
    and for BTHome: encrypted without key / wrong key (MIC fails) / plain frame when a key is set (downgrade)."""
    for company, payload in manufacturer_data.items():
        parse = _BY_COMPANY.get(company)
        if parse is not None and (frame := parse(payload)) is not None:
            return frame
    for uuid, payload in service_data.items():
        if uuid == BTHOME_UUID:
            return _bthome(address, payload, bthome_key)
        if uuid == EDDYSTONE_UUID and (frame := _eddystone(payload)) is not None:
            return frame
    return None


# -- encoding (the sim devices, the tests) ----------------------------------------------------------------------
def _pack(fmt: struct.Struct, *values: Any) -> bytes:
    try:
        return fmt.pack(*values)
    except struct.error as e:
        raise ValueError(f"out of range for the frame: {values}: {e}") from None


def _raw(value: float, scale: float, low: int, high: int) -> int:
    """value * scale rounded and clipped to [low, high], as the formats say an overflow is sent."""
    if not math.isfinite(value):
        raise ValueError(f"{value} cannot be sent")
    return min(high, max(low, round(value * scale)))


def ibeacon(uuid: str, major: int, minor: int, measured_power_dbm: int) -> tuple[int, bytes]:
    return APPLE, b"\x02\x15" + _pack(_IBEACON_BODY, UUID(uuid).bytes, major, minor, measured_power_dbm)



def eddystone_uid(namespace: bytes, instance: bytes, tx_power_0m_dbm: int) -> tuple[str, bytes]:
    if len(namespace) != 10 or len(instance) != 6:
        raise ValueError("an Eddystone UID is a 10-byte namespace and a 6-byte instance")
    return EDDYSTONE_UUID, _pack(_UID, tx_power_0m_dbm, namespace, instance) + b"\x00\x00"


def eddystone_tlm(battery_mv: int, temperature_c: float | None, adv_count: int, uptime_s: float) -> tuple[str, bytes]:
    temperature = _TLM_NO_TEMPERATURE if temperature_c is None else _raw(temperature_c, 256, -0x7FFF, 0x7FFF)
    if not uptime_s >= 0 or math.isinf(uptime_s):
        raise ValueError(f"uptime {uptime_s} s cannot be sent")
    sec_count = round(uptime_s * 10) & 0xFFFFFFFF  # wraps after 13.6 years, as the beacon's own counter does
    return EDDYSTONE_UUID, b"\x20\x00" + _pack(_TLM_BODY, battery_mv, temperature, adv_count, sec_count)



def ruuvi_v5(values: Mapping[str, float], mac: bytes, sequence: int) -> tuple[int, bytes]:
    """Missing values are sent as "not available"; values beyond a field are clipped to it, as the tags do."""
    def field(name: str, scale: float, low: int, high: int, missing: int, offset: float = 0) -> int:
        value = values.get(name)
        return missing if value is None else _raw(value - offset, scale, low, high)

    battery = field("battery_v", 1000, 0, 2046, 2047, 1.6)
    tx = field("tx_power_dbm", 0.5, 0, 30, 31, -40)
    if len(mac) != 6:
        raise ValueError("a MAC is 6 bytes")
    return RUUVI, _pack(_RUUVI_BODY, 5, field("temperature_c", 200, -32767, 32767, -0x8000),
                        field("humidity_pct", 400, 0, 65534, 0xFFFF), field("pressure_hpa", 100, 0, 65534, 0xFFFF, 500),
                        *(field(f"acceleration_{a}_g", 1000, -32767, 32767, -0x8000) for a in "xyz"),
                        battery << 5 | tx, field("movement_count", 1, 0, 254, 0xFF), sequence, mac)


def bthome_v2(values: Mapping[str, float], packet_id: int | None = None, *, key: bytes | None = None,
              address: str | None = None, counter: int = 0) -> tuple[str, bytes]:
    """Objects in id order, each in the finest resolution its value fits; encrypted when given a key."""
    objects: list[tuple[int, int, bytes]] = [] if packet_id is None else [(0x00, 0, _pack(_U8, packet_id))]
    for name, value in values.items():
        objects.append(_bthome_object(name, value))
    plain = b"".join(bytes((object_id,)) + data for object_id, _, data in sorted(objects))
    if key is None:
        return BTHOME_UUID, bytes((_VERSION_2,)) + plain
    if address is None:
        raise ValueError("an encrypted BTHome frame needs the device's address (the nonce carries it)")
    info = bytes((_VERSION_2 | _ENCRYPTED,))
    count = _pack(_COUNTER, counter)
    sealed = _cipher(key).encrypt(_mac(address) + b"\xd2\xfc" + info + count, plain, None)
    return BTHOME_UUID, info + sealed[:-4] + count + sealed[-4:]



def _bthome_object(name: str, value: float) -> tuple[int, int, bytes]:
    if not math.isfinite(value):
        raise ValueError(f"{name} = {value} cannot be sent")
    if name in _DIMMER_NAMES:
        steps = _raw(value, 1, -255, 255)
        return 0x3C, _DIMMER_NAMES.index(name), bytes((2 if steps > 0 else 1 if steps < 0 else 0, abs(steps)))
    choices = _ENCODERS.get(name)
    if choices is None:
        raise ValueError(f"BTHome has no object for {name!r}")
    for object_id, size, signed, divisor, dup in choices:
        low, high = _RANGES[(size, signed)]
        raw = round(value * divisor)
        if low <= raw <= high:
            return object_id, dup, raw.to_bytes(size, "little", signed=signed)
    raise ValueError(f"{name} = {value} does not fit any BTHome object")


# -- physical limits: values outside are decoded, and flagged by the driver -------------------------------------
_LIMITS: dict[str, tuple[float, float]] = {
    "temperature_c": (-40, 85), "dewpoint_c": (-40, 85), "humidity_pct": (0, 100), "moisture_pct": (0, 100),
    "pressure_hpa": (300, 1100), "battery_v": (0, 4), "battery_pct": (0, 100), "voltage_v": (0, 500),
    "co2_ppm": (0, 10000), "tvoc_ugm3": (0, 60000), "pm25_ugm3": (0, 1000), "pm10_ugm3": (0, 1000),
    "illuminance_lux": (0, 150000), "tx_power_dbm": (-40, 20), "movement_count": (0, 254),
    "acceleration_x_g": (-16, 16), "acceleration_y_g": (-16, 16), "acceleration_z_g": (-16, 16),
    "uptime_s": (0, 0xFFFFFFFF / 10), "mass_kg": (0, 500), "mass_lb": (0, 1100), "count": (-2**31, 2**32 - 1),
    "energy_kwh": (0, 0xFFFFFFFF / 1000), "power_w": (-100000, 100000), "current_a": (-65.536, 65.535),
    "button": (0, 0x80), "dimmer_steps": (-255, 255), "rotation_deg": (-360, 360), "distance_mm": (0, 0xFFFF),
    "distance_m": (0, 6553.5), "duration_s": (0, 0xFFFFFF / 1000), "speed_m_s": (-100, 100), "uv_index": (0, 20),
    "volume_l": (0, 0xFFFFFFFF / 1000), "volume_ml": (0, 0xFFFF), "flow_m3_h": (0, 65.535),
    "gas_m3": (0, 0xFFFFFFFF / 1000), "water_l": (0, 0xFFFFFFFF / 1000), "timestamp_s": (0, 0xFFFFFFFF),
    "acceleration_m_s2": (-160, 160), "gyroscope_deg_s": (-2000, 2000), "volume_storage_l": (0, 0xFFFFFFFF / 1000),
    "conductivity_us_cm": (0, 0xFFFF), "direction_deg": (0, 360), "precipitation_mm": (0, 6553.5),
    "channel": (0, 0xFF), "rotational_speed_rpm": (0, 0xFFFF), "light_level": (0, 0xFF),
    **{name: (0, 1) for name in _BINARY.values()},
}
PHYSICAL_RANGE: dict[str, tuple[float, float]] = {
    name: _LIMITS[names[0]] for _, names, *_ in _OBJECTS.values() for name in names} | _LIMITS
