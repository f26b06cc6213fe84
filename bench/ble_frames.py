"""BLE frames: advertisements decoded per second by drivers.ble.frames.decode, per kind (attendees' phones, which
are not ours, and each beacon and tag format), and for a venue's mix (90 % phones). The limit is 10,000
advertisements/s on a Pi-class box; the peer, measured in the same run, is a call to a function of the same
signature that does nothing: the floor of handing an advertisement to any Python code."""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable, Mapping, Sequence

from bench.common import Figure, exit_on_signals, figures_table, table, title
from drivers.ble import frames

TARGET_PER_S = 10_000.0
PHONE_SHARE = 0.9
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
TAG = "54:48:E6:8F:80:A5"
GOOGLE = "0000fe9f-0000-1000-8000-00805f9b34fb"
Advert = tuple[str, Mapping[int, bytes], Mapping[str, bytes], bytes | None]


def adverts() -> dict[str, Advert]:
    """One advertisement of each kind, as bleak hands them over."""
    company, ib = frames.ibeacon("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 1, 2, -59)
    uid_uuid, uid = frames.eddystone_uid(bytes(range(10)), bytes(range(6)), -20)
    _, tlm = frames.eddystone_tlm(3000, 24.5, 1234, 5678.9)
    ruuvi_id, ruuvi = frames.ruuvi_v5({"temperature_c": 24.3, "humidity_pct": 53.49, "pressure_hpa": 1000.44,
                                       "acceleration_x_g": 0.004, "acceleration_y_g": -0.004,
                                       "acceleration_z_g": 1.036, "battery_v": 2.977, "tx_power_dbm": 4,
                                       "movement_count": 66}, bytes.fromhex("cbb8334c884f"), 205)
    values = {"battery_pct": 94, "temperature_c": 21.78, "humidity_pct": 60.6, "co2_ppm": 812}
    bt_uuid, plain = frames.bthome_v2(values, 63)
    _, sealed = frames.bthome_v2(values, 63, key=KEY, address=TAG, counter=4711)
    return {
        "phone (Apple, not ours)": ("11:22:33:44:55:66", {0x004C: bytes.fromhex("1005031c2a5f1d")}, {}, None),
        "phone (Google service, not ours)": ("11:22:33:44:55:67", {}, {GOOGLE: bytes(20)}, None),
        "phone (nothing but a name)": ("11:22:33:44:55:68", {}, {}, None),
        "ibeacon": ("AA:BB:CC:DD:EE:01", {company: ib}, {}, None),
        "eddystone_uid": ("AA:BB:CC:DD:EE:02", {}, {uid_uuid: uid}, None),
        "eddystone_tlm": ("AA:BB:CC:DD:EE:02", {}, {uid_uuid: tlm}, None),
        "ruuvi_v5": ("CB:B8:33:4C:88:4F", {ruuvi_id: ruuvi}, {}, None),
        "bthome_v2 (4 objects)": (TAG, {}, {bt_uuid: plain}, None),
        "bthome_v2 encrypted": (TAG, {}, {bt_uuid: sealed}, KEY),
    }


def venue_mix(kinds: dict[str, Advert], n: int, seed: int = 1) -> list[Advert]:
    rng = random.Random(seed)
    phones = [a for k, a in kinds.items() if k.startswith("phone")]
    ours = [a for k, a in kinds.items() if not k.startswith("phone")]
    return [rng.choice(phones) if rng.random() < PHONE_SHARE else rng.choice(ours) for _ in range(n)]


def nothing(address: str, manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes],
            bthome_key: bytes | None = None) -> None:
    return None


def rate(decode: Callable[..., object], stream: Sequence[Advert], repeats: int = 5) -> float:
    """Advertisements per second: the best of `repeats` passes over the stream, GC frozen as in the daemon."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for address, manufacturer, service, key in stream:
            decode(address, manufacturer, service, key)
        best = min(best, time.perf_counter() - start)
    return len(stream) / best


def run(n: int = 100_000) -> list[Figure]:
    title(f"BLE frames: decode() per advertisement, best of 5 passes of {n:,} (limit {TARGET_PER_S:,.0f}/s)")
    kinds = adverts()
    gc.collect()
    gc.freeze()
    try:
        floor = rate(nothing, [kinds["ibeacon"]] * n)
        per_kind = {kind: rate(frames.decode, [advert] * n) for kind, advert in kinds.items()}
        mixed = venue_mix(kinds, n)
        mix_rate, mix_floor = rate(frames.decode, mixed), rate(nothing, mixed)
    finally:
        gc.unfreeze()
    rows = [[kind, f"{r:,.0f} /s", f"{1e6 / r:.2f} us", f"{r / TARGET_PER_S:.0f}x"] for kind, r in per_kind.items()]
    rows.append([f"venue mix ({PHONE_SHARE:.0%} phones)", f"{mix_rate:,.0f} /s", f"{1e6 / mix_rate:.2f} us",
                 f"{mix_rate / TARGET_PER_S:.0f}x"])
    rows.append(["peer: a no-op call, same arguments", f"{floor:,.0f} /s", f"{1e6 / floor:.2f} us", "-"])
    print(table(["kind", "decoded", "per advertisement", "over the limit"], rows))
    return [
        Figure("ble decode, venue mix", mix_rate, "/s", TARGET_PER_S, "higher", mix_floor, "no-op call"),
        Figure("ble decode, phones (not ours)", per_kind["phone (Apple, not ours)"], "/s", TARGET_PER_S, "higher",
               floor, "no-op call"),
        Figure("ble decode, bthome_v2 encrypted", per_kind["bthome_v2 encrypted"], "/s", TARGET_PER_S, "higher",
               floor, "no-op call"),
    ]


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.ble_frames", description=__doc__)
    parser.add_argument("--adverts", type=int, default=100_000, help="advertisements per pass (default 100,000)")
    print(figures_table(run(parser.parse_args().adverts)))


if __name__ == "__main__":
    main()
