"""Training and evaluation data from the virtual venue: a night of a seeded show stepped offline, its readings
fed through the gateway's own front end (gateway/inference/features.py), one batch of feature rows per bin, with
the truth the simulation knows beside them (which fault is active, how much energy the crowd has)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.sim.venue import Fault, VenueLayout, VirtualVenue, Zone, random_faults
from gateway.inference.features import Batch, FrontEnd
from gateway.inference.spec import parse
from gateway.readings import Reading

# The training ground: three zones at different distances, four racks of four channels on two circuits.
LAYOUT = VenueLayout((Zone("floor", 1200, 10.0), Zone("balcony", 400, 35.0), Zone("bar", 150, 45.0)), 4, 4, 2)


@dataclass
class Step:
    t: float  # show time (s)
    venue: VirtualVenue
    batches: list[Batch]


def night(seed: int, spec_doc: dict[str, Any], *, faults_per_hour: float = 0.0, faults: list[Fault] | None = None,
          layout: VenueLayout = LAYOUT, pa_leak_db: float = 0.0, ble_noise: float = 0.0,
          dt: float = 1.0) -> Iterator[Step]:
    """Step one night of show `seed`: a Step at the end of every bin. `ble_noise`: the relative spread of a noisy
    occupancy count (BLE), drawn per reading."""
    venue = VirtualVenue(seed, layout, [])
    venue.faults = sorted((faults or []) + random_faults(seed, layout, venue.show, faults_per_hour),
                          key=lambda f: f.start)
    venue.pa_leak_db = pa_leak_db
    assets = layout.assets()
    front = FrontEnd(parse(json.dumps(spec_doc)), assets.get)
    for z in layout.zones:
        front.set_capacity(z.name, z.capacity)
    noise = np.random.default_rng([seed, 0xB1E])
    per_bin = round(front.spec.bin_s / dt)
    for i, (t, readings) in enumerate(venue.run(dt=dt), start=1):
        if ble_noise > 0:
            readings = [Reading(r.ts, r.asset, r.metric, max(0.0, r.value * (1 + ble_noise * noise.normal())))
                        if r.metric == "occupancy" else r for r in readings]
        front.observe(readings)
        if i % per_bin == 0:
            front.close_bin()
            yield Step(t, venue, front.batches())
