"""`python -m bench`: runs every benchmark of BENCHMARKS below in turn and prints one summary table of every figure,
its target or limit, the peer measured in the same run, the ratio, and pass or short."""

from __future__ import annotations

import platform
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable

import aiohttp

from bench import (
    api,
    ble,
    ble_frames,
    cloud,
    dashboard,
    failover,
    fleet,
    inference,
    ingest,
    laeq,
    live,
    modbus,
    multibox,
    multibox_bus,
    osc_artnet,
    osc_garbage,
    show,
    timecode,
    venue,
    wristband,
)
from bench.common import HEADERS, Figure, exit_on_signals, figures_table, table, title

BENCHMARKS: list[tuple[str, Callable[[], list[Figure]]]] = [
    ("ingest", ingest.run),
    ("api", api.run),
    ("venue", venue.run),
    ("show", show.run),
    ("send_on_change", osc_artnet.run),
    ("osc_garbage", osc_garbage.run),
    ("wristband", wristband.run),
    ("live", live.run),
    ("timecode", timecode.run),
    ("cloud", cloud.run),
    ("ble_frames", ble_frames.run),
    ("ble", ble.run),
    ("modbus", modbus.run),
    ("laeq", laeq.run),
    ("inference", inference.run),
    ("dashboard", dashboard.run),
    ("multibox_bus", multibox_bus.run),
    ("multibox", multibox.run),
    ("failover", failover.run),
    ("fleet", fleet.run),
]


def main() -> int:
    exit_on_signals()
    began = time.monotonic()
    print(f"venue-gateway benchmarks: Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"aiohttp {aiohttp.__version__}, {platform.machine()}, {platform.node()}")
    figures: list[Figure] = []
    failed: list[str] = []
    for name, run in BENCHMARKS:
        try:
            figures += run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
    title(f"Summary ({time.monotonic() - began:.0f} s)")
    print(figures_table(figures))
    if failed:
        print(table(HEADERS, [[f"{name}: FAILED (see above)", "-", "-", "-", "-", "error"] for name in failed]))
    short = [f.name for f in figures if f.verdict == "SHORT"]
    print(f"\n{len(figures)} figures, {sum(f.verdict == 'pass' for f in figures)} pass, {len(short)} short"
          + (f" ({', '.join(short)})" if short else "") + (f"; {len(failed)} benchmarks failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
