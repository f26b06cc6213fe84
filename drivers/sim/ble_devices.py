"""A virtual room for BLE sensing: beacons, sensor tags and attendees' phones advertising on a Bumble LocalLink,
heard by one scanner controller per zone, each exposed on a pseudo-terminal for the gateway to open.

Frames come from drivers/ble/frames.py's encoders. Bumble's emulated controller reports every RSSI as -50 dBm, so
the radio is faked here, at the controller: each advertiser and scanner has a position, and a scanner reports what
it hears with the RSSI of a log-distance path-loss model plus noise, or not at all below its sensitivity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import AdvertisingEventProperties, AdvertisingParameters, AdvertisingSet, Device
from bumble.hci import Address, HCI_LE_Extended_Advertising_Report_Event
from bumble.host import Host
from bumble.link import LocalLink
from bumble.ll import AdvExtInd, AdvInd
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from drivers.ble import frames
from drivers.ble.occupancy import rssi_at

Position = tuple[float, float]
Report = HCI_LE_Extended_Advertising_Report_Event.Report
EventType = HCI_LE_Extended_Advertising_Report_Event.EventType

SENSITIVITY_DBM = -100.0  # a phone-class receiver hears nothing weaker
ZONE_SPACING_M = 60.0  # zones side by side: two radii apart, so a device is heard best in its own zone
PHONE_ROTATE_S = 900.0  # iOS and Android change their random address about every 15 minutes


def ad_bytes(*entries: tuple[int | str, bytes], flags: bool = True) -> bytes:
    """Advertising data from the encoders' (company id or service UUID, payload) pairs."""
    structures: list[tuple[int, bytes]] = [(AdvertisingData.FLAGS, b"\x06")] if flags else []
    for key, payload in entries:
        if isinstance(key, int):
            structures.append((AdvertisingData.MANUFACTURER_SPECIFIC_DATA, struct.pack("<H", key) + payload))
        else:
            short = struct.pack("<H", int(key[4:8], 16))
            structures.append((AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, short))
            structures.append((AdvertisingData.SERVICE_DATA_16_BIT_UUID, short + payload))
    return bytes(AdvertisingData(structures))


def random_private_address(rng: random.Random) -> str:
    """A resolvable-private-looking address (top bits 01), as phones use."""
    first = 0x40 | rng.randrange(0x40)
    return ":".join(f"{b:02X}" for b in [first, *(rng.randrange(256) for _ in range(5))])


def _remove_stale_link(path: str) -> None:
    if os.path.islink(path):  # left by a run that did not exit cleanly
        os.unlink(path)


def zone_centre(index: int) -> Position:
    return (index * ZONE_SPACING_M, 0.0)


class _ZoneScanner(Controller):
    """The gateway's radio in one zone: reports what it hears with the model's RSSI, once (no fake scan
    response), as a non-connectable legacy or extended advertisement."""

    def __init__(self, room: VirtualRoom, zone: str, position: Position, transport: Transport) -> None:
        super().__init__(f"scanner-{zone}", host_source=transport.source, host_sink=transport.sink,
                         link=room.link)
        self.room, self.zone, self.position = room, zone, position
        self.muted = False  # a stuck radio: it hears nothing
        self.reported = 0

    def on_advertising_pdu(self, pdu: AdvInd | AdvExtInd) -> None:
        if not self.le_scan_enable or self.muted:
            return
        rssi = self.room.rssi(pdu.advertiser_address, self.position)
        if rssi is None:
            return
        self.reported += 1
        report = Report(event_type=EventType.LEGACY_ADVERTISING_PDU_USED if isinstance(pdu, AdvInd) else 0,
                        address_type=pdu.advertiser_address.address_type, address=pdu.advertiser_address,
                        primary_phy=1, secondary_phy=0 if isinstance(pdu, AdvInd) else 1, advertising_sid=0xFF,
                        tx_power=HCI_LE_Extended_Advertising_Report_Event.TX_POWER_INFORMATION_NOT_AVAILABLE,
                        rssi=round(rssi), periodic_advertising_interval=0, direct_address_type=0,
                        direct_address=Address.ANY, data=pdu.data)
        self.send_hci_packet(HCI_LE_Extended_Advertising_Report_Event([report]))


@dataclass
class Advertiser:
    """One advertising set on the air: its address, where it is, what it sends."""

    name: str
    address: str
    position: Position
    data: bytes
    interval_ms: float
    adv_set: AdvertisingSet | None = None


@dataclass
class Tag:
    """A sensor tag: values it measures (drifting a little), its frame counters, and an encryption key."""

    name: str
    format: str  # "ruuvi_v5" | "bthome_v2"
    advertiser: Advertiser
    values: dict[str, float]
    key: bytes | None = None
    sequence: int = 0
    counter: int = 0
    drift: float = 0.0

    def frame(self) -> bytes:
        if self.format == "ruuvi_v5":
            mac = bytes.fromhex(self.advertiser.address.replace(":", ""))
            return ad_bytes(frames.ruuvi_v5(self.values, mac, self.sequence & 0xFFFF))
        return ad_bytes(frames.bthome_v2(self.values, self.sequence & 0xFF, key=self.key,
                                         address=self.advertiser.address, counter=self.counter))


@dataclass
class Phone:
    advertiser: Advertiser
    rotate_at: float = math.inf


@dataclass
class VirtualRoom:
    """The air of the sensing scanners, its devices, and the scanners' pseudo-terminals."""

    seed: int | None = None
    rssi_at_1m_dbm: float = -59.0
    path_loss_exponent: float = 2.2
    noise_db: float = 2.0
    link: LocalLink = field(default_factory=LocalLink)
    scanners: dict[str, _ZoneScanner] = field(default_factory=dict)
    advertisers: dict[str, Advertiser] = field(default_factory=dict)
    tags: dict[str, Tag] = field(default_factory=dict)
    phones: list[Phone] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._positions: dict[bytes, Position] = {}
        self._transports: list[Transport] = []
        self._hosts: dict[str, Device] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the radio model ----------------------------------------------------------------------------------
    def rssi(self, address: Address, at: Position) -> float | None:
        where = self._positions.get(bytes(address))
        if where is None:
            return None
        rssi = rssi_at(math.dist(where, at), self.rssi_at_1m_dbm, self.path_loss_exponent)
        rssi += self.rng.gauss(0.0, self.noise_db)
        return rssi if rssi >= SENSITIVITY_DBM else None

    # -- scanners -----------------------------------------------------------------------------------------
    async def open_scanner(self, zone: str, pty_path: str, position: Position | None = None) -> None:
        """A scanner controller for `zone` at `pty_path` (a symlink to the pty): the gateway opens it as
        `serial:<pty_path>` with the bumble backend."""
        _remove_stale_link(pty_path)
        transport = await open_transport(f"pty:{pty_path}")
        self._transports.append(transport)
        centre = position if position is not None else zone_centre(len(self.scanners))
        self.scanners[zone] = _ZoneScanner(self, zone, centre, transport)

    def mute(self, zone: str, muted: bool = True) -> None:
        self.scanners[zone].muted = muted

    # -- advertisers --------------------------------------------------------------------------------------
    async def _host(self, name: str) -> Device:
        """A Bumble device hosting many advertising sets (one per advertiser): a few hosts, not one per phone."""
        if name not in self._hosts:
            controller = Controller(f"air-{name}", link=self.link)
            device = Device(address=Address(f"F2:00:00:00:00:{len(self._hosts):02X}"),
                            host=Host(controller, AsyncPipeSink(controller)))
            await device.power_on()
            self._hosts[name] = device
        return self._hosts[name]

    async def advertise(self, name: str, address: str, position: Position, data: bytes, interval_ms: float = 1000,
                        host: str = "infra") -> Advertiser:
        """Put an advertiser on the air: non-connectable, non-scannable, legacy PDUs, like a beacon or a tag."""
        device = await self._host(host)
        adv = Advertiser(name, address, position, data, interval_ms)
        params = AdvertisingParameters(
            advertising_event_properties=AdvertisingEventProperties(is_connectable=False, is_scannable=False,
                                                                    is_legacy=True),
            primary_advertising_interval_min=interval_ms, primary_advertising_interval_max=interval_ms)
        self._positions[bytes(Address(address))] = position
        adv.adv_set = await device.create_advertising_set(advertising_parameters=params,
                                                          random_address=Address(address), advertising_data=data)
        self.advertisers[name] = adv
        return adv

    async def update(self, adv: Advertiser, data: bytes) -> None:
        assert adv.adv_set is not None
        adv.data = data
        await adv.adv_set.set_advertising_data(data)

    async def move(self, adv: Advertiser, address: str) -> None:
        """A new address for the same device (a phone's privacy rotation)."""
        assert adv.adv_set is not None
        self._positions.pop(bytes(Address(adv.address)), None)
        await adv.adv_set.stop()
        adv.address = address
        self._positions[bytes(Address(address))] = adv.position
        await adv.adv_set.set_random_address(Address(address))
        await adv.adv_set.start()

    async def add_ibeacon(self, name: str, address: str, position: Position, uuid: str, major: int, minor: int,
                          measured_power_dbm: int = -59, interval_ms: float = 500) -> Advertiser:
        data = ad_bytes(frames.ibeacon(uuid, major, minor, measured_power_dbm))
        return await self.advertise(name, address, position, data, interval_ms)

    async def add_eddystone(self, name: str, address: str, position: Position, namespace: str, instance: str,
                            tx_power_0m_dbm: int = -18, battery_mv: int = 2950, temperature_c: float = 21.5,
                            interval_ms: float = 500) -> Advertiser:
        """UID and TLM frames from one address, as an Eddystone beacon interleaves them (two sets here)."""
        uid = ad_bytes(frames.eddystone_uid(bytes.fromhex(namespace), bytes.fromhex(instance), tx_power_0m_dbm))
        tlm = ad_bytes(frames.eddystone_tlm(battery_mv, temperature_c, 0, 0.0))
        beacon = await self.advertise(name, address, position, uid, interval_ms)
        telemetry = await self.advertise(f"{name}/tlm", address, position, tlm, interval_ms * 2)
        self._spawn(self._telemetry(telemetry, battery_mv, temperature_c, interval_ms * 2))
        return beacon

    async def _telemetry(self, adv: Advertiser, battery_mv: int, temperature_c: float, interval_ms: float) -> None:
        """A TLM frame's counters move on as the beacon's do: every 10 s, a new frame."""
        began = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(10.0)
            uptime = asyncio.get_running_loop().time() - began
            tlm = frames.eddystone_tlm(battery_mv, temperature_c, round(uptime * 1000 / interval_ms), uptime)
            await self.update(adv, ad_bytes(tlm))

    async def add_tag(self, name: str, address: str, position: Position, format: str, values: Mapping[str, float],
                      key: bytes | None = None, period_s: float = 1.0, drift: float = 0.0) -> Tag:
        """A sensor tag sending a new measurement every `period_s` (each advertised a few times, as tags do);
        `drift`: the standard deviation of its temperature's random walk per measurement."""
        tag = Tag(name, format, Advertiser(name, address, position, b"", 0), dict(values), key, drift=drift)
        tag.advertiser = await self.advertise(name, address, position, tag.frame(), period_s * 1000 / 3)
        self.tags[name] = tag
        self._spawn(self._measure(tag, period_s))
        return tag

    async def _measure(self, tag: Tag, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            if tag.drift and "temperature_c" in tag.values:
                tag.values["temperature_c"] = round(tag.values["temperature_c"] + self.rng.gauss(0, tag.drift), 2)
            tag.sequence += 1
            tag.counter += 1
            with contextlib.suppress(Exception):  # a value the test set beyond what the format can carry
                await self.update(tag.advertiser, tag.frame())

    def set_values(self, tag: str, values: Mapping[str, float]) -> None:
        self.tags[tag].values.update(values)

    async def add_phones(self, zone: str, count: int, radius_m: float = 15.0, interval_ms: float = 1000,
                         rotate_s: float = PHONE_ROTATE_S) -> list[Phone]:
        """`count` attendees' phones scattered around `zone`'s scanner, advertising plain manufacturer data
        (Apple's and Samsung's company ids) from random addresses that they change every `rotate_s`."""
        centre = self.scanners[zone].position if zone in self.scanners else (0.0, 0.0)
        added = []
        for i in range(count):
            r, a = radius_m * math.sqrt(self.rng.random()), self.rng.uniform(0, 2 * math.pi)
            spot = (centre[0] + r * math.cos(a), centre[1] + r * math.sin(a))
            company = 0x004C if self.rng.random() < 0.6 else 0x0075
            payload = bytes([0x10, 0x05, *(self.rng.randrange(256) for _ in range(5))]) if company == 0x004C else \
                bytes([0x42, 0x04, *(self.rng.randrange(256) for _ in range(6))])
            adv = await self.advertise(f"phone-{zone}-{i}", random_private_address(self.rng), spot,
                                       ad_bytes((company, payload)), interval_ms, host=f"phones-{zone}")
            phone = Phone(adv, asyncio.get_running_loop().time() + self.rng.uniform(0.1, 1.0) * rotate_s)
            self.phones.append(phone)
            added.append(phone)
        if rotate_s < math.inf and len(self.phones) == len(added):
            self._spawn(self._rotate(rotate_s))
        return added

    async def _rotate(self, rotate_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(10.0, rotate_s / 4))
            for phone in self.phones:
                if loop.time() >= phone.rotate_at:
                    phone.rotate_at = loop.time() + rotate_s
                    await self.move(phone.advertiser, random_private_address(self.rng))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for device in self._hosts.values():
            with contextlib.suppress(Exception):
                await device.stop_advertising()
        for adv in self.advertisers.values():
            if adv.adv_set is not None and adv.adv_set.enabled:
                with contextlib.suppress(Exception):
                    await adv.adv_set.stop()
        for transport in self._transports:
            with contextlib.suppress(Exception):
                await transport.close()
        self._transports.clear()


# -- the demo's room, and the gateway configuration that matches it -------------------------------------------
DEMO_IBEACON_UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
DEMO_NAMESPACE = "76656e75652d67617465"  # "venue-gate"
DEMO_BTHOME_KEY = "231d39c1d7cc1ab1aee224cd096db932"  # public: the demo's encrypted tag, never a venue's


@dataclass(frozen=True)
class Furniture:
    """What `furnish` puts in each zone: name, address, offset from the zone's scanner, and how it is configured."""

    name: str
    address: str
    offset: Position
    config: str  # the [[drivers.X.beacons]] or [[drivers.X.tags]] lines, without the header


def furniture(zones: list[str], tags: bool = True) -> dict[str, list[Furniture]]:
    """Per zone: an iBeacon; an Eddystone UID+TLM beacon in the first zone; a Ruuvi tag per zone; a plain BTHome
    tag in the first zone and an encrypted one in the last."""
    out: dict[str, list[Furniture]] = {}
    for i, zone in enumerate(zones):
        items = [Furniture(f"{zone}-ibeacon", f"D0:00:00:00:01:{i:02X}", (5.0, 2.0),
                           f'ibeacon = "{DEMO_IBEACON_UUID}/1/{i + 1}"')]
        if i == 0:
            items.append(Furniture(f"{zone}-eddystone", f"D0:00:00:00:02:{i:02X}", (-8.0, 3.0),
                                   f'eddystone = "{DEMO_NAMESPACE}/{i:012x}"'))
        if tags:
            items.append(Furniture(f"env-{zone}", f"C4:7C:8D:6A:1B:{i:02X}", (2.0, -3.0), 'format = "ruuvi_v5"'))
            if i == 0:
                items.append(Furniture(f"air-{zone}", f"A4:C1:38:00:03:{i:02X}", (-3.0, -2.0), 'format = "bthome_v2"'))
            if i == len(zones) - 1:
                items.append(Furniture(f"secure-{zone}", f"A4:C1:38:00:04:{i:02X}", (1.0, 4.0),
                                       f'format = "bthome_v2"\ndemo_key = "{DEMO_BTHOME_KEY}"'))
        out[zone] = items
    return out


def pty_path(prefix: str, zone: str) -> str:
    return f"{prefix}-{zone}"


async def furnish(room: VirtualRoom, zones: list[str], prefix: str, phones_per_zone: int, tags: bool = True,
                  rotate_s: float = PHONE_ROTATE_S, drift: float = 0.0) -> None:
    """The demo's room: a scanner per zone on `<prefix>-<zone>`, the furniture above, and the phones."""
    for zone in zones:
        await room.open_scanner(zone, pty_path(prefix, zone))
    for i, (zone, items) in enumerate(furniture(zones, tags).items()):
        cx, cy = zone_centre(i)
        for f in items:
            at = (cx + f.offset[0], cy + f.offset[1])
            if f.config.startswith("ibeacon"):
                await room.add_ibeacon(f.name, f.address, at, DEMO_IBEACON_UUID, 1, i + 1)
            elif f.config.startswith("eddystone"):
                await room.add_eddystone(f.name, f.address, at, DEMO_NAMESPACE, f"{i:012x}")
            elif "ruuvi" in f.config:
                values = {"temperature_c": 21.0 + i, "humidity_pct": 45.0, "pressure_hpa": 1012.5, "battery_v": 2.9,
                          "acceleration_z_g": 1.0, "movement_count": 3}
                await room.add_tag(f.name, f.address, at, "ruuvi_v5", values, drift=drift)
            else:
                key = bytes.fromhex(DEMO_BTHOME_KEY) if "demo_key" in f.config else None
                values = {"temperature_c": 22.5 + i, "humidity_pct": 48.0, "co2_ppm": 650.0} if key is None else \
                    {"temperature_c": 19.5, "battery_pct": 87.0}
                await room.add_tag(f.name, f.address, at, "bthome_v2", values, key=key, drift=drift)
        if phones_per_zone:
            await room.add_phones(zone, phones_per_zone, rotate_s=rotate_s)


def sensing_config(zones: list[str], prefix: str, *, name: str = "ble", tags: bool = True, window_s: float = 60,
                   silence_s: float = 30) -> str:
    """The gateway's `[drivers.<name>]` for the room `furnish` makes: the bumble backend on its scanners' ptys."""
    lines = [f"[drivers.{name}]", 'type = "ble"', 'backend = "bumble"', 'scanning = "passive"',
             f"window_s = {window_s:g}", "people_per_device = 1.0", 'salt_rotation = "12:00"',
             f"silence_s = {silence_s:g}"]
    for zone in zones:
        lines += ["", f"[[drivers.{name}.scanners]]", f'adapter = "serial:{pty_path(prefix, zone)}"',
                  f'zone = "{zone}"', "rssi_at_1m_dbm = -59", "path_loss_exponent = 2.2", "radius_m = 30",
                  "smoothing = 0.3"]
    for zone, items in furniture(zones, tags).items():
        for f in items:
            table = "beacons" if f.config.startswith(("ibeacon", "eddystone")) else "tags"
            address = "" if table == "beacons" else f'\naddress = "{f.address}"'
            lines += ["", f"[[drivers.{name}.{table}]]", f'name = "{f.name}"', f'zone = "{zone}"{address}', f.config]
    return "\n".join(lines) + "\n"


async def _serve(zones: list[str], prefix: str, phones: int, interval_ms: float, rotate_s: float,
                 report_s: float) -> None:
    room = VirtualRoom()
    await furnish(room, zones, prefix, 0, drift=0.05)
    for zone in zones:
        await room.add_phones(zone, phones, interval_ms=interval_ms, rotate_s=rotate_s)
    print(json.dumps({"ready": sorted(room.scanners)}), flush=True)
    try:
        while True:  # what each scanner has reported, for a benchmark reading our stdout
            await asyncio.sleep(report_s)
            print(json.dumps({"at": time.monotonic(), "reported": {z: s.reported for z, s in room.scanners.items()}}),
                  flush=True)
    finally:
        await room.close()


def main() -> None:
    """`python -m drivers.sim.ble_devices`: a virtual room on its own, for a gateway run elsewhere (or a bench)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m drivers.sim.ble_devices", description=__doc__)
    parser.add_argument("--prefix", default="/tmp/venue-gateway-ble", help="scanner ptys are <prefix>-<zone>")
    parser.add_argument("--zones", default="floor,balcony,bar")
    parser.add_argument("--phones-per-zone", type=int, default=20)
    parser.add_argument("--phone-interval-ms", type=float, default=1000.0)
    parser.add_argument("--rotate-s", type=float, default=PHONE_ROTATE_S)
    parser.add_argument("--report-s", type=float, default=3600.0, help="print scanners' report counts this often")
    parser.add_argument("--print-config", action="store_true", help="print the gateway's [drivers.ble] and exit")
    args = parser.parse_args()
    zones = args.zones.split(",")
    if args.print_config:
        print(sensing_config(zones, args.prefix))
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(zones, args.prefix, args.phones_per_zone, args.phone_interval_ms, args.rotate_s,
                           args.report_s))


if __name__ == "__main__":
    main()
