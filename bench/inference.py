"""Edge inference: one cycle of both shipped models for 256 amplifier channels, 16 mains circuits and 64 zones,
the event-loop lag while they run, and the resident memory they add.

In a child process: a virtual venue of that size, its physics stepped offline from the doors to the headline set
(the box joins a running show: amplifiers warm), steps once a second on the loop and publishes through the real
ingest (twin, SQLite store) as the sim driver does; the inference service runs the shipped models/*.onnx on it.
What start-up made is frozen out of the garbage collector, as the daemon does. Alarms raised while measuring are
counted: raising or clearing one costs about 0.1 ms of the cycle that does it.
The loop's lag is sampled every 10 ms, first without the models (same venue, same feed: the peer), then with them.
The memory the models add is measured in another child, without the feed (whose twin change log and store queues
grow on their own): VmRSS with the venue's readings in hand, then after importing onnxruntime, loading both files,
filling both front ends' windows for every row and running five cycles (onnxruntime's library counts).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, Figure, percentile, proc_status, title

RACKS, CHANNELS, CIRCUITS, ZONES = 64, 4, 16, 64


async def _lag(seconds: float, out: list[float]) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        due = loop.time() + 0.01
        await asyncio.sleep(0.01)
        out.append(max(0.0, loop.time() - due))


async def _child(seconds: float, models: Path) -> dict[str, Any]:
    from drivers.sim.venue import VenueLayout, VirtualVenue, Zone
    from gateway.inference.settings import InferenceSection
    from gateway.readings import Ingest
    from gateway.settings import StoreSection
    from gateway.store import Store
    from gateway.twin import Twin

    layout = VenueLayout(tuple(Zone(f"z{i:02d}", 400, 5.0 + i) for i in range(ZONES)), RACKS, CHANNELS, CIRCUITS)
    venue = VirtualVenue(7, layout, [])
    twin = Twin("bench", "hall")
    data = Path(tempfile.mkdtemp(prefix="vg-inference-"))
    store = Store(data, StoreSection())
    await store.open(twin)
    flush = asyncio.create_task(store.run(twin))
    for asset, (kind, zone) in layout.assets().items():
        twin.declare(asset, kind, zone, "sim")
    for z in layout.zones:
        twin.report(f"zone:{z.name}", {"capacity": z.capacity})
    ingest = Ingest(twin, store)
    show_t = 3600.0 * 2  # the headline set
    for t in range(5, int(show_t) + 1, 5):  # the box joins a show running since the doors: the amplifiers are warm
        venue.step(float(t), 5.0, 0.0)

    async def feed() -> None:
        nonlocal show_t
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            show_t += 1.0
            readings = venue.step(show_t, 1.0, time.time())
            for i in range(0, len(readings), 400):  # in slices, as the sim driver publishes
                ingest.publish(readings[i:i + 400], "sim")
                await asyncio.sleep(0)
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    # What start-up made is kept out of later collections, as the daemon does once its units have started; again
    # below once the models are in.
    gc.collect()
    gc.freeze()
    feeder = asyncio.create_task(feed())
    idle: list[float] = []
    await _lag(min(30.0, seconds / 2), idle)
    from gateway.alerts import Alerts
    from gateway.inference.service import InferenceService

    alerts = Alerts()
    service = InferenceService(InferenceSection(equipment_model="equipment_anomaly.onnx",
                                                mood_model="audience_mood.onnx"),
                               models, twin, ingest, alerts)
    alarms: list[float] = []
    alerts.listen(lambda kind, text, doc: alarms.append(time.monotonic())
                  if kind == "equipment_anomaly" and doc["state"] == "raised" else None)
    await service.start()
    gc.collect()
    gc.freeze()
    runner = asyncio.create_task(service.run())
    cycles: dict[str, list[float]] = {s.kind: [] for s in service.slots}
    seen = {s.kind: 0 for s in service.slots}
    lag: list[float] = []
    lagger = asyncio.create_task(_lag(seconds, lag))
    began = time.monotonic()
    # Measured once every window is full enough to score: before that, rows are checked and skipped, not scored.
    warm = max(s.model.spec.window_bins * s.model.spec.bin_s * s.model.spec.min_coverage + 2 * s.model.spec.bin_s
               for s in service.slots if s.model is not None)
    while not lagger.done():
        await asyncio.sleep(0.2)
        for s in service.slots:
            if s.cycles > seen[s.kind]:
                seen[s.kind] = s.cycles
                if time.monotonic() - began > warm:
                    cycles[s.kind].append(s.cycle_ms)
        if time.monotonic() - began < warm:
            lag.clear()
    rows = {b.group.name: len(b.keys) for s in service.slots if s.front for b in s.front.batches()}
    scored = sum(1 for a in twin.assets().values() if a.reported.get("anomaly") == "ok")
    for task in (runner, feeder):
        task.cancel()
    await asyncio.gather(runner, feeder, return_exceptions=True)
    await service.stop()
    store.stop()
    await asyncio.gather(flush, return_exceptions=True)
    await store.close(twin)
    return {"cycles": cycles, "lag": lag, "idle": idle, "rows": rows, "alarms": sum(t > began + warm for t in alarms),
            "ok": scored, "versions": {s.kind: s.model.spec.version if s.model else s.error for s in service.slots}}


def _memory(models: Path) -> dict[str, Any]:
    from drivers.sim.venue import VenueLayout, VirtualVenue, Zone

    layout = VenueLayout(tuple(Zone(f"z{i:02d}", 400, 5.0 + i) for i in range(ZONES)), RACKS, CHANNELS, CIRCUITS)
    venue, assets = VirtualVenue(7, layout, []), layout.assets()
    steps = [venue.step(7200.0 + i, 1.0, 7200.0 + i) for i in range(1, 601)]  # ten minutes of readings
    before = proc_status(os.getpid())["VmRSS"]
    import numpy as np

    from gateway.inference.features import FrontEnd
    from gateway.inference.model import load

    loaded = [load(models / "equipment_anomaly.onnx", "equipment_anomaly"),
              load(models / "audience_mood.onnx", "audience_mood")]
    fronts = [FrontEnd(m.spec, assets.get) for m in loaded]
    for z in layout.zones:
        fronts[1].set_capacity(z.name, z.capacity)
    for i, readings in enumerate(steps, start=1):
        for front in fronts:
            front.observe(readings)
            if i % 5 == 0:
                front.close_bin()
    for _ in range(5):
        for model, front in zip(loaded, fronts, strict=True):
            model.run({b.group.name: np.ascontiguousarray(b.x[b.scored]) for b in front.batches()})
    return {"rss_kb": proc_status(os.getpid())["VmRSS"] - before}


def run(seconds: float = 240.0, models: Path = ROOT / "models") -> list[Figure]:
    title(f"Inference: {RACKS * CHANNELS} amplifier channels, {CIRCUITS} circuits and {ZONES} zones, both shipped "
          f"models every 5 s for {seconds:.0f} s (figures once the windows are full), beside a 1 Hz feed of the venue")
    proc = subprocess.run([PYTHON, "-m", "bench.inference", "--child", str(seconds), "--models", str(models)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the inference bench failed:\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    memory = subprocess.run([PYTHON, "-m", "bench.inference", "--memory", "--models", str(models)], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    doc.update(json.loads(memory.stdout.strip().splitlines()[-1]))
    cycles = doc["cycles"]
    both = [a + b for a, b in zip(cycles["equipment_anomaly"], cycles["audience_mood"], strict=False)]
    lag, idle = [x * 1000 for x in doc["lag"]], [x * 1000 for x in doc["idle"]]
    print(f"  models: {doc['versions']}; rows per cycle: {doc['rows']}; amplifiers and circuits scored ok at the end: "
          f"{doc['ok']}; alarms raised while measured: {doc['alarms']}")
    for kind, values in cycles.items():
        print(f"  {kind}: {len(values)} cycles, CPU p50 {percentile(values, 50):.2f} ms, "
              f"max {max(values):.2f} ms")
    print(f"  both models, one cycle: CPU p50 {percentile(both, 50):.2f} ms, p99 {percentile(both, 99):.2f} ms, "
          f"max {max(both):.2f} ms")
    print(f"  loop lag with the models p50 {percentile(lag, 50):.2f} / p99 {percentile(lag, 99):.2f} ms; "
          f"without (same feed) p99 {percentile(idle, 99):.2f} ms")
    print(f"  resident memory added by onnxruntime, both sessions, full windows and a cycle: "
          f"{doc['rss_kb'] / 1024:.1f} MB")
    return [
        Figure("inference cycle CPU, 256 assets + 64 zones (max)", max(both), "ms", 10.0),
        Figure("loop lag p99 while inference runs", percentile(lag, 99), "ms", 5.0, peer=percentile(idle, 99),
               peer_label="same feed, no models"),
        Figure("resident memory added by the models", doc["rss_kb"] / 1024, "MB", 60.0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="the directory of the .onnx files")
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(_memory(args.models)))
    elif args.child:
        print(json.dumps(asyncio.run(_child(args.child, args.models))))
    else:
        run(args.seconds, args.models)


if __name__ == "__main__":
    main()
