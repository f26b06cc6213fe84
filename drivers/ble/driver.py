"""The `ble` driver: scans continuously with bleak and turns advertisements into readings and twin state: placed
beacons, environmental sensor tags, and zone occupancy from attendees' devices, known only by salted hashes.

Anyone in the room can advertise anything, from any address. Every table is bounded (devices tracked, addresses
linked to beacons); a zone whose new devices arrive faster than people do raises an alert and its occupancy is
held at its last calm count until the flood has aged out. A tag's packet id or counter only moves on a frame that
proves itself: an encrypted frame's counter after its MIC checked; a plain frame (which anyone can forge, values
and all) is dropped only as a repeat of the last one accepted, never refused as "older", so a forged packet id
cannot lock the real tag out.

BlueZ (bleak's D-Bus backend) in a venue; any Bumble transport with backend = "bumble" (the virtual air, or a
dongle taken from bluetoothd). The bleak code is the same for both: only the backend class differs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from drivers.ble import frames
from drivers.ble.health import (
    PASSIVE_PATTERNS,
    ScannerWatch,
    backend_of,
    recover_adapter,
    stop_quietly,
)
from drivers.ble.occupancy import (
    AddressHasher,
    Arrivals,
    Calibration,
    Occupancy,
    Smoothed,
    distance_m,
    next_rotation,
    parse_time_of_day,
)
from drivers.ble.options import BeaconOptions, BleOptions, TagOptions, parse_key
from gateway.driver import Driver, DriverContext, NotReady, Problem, Reading, importable, read_secret, secret_file

SCANNER_TIMEOUT_S = 10.0  # a scanner start or stop that takes longer has an adapter that is not answering
EDDYSTONE_1M_LOSS_DB = 41  # Eddystone's tx power is at 0 m; the spec puts RSSI at 1 m 41 dB below it
ADDRESSES_PER_BEACON = 4  # addresses remembered per placed beacon (its own, and what spoofs it), most recent kept
CALM_SHARE = 0.5  # a zone's new-device alert clears under this share of its limit (hysteresis)
_RECOVERIES: dict[str, int] = {}  # per driver name, across the supervisor's restarts (each builds a new driver)


@dataclass
class _Beacon:
    options: BeaconOptions
    rssi: list[Smoothed]
    power_1m_dbm: float | None = None  # from its frame: RSSI at 1 m
    heard: bool = False
    last_tlm: int | None = None
    tlm: dict[str, float] = field(default_factory=dict)
    out_of_range: tuple[str, ...] = ()
    nearest: str | None = None

    @property
    def asset(self) -> str:
        return f"beacon:{self.options.name}"


@dataclass
class _Tag:
    options: TagOptions
    key: bytes | None
    rssi: list[Smoothed]
    packet_id: int | None = None
    values: dict[str, float] | None = None  # of the last frame accepted (a plain repeat has the same)
    counter: int | None = None
    pending: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric: (wall ts, value)
    out_of_range: tuple[str, ...] = ()
    error: str | None = None

    @property
    def asset(self) -> str:
        return f"tag:{self.options.name}"


@dataclass
class _Flood:
    """A zone whose new devices came faster than its limit: its occupancy held at `count` until `until`."""

    count: int
    rate_per_min: float
    until: float = math.inf  # the alert stands; once cleared, the flood's devices age out within the window


class BleSensing(Driver[BleOptions]):
    Options = BleOptions

    def __init__(self, ctx: DriverContext, options: BleOptions, *,
                 backend_class: type[BaseBleakScanner] | None = None) -> None:
        super().__init__(ctx, options)
        self._backend_class = backend_class  # tests and benchmarks feed advertisements through their own
        self.calibrations = [Calibration(s.zone, s.rssi_at_1m_dbm, s.path_loss_exponent, s.radius_m, s.smoothing)
                             for s in options.scanners]
        self.occupancy = Occupancy(self.calibrations, options.window_s, options.max_devices)
        self.arrivals = Arrivals(len(self.occupancy.zones))
        self._calm = [0] * len(self.occupancy.zones)  # each zone's count at the last tick its arrivals were calm
        self._floods: dict[str, _Flood] = {}
        self.hasher = AddressHasher()
        self.watches = [ScannerWatch(s.zone, s.adapter) for s in options.scanners]
        self.scanners: list[BleakScanner] = []
        self.mode = "?"
        self.beacons = {b.identity: _Beacon(b, [Smoothed() for _ in options.scanners]) for b in options.beacons}
        # A placed beacon's address, learnt from its identity frame, with when it was last heard: oldest first,
        # bounded, and forgotten after the window (an identity frame is public: anyone can send it from anywhere).
        self._beacon_at: OrderedDict[str, tuple[_Beacon, float]] = OrderedDict()
        self._beacon_addresses = max(1, len(self.beacons)) * ADDRESSES_PER_BEACON
        self.tags: dict[str, _Tag] = {}
        self.counts: dict[str, int] = dict.fromkeys(
            ("advertisements", "malformed", "out_of_range", "replayed", "duplicates", "unknown_tags",
             "unknown_beacons", "unlinked_tlm", "attendee", "new_devices", "scanner_restarts"), 0)
        self.kinds: dict[str, int] = {}
        self._next_rotation = math.inf

    # -- lifecycle ----------------------------------------------------------------------------------------
    @classmethod
    def preflight(cls, options: BleOptions) -> list[Problem]:
        problems = importable("bumble", "backend", "sim") if options.backend == "bumble" else []
        for i, t in enumerate(options.tags):
            if t.key_file is not None:
                found = secret_file(Path(t.key_file), f"tags[{i}].key_file", f"tag {t.name}'s key file")
                if not found and parse_key(Path(t.key_file).read_text(encoding="utf-8")) is None:
                    found = [Problem(f"tags[{i}].key_file", f"{t.key_file} does not hold a BTHome key "
                                                            "(allowed: 32 hex digits)")]
                problems += found
        return problems

    async def start(self) -> None:
        for library in ("bleak", "bumble"):  # their debug logs print every address heard: never in ours
            logger = logging.getLogger(library)
            if logger.getEffectiveLevel() < logging.INFO:
                logger.setLevel(logging.INFO)
        for t in self.options.tags:
            key = parse_key(t.demo_key) if t.demo_key else await self._read_key(t) if t.key_file else None
            self.tags[t.address.upper()] = _Tag(t, key, [Smoothed() for _ in self.options.scanners])
        self._declare()
        self._schedule_rotation()
        try:
            await self._open_scanners()
        except BaseException:
            await self.stop()  # the supervisor stops only a driver that started: release what did open
            raise
        self.ctx.log.info("BLE sensing: %d scanners (%s, %s scanning), %d beacons, %d tags", len(self.scanners),
                          self.options.backend, self.mode, len(self.beacons), len(self.tags))

    async def _open_scanners(self) -> None:
        backend = self._backend()
        modes: list[Literal["passive", "active"]] = (
            ["passive", "active"] if self.options.scanning == "auto" and self.options.backend == "bluez"
            else ["active"] if self.options.scanning == "active" else ["passive"])
        for i, s in enumerate(self.options.scanners):
            for mode in modes:
                scanner = self._scanner(i, s.adapter, mode, backend)
                try:
                    await asyncio.wait_for(scanner.start(), SCANNER_TIMEOUT_S)
                except Exception as exc:
                    await self._release(scanner)
                    if isinstance(exc, BleakError) and mode != modes[-1]:
                        self.ctx.log.info("passive scanning unavailable on %s (%s); scanning actively", s.adapter,
                                          exc)
                        continue
                    # No adapter, no bluetoothd, no D-Bus, a pty not there yet: retried with backoff, no traceback.
                    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    raise NotReady(f"scanner {s.zone} on {s.adapter}: {why}") from None
                self.mode = mode
                self.scanners.append(scanner)
                self.watches[i].started_at = time.monotonic()
                break

    def _backend(self) -> type[BaseBleakScanner] | None:
        if self._backend_class is not None:
            return self._backend_class
        if self.options.backend == "bumble":
            from drivers.ble.bumble_backend import BumbleScanner  # Bumble is an extra: needed only when chosen

            return BumbleScanner
        return None  # bleak's platform backend: BlueZ over D-Bus

    def _scanner(self, i: int, adapter: str, mode: Literal["passive", "active"],
                 backend: type[BaseBleakScanner] | None) -> BleakScanner:
        def heard(device: BLEDevice, adv: AdvertisementData) -> None:
            self.heard(i, device, adv)

        bluez: Any = {"adapter": adapter}
        if mode == "passive":
            bluez["or_patterns"] = PASSIVE_PATTERNS
        return BleakScanner(heard, scanning_mode=mode, bluez=bluez, backend=backend)

    async def _read_key(self, t: TagOptions) -> bytes:
        assert t.key_file is not None
        try:  # refused if other users may read it, as at check-config
            text = await asyncio.to_thread(read_secret, Path(t.key_file), "key_file")
        except ValueError as exc:
            raise NotReady(f"tag {t.name}: {exc}") from None
        key = parse_key(text)
        if key is None:
            raise NotReady(f"tag {t.name}: {t.key_file} does not hold a BTHome key (32 hex digits)")
        return key

    def _declare(self) -> None:
        for zone in self.occupancy.zones:
            self.ctx.declare(f"occupancy:{zone}", "occupancy_estimate", zone)
            self.ctx.report(f"occupancy:{zone}", {"window_s": self.options.window_s,
                                                  "people_per_device": self.options.people_per_device})
        for b in self.beacons.values():
            self.ctx.declare(b.asset, "beacon", b.options.zone)
            self.ctx.report(b.asset, {"identity": b.options.identity})
        for t in self.tags.values():
            self.ctx.declare(t.asset, "sensor_tag", t.options.zone)
            self.ctx.report(t.asset, {"format": t.options.format, "encrypted": t.key is not None})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.options.publish_interval_s
        next_at = loop.time() + tick
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += tick
            now = time.monotonic()
            self.publish(now)
            if time.time() >= self._next_rotation:
                self.rotate_salt()
            await self._watch(now)

    async def stop(self) -> None:
        for scanner in self.scanners:
            await self._release(scanner)
        self.scanners.clear()

    async def _release(self, scanner: BleakScanner) -> None:
        await stop_quietly(scanner, SCANNER_TIMEOUT_S / 2)
        close = getattr(backend_of(scanner), "close", None)  # a backend holding a transport of its own
        if close is not None:
            await close()

    # -- the watchdog -------------------------------------------------------------------------------------
    async def _watch(self, now: float) -> None:
        for watch, scanner in zip(self.watches, self.scanners, strict=True):
            verdict = watch.verdict(now, self.options.silence_s)
            if verdict == "restart":
                watch.restarts_in_a_row += 1
                self.counts["scanner_restarts"] += 1
                self.ctx.log.warning("scanner %s (%s) silent for %.0f s: restarting it (%d in a row)", watch.zone,
                                     watch.adapter, watch.silent_for(now), watch.restarts_in_a_row)
                await stop_quietly(scanner, SCANNER_TIMEOUT_S / 2)
                try:
                    await asyncio.wait_for(scanner.start(), SCANNER_TIMEOUT_S)
                except Exception as exc:
                    raise NotReady(f"scanner {watch.zone} did not restart: {type(exc).__name__}: {exc}") from None
                watch.started_at = time.monotonic()
            elif verdict == "recover":
                _RECOVERIES[self.ctx.name] = _RECOVERIES.get(self.ctx.name, 0) + 1
                self.ctx.log.warning("scanner %s (%s) still silent after %d restarts: recovering the adapter",
                                     watch.zone, watch.adapter, watch.restarts_in_a_row)
                await stop_quietly(scanner, SCANNER_TIMEOUT_S / 2)
                try:
                    await recover_adapter(self.options.backend, watch.adapter, scanner)
                except Exception as exc:
                    raise NotReady(f"scanner {watch.zone}: recovering {watch.adapter} failed: {exc}") from None
                raise NotReady(f"scanner {watch.zone} ({watch.adapter}) stayed silent; adapter recovered")

    # -- advertisements -----------------------------------------------------------------------------------
    def heard(self, scanner: int, device: BLEDevice, adv: AdvertisementData) -> None:
        """One advertisement, from bleak's callback. Runs for every advertisement: nothing here may wait."""
        counts = self.counts
        counts["advertisements"] += 1
        now = time.monotonic()
        watch = self.watches[scanner]
        watch.heard_at, watch.restarts_in_a_row = now, 0
        address = device.address
        tag = self.tags.get(address)
        if tag is not None:
            self._tag_frame(tag, scanner, adv, now)
            return
        try:
            frame = frames.decode(address, adv.manufacturer_data, adv.service_data)
        except frames.FrameError:
            counts["malformed"] += 1
            return
        if frame is None:  # an attendee's device: hashed at once, the address goes no further
            if self.occupancy.observe(self.hasher(address), scanner, adv.rssi, now):
                self.arrivals.add(self.occupancy.zone_of(scanner), now)
                counts["new_devices"] += 1
            counts["attendee"] += 1
            return
        self.kinds[frame.kind] = self.kinds.get(frame.kind, 0) + 1
        if isinstance(frame, frames.Beacon):
            beacon = self.beacons.get(frame.id)
            if beacon is None:
                counts["unknown_beacons"] += 1
                return
            self._link(address, beacon, now)
            cal = self.calibrations[scanner]
            beacon.rssi[scanner].add(adv.rssi, cal.smoothing, now, self.options.window_s)
            beacon.heard = True
            beacon.power_1m_dbm = frame.measured_power_dbm - (EDDYSTONE_1M_LOSS_DB if frame.kind == "eddystone_uid"
                                                              else 0)
        elif frame.kind == "eddystone_tlm":
            linked = self._beacon_at.get(address, (None, 0.0))[0]
            if linked is None:
                counts["unlinked_tlm"] += 1
            elif frame.packet_id != linked.last_tlm:
                linked.last_tlm, linked.heard = frame.packet_id, True
                linked.tlm, flagged = self._in_range(frame.values)
                if flagged != linked.out_of_range:
                    linked.out_of_range = flagged
                    self.ctx.report(linked.asset, {"out_of_range": list(flagged) or None})
        else:
            counts["unknown_tags"] += 1

    def _link(self, address: str, beacon: _Beacon, now: float) -> None:
        links = self._beacon_at
        links[address] = (beacon, now)
        links.move_to_end(address)
        if len(links) > self._beacon_addresses:
            links.popitem(last=False)

    def _tag_frame(self, tag: _Tag, scanner: int, adv: AdvertisementData, now: float) -> None:
        try:
            frame = frames.decode(tag.options.address, adv.manufacturer_data, adv.service_data, tag.key)
            if not isinstance(frame, frames.SensorFrame) or frame.kind != tag.options.format:
                raise frames.FrameError(f"not a {tag.options.format} frame")
        except frames.FrameError as exc:
            self.counts["malformed"] += 1
            if str(exc) != tag.error:
                tag.error = str(exc)
                self.ctx.report(tag.asset, {"error": tag.error})
            return
        self.kinds[frame.kind] = self.kinds.get(frame.kind, 0) + 1
        tag.rssi[scanner].add(adv.rssi, self.calibrations[scanner].smoothing, now, self.options.window_s)
        if not self._fresh(tag, frame):
            return
        if tag.error is not None:
            tag.error = None
            self.ctx.report(tag.asset, {"error": None})
        values, flagged = self._in_range(frame.values)
        wall = time.time()
        for metric, value in values.items():
            tag.pending[metric] = (wall, value)
        if flagged != tag.out_of_range:
            tag.out_of_range = flagged
            self.ctx.report(tag.asset, {"out_of_range": list(flagged) or None})

    def _fresh(self, tag: _Tag, frame: frames.SensorFrame) -> bool:
        """Refuse a replayed encrypted frame (its counter must grow), and drop repeats of a measurement.

        Only an authenticated frame (its MIC checked with the tag's key, before this) moves the counter. A plain
        frame proves nothing: anyone can send one with the tag's address, any values and any packet id, so its
        id only tells a repeat of the last frame accepted (the same id and values: re-advertised, or heard by
        another scanner); a frame whose id seems older is taken, so a forged id cannot lock the real tag out."""
        if frame.counter is not None:  # the same frame again (re-advertised, or heard by another scanner)
            if frame.counter == tag.counter:
                self.counts["duplicates"] += 1
                return False
            if tag.counter is not None and frame.counter < tag.counter:
                self.counts["replayed"] += 1
                return False
            tag.counter = frame.counter
        elif frame.packet_id is not None and frame.packet_id == tag.packet_id and frame.values == tag.values:
            self.counts["duplicates"] += 1
            return False
        tag.packet_id, tag.values = frame.packet_id, frame.values
        return True

    def _in_range(self, values: dict[str, float]) -> tuple[dict[str, float], tuple[str, ...]]:
        """Values within their physical range, and the names of those that are not (counted, not believed)."""
        good: dict[str, float] = {}
        bad: list[str] = []
        for metric, value in values.items():
            lo, hi = frames.PHYSICAL_RANGE.get(metric, (-math.inf, math.inf))
            if lo <= value <= hi:  # NaN fails too
                good[metric] = value
            else:
                bad.append(metric)
        self.counts["out_of_range"] += len(bad)
        return good, tuple(sorted(bad))

    # -- publishing ---------------------------------------------------------------------------------------
    def publish(self, now: float) -> None:
        """One batch a tick: occupancy per zone, beacons heard since the last, tags' new measurements."""
        wall = time.time()
        readings: list[Reading] = []
        people = self.options.people_per_device
        self.occupancy.sweep(now)
        self._forget_beacon_addresses(now)
        for zone, devices in zip(self.occupancy.zones, self._watch_arrivals(now), strict=True):
            readings += [Reading(wall, f"occupancy:{zone}", "devices", float(devices)),
                         Reading(wall, f"occupancy:{zone}", "people", round(devices * people, 1))]
        for beacon in self.beacons.values():
            if beacon.heard:
                readings += self._beacon_readings(beacon, wall, now)
        for tag in self.tags.values():
            if tag.pending:
                readings += [Reading(ts, tag.asset, metric, value) for metric, (ts, value) in tag.pending.items()]
                strongest = self._strongest(tag.rssi, now)
                if strongest is not None:
                    readings.append(Reading(wall, tag.asset, "rssi_dbm", round(strongest[0], 1)))
                tag.pending.clear()
        self.ctx.publish(readings)
        for scanner in self.scanners:  # bleak's map of every address heard: bounded to one tick
            backend_of(scanner).seen_devices.clear()

    def _forget_beacon_addresses(self, now: float) -> None:
        links, stale = self._beacon_at, now - self.options.window_s
        while links and next(iter(links.values()))[1] < stale:
            links.popitem(last=False)

    def _watch_arrivals(self, now: float) -> list[int]:
        """Each zone's device count to publish: the live count, or while its arrivals flood (an alert raised and
        cleared with hysteresis), the count of its last calm tick."""
        limit = self.options.new_devices_alert_per_min
        counts = list(self.occupancy.counts().values())
        for z, (zone, rate) in enumerate(zip(self.occupancy.zones, self.arrivals.per_minute(now), strict=True)):
            flood = self._floods.get(zone)
            if flood is None and rate >= limit:
                flood = self._floods[zone] = _Flood(self._calm[z], rate)
                self._flood_alert(zone, flood, True)
            elif flood is not None:
                flood.rate_per_min = max(flood.rate_per_min, rate)
                if flood.until == math.inf and rate < limit * CALM_SHARE:
                    flood.until = now + self.options.window_s
                    self._flood_alert(zone, flood, False)
                elif flood.until != math.inf and rate >= limit:
                    flood.until = math.inf  # it came back before its devices aged out: still the same flood
                    self._flood_alert(zone, flood, True)
                elif now >= flood.until:
                    del self._floods[zone]
                    self.ctx.report(f"occupancy:{zone}", {"held": None})
                    flood = None
            if flood is None:
                if rate < limit * CALM_SHARE:
                    self._calm[z] = counts[z]
            else:
                counts[z] = flood.count
        return counts

    def _flood_alert(self, zone: str, flood: _Flood, standing: bool) -> None:
        limit = self.options.new_devices_alert_per_min
        doc = {"alert": "ble_new_devices", "zone": zone, "state": "raised" if standing else "cleared",
               "new_devices_per_min": round(flood.rate_per_min, 1), "limit_per_min": limit,
               "held_devices": flood.count}
        if standing:
            text = (f"zone {zone}: {flood.rate_per_min:.0f} new BLE devices a minute (limit {limit:g}): random "
                    f"addresses, not people; its occupancy is held at {flood.count} devices")
            self.ctx.log.warning("%s", text)
            self.ctx.report(f"occupancy:{zone}", {"held": True})
        else:
            text = f"zone {zone}: new BLE devices back under {limit * CALM_SHARE:g} a minute"
            self.ctx.log.info("%s", text)
        self.ctx.alert("ble_new_devices", text, doc, key=f"ble_new_devices:{self.ctx.name}:{zone}", standing=standing)

    def _beacon_readings(self, beacon: _Beacon, wall: float, now: float) -> list[Reading]:
        beacon.heard = False
        strongest = self._strongest(beacon.rssi, now)
        if strongest is None:
            return []
        rssi, i = strongest
        power = self.calibrations[i].rssi_at_1m_dbm if beacon.power_1m_dbm is None else beacon.power_1m_dbm
        out = [Reading(wall, beacon.asset, "rssi_dbm", round(rssi, 1)),
               Reading(wall, beacon.asset, "distance_m",
                       round(distance_m(rssi, power, self.calibrations[i].path_loss_exponent), 2))]
        out += [Reading(wall, beacon.asset, metric, value) for metric, value in beacon.tlm.items()]
        beacon.tlm = {}
        if self.calibrations[i].zone != beacon.nearest:
            beacon.nearest = self.calibrations[i].zone
            self.ctx.report(beacon.asset, {"nearest_scanner": beacon.nearest})
        return out

    def _strongest(self, rssi: list[Smoothed], now: float) -> tuple[float, int] | None:
        """The smoothed RSSI of the scanner that hears a device best (within the window), and that scanner."""
        fresh = [(s.value, i) for i, s in enumerate(rssi) if now - s.at <= self.options.window_s]
        return max(fresh) if fresh else None

    # -- privacy ------------------------------------------------------------------------------------------
    def rotate_salt(self) -> None:
        """A new salt, and every hash made with the old one forgotten: tonight's devices cannot be linked to
        yesterday's, by us or by anyone who later reads the box."""
        forgotten = len(self.occupancy)
        self.hasher.rotate()
        self.occupancy.clear()
        self._calm = [0] * len(self._calm)
        self._schedule_rotation()
        self.ctx.log.info("device hash salt rotated; %d devices forgotten", forgotten)

    def _schedule_rotation(self) -> None:
        at = parse_time_of_day(self.options.salt_rotation)
        assert at is not None
        self._next_rotation = next_rotation(datetime.now(), at).timestamp()

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        return {**self.counts, "per_kind": dict(self.kinds), "backend": self.options.backend, "scanning": self.mode,
                "devices_tracked": len(self.occupancy), "devices_unplaced": self.occupancy.unplaced,
                "devices_evicted": self.occupancy.evicted, "beacon_addresses": len(self._beacon_at),
                "floods": sorted(self._floods),
                "salt_rotations": self.hasher.rotations, "adapter_recoveries": _RECOVERIES.get(self.ctx.name, 0),
                "scanners": {w.zone: w.document(now) for w in self.watches}}
