"""The shipped models on held-out virtual nights (seeds never trained on), run as the box runs them: the gateway's
front end, onnxruntime, and the runtime's Hysteresis with baselines held while an asset alarms. Prints event-level
figures for the equipment model beside a per-feature z-score baseline, the mood model's rank correlation with the
scripted crowd energy under harder conditions, and how far ONNX is from scikit-learn. `python -m models.evaluate`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from drivers.sim.venue import Fault
from gateway.inference.alarms import AlarmRule, Hysteresis
from gateway.inference.features import FrontEnd
from gateway.inference.model import Model, load
from gateway.inference.spec import METADATA_KEY
from models.dataset import LAYOUT, fault_spans, simulate, zone_energy
from models.mood import CLASSES, classify
from models.train import Trained, log, parallel, train

Array = npt.NDArray[np.float64]
HELD_OUT = tuple(range(1001, 1011))
FAULTS_PER_HOUR = 1.5
CONDITIONS: dict[str, dict[str, Any]] = {  # the mood model's conditions: simulate()'s options
    "as trained": {},
    "pa_leak_db +6": {"pa_leak_db": 6.0},
    "pa_leak_db +12": {"pa_leak_db": 12.0},
    "ble_noise 0.2": {"ble_noise": 0.2},
    "ble_noise 0.5": {"ble_noise": 0.5},
    "no crowd microphones": {"drop": frozenset({"crowd_mic"})},
    # beyond the brief: vibration follows the scripted energy closely in the simulation, so these show what the
    # model makes of the sound alone
    "no vibration sensors": {"drop": frozenset({"zone.vibration_g"})},
    "sound level meter only": {"drop": frozenset({"crowd_mic", "zone", "occupancy_estimate", "environment"})},
}


@dataclass
class Detector:
    """One alarm source run as the runtime runs one: its own front end (its held baselines), its Hysteresis."""

    front: FrontEnd
    hysteresis: Hysteresis
    events: list[tuple[str, str, float, tuple[str, ...]]] = field(default_factory=list)  # asset, change, t, channels
    scored_bins: dict[str, int] = field(default_factory=dict)


@dataclass
class NightResult:
    seed: int
    condition: str
    duration: float = 0.0
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    detectors: dict[str, Detector] = field(default_factory=dict)
    mood: list[Array] = field(default_factory=list)  # rows of (zone index, energy, class, truth now, truth recent)
    diff: dict[str, float] = field(default_factory=dict)  # output -> max |ONNX - scikit-learn|

    def note(self, name: str, a: Any, b: Any, relative: bool = False) -> None:
        """The largest |a - b| so far; `relative`: also over max(1, |b|), for scores that run large."""
        if len(a):
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            self.diff[name] = max(self.diff.get(name, 0.0), float(np.max(np.abs(a - b))))
            if relative:
                rel = float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))
                self.diff[f"{name} (relative)"] = max(self.diff.get(f"{name} (relative)", 0.0), rel)


_CTX: dict[str, Any] = {}  # set before the worker processes fork: the trained objects and the model paths


def _session_models() -> tuple[Model, Model]:
    if "loaded" not in _CTX:  # per process, after the fork: onnxruntime sessions do not survive one
        paths = _CTX["paths"]
        _CTX["loaded"] = (load(paths["equipment"], "equipment_anomaly"), load(paths["mood"], "audience_mood"))
    loaded: tuple[Model, Model] = _CTX["loaded"]
    return loaded


def _equipment_cycle(res: NightResult, det: Detector, t: float, score: Any, channel_z: float,
                     reference: Any = None) -> None:
    """One cycle of one detector: batches, scores, Hysteresis, held baselines (service.py's order)."""
    batches = det.front.batches()
    # every group's input, with no rows where none is scored: the graph has no optional inputs
    inputs = {b.group.name: np.ascontiguousarray(b.x[b.scored]) for b in batches}
    outputs = score(inputs) if any(len(x) for x in inputs.values()) else {}
    for b in batches:
        g = b.group.name
        for i in np.flatnonzero(b.scored):
            det.scored_bins[b.keys[i]] = det.scored_bins.get(b.keys[i], 0) + 1
        scores = np.full(len(b.keys), np.nan)
        z = np.zeros((len(b.keys), len(b.group.features)))
        if outputs and b.scored.any():
            scores[b.scored] = outputs[f"{g}_score"]
            if f"{g}_z" in outputs:
                z[b.scored] = outputs[f"{g}_z"]
            if reference is not None:
                ref_score, ref_z = reference[g].predict(inputs[g])
                res.note("equipment score", outputs[f"{g}_score"], ref_score, relative=True)
                res.note("equipment z", outputs[f"{g}_z"], ref_z)
        for key, change in det.hysteresis.update(b.keys, scores, b.scored):
            row = z[b.keys.index(key)]
            named = tuple(sorted({ch for f, zz in zip(b.group.features, row, strict=True) if abs(zz) >= channel_z
                                  for ch in f.channels}))
            det.events.append((key, change, t, named))
        det.front.hold_baselines(g, det.hysteresis.alarmed)


def evaluate_night(job: tuple[int, str]) -> NightResult:
    seed, condition = job
    trained: Trained = _CTX["trained"]
    eq_model, md_model = _session_models()
    res = NightResult(seed, condition)
    with_equipment = condition == "as trained"
    # the front ends follow the files' own specifications, as the runtime's do
    eq_doc, md_doc = (json.loads(m.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
                      for m in (eq_model, md_model))
    specs = [eq_doc, eq_doc, md_doc] if with_equipment else [md_doc]
    assert eq_model.rule is not None
    rule = eq_model.rule
    base_rule = AlarmRule(trained.baseline_alert["on"], trained.baseline_alert["off"], rule.on_cycles,
                          rule.off_cycles, rule.channel_z)
    baselines = {m.name: b for m, b in zip(trained.equipment, trained.baselines, strict=True)}
    reference = {m.name: m for m in trained.equipment}

    def baseline_score(inputs: dict[str, Array]) -> dict[str, Array]:
        return {f"{g}_score": baselines[g].score(x) for g, x in inputs.items()}

    zones = {z.name: i for i, z in enumerate(LAYOUT.zones)}
    short_s = md_doc["short_bins"] * md_doc["bin_s"]
    for b in simulate(seed, specs, faults_per_hour=FAULTS_PER_HOUR, **CONDITIONS[condition]):
        if not res.faults:
            res.faults = fault_spans(b.venue)
            if with_equipment:
                res.detectors = {"model": Detector(b.fronts[0], Hysteresis(rule)),
                                 "z-score baseline": Detector(b.fronts[1], Hysteresis(base_rule))}
        res.duration = b.t
        if with_equipment:
            _equipment_cycle(res, res.detectors["model"], b.t, eq_model.run, rule.channel_z, reference)
            _equipment_cycle(res, res.detectors["z-score baseline"], b.t, baseline_score, rule.channel_z)
        batch = b.fronts[-1].batches()[0]
        if not batch.scored.any():
            continue
        x = np.ascontiguousarray(batch.x[batch.scored])
        out = md_model.run({"zone": x})
        ref_energy, ref_class = trained.mood.predict(x)
        res.note("mood energy", out["zone_energy"], ref_energy)
        res.note("mood class", out["zone_class"], ref_class)
        keys = [k for k, s in zip(batch.keys, batch.scored, strict=True) if s]
        for k, e, c in zip(keys, out["zone_energy"].tolist(), out["zone_class"].tolist(), strict=True):
            d = LAYOUT.zones[zones[k]].distance_m
            res.mood.append(np.array([zones[k], e, c, b.venue.show.zone_energy(b.t, d),
                                      zone_energy(b.venue, k, b.t, short_s)]))
    return res


def _events(det: Detector, end: float) -> list[tuple[str, float, float, tuple[str, ...]]]:
    """Alarm events: (asset, raised, cleared or the night's end, channels named when raised)."""
    open_: dict[str, tuple[float, tuple[str, ...]]] = {}
    out = []
    for key, change, t, named in det.events:
        if change == "raised":
            open_[key] = (t, named)
        elif key in open_:
            start, n = open_.pop(key)
            out.append((key, start, t, n))
    out += [(key, start, end, n) for key, (start, n) in open_.items()]
    return out


def _label(asset: str, f: Fault) -> str:
    if f.kind == "breaker_trip":
        return "breaker_trip (circuit)" if asset.startswith("mains:") else "breaker_trip (its amps)"
    return f.kind


@dataclass
class Tally:
    faults: int = 0
    delays: list[float] = field(default_factory=list)  # of the faults detected
    tp: int = 0  # alarm events overlapping a fault of this kind
    named: dict[str, int] = field(default_factory=dict)  # channels named by those events


def equipment_figures(results: Sequence[NightResult], detector: str, window_s: float) -> tuple[dict[str, Tally],
                                                                                                 int, float, float]:
    """Per fault kind: faults, delays of those detected, true alarm events; and the false alarm events, the scored
    asset-hours and the hours of nights."""
    tally: dict[str, Tally] = {}
    fp, scored_h, night_h = 0, 0.0, 0.0
    for r in results:
        det = r.detectors[detector]
        events = _events(det, r.duration)
        scored_h += sum(det.scored_bins.values()) * 5.0 / 3600
        night_h += r.duration / 3600
        for asset, start, end, named in events:
            hit = {_label(asset, f) for f in r.faults.get(asset, ()) if start <= f.end + window_s and f.start <= end}
            fp += not hit
            for label in hit:
                t = tally.setdefault(label, Tally())
                t.tp += 1
                for ch in named or ("(none over channel_z)",):
                    t.named[ch] = t.named.get(ch, 0) + 1
        for asset, faults in r.faults.items():
            for f in faults:
                t = tally.setdefault(_label(asset, f), Tally())
                t.faults += 1
                starts = [s for a, s, e, _ in events if a == asset and s <= f.end + window_s and f.start <= e]
                if starts:
                    t.delays.append(max(0.0, min(starts) - f.start))
    return tally, fp, scored_h, night_h


def _prf(tp: int, fp: int, detected: int, faults: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = detected / faults if faults else float("nan")
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def print_equipment(results: Sequence[NightResult], rule: AlarmRule, baseline: dict[str, float],
                    window_s: float) -> None:
    print("\n## Equipment anomaly: held-out nights, event level\n")
    print("An alarm event is one asset's raised..cleared interval (Hysteresis: on_cycles 3, off_cycles 6). It is a "
          "true alarm when it\noverlaps a fault on that asset, the fault extended by the window "
          f"({window_s:.0f} s) after its end, else a false alarm. A fault is\ndetected when an alarm event on its "
          "asset overlaps it (so extended); delay = first such raise - fault start (0 if already alarmed).\n"
          "A breaker trip is a fault of its circuit and of each amplifier on it. Per kind, precision = true events of "
          "the kind /\n(those + every false alarm event). False alarms per hour: per scored asset-hour and per hour "
          "of the venue (16 amplifiers, 2 circuits).\n")
    print(f"model: alert on {rule.on} off {rule.off}; z-score baseline (largest |z| of a row's features against the "
          f"fit nights' normal rows,\nin units of its own 99.9th percentile on the calibration nights): on "
          f"{baseline['on']} off {baseline['off']}\n")
    print("| detector | fault kind | faults | detected | recall | precision | F1 | delay mean s | delay median s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for det in ("model", "z-score baseline"):
        tally, fp, scored_h, night_h = equipment_figures(results, det, window_s)
        for label in sorted(tally):
            t = tally[label]
            p, r, f1 = _prf(t.tp, fp, len(t.delays), t.faults)
            d = t.delays or [float("nan")]
            print(f"| {det} | {label} | {t.faults} | {len(t.delays)} | {r:.2f} | {p:.2f} | {f1:.2f} | "
                  f"{np.mean(d):.0f} | {np.median(d):.0f} |")
        tp = sum(t.tp for t in tally.values())  # an event overlapping faults of two kinds counts once per kind
        events = [e for r in results for e in _events(r.detectors[det], r.duration)]
        detected = sum(len(t.delays) for t in tally.values())
        faults = sum(t.faults for t in tally.values())
        p, r, f1 = _prf(len(events) - fp, fp, detected, faults)
        delays = [d for t in tally.values() for d in t.delays] or [float("nan")]
        print(f"| {det} | **all** | {faults} | {detected} | {r:.2f} | {p:.2f} | {f1:.2f} | {np.mean(delays):.0f} | "
              f"{np.median(delays):.0f} |")
        print(f"| {det} | false alarms | {fp} events ({tp} true) | {fp / scored_h:.4f} per asset-hour | "
              f"{fp / night_h:.2f} per venue-hour | | | | |")
    tally, *_ = equipment_figures(results, "model", window_s)
    print("\nChannels the model names when it raises (|z| >= channel_z), per fault kind: "
          + "; ".join(f"{k}: " + ", ".join(f"{c} {n}" for c, n in sorted(t.named.items(), key=lambda x: -x[1])[:3])
                      for k, t in sorted(tally.items())))


def _ranks(a: Array) -> Array:
    """Ranks, ties given their average rank."""
    r = np.empty(len(a))
    r[np.argsort(a, kind="stable")] = np.arange(len(a))
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    return np.asarray(np.bincount(inverse, weights=r)[inverse] / counts[inverse], dtype=np.float64)


def _spearman(a: Array, b: Array) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def print_mood(results: Sequence[NightResult], zones: Sequence[str]) -> None:
    print("\n## Audience mood: held-out nights\n")
    print("truth: the script's zone energy now, and averaged over the recent window (30 s, what the model is trained "
          "to); the class\nof the truth is that of the recent average. Spearman pooled over zones and nights.\n")
    print("| condition | rows | Spearman (now) | Spearman (recent) | MAE (recent) | class accuracy | " +
          " | ".join(f"Spearman {z}" for z in zones) + " |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(zones))
    confusion = {}
    for condition in CONDITIONS:
        rows = np.array([m for r in results if r.condition == condition for m in r.mood])
        zone, e, c, now, recent = rows.T
        truth = classify(recent)
        acc = float((c.astype(np.int64) == truth).mean())
        per_zone = [_spearman(e[zone == i], recent[zone == i]) for i in range(len(zones))]
        print(f"| {condition} | {len(rows)} | {_spearman(e, now):.3f} | {_spearman(e, recent):.3f} | "
              f"{np.mean(np.abs(e - recent)):.3f} | {acc:.3f} | " + " | ".join(f"{v:.3f}" for v in per_zone) + " |")
        cm = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
        np.add.at(cm, (truth, c.astype(np.int64)), 1)
        confusion[condition] = cm
    for condition in ("as trained", "no crowd microphones", "sound level meter only"):
        print(f"\nConfusion ({condition}; rows: truth, columns: model):\n")
        print("| | " + " | ".join(CLASSES) + " |\n| --- |" + " ---: |" * len(CLASSES))
        for i, name in enumerate(CLASSES):
            print(f"| {name} | " + " | ".join(str(v) for v in confusion[condition][i]) + " |")


def _rebuild(workers: int) -> tuple[Trained, dict[str, bool]]:
    """Train again from the same seeds (the scikit-learn objects the comparison needs are not shipped) and say
    whether the files come out byte for byte as shipped."""
    shipped = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="vg-models-") as out:
        trained = train(Path(out), workers=workers)
        same = {k: p.read_bytes() == (shipped / p.name).read_bytes() for k, p in trained.paths.items()
                if (shipped / p.name).exists()}
    return trained, same


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__)
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parent,
                        help="the directory of the .onnx files to evaluate (default: the shipped ones)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=len(HELD_OUT), help="how many of the held-out seeds")
    args = parser.parse_args(argv)
    began = time.monotonic()
    trained, same = _rebuild(args.workers)
    log(f"evaluate: retrained in {time.monotonic() - began:.0f} s")
    paths = {k: args.models / p.name for k, p in trained.paths.items()}
    _CTX.update(trained=trained, paths=paths)
    seeds = HELD_OUT[:args.seeds]
    jobs = [(s, c) for c in CONDITIONS for s in seeds]
    t0 = time.monotonic()
    results = parallel(evaluate_night, jobs, args.workers)
    log(f"evaluate: {len(jobs)} held-out nights in {time.monotonic() - t0:.0f} s")
    eq = _session_models()[0]
    assert eq.rule is not None
    print("# Held-out evaluation of the edge models\n")
    print(f"held-out seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} nights, faults_per_hour {FAULTS_PER_HOUR}); "
          f"onnxruntime {ort.__version__}")
    for k, p in paths.items():
        print(f"{k}: {p} sha256 {hashlib.sha256(p.read_bytes()).hexdigest()}; retrained from the seeds byte for "
              f"byte identical: {same.get(k, 'no shipped file')}")
    window_s = eq.spec.window_bins * eq.spec.bin_s
    print_equipment([r for r in results if r.detectors], eq.rule, trained.baseline_alert, window_s)
    print_mood(results, [z.name for z in LAYOUT.zones])
    diffs: dict[str, float] = {}
    for r in results:
        for k, v in r.diff.items():
            diffs[k] = max(diffs.get(k, 0.0), v)
    print("\n## ONNX (onnxruntime) against scikit-learn on the held-out rows\n")
    print("; ".join(f"{k}: max |difference| {v:.3g}" for k, v in sorted(diffs.items())))
    print(f"\n(retraining {t0 - began:.0f} s, {len(jobs)} held-out nights {time.monotonic() - t0:.0f} s, "
          f"{args.workers} processes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
