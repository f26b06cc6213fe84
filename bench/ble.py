"""BLE sensing: advertisements parsed and folded into zone state per second, with the event-loop lag meanwhile.
(a) The `ble` driver fed at bleak's backend seam (`create_or_update_device` + `call_detection_callbacks`, what the
BlueZ and Bumble backends call) with prebuilt advertisements, a venue's mix (mostly phones; beacons and tags,
one of them encrypted), paced at a tenth above the target and then flat out; beside it, the same seam with a
callback that does nothing (bleak's own share) and the idle loop's lag; then a rogue advertiser's flood, a new
random address every advertisement, flat out: what it costs, and that the devices tracked stay within
`max_devices` and the zones' alert stands. (b) For reference, the whole Bumble path:
a virtual room in a child process putting phones on the air, its scanner controller's HCI events over a pty,
Bumble's host and our backend in this process, into the same driver: what Bumble itself can carry here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from prometheus_client import CollectorRegistry

from bench.common import PYTHON, Figure, child, exit_on_signals, figures_table, title, wait_until
from drivers.ble import frames
from drivers.ble.driver import BleSensing
from drivers.ble.health import backend_of
from drivers.ble.options import BleOptions
from drivers.sim.ble_devices import DEMO_BTHOME_KEY, DEMO_IBEACON_UUID, sensing_config
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.looplag import LoopLag
from gateway.readings import Reading
from gateway.schema import check_all
from gateway.twin import Twin
from peers.ble_feed import FeedScanner

TARGET_RATE = 10_000.0
OFFERED = 1.1 * TARGET_RATE
TARGET_LAG_P99_MS = 5.0
LAG_INTERVAL_S = 0.01
PACE_S = 0.002  # the feeder wakes this often and hands over what is due: bursts of ~22 advertisements
ZONES = ("floor", "balcony", "bar")
PHONES = 3_000  # a sold-out club's worth of phones in the 60 s window
SHARES = {"phone": 0.9, "beacon": 0.05, "tag": 0.05}


class TwinIngest:
    """The driver's publish folded into a real twin (the store's share of ~100 readings/s is the ingest bench's)."""

    def __init__(self, twin: Twin) -> None:
        self.twin, self.readings = twin, 0

    def publish(self, readings: list[Reading], owner: str | None = None) -> None:
        self.twin.apply_readings(readings, owner)
        self.readings += len(readings)


def _driver(raw: dict[str, Any], backend: type[Any] | None) -> tuple[BleSensing, Twin]:
    options, problems = check_all(BleOptions, raw)
    assert options is not None, problems
    twin = Twin("bench", "hall")
    ctx = DriverContext("ble", twin, TwinIngest(twin), DmxUniverses(twin, []), FrameClock(40), None)  # type: ignore[arg-type]
    return BleSensing(ctx, options, backend_class=backend), twin


def _mix(seed: int = 1) -> tuple[dict[str, Any], list[tuple[int, str, AdvertisementData]]]:
    """The driver's configuration and a pool of (scanner, address, advertisement) drawn in the venue's mix."""
    rng = random.Random(seed)
    key = bytes.fromhex(DEMO_BTHOME_KEY)
    beacons = [{"name": f"b{i}", "ibeacon": f"{DEMO_IBEACON_UUID}/1/{i}"} for i in range(6)]
    tags = [{"name": f"t{i}", "address": f"C4:00:00:00:00:{i:02X}", "format": "ruuvi_v5" if i < 4 else "bthome_v2"}
            for i in range(6)]
    tags[5]["demo_key"] = DEMO_BTHOME_KEY
    raw = {"backend": "bumble", "scanners": [{"adapter": z, "zone": z} for z in ZONES], "beacons": beacons,
           "tags": tags}

    def ad(mfr: dict[int, bytes], svc: dict[str, bytes]) -> AdvertisementData:
        return AdvertisementData(None, mfr, svc, [], None, rng.randint(-95, -55), ())

    pool: list[tuple[int, str, AdvertisementData]] = []
    for n in range(20_000):
        kind = rng.choices(list(SHARES), list(SHARES.values()))[0]
        scanner = rng.randrange(len(ZONES))
        if kind == "phone":
            i = rng.randrange(PHONES)
            company = 0x004C if i % 5 < 3 else 0x0075
            pool.append((scanner, f"5A:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}", ad({company: bytes([0x10, 5, i & 0xFF])},
                                                                              {})))
        elif kind == "beacon":
            i = rng.randrange(len(beacons))
            company, payload = frames.ibeacon(DEMO_IBEACON_UUID, 1, i, -59)
            pool.append((scanner, f"D0:00:00:00:00:{i:02X}", ad({company: payload}, {})))
        else:
            i = rng.randrange(len(tags))
            address, seq = tags[i]["address"], n // 200  # a new measurement every ~200 advertisements
            if i < 4:
                company, payload = frames.ruuvi_v5({"temperature_c": 21.5, "humidity_pct": 40}, bytes(6), seq)
                pool.append((scanner, address, ad({company: payload}, {})))
            else:
                uuid, data = frames.bthome_v2({"temperature_c": 21.5, "co2_ppm": 700}, seq & 0xFF,
                                              key=key if i == 5 else None, address=address, counter=seq)
                pool.append((scanner, address, ad({}, {uuid: data})))
    return raw, pool


def _random_address(n: int) -> str:
    """The n-th of a flood's addresses, each new, shaped as a resolvable private address (top bits 01)."""
    return ":".join(f"{b:02X}" for b in (0x40 | n >> 40 & 0x3F, *((n >> s) & 0xFF for s in (32, 24, 16, 8, 0))))


async def flood(seconds: float) -> dict[str, Any]:
    """New random addresses flat out through the seam, the driver publishing every second meanwhile."""
    raw, _ = _mix()
    driver, _ = _driver(raw, FeedScanner)
    await driver.start()
    feeds: list[FeedScanner] = [backend_of(s) for s in driver.scanners]  # type: ignore[misc]
    ad = AdvertisementData(None, {0x004C: b"\x10\x05\x01"}, {}, [], None, -60, ())
    n, began = 0, time.perf_counter()
    next_publish = began + 1.0
    while (now := time.perf_counter()) - began < seconds:
        for _ in range(200):
            feeds[n % len(feeds)].feed(_random_address(n), ad)
            n += 1
        if now >= next_publish:
            driver.publish(time.monotonic())
            next_publish += 1.0
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - began
    driver.publish(time.monotonic())
    health = driver.health()
    await driver.stop()
    return {"rate": n / elapsed, "sent": n, "tracked": health["devices_tracked"], "evicted": health["devices_evicted"],
            "floods": health["floods"], "max_devices": driver.options.max_devices}


async def _lag_of(work: Callable[[], Any], seconds: float) -> tuple[dict[str, float], Any]:
    lag = LoopLag(CollectorRegistry(), interval_s=LAG_INTERVAL_S, window=100_000)
    task = asyncio.get_running_loop().create_task(lag.run())
    try:
        result = await work()
    finally:
        task.cancel()
    return lag.summary(), result


async def _feed(feeds: list[FeedScanner], pool: list[tuple[int, str, AdvertisementData]], rate: float | None,
                seconds: float) -> tuple[int, float]:
    """Hand `pool` over at `rate` per second (None: flat out, in bursts of 200); (handed over, seconds taken)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    n, size = 0, len(pool)
    while (elapsed := loop.time() - began) < seconds:
        due = 200 if rate is None else int(rate * elapsed) - n
        for k in range(n, n + due):
            scanner, address, adv = pool[k % size]
            feeds[scanner].feed(address, adv)
        n += max(due, 0)
        await asyncio.sleep(0 if rate is None else PACE_S)
    return n, loop.time() - began


async def fold(seconds: float, flat_seconds: float) -> dict[str, Any]:
    raw, pool = _mix()
    out: dict[str, Any] = {}
    idle, _ = await _lag_of(lambda: asyncio.sleep(3.0), 3.0)
    out["idle_lag"] = idle

    driver, twin = _driver(raw, FeedScanner)
    await driver.start()
    feeds = [backend_of(s) for s in driver.scanners]
    run = asyncio.get_running_loop().create_task(driver.run())
    gc.collect()
    gc.freeze()  # as the daemon does after start-up: the prepared pool is the bench's, not the gateway's
    cpu = time.process_time()
    out["paced_lag"], (n, took) = await _lag_of(lambda: _feed(feeds, pool, OFFERED, seconds), seconds)  # type: ignore[arg-type]
    out["paced_rate"], out["paced_cpu_us"] = n / took, (time.process_time() - cpu) / n * 1e6
    cpu = time.process_time()
    out["flat_lag"], (n, took) = await _lag_of(lambda: _feed(feeds, pool, None, flat_seconds), flat_seconds)  # type: ignore[arg-type]
    out["flat_rate"], out["flat_cpu_us"] = n / took, (time.process_time() - cpu) / n * 1e6
    out["health"] = driver.health()
    out["occupancy"] = {z: twin.get(f"occupancy:{z}").reported.get("devices") for z in ZONES}  # type: ignore[union-attr]
    run.cancel()
    await driver.stop()

    calls = 0

    def nothing(device: BLEDevice, adv: AdvertisementData) -> None:
        nonlocal calls
        calls += 1

    bare = [BleakScanner(nothing, backend=FeedScanner) for _ in ZONES]
    for s in bare:
        await s.start()
    cpu = time.process_time()
    _, (n, took) = await _lag_of(lambda: _feed([backend_of(s) for s in bare], pool, None, flat_seconds), flat_seconds)  # type: ignore[misc]
    out["bare_rate"], out["bare_cpu_us"] = n / took, (time.process_time() - cpu) / n * 1e6
    return out


async def bumble_path(directory: Path, seconds: float, phones: int, interval_ms: float) -> dict[str, Any]:
    """The room in a child process; the driver here, on the bumble backend: advertisements/s end to end."""
    prefix = str(directory / "ble")
    argv = [PYTHON, "-m", "drivers.sim.ble_devices", "--prefix", prefix, "--zones", "floor",
            "--phones-per-zone", str(phones), "--phone-interval-ms", str(interval_ms), "--rotate-s", "1e9",
            "--report-s", "1"]
    reports: list[dict[str, Any]] = []
    with child(argv, directory / "room.log", stdout=subprocess.PIPE) as proc:
        stdout = proc.stdout
        assert stdout is not None

        loop, arrived = asyncio.get_running_loop(), asyncio.Event()

        def read() -> None:
            for line in stdout:
                reports.append(json.loads(line))
                loop.call_soon_threadsafe(arrived.set)

        threading.Thread(target=read, daemon=True).start()
        await asyncio.to_thread(wait_until, lambda: bool(reports), 60, proc, "the room's scanner")
        raw = _toml_to_raw(sensing_config(["floor"], prefix))
        driver, twin = _driver(raw, None)
        await driver.start()
        run = asyncio.get_running_loop().create_task(driver.run())
        gc.collect()
        gc.freeze()
        await asyncio.sleep(2.0)  # every phone's set is on the air

        async def at_report() -> tuple[float, int, int]:
            """Both counts as the room's report arrives, so the two rates cover the same span."""
            arrived.clear()
            await arrived.wait()
            return time.monotonic(), driver.counts["advertisements"], _reported(reports)

        t0, heard0, on_air0 = await at_report()
        cpu = time.process_time()
        lag, (t1, heard1, on_air1) = await _lag_of(lambda: _after(seconds, at_report), seconds)
        span = t1 - t0
        cpu_share = (time.process_time() - cpu) / span
        run.cancel()
        await driver.stop()
        return {"rate": (heard1 - heard0) / span, "on_air": (on_air1 - on_air0) / span, "lag": lag,
                "cpu_pct": 100 * cpu_share,
                "devices": twin.get("occupancy:floor").reported.get("devices"),  # type: ignore[union-attr]
                "offered": phones * 1000 / interval_ms}


async def _after(seconds: float, then: Callable[[], Any]) -> Any:
    await asyncio.sleep(seconds)
    return await then()


def _reported(reports: list[dict[str, Any]]) -> int:
    last = next((r for r in reversed(reports) if "reported" in r), None)
    return 0 if last is None else int(sum(last["reported"].values()))


def _toml_to_raw(text: str) -> dict[str, Any]:
    import tomllib

    raw: dict[str, Any] = tomllib.loads(text)["drivers"]["ble"]
    raw.pop("type")
    return raw


def run(seconds: float = 10.0, flat_seconds: float = 3.0, bumble_seconds: float = 8.0, phones: int = 200,
        interval_ms: float = 20.0) -> list[Figure]:
    title(f"BLE sensing: the driver's fold fed at bleak's backend seam ({OFFERED:,.0f}/s offered for {seconds:g} s,"
          f" then flat out; {PHONES:,} phones, {len(ZONES)} scanners), and the Bumble path end to end")
    a = asyncio.run(fold(seconds, flat_seconds))
    f = asyncio.run(flood(flat_seconds))
    with tempfile.TemporaryDirectory(prefix="vg-bench-ble-") as tmp:
        try:
            b: dict[str, Any] | None = asyncio.run(bumble_path(Path(tmp), bumble_seconds, phones, interval_ms))
        except Exception as exc:  # the seam's figures stand without the reference
            print(f"Bumble path NOT measured: {type(exc).__name__}: {exc}")
            b = None
    h = a["health"]
    lag = a["paced_lag"]
    print(f"fold, paced: {a['paced_rate']:,.0f} adv/s, {a['paced_cpu_us']:.1f} us CPU each; loop lag p50"
          f" {lag['p50_ms']:.3f} ms, p99 {lag['p99_ms']:.3f} ms, max {lag['max_ms']:.3f} ms; idle loop p99"
          f" {a['idle_lag']['p99_ms']:.3f} ms")
    print(f"fold, flat out: {a['flat_rate']:,.0f} adv/s ({a['flat_cpu_us']:.1f} us each; lag p99"
          f" {a['flat_lag']['p99_ms']:.3f} ms); bleak's seam alone, no-op callback: {a['bare_rate']:,.0f} adv/s"
          f" ({a['bare_cpu_us']:.1f} us each)")
    print(f"  driver: {h['advertisements']:,} advertisements, {h['devices_tracked']:,} devices tracked, occupancy"
          f" {a['occupancy']}, per kind {h['per_kind']}, duplicates {h['duplicates']:,}, malformed {h['malformed']}")
    print(f"flood: {f['sent']:,} new random addresses at {f['rate']:,.0f}/s; {f['tracked']:,} devices tracked"
          f" (max_devices {f['max_devices']:,}), {f['evicted']:,} evicted; alert standing for {f['floods']}")
    figures = [
        Figure(f"BLE adv/s folded, {OFFERED:,.0f}/s offered", a["paced_rate"], "/s", TARGET_RATE, "higher"),
        Figure(f"loop lag p50, {OFFERED:,.0f} adv/s", a["paced_lag"]["p50_ms"], "ms", peer=a["idle_lag"]["p50_ms"],
               peer_label="idle loop"),
        Figure(f"loop lag p99, {OFFERED:,.0f} adv/s", a["paced_lag"]["p99_ms"], "ms", TARGET_LAG_P99_MS,
               peer=a["idle_lag"]["p99_ms"], peer_label="idle loop"),
        Figure("BLE adv/s folded, flat out", a["flat_rate"], "/s", better="higher", peer=a["bare_rate"],
               peer_label="bleak seam, no-op"),
        Figure("BLE adv/s folded, a flood of new addresses", f["rate"], "/s", better="higher", peer=a["flat_rate"],
               peer_label="the venue's mix"),
        Figure("devices tracked after the flood", f["tracked"], "", f["max_devices"] + 1),
    ]
    if b is not None:
        print(f"Bumble end to end: {b['on_air']:,.0f}/s reported by the room's scanner controller"
              f" ({b['offered']:,.0f}/s offered: {phones} phones every {interval_ms:g} ms), {b['rate']:,.0f}/s"
              f" reached the driver, {b['cpu_pct']:.0f}% of a core here ({b['cpu_pct'] * 1e4 / b['rate']:.0f} us each);"
              f" lag p99 {b['lag']['p99_ms']:.3f} ms;"
              f" occupancy {b['devices']} devices")
        figures += [Figure("BLE adv/s through Bumble end to end", b["rate"], "/s", better="higher",
                           peer=b["on_air"], peer_label="sent by the room's controller"),
                    Figure("loop lag p99, Bumble end to end", b["lag"]["p99_ms"], "ms", peer=a["idle_lag"]["p99_ms"],
                           peer_label="idle loop")]
    return figures


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.ble", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="paced feed (default 10)")
    parser.add_argument("--flat-seconds", type=float, default=3.0, help="flat-out feeds (default 3)")
    parser.add_argument("--bumble-seconds", type=float, default=8.0, help="Bumble end to end (default 8)")
    parser.add_argument("--phones", type=int, default=200, help="phones in the Bumble room (default 200, max 240)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="each phone's advertising interval")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        print(figures_table(run(args.seconds, args.flat_seconds, args.bumble_seconds, args.phones, args.interval_ms)))


if __name__ == "__main__":
    main()
