"""The edge inference runtime: the front end's checks (NaN, missing and stuck channels, a clock jump), model files
refused for each defect with the running one kept, hot reload, a model giving NaN, anomaly alarms with hysteresis
naming the channels, and audience mood into the twin, on a real in-process gateway (twin, SQLite store, alerts)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.inference.features import FrontEnd
from gateway.inference.model import ModelError, load
from gateway.inference.service import InferenceService, next_cycle
from gateway.inference.spec import SpecError, parse
from gateway.readings import Reading
from tests import onnx_files as files

KINDS = {"amp:1": ("amplifier", "stage"), "amp:2": ("amplifier", "stage"), "spl:floor": ("spl_meter", "floor"),
         "zone:floor": ("zone", "floor")}


def front(spec: dict[str, Any]) -> FrontEnd:
    return FrontEnd(parse(json.dumps(spec)), KINDS.get)


def feed(fe: FrontEnd, bins: int, values: Callable[[int], list[Reading]]) -> None:
    for i in range(bins):
        fe.observe(values(i))
        fe.close_bin()


def amp(asset: str, temp: float, current: float, ts: float = 1e9) -> list[Reading]:
    return [Reading(ts, asset, "temperature_c", temp), Reading(ts, asset, "current_a", current)]


def test_features_are_defined_or_the_row_is_not_scored_with_the_reason() -> None:
    fe = front(files.equipment_spec())
    rng = np.random.default_rng(1)
    # amp:1 healthy; amp:2's current sensor stuck at 3.2 A, then NaN for its temperature.
    feed(fe, 4, lambda i: amp("amp:1", 40 + rng.normal(), 2 + rng.normal()) + amp("amp:2", 40 + rng.normal(), 3.2))
    (batch,) = fe.batches()
    assert batch.keys == ["amp:1", "amp:2"] and batch.scored.tolist() == [True, False]
    assert batch.reasons == [None, "stuck current_a"] and np.isfinite(batch.x).all()
    feed(fe, 4, lambda i: amp("amp:1", float("nan"), 2.0 + i) + amp("amp:2", 41.0 + i, 2.0 + i))
    (batch,) = fe.batches()
    assert batch.scored.tolist() == [False, True] and batch.reasons[0] == "missing temperature_c"
    assert fe.dropped == 4 and np.isfinite(batch.x).all()


def test_a_clock_jump_in_the_readings_changes_no_feature() -> None:
    a, b = front(files.equipment_spec()), front(files.equipment_spec())
    feed(a, 4, lambda i: amp("amp:1", 40.0 + i, 2.0 + i, ts=1e9 + i))
    feed(b, 4, lambda i: amp("amp:1", 40.0 + i, 2.0 + i, ts=1e9 + i - (3600 if i >= 2 else 0)))  # NTP steps back
    assert np.array_equal(a.batches()[0].x, b.batches()[0].x)


def test_a_missing_optional_channel_is_imputed_and_flagged() -> None:
    fe = front(files.mood_spec())
    feed(fe, 4, lambda i: [Reading(1e9, "spl:floor", "laeq_db", 96.0)])
    (batch,) = fe.batches()
    assert batch.scored.tolist() == [True] and batch.x.tolist() == [[96.0, 0.0]] and batch.missing == [("vibration_g",)]
    feed(fe, 4, lambda i: [Reading(1e9, "spl:floor", "laeq_db", 96.0), Reading(1e9, "zone:floor", "vibration_g", .1)])
    assert fe.batches()[0].x.tolist() == [[96.0, 1.0]]


def test_rows_grow_past_the_first_allocation() -> None:
    kinds = {f"amp:{i}": ("amplifier", "stage") for i in range(100)} | {f"spl:{i}": ("spl_meter", f"z{i}")
                                                                         for i in range(40)}
    amps, zones = (FrontEnd(parse(json.dumps(s)), kinds.get) for s in (files.equipment_spec(), files.mood_spec()))
    for i in range(40):
        zones.set_capacity(f"z{i}", 100.0 + i)
    feed(amps, 4, lambda b: [r for i in range(100) for r in amp(f"amp:{i}", 40.0 + i + b, 1.0 + b)])
    feed(zones, 4, lambda b: [Reading(1e9, f"spl:{i}", "laeq_db", 80.0 + i) for i in range(40)])
    (a,), (z,) = amps.batches(), zones.batches()
    assert a.scored.all() and a.x[99, 0] == pytest.approx(139 + 2.5) and len(a.keys) == 100
    assert z.scored.all() and z.keys[39] == "z39" and z.x[39, 0] == 119.0


def test_a_specification_the_runtime_cannot_follow_is_refused() -> None:
    spec = files.equipment_spec()
    for broken, message in [({**spec, "format": 9}, "format 9 is unknown"),
                            ({**spec, "kind": "weather"}, "kind 'weather' is unknown"),
                            ({**spec, "groups": [{**spec["groups"][0], "features": ["fft(temperature_c)"]}]},
                             "unknown feature op 'fft'"),
                            ({**spec, "groups": [{**spec["groups"][0], "features": ["mean(fan_rpm)"]}]},
                             "uses channel 'fan_rpm', which has no sources")]:
        with pytest.raises(SpecError, match=message):
            parse(json.dumps(broken))


@pytest.mark.parametrize(("data", "kind", "message"), [
    (b"\x08\x07garbage", "equipment_anomaly", "not a model onnxruntime can open"),
    (None, "audience_mood", "is a model of kind equipment_anomaly"),
    ("width", "equipment_anomaly", r"needs tensor\(double\) \[rows, 2\]"),
    ("format", "equipment_anomaly", "format 2 is unknown"),
    ("no-spec", "equipment_anomaly", "not a venue-gateway model"),
    ("no-alert", "equipment_anomaly", "no alert thresholds"),
])
def test_a_bad_model_file_is_refused_with_the_reason(tmp_path: Path, data: Any, kind: Any, message: str) -> None:
    made = {None: files.equipment(), "width": files.equipment(width=3),
            "format": files.equipment({**files.equipment_spec(), "format": 2}),
            "no-spec": files.equipment(metadata=False),
            "no-alert": files.equipment({**files.equipment_spec(), "alert": None})}
    path = tmp_path / "m.onnx"
    path.write_bytes(data if isinstance(data, bytes) else made[data])
    with pytest.raises(ModelError, match=message):
        load(path, kind)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    text = ('[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n'
            '[inference]\nequipment_model = "eq.onnx"\nmood_model = "mood.onnx"\nreload_check_s = 0.5\n'
            '[inference.zone_capacity]\nfloor = 100\n')
    (tmp_path / "eq.onnx").write_bytes(files.equipment())
    (tmp_path / "mood.onnx").write_bytes(files.mood())
    gw = Gateway(config.parse(tmp_path / "gw.toml", text), Tokens([]))
    await gw.store.open(gw.twin)
    for asset, (kind, zone) in KINDS.items():
        gw.twin.declare(asset, kind, zone, "sim")
    yield gw
    await gw.store.close(gw.twin)


async def run_service(gw: Gateway, seconds: float, readings: Callable[[], list[Reading]],
                      service: InferenceService | None = None) -> InferenceService:
    """Run the service (a new one, or `service` on) for `seconds` while a driver publishes `readings()`."""
    assert gw.config.inference is not None
    if service is None:
        service = InferenceService(gw.config.inference, gw.config.path.parent, gw.twin, gw.ingest, gw.alerts)
    await service.start()
    task = asyncio.create_task(service.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        gw.ingest.publish(readings(), "sim")
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await service.stop()
    return service


async def test_alarms_rise_and_clear_with_hysteresis_naming_the_channels(gateway: Gateway) -> None:
    alerts: list[dict[str, Any]] = []
    gateway.alerts.listen(lambda kind, text, doc: alerts.append(doc) if kind == "equipment_anomaly" else None)
    temp = {"amp:1": 1.0}  # mean square of (1, 1): 1, under alert.on 4
    rng = np.random.default_rng(2)

    def readings() -> list[Reading]:
        return [r for a in ("amp:1", "amp:2") for r in amp(a, temp.get(a, 1.0) + rng.normal(0, .01),
                                                              1.0 + rng.normal(0, .01))]

    service = await run_service(gateway, 0.6, readings)
    assert gateway.twin.get("amp:1").reported["anomaly"] == "ok"  # type: ignore[union-attr]
    temp["amp:1"] = 4.0  # (16 + 1) / 2 = 8.5: over 4 on two cycles in a row
    await run_service(gateway, 0.6, readings, service)
    amp1 = gateway.twin.get("amp:1").reported  # type: ignore[union-attr]
    assert amp1["anomaly"] == "alarm" and amp1["anomaly_channels"] == ["temperature_c"]
    assert gateway.twin.get("amp:2").reported["anomaly"] == "ok"  # type: ignore[union-attr]
    assert alerts[0]["asset"] == "amp:1" and alerts[0]["state"] == "raised" and alerts[0]["model_version"] == "t1"
    assert "amp:1" in str(gateway.alerts.standing)
    temp["amp:1"] = 1.0  # a restarted service knows the alarm from the twin, and clears it
    await run_service(gateway, 0.8, readings)
    assert gateway.twin.get("amp:1").reported["anomaly"] == "ok"  # type: ignore[union-attr]
    assert alerts[-1]["state"] == "cleared" and not gateway.alerts.standing
    assert isinstance(gateway.twin.get("amp:1").reported["anomaly_score"], float)  # type: ignore[union-attr]


async def test_models_reload_when_replaced_and_a_bad_file_keeps_the_running_one(gateway: Gateway) -> None:
    refused: list[str] = []
    gateway.alerts.listen(lambda kind, text, doc: refused.append(text) if kind == "model_refused" else None)
    ok = lambda: amp("amp:1", 1.0 + np.random.rand(), 1.0 + np.random.rand())  # noqa: E731
    service = await run_service(gateway, 0.2, ok)
    status = gateway.twin.get("inference").reported  # type: ignore[union-attr]
    assert status["equipment_anomaly"]["version"] == "t1" and status["audience_mood"]["version"] == "m1"
    directory = gateway.config.path.parent
    files.replace_file(directory / "eq.onnx", files.equipment(files.equipment_spec(version="t2")))
    await run_service(gateway, 1.2, ok, service)
    assert gateway.twin.get("inference").reported["equipment_anomaly"]["version"] == "t2"  # type: ignore[union-attr]
    files.replace_file(directory / "eq.onnx", files.equipment(width=3))
    await run_service(gateway, 1.2, ok, service)
    status = gateway.twin.get("inference").reported["equipment_anomaly"]  # type: ignore[union-attr]
    assert status["version"] == "t2" and "needs tensor(double) [rows, 2]" in status["error"]
    assert len(refused) == 1 and "t2 kept" in refused[0]
    assert service.slots[0].cycles > 5  # the running model went on scoring


async def test_a_model_giving_nan_is_reported_and_the_rows_not_scored(gateway: Gateway) -> None:
    files.replace_file(gateway.config.path.parent / "eq.onnx", files.equipment(nan=True))
    service = await run_service(gateway, 0.5, lambda: amp("amp:1", 1.0 + np.random.rand(), 1.0 + np.random.rand()))
    assert service.slots[0].not_finite > 0
    amp1 = gateway.twin.get("amp:1").reported  # type: ignore[union-attr]
    assert amp1["anomaly"] == "not scored" and amp1["anomaly_reason"] == "model output not finite"


async def test_crowd_energy_goes_into_the_twin_per_zone(gateway: Gateway) -> None:
    await run_service(gateway, 0.5, lambda: [Reading(1e9, "spl:floor", "laeq_db", 91.0 + np.random.rand() * .1)])
    mood = gateway.twin.get("mood:floor")
    assert mood is not None and mood.kind == "audience_mood" and mood.zone == "floor"
    assert mood.reported["energy"] == pytest.approx(0.73, abs=0.02) and mood.reported["class"] == "engaged"
    assert mood.reported["without"] == ["vibration_g"]


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(0.01, 60.0))
def test_cycles_keep_their_phase_and_never_come_less_than_half_a_bin_apart(now: float, phase: float,
                                                                          bin_s: float) -> None:
    """The models' cycles stay on their staggered grid; a timer firing early or a late cycle never makes a bin of
    almost nothing."""
    at = next_cycle(now, phase, bin_s)
    assert bin_s / 2 - 1e-6 <= at - now <= 1.5 * bin_s + 1e-6
    k = (at - phase) / bin_s
    assert abs(k - round(k)) < 1e-6
    assert next_cycle(at - 1e-9, phase, bin_s) == pytest.approx(at + bin_s)  # woken a hair early: the next one
