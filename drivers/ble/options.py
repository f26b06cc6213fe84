"""The `ble` driver's configuration: scanners (one per radio, with its zone's path-loss calibration), placed
beacons and sensor tags, as typed tables checked once at load."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from drivers.ble.occupancy import parse_time_of_day
from gateway.driver import Problem, setting


def _check_hhmm(value: str) -> str | None:
    return None if parse_time_of_day(value) else f"{value!r} is not a time of day (allowed: HH:MM, 24 h)"


def _check_address(value: str) -> str | None:
    parts = value.split(":")
    ok = len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)
    return None if ok else f"{value!r} is not a device address (allowed: AA:BB:CC:DD:EE:FF)"


@dataclass(frozen=True)
class ScannerOptions:
    adapter: str  # bluez: "hci0"; bumble: a transport such as "serial:/dev/ttyACM0"
    zone: str
    rssi_at_1m_dbm: float = setting(-59.0, min=-120, max=0)
    path_loss_exponent: float = setting(2.2, min=1.0, max=6.0)
    radius_m: float = setting(30.0, min=0.5, max=1000)
    smoothing: float = setting(0.3, min=0.01, max=1.0)


@dataclass(frozen=True)
class BeaconOptions:
    name: str
    zone: str | None = None
    ibeacon: str | None = None  # "<uuid>/<major>/<minor>"
    eddystone: str | None = None  # "<namespace, 20 hex>/<instance, 12 hex>"

    @property
    def identity(self) -> str:
        """The id as frames.Beacon gives it."""
        if self.ibeacon is not None:
            u, major, minor = self.ibeacon.split("/")
            return f"{uuid.UUID(u)}/{int(major)}/{int(minor)}"
        assert self.eddystone is not None
        return self.eddystone.lower()

    def problems(self) -> list[Problem]:
        if (self.ibeacon is None) == (self.eddystone is None):
            return [Problem("ibeacon", "give either ibeacon or eddystone")]
        try:
            if self.ibeacon is not None:
                _, major, minor = self.ibeacon.split("/")
                if not (0 <= int(major) <= 0xFFFF and 0 <= int(minor) <= 0xFFFF):
                    raise ValueError
                self.identity  # noqa: B018 - the UUID parses
            else:
                assert self.eddystone is not None
                namespace, instance = self.eddystone.split("/")
                if len(bytes.fromhex(namespace)) != 10 or len(bytes.fromhex(instance)) != 6:
                    raise ValueError
        except ValueError:
            which = "ibeacon" if self.ibeacon is not None else "eddystone"
            allowed = "<uuid>/<major>/<minor>" if which == "ibeacon" else "<20 hex digits>/<12 hex digits>"
            return [Problem(which, f"{getattr(self, which)!r} is not a beacon id (allowed: {allowed})")]
        return []


@dataclass(frozen=True)
class TagOptions:
    name: str
    address: str = setting(check=_check_address)
    format: Literal["ruuvi_v5", "bthome_v2"] = "ruuvi_v5"
    zone: str | None = None
    key_file: str | None = None  # a BTHome bindkey, 32 hex digits
    demo_key: str | None = None  # the same, inline: for the demo only

    def problems(self) -> list[Problem]:
        if self.key_file is not None and self.demo_key is not None:
            return [Problem("demo_key", "give key_file or demo_key, not both")]
        if self.key_file is not None and not self.key_file.startswith("/"):
            return [Problem("key_file", f"{self.key_file!r} is not an absolute path")]
        if self.format != "bthome_v2" and (self.key_file or self.demo_key):
            return [Problem("format", "only bthome_v2 tags take a key")]
        if self.demo_key is not None and parse_key(self.demo_key) is None:
            return [Problem("demo_key", "is not a BTHome key (allowed: 32 hex digits)")]
        return []


@dataclass(frozen=True)
class BleOptions:
    backend: Literal["bluez", "bumble"] = "bluez"
    scanning: Literal["passive", "active", "auto"] = "auto"
    window_s: float = setting(60.0, min=1, max=3600)
    people_per_device: float = setting(1.0, min=0, max=10)
    salt_rotation: str = setting("12:00", check=_check_hhmm)
    silence_s: float = setting(30.0, min=0.2, max=3600)
    publish_interval_s: float = setting(1.0, min=0.1, max=60)
    # Bounds against a flood of random addresses: devices tracked at once (the least recently heard evicted), and
    # each zone's rate of new devices per minute that raises the `ble_new_devices` alert (cleared under half of it)
    # and holds the zone's occupancy at its last calm count meanwhile.
    max_devices: int = setting(20_000, min=10, max=1_000_000)
    new_devices_alert_per_min: float = setting(600.0, min=1, max=1_000_000)
    scanners: list[ScannerOptions] = setting(factory=list)
    beacons: list[BeaconOptions] = setting(factory=list)
    tags: list[TagOptions] = setting(factory=list)

    def problems(self) -> list[Problem]:
        out = [] if self.scanners else [Problem("scanners", "at least one scanner is needed")]
        for key, names in (("scanners", [s.adapter for s in self.scanners]),
                           ("beacons", [b.name for b in self.beacons]), ("tags", [t.name for t in self.tags]),
                           ("tags", [t.address.upper() for t in self.tags])):
            if len(set(names)) != len(names):
                out.append(Problem(key, f"each must be unique: {sorted(names)}"))
        return out


def parse_key(text: str) -> bytes | None:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        return None
    return key if len(key) == 16 else None
