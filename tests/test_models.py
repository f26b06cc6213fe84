"""The edge models: what training exports computes what scikit-learn computes, carries a specification the gateway
reads, and the shipped files load in the gateway and alarm on a fault. Training needs the `train` extra."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("onnx")

import onnx

from drivers.sim.venue import Fault, VirtualVenue
from gateway.inference.alarms import Hysteresis
from gateway.inference.model import load
from gateway.inference.spec import METADATA_KEY, parse
from models import equipment, mood
from models.dataset import LAYOUT, fault_spans, faulted, simulate
from models.specs import equipment_spec, mood_spec
from models.train import Rows, collect

SHIPPED = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def small() -> dict[str, Any]:
    """Both models trained in a hurry on the first 40 minutes of one night, written to ONNX."""
    rows = collect(7, until=2400.0, settle_s=0.0)
    spec = equipment_spec("0.0.1")
    models = []
    methods: tuple[equipment.Method, ...] = ("autoencoder", "pca")
    for group, method in zip(spec["groups"], methods, strict=True):
        r: Rows = rows[group["name"]]
        models.append(equipment.fit_group(group["name"], group["features"], r.x, method, components=2,
                                          hidden=(8, 3, 8), max_rows=2000, iterations=5))
    on, off, channel_z = equipment.calibrate(models, [rows[m.name].x for m in models])
    alert = {"on": on, "off": off, "on_cycles": 3, "off_cycles": 6, "channel_z": channel_z}
    eq = equipment.build_onnx(spec, models, {"alert": alert, "training": {"seeds": [7]}}, 1)
    zone = rows["zone"]
    md_spec = mood_spec("0.0.1")
    m = mood.fit(md_spec["groups"][0]["features"], zone.x, zone.target, hidden=(8, 4), iterations=5)
    md_spec["groups"][0]["impute"] = m.impute
    md = mood.build_onnx(m, md_spec, {"class_edges": mood.CLASS_EDGES, "training": {"seeds": [7]}}, 1)
    return {"rows": rows, "equipment": (models, eq), "mood": (m, md)}


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_the_equipment_graph_computes_what_scikit_learn_does(small: dict[str, Any]) -> None:
    models, eq = small["equipment"]
    session = _session(eq)
    for m in models:
        x = small["rows"][m.name].x
        x = np.concatenate([x, x[:5] * 1.5])  # a few rows off normal too
        # every input is fed: a group without rows this cycle gets none (ONNX has no optional inputs here)
        inputs = {g.name: x if g is m else np.zeros((0, len(g.features))) for g in models}
        score, z = session.run([f"{m.name}_score", f"{m.name}_z"], inputs)
        ref_score, ref_z = m.predict(x)
        assert score.shape == (len(x),) and z.shape == x.shape
        assert np.max(np.abs(score - ref_score)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref_score))))
        assert np.max(np.abs(z - ref_z)) <= 1e-5


def test_the_mood_graph_computes_what_scikit_learn_does(small: dict[str, Any]) -> None:
    m, md = small["mood"]
    x = small["rows"]["zone"].x
    x = np.concatenate([x, mood.drop_channels(m.features, x, m.impute, np.random.default_rng(1))])
    energy, cls = _session(md).run(["zone_energy", "zone_class"], {"zone": x})
    ref_energy, ref_cls = m.predict(x)
    assert energy.dtype == np.float64 and cls.dtype == np.int64
    assert np.max(np.abs(energy - ref_energy)) <= 1e-5
    assert np.all((energy >= 0) & (energy <= 1))
    # the class is the count of edges reached, computed in the graph: equal away from the edges themselves
    away = np.abs(ref_energy[:, None] - np.asarray(mood.CLASS_EDGES)[None, :]).min(axis=1) > 1e-9
    assert np.array_equal(cls[away], ref_cls[away])


def test_the_exported_files_carry_a_specification_the_gateway_loads(small: dict[str, Any], tmp_path: Path) -> None:
    _, eq = small["equipment"]
    _, md = small["mood"]
    for model, kind in ((eq, "equipment_anomaly"), (md, "audience_mood")):
        meta = {p.key: p.value for p in model.metadata_props}
        spec = parse(meta[METADATA_KEY])
        assert spec.kind == kind and spec.version == "0.0.1"
        assert model.opset_import[0].version == 17 and model.producer_name == "venue-gateway models"
        path = tmp_path / f"{kind}.onnx"
        path.write_bytes(model.SerializeToString())
        loaded = load(path, kind)  # the runtime's own checks: inputs, outputs, a trial run on imputed rows
        if kind == "equipment_anomaly":
            assert loaded.rule is not None and loaded.rule.off <= loaded.rule.on
        else:
            assert loaded.classes == ("calm", "engaged", "peak")
            assert spec.extra["class_edges"] == [0.45, 0.75]
            assert list(spec.groups[0].impute) == small["mood"][0].impute


def test_the_same_fit_exports_the_same_bytes(small: dict[str, Any]) -> None:
    models, eq = small["equipment"]
    meta = json.loads({p.key: p.value for p in eq.metadata_props}[METADATA_KEY])
    again = equipment.build_onnx(equipment_spec("0.0.1"), models, {k: meta[k] for k in ("alert", "training")}, 1)
    assert again.SerializeToString() == eq.SerializeToString()


def test_the_shipped_models_load_and_alarm_on_a_stalled_fan() -> None:
    eq, md = load(SHIPPED / "equipment_anomaly.onnx", "equipment_anomaly"), load(SHIPPED / "audience_mood.onnx",
                                                                               "audience_mood")
    assert eq.rule is not None and eq.spec.extra["training"]["created_by"] == "make models"
    md_doc = mood_spec(md.spec.version)
    md_doc["groups"][0]["impute"] = list(md.spec.groups[0].impute)
    fault = Fault("fan_stall", "amp:r02.3", 3300.0, 4200.0)
    hysteresis, raised, scores = Hysteresis(eq.rule), [], []
    energy: dict[str, list[float]] = {"doors": [], "support": []}
    for b in simulate(2001, [equipment_spec(eq.spec.version), md_doc], faults=[fault], until=3600.0):
        batches = b.fronts[0].batches()
        out = eq.run({x.group.name: x.x[x.scored] for x in batches})  # a group without scored rows: none
        for batch in batches:
            scored = np.full(len(batch.keys), np.nan)
            if batch.scored.any():
                scored[batch.scored] = out[f"{batch.group.name}_score"]
            if batch.group.name == "amplifier" and batch.scored[batch.keys.index(fault.asset)]:
                scores.append((b.t, float(scored[batch.keys.index(fault.asset)])))
            raised += [(b.t, key) for key, change in hysteresis.update(batch.keys, scored, batch.scored)
                       if change == "raised"]
            b.fronts[0].hold_baselines(batch.group.name, hysteresis.alarmed)
        zone = b.fronts[1].batches()[0]
        if zone.scored.any() and b.t > 600:
            e = md.run({"zone": zone.x[zone.scored]})["zone_energy"]
            part = "doors" if b.t < 2600 else "support" if b.t > 3000 else None
            if part:
                energy[part].append(float(e[[k for k, s in zip(zone.keys, zone.scored, strict=True) if s]
                                            .index("floor")]))
    before = [s for t, s in scores if 1200 < t < fault.start]
    assert before and max(before) < eq.rule.on
    assert any(s >= eq.rule.on for t, s in scores if t > fault.start)
    assert [key for t, key in raised] == [fault.asset]  # the stalled fan alarms, nothing else does
    assert fault.start < raised[0][0] < fault.start + 120
    assert np.mean(energy["support"]) > np.mean(energy["doors"]) + 0.2  # the crowd wakes up for the support act


def test_channel_dropout_imputes_what_the_front_end_would() -> None:
    features = mood_spec("x")["groups"][0]["features"]
    x = np.random.default_rng(1).normal(size=(4000, len(features))) + np.arange(len(features))
    present = [j for j, f in enumerate(features) if f.startswith("present(")]
    x[:, present] = 1.0
    impute = mood.imputes(features, x)
    out = mood.drop_channels(features, x, impute, np.random.default_rng(0))
    dropped = out[:, features.index("present(band_mid_db)")] == 0
    assert 0.25 < dropped.mean() < 0.45  # DROP_CHANCE, per sensor
    for f in ("diff(band_mid_db,band_low_db)", "diff(band_high_db,band_low_db)"):
        j = features.index(f)
        assert np.all(out[dropped, j] == impute[j]) and np.array_equal(out[~dropped, j], x[~dropped, j])
    assert np.array_equal(out[:, 0], x[:, 0])  # the sound level meter is never dropped


def test_a_fit_is_reproducible() -> None:
    x = np.random.default_rng(3).normal(size=(500, 4))
    a = equipment.fit_group("g", ["mean(a)"] * 4, x, "autoencoder", hidden=(6, 2, 6), iterations=3)
    b = equipment.fit_group("g", ["mean(a)"] * 4, x, "autoencoder", hidden=(6, 2, 6), iterations=3)
    assert np.array_equal(a.predict(x)[0], b.predict(x)[0])


def test_fault_spans_follow_the_venues_truth() -> None:
    venue = VirtualVenue(3, LAYOUT, [Fault("breaker_trip", "mains:B", 100.0, 200.0),
                                     Fault("fan_stall", "amp:r01.1", 50.0, 80.0)])
    spans = fault_spans(venue)
    for asset in LAYOUT.assets():
        for t in (60.0, 150.0, 250.0):
            assert (faulted(spans, asset, t, t) or None) == venue.fault_active(asset, t), (asset, t)
