"""Training the two edge models on simulated nights: `python -m models.train [--out models/]` writes
equipment_anomaly.onnx and audience_mood.onnx, the same bytes every time for the same code (fixed seeds)."""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import sklearn

from drivers.sim.venue import Fault
from models import equipment, mood
from models.dataset import fault_spans, faulted, simulate, zone_energy
from models.equipment import GroupModel, ZBaseline
from models.specs import equipment_spec, mood_spec

Array = npt.NDArray[np.float64]
T = TypeVar("T")
R = TypeVar("R")
VERSION = "1.0.0"
MODEL_VERSION = 1
TRAIN_SEEDS = tuple(range(1, 13))  # the equipment models of normal and the mood model are fitted on these
# The equipment scores' units and alert thresholds come from these (the mood model is fitted on them too).
CALIBRATION_SEEDS = tuple(range(13, 17))
# Per equipment group, the model of normal: the amplifiers' temperature lags their load by minutes and the fan sits
# at its floor until warm, which a linear model cannot follow through the start of a set; the mains are linear.
METHODS: dict[str, tuple[equipment.Method, dict[str, Any]]] = {
    "amplifier": ("autoencoder", {"hidden": (32, 4, 32), "iterations": 60}),
    "power": ("pca", {"components": 3}),
}
MOOD_METHOD = ("StandardScaler and MLPRegressor (32, 16), tanh, adam, 80 epochs, random_state 0, to the zone's "
               "scripted crowd energy averaged over the recent window; trained on every row plus a copy with each "
               "optional sensor (microphone, occupancy, vibration, environment) dropped with chance 0.35, its "
               "features set to the training means (the spec's impute) and its present() flag to 0")
FAULTS_PER_HOUR = 1.5
SETTLE_S = 15 * 60  # rows of a night's first minutes are left out while the `rel` baselines settle
# Training nights vary what the crowd microphones and the BLE count get wrong, a little, so the mood model does not
# learn one venue's exact microphone placement: (pa_leak_db, ble_noise) by seed.
VARIATION = {1: (0.0, 0.0), 2: (2.0, 0.05), 3: (4.0, 0.1), 4: (0.0, 0.1), 5: (3.0, 0.0), 6: (6.0, 0.05),
             7: (0.0, 0.0), 8: (1.0, 0.15), 9: (5.0, 0.0), 10: (0.0, 0.05), 11: (2.0, 0.1), 12: (4.0, 0.0),
             13: (0.0, 0.0), 14: (3.0, 0.05), 15: (1.0, 0.1), 16: (5.0, 0.0)}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Rows:
    """One group's scored rows of some nights, with the truth beside them."""

    x: Array
    key: list[str]
    t: Array
    seed: npt.NDArray[np.int64]
    target: Array  # equipment: 1 where the row is normal (no fault in its window); mood: the zone's energy
    kind: list[str | None]  # equipment: the fault active at the row's time

    @staticmethod
    def join(parts: Sequence[Rows]) -> Rows:
        return Rows(np.concatenate([p.x for p in parts]), [k for p in parts for k in p.key],
                    np.concatenate([p.t for p in parts]), np.concatenate([p.seed for p in parts]),
                    np.concatenate([p.target for p in parts]), [k for p in parts for k in p.kind])


def collect(seed: int, until: float | None = None, settle_s: float = SETTLE_S) -> dict[str, Rows]:
    """One training night (or its first `until` seconds): every scored row of each group. The equipment front end
    holds the baselines of assets with a fault, as the runtime holds those in alarm."""
    pa, ble = VARIATION.get(seed, (0.0, 0.0))
    eq, md = equipment_spec(VERSION), mood_spec(VERSION)
    window_s = eq["window_bins"] * eq["bin_s"]
    short_s = md["short_bins"] * md["bin_s"]
    acc: dict[str, list[tuple[Array, str, float, float, str | None]]] = {}
    spans: dict[str, list[Fault]] | None = None
    for b in simulate(seed, [eq, md], faults_per_hour=FAULTS_PER_HOUR, pa_leak_db=pa, ble_noise=ble, until=until):
        spans = spans if spans is not None else fault_spans(b.venue)
        for batch in b.fronts[0].batches():
            for i in np.flatnonzero(batch.scored):
                key = batch.keys[i]
                normal = faulted(spans, key, b.t - window_s, b.t) is None and b.t >= settle_s
                acc.setdefault(batch.group.name, []).append(
                    (batch.x[i], key, b.t, float(normal), b.venue.fault_active(key, b.t)))
            b.fronts[0].hold_baselines(batch.group.name, [k for k in batch.keys if b.venue.fault_active(k, b.t)])
        for batch in b.fronts[1].batches():
            for i in np.flatnonzero(batch.scored):
                zone = batch.keys[i]
                acc.setdefault(batch.group.name, []).append(
                    (batch.x[i], zone, b.t, zone_energy(b.venue, zone, b.t, short_s), None))
    return {g: Rows(np.array([r[0] for r in rows]), [r[1] for r in rows], np.array([r[2] for r in rows]),
                    np.full(len(rows), seed, dtype=np.int64), np.array([r[3] for r in rows]), [r[4] for r in rows])
            for g, rows in acc.items()}


def parallel(fn: Callable[[T], R], jobs: Sequence[T], workers: int = 2) -> list[R]:
    """`fn` over the jobs in worker processes (forked: they inherit the caller's state), results in job order, so
    the same seeds give the same data."""
    if workers <= 1:
        return [fn(j) for j in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=1)


def _equipment(nights: Sequence[dict[str, Rows]], fit_seeds: Sequence[int],
               cal_seeds: Sequence[int]) -> tuple[list[GroupModel], list[ZBaseline], dict[str, Any]]:
    """Fit each group's model of normal on the fit nights, then give scores their units and the alarm thresholds
    from the normal rows of the calibration nights, the same way for the model and the z-score baseline."""
    spec = equipment_spec(VERSION)
    models, baselines, cal_normal = [], [], []
    for group in spec["groups"]:
        name = group["name"]
        fit = Rows.join([n[name] for n in nights if int(n[name].seed[0]) in fit_seeds])
        cal = Rows.join([n[name] for n in nights if int(n[name].seed[0]) in cal_seeds])
        normal = fit.x[fit.target == 1]
        method, options = METHODS[name]
        began = time.monotonic()
        m = equipment.fit_group(name, group["features"], normal, method, **options)
        log(f"train: {name}: {method} on {len(normal)} normal rows of {len(fit.x)} in {time.monotonic() - began:.0f} s")
        models.append(m)
        baselines.append(equipment.ZBaseline.fit(normal))
        cal_normal.append(cal.x[cal.target == 1])
    on, off, channel_z = equipment.calibrate(models, cal_normal)
    b_off = []
    for b, x in zip(baselines, cal_normal, strict=True):
        b.unit = float(np.quantile(b.score(x), equipment.ON_QUANTILE))
        b_off.append(float(np.quantile(b.score(x), equipment.OFF_QUANTILE)))
    log(f"train: equipment alert on {on} off {off} channel_z {channel_z}")
    alert = {"on": on, "off": off, "on_cycles": 3, "off_cycles": 6, "channel_z": channel_z}
    baseline = {"on": equipment.ON_MARGIN, "off": round(min(min(b_off), equipment.ON_MARGIN), 4)}
    return models, baselines, {"alert": alert, "baseline_alert": baseline}


def _training(seeds: Sequence[int], method: str) -> dict[str, Any]:
    return {"seeds": list(seeds), "method": method, "framework": f"scikit-learn {sklearn.__version__}",
            "created_by": "make models"}


@dataclass
class Trained:
    paths: dict[str, Path]  # "equipment", "mood" -> the files written
    equipment: list[GroupModel]
    baselines: list[ZBaseline]
    baseline_alert: dict[str, float]  # the baseline's on/off, chosen the way the model's are
    mood: mood.MoodModel


def train(out: Path, *, fit_seeds: Sequence[int] = TRAIN_SEEDS, cal_seeds: Sequence[int] = CALIBRATION_SEEDS,
          workers: int = 2) -> Trained:
    """Simulate, fit and write both model files into `out`."""
    began = time.monotonic()
    seeds = sorted({*fit_seeds, *cal_seeds})
    nights = parallel(collect, seeds, workers)
    log(f"train: {len(seeds)} nights simulated in {time.monotonic() - began:.0f} s")
    models, baselines, extra = _equipment(nights, fit_seeds, cal_seeds)
    eq_method = ("per group, StandardScaler and a model of normal fitted on normal rows of the fit seeds ("
                 + ", ".join(f"{m.name}: {m.method}" for m in models) + "); score = mean of z^2 of the standardised "
                 "reconstruction residuals, their spreads scaled so that the score's 99.9th percentile on normal rows "
                 f"of the calibration seeds {list(cal_seeds)} is 1; those rows also set the alert thresholds")
    eq_meta = {"alert": extra["alert"], "training": _training(seeds, eq_method)}
    eq_model = equipment.build_onnx(equipment_spec(VERSION), models, eq_meta, MODEL_VERSION)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"equipment": out / "equipment_anomaly.onnx", "mood": out / "audience_mood.onnx"}
    paths["equipment"].write_bytes(eq_model.SerializeToString())

    zone = Rows.join([n["zone"] for n in nights])
    spec = mood_spec(VERSION)
    group = spec["groups"][0]
    t0 = time.monotonic()
    m = mood.fit(group["features"], zone.x, zone.target)
    log(f"train: mood MLP on {len(zone.x)} rows (and as many with sensors dropped) in {time.monotonic() - t0:.0f} s")
    group["impute"] = m.impute
    md_meta = {"class_edges": mood.CLASS_EDGES, "training": _training(seeds, MOOD_METHOD)}
    md_model = mood.build_onnx(m, spec, md_meta, MODEL_VERSION)
    paths["mood"].write_bytes(md_model.SerializeToString())
    for p in paths.values():
        log(f"train: wrote {p} sha256 {hashlib.sha256(p.read_bytes()).hexdigest()}")
    log(f"train: done in {time.monotonic() - began:.0f} s")
    return Trained(paths, models, baselines, extra["baseline_alert"], m)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--workers", type=int, default=2, help="processes simulating nights (default 2)")
    args = parser.parse_args(argv)
    train(args.out, workers=args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
