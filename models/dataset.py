"""Training and evaluation data from the virtual venue: a night of a seeded show stepped offline, its readings
fed through the gateway's own front end (gateway/inference/features.py), a bin of feature rows at a time, with the
truth the simulation knows beside them (which fault is active, how much energy the crowd has)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers.sim.venue import Fault, VenueLayout, VirtualVenue, Zone, amp_id, circuit_id, random_faults
from gateway.inference.features import FrontEnd
from gateway.inference.spec import parse
from gateway.readings import Reading

# The training ground: three zones at different distances, four racks of four channels on two circuits.
LAYOUT = VenueLayout((Zone("floor", 1200, 10.0), Zone("balcony", 400, 35.0), Zone("bar", 150, 45.0)), 4, 4, 2)


@dataclass
class Bin:
    t: float  # show time (s) at the end of the bin
    venue: VirtualVenue
    fronts: list[FrontEnd]


def simulate(seed: int, specs: Sequence[dict[str, Any]], *, faults_per_hour: float = 0.0,
             faults: Sequence[Fault] = (), pa_leak_db: float = 0.0, ble_noise: float = 0.0,
             drop: frozenset[str] = frozenset(), until: float | None = None, dt: float = 1.0) -> Iterator[Bin]:
    """Step one night of show `seed` with a front end for each specification: a Bin at the end of every bin, the
    front ends in reach (to hold baselines as the runtime does). `ble_noise`: the relative spread of a noisy
    occupancy count, drawn per reading; `drop`: asset kinds ("crowd_mic") and kind.metric ("zone.vibration_g")
    whose readings never arrive; `until`: stop at this show time (s) instead of the end of the night."""
    venue = VirtualVenue(seed, LAYOUT, [])
    venue.faults = sorted([*faults, *random_faults(seed, LAYOUT, venue.show, faults_per_hour)], key=lambda f: f.start)
    venue.pa_leak_db = pa_leak_db
    assets = LAYOUT.assets()
    fronts = [FrontEnd(parse(json.dumps(doc)), assets.get) for doc in specs]
    for front in fronts:
        for z in LAYOUT.zones:
            front.set_capacity(z.name, z.capacity)
    noise = np.random.default_rng([seed, 0xB1E])
    kinds = {a: kind for a, (kind, _) in assets.items()}
    per_bin = round(fronts[0].spec.bin_s / dt)
    for i, (t, readings) in enumerate(venue.run(end=until, dt=dt), start=1):
        if ble_noise > 0:
            readings = [Reading(r.ts, r.asset, r.metric, max(0.0, r.value * (1 + ble_noise * noise.normal())))
                        if r.metric == "occupancy" else r for r in readings]
        if drop:
            readings = [r for r in readings
                        if kinds.get(r.asset) not in drop and f"{kinds.get(r.asset)}.{r.metric}" not in drop]
        for front in fronts:
            front.observe(readings)
        if i % per_bin == 0:
            for front in fronts:
                front.close_bin()
            yield Bin(t, venue, fronts)


def fault_spans(venue: VirtualVenue) -> dict[str, list[Fault]]:
    """Each asset's faults, an amplifier's including the breaker trips of its circuit (venue.fault_active's truth:
    rack r hangs on circuit r mod circuits)."""
    out: dict[str, list[Fault]] = {}
    layout = venue.layout
    for f in venue.faults:
        out.setdefault(f.asset, []).append(f)
        if f.kind == "breaker_trip":
            for r in range(layout.racks):
                if circuit_id(r % layout.circuits) == f.asset:
                    for c in range(layout.channels_per_rack):
                        out.setdefault(amp_id(r, c), []).append(Fault(f.kind, amp_id(r, c), f.start, f.end))
    return out


def faulted(spans: dict[str, list[Fault]], asset: str, start: float, end: float) -> str | None:
    """The kind of a fault on `asset` active at any time in [start, end], else None."""
    for f in spans.get(asset, ()):
        if f.start <= end and start < f.end:
            return f.kind
    return None


def zone_energy(venue: VirtualVenue, zone: str, t: float, span_s: float) -> float:
    """The scripted energy of a zone, averaged over the `span_s` seconds before `t` (what a recent mean sees)."""
    d = next(z.distance_m for z in LAYOUT.zones if z.name == zone)
    return float(np.mean([venue.show.zone_energy(t - k, d) for k in range(int(span_s))]))
