"""BLE sensing: occupancy's arithmetic, the Bumble backend's mapping, the driver fed at bleak's backend seam, and a
real gateway scanning a virtual room (Bumble devices advertising, scanner controllers on pseudo-terminals)."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import threading
import time
from collections.abc import Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bleak import BleakScanner
from bleak.backends.scanner import AdvertisementData
from bumble.core import AdvertisingData
from bumble.device import Advertisement
from bumble.hci import Address
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble import frames
from drivers.ble.bumble_backend import advertisement_data
from drivers.ble.driver import BleSensing
from drivers.ble.health import backend_of
from drivers.ble.occupancy import AddressHasher, Calibration, Occupancy, distance_m, next_rotation, rssi_at
from drivers.ble.options import BleOptions
from drivers.sim.ble_devices import VirtualRoom, ad_bytes, furnish, sensing_config, zone_centre
from gateway.alerts import Alerts
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext, NotReady
from gateway.readings import Reading
from gateway.schema import check_all
from gateway.twin import Twin
from peers.ble_feed import FeedScanner
from tests.conftest import Daemon, demo_config, free_port

T = TypeVar("T")
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
OTHER_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


# -- occupancy: plain arithmetic ---------------------------------------------------------------------------------
def test_path_loss_turns_rssi_into_distance_and_back() -> None:
    assert distance_m(-59, -59, 2.2) == pytest.approx(1.0)
    assert distance_m(-81, -59, 2.2) == pytest.approx(10.0)  # 22 dB = 10 n log10(10)
    for d in (0.5, 1, 3.7, 12, 40):
        assert distance_m(rssi_at(d, -65, 3.0), -65, 3.0) == pytest.approx(d)


def test_rssi_is_smoothed_and_starts_afresh_after_a_gap() -> None:
    occ = Occupancy([Calibration("floor", smoothing=0.3)], window_s=60)
    occ.observe(b"a", 0, -60, now=0)
    occ.observe(b"a", 0, -70, now=1)
    assert occ._tracks[b"a"].rssi[0] == pytest.approx(-63.0)
    occ.observe(b"a", 0, -80, now=100)  # older than the window: not averaged with where it was
    assert occ._tracks[b"a"].rssi[0] == -80


def test_a_device_counts_in_the_zone_of_the_scanner_it_seems_nearest_to() -> None:
    # The balcony's scanner has a weaker antenna (calibrated -70 dBm at 1 m): -75 there is 1.7 m, -72 on the
    # floor 3.9 m.
    occ = Occupancy([Calibration("floor", -59, 2.2, 30), Calibration("balcony", -70, 2.2, 30)], window_s=60)
    occ.observe(b"p", 0, -72, now=0)
    occ.observe(b"p", 1, -75, now=0)
    assert occ.counts() == {"balcony": 1, "floor": 0}
    occ.observe(b"far", 0, -100, now=0)  # 73 m: beyond the floor's radius, tracked but not counted
    assert occ.counts() == {"balcony": 1, "floor": 0} and occ.unplaced == 1 and len(occ) == 2


def test_devices_not_heard_within_the_window_are_forgotten() -> None:
    occ = Occupancy([Calibration("floor")], window_s=60)
    for i in range(5):
        occ.observe(bytes([i]), 0, -70, now=float(i * 10))
    assert occ.sweep(now=65) == 1 and occ.counts() == {"floor": 4}  # heard at 0: gone; at 10: still in
    occ.observe(bytes([1]), 0, -70, now=70)  # heard again: kept past its first time
    assert occ.sweep(now=95) == 2 and occ.counts() == {"floor": 2}
    assert occ.sweep(now=1000) == 2 and occ.counts() == {"floor": 0} and len(occ) == 0 and occ.unplaced == 0


def test_addresses_are_hashed_with_a_salt_that_rotates() -> None:
    h = AddressHasher()
    a = h("4A:10:22:33:44:55")
    assert a == h("4a:10:22:33:44:55") and len(a) == 8 and a != h("4A:10:22:33:44:56")
    assert b"4A:10" not in a and AddressHasher()("4A:10:22:33:44:55") != a  # another salt: another hash
    h.rotate()
    assert h("4A:10:22:33:44:55") != a and h.rotations == 1


def test_the_salt_rotates_at_the_next_time_of_day() -> None:
    assert next_rotation(datetime(2026, 5, 1, 9, 30), (12, 0)) == datetime(2026, 5, 1, 12, 0)
    assert next_rotation(datetime(2026, 5, 1, 12, 0), (12, 0)) == datetime(2026, 5, 2, 12, 0)
    assert next_rotation(datetime(2026, 5, 31, 23, 59), (4, 30)) == datetime(2026, 6, 1, 4, 30)


def test_options_are_checked_with_their_key_paths() -> None:
    raw = {"scanners": [{"adapter": "hci0", "zone": "floor", "smoothing": 2}],
           "beacons": [{"name": "b", "ibeacon": "not-a-uuid/1/2"}, {"name": "c"}],
           "tags": [{"name": "t", "address": "C4:7C", "format": "ruuvi_v5", "demo_key": KEY.hex()}],
           "salt_rotation": "25:00"}
    _, problems = check_all(BleOptions, raw)
    text = "\n".join(map(str, problems))
    for expected in ("scanners[0].smoothing: 2 is out of range", "beacons[0].ibeacon: 'not-a-uuid/1/2' is not a beacon",
                     "beacons[1].ibeacon: give either", "tags[0].address: 'C4:7C' is not a device address",
                     "salt_rotation: '25:00' is not a time of day"):
        assert expected in text
    ok, problems = check_all(BleOptions, {"scanners": [{"adapter": "hci0", "zone": "floor"}]})
    assert ok is not None and not problems and ok.backend == "bluez" and ok.scanning == "auto"


def test_a_bthome_key_file_that_other_users_can_read_is_refused(tmp_path: Path) -> None:
    """A tag's bindkey is a secret: check-config (the driver's preflight) refuses a key file that others may read or
    the group change, with the key path and what is allowed, and takes it at 0600 or 0640 (the service's group)."""
    key_file = tmp_path / "tag.key"
    key_file.write_text(KEY.hex() + "\n")
    raw = {"scanners": [{"adapter": "hci0", "zone": "floor"}],
           "tags": [{"name": "t", "address": "C4:7C:8D:6A:3E:01", "format": "bthome_v2", "key_file": str(key_file)}]}
    options, problems = check_all(BleOptions, raw)
    assert options is not None and not problems
    for mode in (0o604, 0o660):
        key_file.chmod(mode)
        refused = "\n".join(map(str, BleSensing.preflight(options)))
        assert "tags[0].key_file" in refused and f"mode {mode:04o}" in refused and "chmod 600" in refused, refused
    for mode in (0o600, 0o640):
        key_file.chmod(mode)
        assert BleSensing.preflight(options) == []


# -- the Bumble backend's mapping: bytes from the air ------------------------------------------------------------
def _adv(data: bytes, rssi: int = -60) -> Advertisement:
    return Advertisement(address=Address("11:22:33:44:55:66"), rssi=rssi, data_bytes=data)


@given(st.binary(max_size=80))
def test_any_advertising_bytes_map_without_error(data: bytes) -> None:
    mapped = advertisement_data(_adv(data))
    assert isinstance(mapped.manufacturer_data, dict) and isinstance(mapped.service_data, dict)


@given(st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=8), max_size=3),
       st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=8), max_size=3), st.integers(-100, 20))
def test_every_manufacturer_and_service_data_entry_comes_through(mfr: dict[int, bytes], svc: dict[int, bytes],
                                                                 tx: int) -> None:
    structures = [(AdvertisingData.MANUFACTURER_SPECIFIC_DATA, struct.pack("<H", k) + v) for k, v in mfr.items()]
    structures += [(AdvertisingData.SERVICE_DATA_16_BIT_UUID, struct.pack("<H", k) + v) for k, v in svc.items()]
    structures.append((AdvertisingData.TX_POWER_LEVEL, struct.pack("b", tx)))
    mapped = advertisement_data(_adv(bytes(AdvertisingData(structures)), rssi=-77))
    assert mapped.manufacturer_data == mfr and mapped.tx_power == tx and mapped.rssi == -77
    assert mapped.service_data == {f"0000{k:04x}-0000-1000-8000-00805f9b34fb": v for k, v in svc.items()}


def test_service_data_and_uuids_of_every_width_are_full_uuids() -> None:
    u128 = bytes(range(16))
    data = bytes(AdvertisingData([
        (AdvertisingData.SERVICE_DATA_32_BIT_UUID, struct.pack("<I", 0x12345678) + b"x"),
        (AdvertisingData.SERVICE_DATA_128_BIT_UUID, u128 + b"y"),
        (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, struct.pack("<HH", 0xFEAA, 0x180F)),
        (AdvertisingData.COMPLETE_LOCAL_NAME, b"tag")]))
    mapped = advertisement_data(_adv(data))
    assert mapped.service_data == {"12345678-0000-1000-8000-00805f9b34fb": b"x",
                                   "0f0e0d0c-0b0a-0908-0706-050403020100": b"y"}
    assert mapped.service_uuids == ["0000feaa-0000-1000-8000-00805f9b34fb", "0000180f-0000-1000-8000-00805f9b34fb"]
    assert mapped.local_name == "tag" and mapped.tx_power is None


# -- the driver, fed at bleak's backend seam ---------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def publish(self, readings: Any, owner: str | None = None) -> None:
        self.readings += readings

    def latest(self) -> dict[tuple[str, str], float]:
        return {(r.asset, r.metric): r.value for r in self.readings}


def _options(**extra: Any) -> BleOptions:
    raw = {"backend": "bumble", "scanners": [{"adapter": "feed:floor", "zone": "floor"},
                                             {"adapter": "feed:bar", "zone": "bar"}], **extra}
    options, problems = check_all(BleOptions, raw)
    assert options is not None, problems
    return options


async def _driver(alerts: Alerts | None = None, **extra: Any) -> tuple[BleSensing, Twin, Recorder, list[FeedScanner]]:
    twin, recorder = Twin("gw", "hall"), Recorder()
    ctx = DriverContext("ble", twin, recorder, DmxUniverses(twin, []), FrameClock(40), None,  # type: ignore[arg-type]
                        alerts=alerts)
    driver = BleSensing(ctx, _options(**extra), backend_class=FeedScanner)
    await driver.start()
    feeds = [backend_of(s) for s in driver.scanners]
    assert all(isinstance(f, FeedScanner) for f in feeds)
    return driver, twin, recorder, feeds  # type: ignore[return-value]


def _ad(rssi: float = -65, mfr: dict[int, bytes] | None = None,
        svc: dict[str, bytes] | None = None) -> AdvertisementData:
    return AdvertisementData(None, mfr or {}, svc or {}, [], None, int(rssi), ())


def _phone(i: int) -> str:
    return f"5A:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}"


async def test_a_salt_rotation_forgets_every_device_and_changes_every_hash() -> None:
    driver, twin, recorder, (floor, bar) = await _driver()
    for i in range(30):
        (floor if i < 20 else bar).feed(_phone(i), _ad(-70, {0x004C: b"\x10\x05\x01\x02"}))
    driver.publish(time.monotonic())
    assert recorder.latest()[("occupancy:floor", "devices")] == 20 == recorder.latest()[("occupancy:floor", "people")]
    assert recorder.latest()[("occupancy:bar", "devices")] == 10
    assert not floor.seen_devices and not bar.seen_devices  # bleak's map of raw addresses: cleared every tick
    before = {driver.hasher(_phone(i)) for i in range(30)}
    assert set(driver.occupancy._tracks) == before
    driver.rotate_salt()
    assert len(driver.occupancy) == 0 and not {driver.hasher(_phone(i)) for i in range(30)} & before
    floor.feed(_phone(0), _ad(-70, {0x0075: b"\x42\x04"}))
    driver.publish(time.monotonic())
    assert recorder.latest()[("occupancy:floor", "devices")] == 1 and driver.health()["salt_rotations"] == 1
    snapshot = twin.snapshot_json()
    assert b"5A:00" not in snapshot and not any(h in snapshot for h in before)
    await driver.stop()


async def test_replayed_and_repeated_frames_are_dropped_and_out_of_range_values_flagged() -> None:
    tag = {"name": "co2", "address": "A4:C1:38:00:00:02", "format": "bthome_v2", "demo_key": KEY.hex()}
    ruuvi = {"name": "env", "address": "C4:7C:8D:6A:1B:2E", "format": "ruuvi_v5"}
    driver, twin, recorder, (floor, bar) = await _driver(tags=[tag, ruuvi])

    def bthome(counter: int, temperature: float) -> AdvertisementData:
        uuid, payload = frames.bthome_v2({"temperature_c": temperature}, counter & 0xFF, key=KEY,
                                         address=tag["address"], counter=counter)
        return _ad(-60, svc={uuid: payload})

    floor.feed(tag["address"], bthome(5, 21.0))
    bar.feed(tag["address"], bthome(5, 21.0))  # the same frame through another scanner: a duplicate
    floor.feed(tag["address"], bthome(4, 30.0))  # an older counter: a replay
    driver.publish(time.monotonic())
    assert recorder.latest()[("tag:co2", "temperature_c")] == 21.0
    assert driver.counts["duplicates"] == 1 and driver.counts["replayed"] == 1

    company, payload = frames.ruuvi_v5({"temperature_c": 120.0, "humidity_pct": 40.0}, bytes(6), 1)
    floor.feed(ruuvi["address"], _ad(-60, {company: payload}))
    driver.publish(time.monotonic())
    asset = twin.get("tag:env")
    assert asset is not None and asset.reported["out_of_range"] == ["temperature_c"]
    assert ("tag:env", "temperature_c") not in recorder.latest()
    assert recorder.latest()[("tag:env", "humidity_pct")] == 40
    company, payload = frames.ruuvi_v5({"temperature_c": 20.0}, bytes(6), 2)
    floor.feed(ruuvi["address"], _ad(-60, {company: payload}))
    assert "out_of_range" not in asset.reported and driver.counts["out_of_range"] == 1

    floor.feed("C4:00:00:00:00:01", _ad(-60, {company: payload}))  # a Ruuvi nobody configured
    floor.feed("C4:00:00:00:00:02", _ad(-60, {company: payload[:5]}))  # a Ruuvi frame cut short
    assert driver.counts["unknown_tags"] == 1 and driver.counts["malformed"] == 1
    assert len(driver.occupancy) == 0  # neither is anybody's phone
    await driver.stop()


async def test_a_forged_packet_id_cannot_lock_a_tag_out() -> None:
    """A plain frame proves nothing: one sent from the tag's address with a packet id far ahead must not make the
    real tag's next frames look like replays. An encrypted tag's counter moves only on a frame whose MIC checks."""
    ruuvi = {"name": "env", "address": "C4:7C:8D:6A:1B:2E", "format": "ruuvi_v5"}
    plain = {"name": "air", "address": "A4:C1:38:00:00:03", "format": "bthome_v2"}
    secure = {"name": "co2", "address": "A4:C1:38:00:00:02", "format": "bthome_v2", "demo_key": KEY.hex()}
    driver, _, recorder, (floor, bar) = await _driver(tags=[ruuvi, plain, secure])

    def ruuvi_frame(sequence: int, temperature: float) -> AdvertisementData:
        company, payload = frames.ruuvi_v5({"temperature_c": temperature}, bytes(6), sequence)
        return _ad(-60, {company: payload})

    def bthome(packet_id: int, temperature: float, key: bytes | None = None, counter: int = 0) -> AdvertisementData:
        address = secure["address"] if key else plain["address"]
        uuid, payload = frames.bthome_v2({"temperature_c": temperature}, packet_id, key=key, address=address,
                                         counter=counter)
        return _ad(-60, svc={uuid: payload})

    floor.feed(ruuvi["address"], ruuvi_frame(10, 20.0))
    floor.feed(plain["address"], bthome(10, 20.0))
    floor.feed(ruuvi["address"], ruuvi_frame(10 + 30_000, -30.0))  # forged: far ahead, within half the width
    floor.feed(plain["address"], bthome(10 + 100, -30.0))
    floor.feed(secure["address"], bthome(1, 20.0, KEY, counter=100))
    floor.feed(secure["address"], bthome(2, -30.0, OTHER_KEY, counter=0xFFFFFF00))  # forged: fails its MIC
    for feed in (floor, bar):  # the real tags' next frames, each heard by both scanners: taken once
        feed.feed(ruuvi["address"], ruuvi_frame(11, 21.0))
        feed.feed(plain["address"], bthome(11, 21.0))
        feed.feed(secure["address"], bthome(2, 21.0, KEY, counter=101))
    driver.publish(time.monotonic())
    latest = recorder.latest()
    assert latest[("tag:env", "temperature_c")] == latest[("tag:air", "temperature_c")] == 21.0
    assert latest[("tag:co2", "temperature_c")] == 21.0
    assert driver.counts["replayed"] == 0 and driver.counts["duplicates"] == 3 and driver.counts["malformed"] == 1
    floor.feed(secure["address"], bthome(1, 20.0, KEY, counter=100))  # an authenticated replay is still refused
    assert driver.counts["replayed"] == 1
    await driver.stop()


async def test_a_flood_of_random_addresses_is_bounded_alerted_and_held() -> None:
    """Fresh random addresses, hundreds a second: the devices tracked stay within max_devices, the zone's
    occupancy is held at its last calm count while an alert stands, and the alert clears with hysteresis (under
    half its rate), the hold a window later."""
    alerts, told = Alerts(), []
    alerts.listen(lambda kind, text, doc: told.append((kind, doc)))
    driver, twin, recorder, (floor, _) = await _driver(alerts, max_devices=100, new_devices_alert_per_min=120)
    for i in range(20):  # the crowd
        floor.feed(_phone(i), _ad(-70, {0x004C: b"\x10\x05\x01\x02"}))
    t = time.monotonic()
    driver.publish(t)
    assert recorder.latest()[("occupancy:floor", "devices")] == 20 and not told
    for i in range(1000):  # a flood: a phone's Apple message from a new random address each time
        floor.feed(f"{0x40 | i >> 10 & 0x3F:02X}:77:00:00:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}",
                   _ad(-60, {0x004C: b"\x10\x05\x01\x02"}))
    assert len(driver.occupancy) == 100 and driver.health()["devices_evicted"] == 920
    driver.publish(t + 0.5)
    assert recorder.latest()[("occupancy:floor", "devices")] == 20  # held, not 100
    assert [(k, d["zone"], d["state"]) for k, d in told] == [("ble_new_devices", "floor", "raised")]
    assert told[0][1]["new_devices_per_min"] == 1020 and "ble_new_devices:ble:floor" in alerts.standing
    assert twin.get("occupancy:floor").reported["held"] is True  # type: ignore[union-attr]
    driver.publish(t + 30)  # the flood still in the minute's window
    assert len(told) == 1
    for _ in range(70):  # 70 a minute: under the limit, not under half of it
        driver.arrivals.add(driver.occupancy.zones.index("floor"), t + 61)
    driver.publish(t + 61.5)
    assert len(told) == 1 and "ble_new_devices:ble:floor" in alerts.standing
    driver.publish(t + 125)
    assert [d["state"] for _, d in told] == ["raised", "cleared"] and not alerts.standing
    assert twin.get("occupancy:floor").reported["held"] is True  # type: ignore[union-attr]
    driver.publish(t + 125 + 61)  # the flood's devices have aged out: the count is live again
    assert "held" not in twin.get("occupancy:floor").reported  # type: ignore[union-attr]
    assert recorder.latest()[("occupancy:floor", "devices")] == 0 and not driver.health()["floods"]
    said = json.dumps(told) + json.dumps(driver.health()) + twin.snapshot_json().decode()
    assert ":77:00:00:" not in said and "5A:00:00:00" not in said  # no attendee's address, raw, anywhere
    await driver.stop()


async def test_addresses_linked_to_beacons_are_bounded_and_forgotten() -> None:
    """A placed beacon's identity frame is public: sent from many addresses, it links at most a few to the
    beacon, the most recent kept, and a link not heard within the window is forgotten."""
    beacon = {"name": "door", "ibeacon": "f7826da6-4fa2-4e98-8024-bc5b71e0893e/1/1"}
    driver, _twin, recorder, (floor, _) = await _driver(beacons=[beacon])
    company, identity = frames.ibeacon("f7826da6-4fa2-4e98-8024-bc5b71e0893e", 1, 1, -59)
    uuid, tlm = frames.eddystone_tlm(3000, 21.5, 7, 100.0)
    for i in range(200):
        floor.feed(f"D0:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}", _ad(-60, {company: identity}))
    real = "D0:00:00:00:FF:FF"
    floor.feed(real, _ad(-60, {company: identity}))
    floor.feed(real, _ad(-60, svc={uuid: tlm}))
    assert driver.health()["beacon_addresses"] == 4 and driver.counts["unlinked_tlm"] == 0
    driver.publish(time.monotonic())
    assert recorder.latest()[("beacon:door", "battery_v")] == 3.0
    driver.publish(time.monotonic() + 61)
    assert driver.health()["beacon_addresses"] == 0
    await driver.stop()


async def test_the_watchdog_restarts_a_silent_scanner_then_recovers_the_adapter() -> None:
    driver, _, _, (floor, bar) = await _driver(silence_s=0.2, publish_interval_s=0.1)
    run = asyncio.create_task(driver.run())
    for _ in range(60):  # the bar keeps hearing a phone; the floor hears nothing
        bar.feed(_phone(1), _ad())
        await asyncio.sleep(0.05)
        if run.done():
            break
    with pytest.raises(NotReady, match=r"scanner floor .* stayed silent; adapter recovered"):
        await run
    assert floor.starts == 4 and bar.starts == 1  # the first start, then three restarts
    assert driver.counts["scanner_restarts"] == 3 and driver.health()["adapter_recoveries"] >= 1
    await driver.stop()


# -- a real gateway and a virtual room ---------------------------------------------------------------------------
class RoomThread:
    """The virtual room on an event loop of its own in this process, beside the gateway process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="virtual-room", daemon=True)
        self.thread.start()
        self.room = self.call(self._make())

    async def _make(self) -> VirtualRoom:
        return VirtualRoom(seed=5)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.call(self.room.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


ZONES = ["floor", "balcony"]
PHONES = {"floor": 12, "balcony": 6}
HOT, LOCKED = "C4:7C:8D:6A:1B:F0", "A4:C1:38:00:05:00"


@pytest.fixture(scope="module")
def venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, RoomThread]]:
    tmp = tmp_path_factory.mktemp("ble")
    room = RoomThread()
    try:
        async def fill() -> None:
            r = room.room
            await furnish(r, ZONES, str(tmp / "ble"), 0, rotate_s=math.inf)
            for zone, count in PHONES.items():
                await r.add_phones(zone, count, rotate_s=math.inf)
            x, y = zone_centre(0)
            await r.add_tag("hot-floor", HOT, (x + 1, y), "ruuvi_v5", {"temperature_c": 120.0, "humidity_pct": 40.0})
            await r.add_tag("locked-floor", LOCKED, (x, y + 1), "bthome_v2", {"temperature_c": 18.0}, key=OTHER_KEY)
            await r.advertise("broken", "D0:00:00:00:0F:00", (x, y + 2), ad_bytes((0x0499, b"\x05\x01\x02")))
            await r.add_tag("stray", "C4:00:00:00:0F:01", (x, y - 2), "ruuvi_v5", {"temperature_c": 20.0})

        room.call(fill())
        extra = ("\n[supervisor]\nbackoff_initial_s = 0.1\nbackoff_max_s = 0.3\n\n"
                 + sensing_config(ZONES, str(tmp / "ble"), name="sensing", silence_s=1)
                 + f'\n[[drivers.sensing.tags]]\nname = "hot-floor"\nzone = "floor"\naddress = "{HOT}"\n'
                 + f'\n[[drivers.sensing.tags]]\nname = "locked-floor"\naddress = "{LOCKED}"\nformat = "bthome_v2"\n')
        port = free_port()
        d = Daemon(demo_config(tmp, port, extra=extra, sensing=False), port)
        d.start()
        yield d, room
        d.cleanup()
    finally:
        room.close()


def _reported(d: Daemon) -> dict[str, dict[str, Any]]:
    assets = d.get("/api/v1/twin")["assets"]
    return {k: v["reported"] for k, v in assets.items() if k.split(":")[0] in ("occupancy", "beacon", "tag")}


def _until(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (KeyError, AssertionError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


def test_beacons_tags_and_occupancy_reach_the_twin(venue: tuple[Daemon, RoomThread]) -> None:
    d, _ = venue

    def complete() -> dict[str, dict[str, Any]]:
        r = _reported(d)
        assert r["occupancy:floor"]["devices"] == 12 and r["occupancy:balcony"]["devices"] == 6
        assert "distance_m" in r["beacon:floor-eddystone"] and "battery_v" in r["beacon:floor-eddystone"]
        assert "temperature_c" in r["tag:secure-balcony"] and "co2_ppm" in r["tag:air-floor"]
        assert r["tag:locked-floor"].get("error") and r["tag:hot-floor"].get("out_of_range")
        return r

    r = _until(complete)
    assert r["occupancy:floor"]["people"] == 12.0

    def near_the_truth() -> dict[str, dict[str, Any]]:  # 2 dB of noise: the smoothed estimate settles in a few s
        r = _reported(d)
        for name, truth in (("floor-ibeacon", math.hypot(5, 2)), ("balcony-ibeacon", math.hypot(5, 2)),
                            ("floor-eddystone", math.hypot(8, 3))):
            assert r[f"beacon:{name}"]["distance_m"] == pytest.approx(truth, rel=0.35)
        return r

    r = _until(near_the_truth)
    assert r["beacon:floor-ibeacon"]["nearest_scanner"] == "floor"
    assert r["beacon:floor-eddystone"]["battery_v"] == 2.95 and r["beacon:floor-eddystone"]["temperature_c"] == 21.5
    assert r["tag:env-floor"]["temperature_c"] == 21.0 and r["tag:env-balcony"]["pressure_hpa"] == 1012.5
    assert r["tag:secure-balcony"]["temperature_c"] == 19.5 and r["tag:secure-balcony"]["encrypted"] is True
    assert "no key" in r["tag:locked-floor"]["error"] and "temperature_c" not in r["tag:locked-floor"]
    assert r["tag:hot-floor"]["out_of_range"] == ["temperature_c"] and "temperature_c" not in r["tag:hot-floor"]
    assert r["tag:hot-floor"]["humidity_pct"] == 40.0
    detail = d.get("/api/v1/health")["drivers"]["sensing"]["detail"]
    assert detail["scanning"] == "passive" and detail["out_of_range"] >= 1 and detail["unknown_tags"] >= 1
    assert detail["malformed"] >= 2 and detail["devices_tracked"] == 18  # the cut-short frame, the locked tag


def test_no_raw_address_of_an_attendee_is_kept(venue: tuple[Daemon, RoomThread]) -> None:
    d, room = venue
    addresses = [p.advertiser.address for p in room.room.phones]
    assert len(addresses) == 18
    _until(lambda: _reported(d)["occupancy:floor"]["devices"] == 12)
    snapshot = json.dumps(d.get("/api/v1/twin")) + json.dumps(d.get("/api/v1/health"))
    time.sleep(1.5)  # the store's next batch: what the twin showed is on disk
    stored = b"".join(p.read_bytes() for p in (d.config.parent / "data").iterdir() if p.is_file())
    log = d.log.read_text()
    for address in addresses:
        raw = bytes.fromhex(address.replace(":", ""))
        for text in (address, address.lower()):
            assert text not in snapshot and text not in log and text.encode() not in stored
        assert raw not in stored and raw[::-1] not in stored


def test_a_silent_scanner_is_restarted_and_its_adapter_recovered(venue: tuple[Daemon, RoomThread]) -> None:
    d, room = venue
    room.loop.call_soon_threadsafe(room.room.mute, "floor")
    status = _until(lambda: (s := d.get("/api/v1/health")["drivers"]["sensing"]).get("restarts", 0) >= 1 and s,
                    timeout=20)
    assert "scanner floor" in status["last_error"] and "adapter recovered" in status["last_error"]
    room.loop.call_soon_threadsafe(room.room.mute, "floor", False)

    def back() -> dict[str, Any]:
        s = d.get("/api/v1/health")["drivers"]["sensing"]
        assert s["state"] == "running" and s["detail"]["scanners"]["floor"]["last_heard_s"] is not None
        return dict(s)

    detail = _until(back, timeout=20)["detail"]
    assert detail["adapter_recoveries"] >= 1
    log = d.log.read_text()
    assert "scanner floor (serial:" in log and "restarting it (1 in a row)" in log and "recovering the adapter" in log
    assert "Traceback" not in log


async def test_a_scanner_that_is_not_there_is_not_ready(tmp_path: Path) -> None:
    twin = Twin("gw", "hall")
    ctx = DriverContext("ble", twin, Recorder(), DmxUniverses(twin, []), FrameClock(40), None)  # type: ignore[arg-type]
    raw = {"backend": "bumble", "scanners": [{"adapter": f"serial:{tmp_path / 'nothing'}", "zone": "floor"}]}
    options, _ = check_all(BleOptions, raw)
    assert options is not None
    with pytest.raises(NotReady, match=r"scanner floor on serial:.*nothing: .*No such file"):
        await BleSensing(ctx, options).start()


def test_the_demo_air_hosts_the_sensing_room(daemon_factory: Any) -> None:
    """The shipped demo: its air driver hosts the room, its `ble` driver hears it through the bumble backend."""
    d: Daemon = daemon_factory().start()

    def seen() -> dict[str, dict[str, Any]]:
        r = _reported(d)
        assert all(r[f"occupancy:{z}"]["devices"] == 20 for z in ("floor", "balcony", "bar"))
        assert r["tag:secure-bar"]["temperature_c"] and r["beacon:floor-eddystone"]["distance_m"]
        return r

    _until(seen, timeout=20)
    assert d.get("/api/v1/health")["drivers"]["air"]["detail"]["sensing"]["phones"] == 60
    d.terminate()


@pytest.mark.parametrize("mode", ["passive", "active"])
async def test_bumble_s_fake_scan_responses_are_dropped(mode: str, tmp_path: Path) -> None:
    """Bumble's own emulated controller reports every advertisement twice (once as a scan response, data
    repeated, RSSI -50): the backend passes each advertisement on once, in either scanning mode."""
    from bumble.controller import Controller
    from bumble.link import LocalLink
    from bumble.transport import open_transport

    from drivers.ble.bumble_backend import BumbleScanner

    link, pty = LocalLink(), str(tmp_path / "hci")  # type: ignore[no-untyped-call]
    transport = await open_transport(f"pty:{pty}")
    Controller("plain", host_source=transport.source, host_sink=transport.sink, link=link)
    room = VirtualRoom(link=link)
    company, payload = frames.ruuvi_v5({"temperature_c": 20.0}, bytes(6), 1)
    tag = await room.advertise("tag", "C4:7C:8D:6A:1B:2E", (0, 0), ad_bytes((company, payload)), interval_ms=50)
    heard: list[AdvertisementData] = []
    scanner = BleakScanner(lambda d, a: heard.append(a), scanning_mode=mode,  # type: ignore[arg-type]
                           bluez={"adapter": f"serial:{pty}"}, backend=BumbleScanner)
    try:
        await scanner.start()
        await asyncio.sleep(0.5)
        await scanner.stop()
        assert 5 <= len(heard) <= 12, len(heard)  # one per advertising event: ~10 in 0.5 s at 50 ms
        assert all(a.manufacturer_data == {company: payload} and a.rssi == -50 for a in heard)
        assert tag.adv_set is not None and tag.adv_set.enabled
    finally:
        await backend_of(scanner).close()  # type: ignore[attr-defined]
        await room.close()
        await transport.close()
