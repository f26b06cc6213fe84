"""The inference service: every bin, each model's front end closes its bin and one worker thread per model turns
the ring buffers into one feature matrix per group and runs the whole batch in one onnxruntime call; the results
go into the twin, the telemetry and the alerts on the loop. Model files are watched and hot-reloaded; a model that
fails to load, or gives numbers that are not finite, is reported and the box goes on without it.

Equipment anomaly: `anomaly_score` readings on each asset scored, its `anomaly` state in the twin ("ok", "alarm",
"not scored" with the reason) and, through Hysteresis, an `equipment_anomaly` alert naming the asset and the
channels that look wrong. Audience mood: `mood:<zone>` assets with `energy` readings and the `class`.
The state of both models (version, file, sha256, error) is the twin asset `inference`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gateway.alerts import Alerts
from gateway.inference.alarms import Hysteresis
from gateway.inference.features import Batch, FrontEnd
from gateway.inference.model import Model, ModelError, Outputs, load, stamp
from gateway.inference.settings import InferenceSection
from gateway.inference.spec import Kind
from gateway.readings import Ingest, Reading
from gateway.supervisor import Unit
from gateway.twin import Twin, TwinFrozen

log = logging.getLogger(__name__)

OWNER = "inference"
STATUS_ASSET = "inference"


@dataclass
class Slot:
    """One model's place: the file, what runs from it, its front end and worker, and its counters."""

    kind: Kind
    path: Path
    model: Model | None = None
    front: FrontEnd | None = None
    hysteresis: Hysteresis | None = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "inference"))
    error: str | None = None
    refused: tuple[int, int, int] | None = None  # the stamp of the last file refused: not tried again until it changes
    next_check: float = 0.0
    cycles: int = 0
    cycle_ms: float = 0.0
    not_finite: int = 0
    state: dict[str, tuple[str, tuple[str, ...], str | None]] = field(default_factory=dict)  # what the twin has

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.model.document() if self.model is not None else {
            "state": "failed" if self.error else "absent", "file": str(self.path)}
        if self.error is not None:
            doc["error"] = self.error
        doc.update(cycles=self.cycles, last_cycle_ms=round(self.cycle_ms, 2), not_finite=self.not_finite)
        return doc


class InferenceService(Unit):
    def __init__(self, settings: InferenceSection, config_dir: Path, twin: Twin, ingest: Ingest,
                 alerts: Alerts) -> None:
        self.settings = settings
        self._twin = twin
        self._ingest = ingest
        self._alerts = alerts
        files: tuple[tuple[Kind, str], ...] = (("equipment_anomaly", settings.equipment_model),
                                                ("audience_mood", settings.mood_model))
        self.slots = [Slot(kind, (config_dir / name).resolve()) for kind, name in files if name]
        self._observing = False

    # -- life ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        with contextlib.suppress(TwinFrozen):
            self._twin.declare(STATUS_ASSET, "inference", None, OWNER)
        for slot in self.slots:
            await self._check_file(slot, force=True)
        if not self._observing:
            self._ingest.observers.append(self._observe)
            self._observing = True
        self._report_status()

    async def run(self) -> None:
        # The models' cycles are spread over the bin, so their workers do not contend with each other for the cores.
        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(*(self._cycles(slot, t0, i / len(self.slots)) for i, slot in enumerate(self.slots)),
                             asyncio.Future())

    async def stop(self) -> None:
        if self._observing:
            self._ingest.observers.remove(self._observe)
            self._observing = False
        for slot in self.slots:
            slot.executor.shutdown(wait=False, cancel_futures=True)
            slot.executor = ThreadPoolExecutor(1, "inference")

    def health(self) -> dict[str, Any]:
        return {slot.kind: slot.document() for slot in self.slots}

    def _observe(self, readings: Sequence[Reading], owner: str | None = None) -> None:
        if owner == OWNER:
            return  # our own results
        for slot in self.slots:
            if slot.front is not None:
                slot.front.observe(readings)

    def _kind_of(self, asset_id: str) -> tuple[str, str | None] | None:
        asset = self._twin.get(asset_id)
        return None if asset is None else (asset.kind, asset.zone)

    # -- model files ---------------------------------------------------------------------------------------
    async def _check_file(self, slot: Slot, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < slot.next_check:
            return
        slot.next_check = now + self.settings.reload_check_s
        current = stamp(slot.path)
        if current is None and slot.model is None:
            if slot.error is None:
                slot.error = f"{slot.path}: no such file"
                log.warning("inference: %s model: %s; running without it", slot.kind, slot.error)
            return
        if current is None or (slot.model is not None and current == slot.model.stamp) or current == slot.refused:
            return
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(slot.executor, load, slot.path, slot.kind)
        except ModelError as exc:
            slot.refused, slot.error = current, str(exc)
            kept = f"version {slot.model.spec.version} kept" if slot.model is not None else "running without it"
            log.error("inference: %s model refused: %s; %s", slot.kind, exc, kept)
            self._alerts.raise_alert("model_refused", f"{slot.kind}: {exc}; {kept}",
                                     {"alert": "model_refused", "model": slot.kind, "message": str(exc)})
            self._report_status()
            return
        self._install(slot, model)

    def _install(self, slot: Slot, model: Model) -> None:
        old = slot.model
        slot.model, slot.error, slot.refused, slot.not_finite = model, None, None, 0
        if slot.front is None or old is None or old.spec != replace(model.spec, version=old.spec.version):
            slot.front = FrontEnd(model.spec, self._kind_of)  # a new window: features of another shape
        else:
            slot.front.spec = model.spec
        rule = model.rule
        if rule is not None:
            s = self.settings
            on = s.alert_on if s.alert_on is not None else rule.on
            rule = replace(rule, on=on, off=s.alert_off if s.alert_off is not None else min(rule.off, on))
            # Alarms carry over a new model file, and a restart: the twin remembers which assets were in alarm.
            alarmed = slot.hysteresis.alarmed if slot.hysteresis is not None else {
                a.id for a in self._twin.assets().values() if a.reported.get("anomaly") == "alarm"}
            slot.hysteresis = Hysteresis(rule)
            slot.hysteresis.alarmed |= alarmed
        log.info("inference: %s model %s loaded from %s", slot.kind, model.spec.version, slot.path)
        self._report_status()

    def _report_status(self) -> None:
        with contextlib.suppress(TwinFrozen):
            self._twin.report(STATUS_ASSET, {slot.kind: slot.document() for slot in self.slots}, OWNER)

    # -- cycles --------------------------------------------------------------------------------------------
    async def _cycles(self, slot: Slot, t0: float, share: float) -> None:
        """Every bin, on a grid from `t0` offset by `share` of a bin: the phase holds through a model that loads
        late, a new bin length or a late cycle. A timer that fires a hair early, or a cycle that ran late, never
        makes a bin of almost nothing (next_cycle)."""
        loop = asyncio.get_running_loop()
        while True:
            bin_s = slot.model.spec.bin_s if slot.model is not None else self.settings.reload_check_s
            now = loop.time()
            await asyncio.sleep(next_cycle(now, t0 + share * bin_s, bin_s) - now)
            await self._check_file(slot)
            model, front = slot.model, slot.front
            if model is None or front is None:
                continue
            began = time.thread_time()
            if model.spec.kind == "audience_mood":
                self._capacities(front)
            front.close_bin()
            loop_cpu = time.thread_time() - began
            try:
                batches, outputs, cpu = await loop.run_in_executor(slot.executor, _infer, model, front)
            except Exception as exc:  # the box goes on without this model until its file changes
                log.exception("inference: %s model failed to run", slot.kind)
                slot.model, slot.error, slot.refused = None, f"failed to run: {exc}", stamp(slot.path)
                self._report_status()
                continue
            if slot.model is not model:
                continue  # replaced meanwhile
            began = time.thread_time()
            publish = self._anomaly if model.spec.kind == "equipment_anomaly" else self._mood
            publish(slot, model, batches, outputs)
            slot.cycles += 1
            slot.cycle_ms = (loop_cpu + cpu + time.thread_time() - began) * 1000  # CPU, loop and worker together

    def _capacities(self, front: FrontEnd) -> None:
        for b in front.buffers:
            if b.group.rows != "zone":
                continue
            for zone in b.keys:
                capacity: float | None = self.settings.zone_capacity.get(zone)
                if capacity is None:
                    asset = self._twin.get(f"zone:{zone}")
                    value = asset.reported.get("capacity") if asset is not None else None
                    capacity = value if isinstance(value, int | float) and value > 0 else None
                if capacity is not None:
                    front.set_capacity(zone, float(capacity))

    def _not_finite(self, slot: Slot, model: Model, batch: Batch, rows: Any) -> None:
        """Rows whose outputs were NaN or infinite: not scored; the model is reported while it does that."""
        first = slot.not_finite == 0
        slot.not_finite += int(rows.sum())
        if first:  # told once per model: the count goes on in health and the twin
            log.error("inference: %s model %s gives non-finite output (%d rows); those rows are not scored",
                      slot.kind, model.spec.version, int(rows.sum()))
            self._alerts.raise_alert("model_output", f"{slot.kind} model {model.spec.version} gives non-finite "
                                     "output; those rows are not scored",
                                     {"alert": "model_output", "model": slot.kind, "version": model.spec.version})
            self._report_status()
        batch.scored[batch.scored] &= ~rows
        for i in np.flatnonzero(batch.scored == 0):
            batch.reasons[i] = batch.reasons[i] or "model output not finite"

    def _anomaly(self, slot: Slot, model: Model, batches: list[Batch], outputs: Outputs) -> None:
        assert model.rule is not None and slot.hysteresis is not None
        now, readings, alarmed = time.time(), [], slot.hysteresis.alarmed
        for batch in batches:
            scores = np.full(len(batch.keys), np.nan)
            z = np.zeros((len(batch.keys), len(batch.group.features)))
            if batch.scored.any():
                s, zz = outputs[f"{batch.group.name}_score"], outputs[f"{batch.group.name}_z"]
                bad = ~np.isfinite(s) | ~np.isfinite(zz).all(axis=1)
                scores[batch.scored], z[batch.scored] = s, np.nan_to_num(zz)
                if bad.any():
                    self._not_finite(slot, model, batch, bad)
            for key, change in slot.hysteresis.update(batch.keys, scores, batch.scored):
                self._alarm(slot, model, batch, key, change, z[batch.keys.index(key)], scores)
            # Row by row in plain Python values: a NumPy scalar per row costs more than the row's work.
            for i, (key, ok, score, reason) in enumerate(zip(batch.keys, batch.scored.tolist(), scores.tolist(),
                                                             batch.reasons, strict=True)):
                if ok:
                    readings.append(Reading(now, key, "anomaly_score", round(score, 4)))
                if key in alarmed:
                    self._set_state(slot, key, "alarm" if ok else "not scored",
                                    _channels(batch, z[i], model.rule.channel_z), reason)
                else:
                    self._set_state(slot, key, "ok" if ok else "not scored", (), reason)
            front = slot.front
            if front is not None:
                front.hold_baselines(batch.group.name, alarmed)
        self._ingest.publish(readings, OWNER)

    def _alarm(self, slot: Slot, model: Model, batch: Batch, key: str, change: str, z: Any, scores: Any) -> None:
        assert model.rule is not None
        channels = _channels(batch, z, model.rule.channel_z)
        score = float(scores[batch.keys.index(key)])
        doc = {"alert": "equipment_anomaly", "asset": key, "state": change, "channels": list(channels),
               "score": round(score, 3), "model_version": model.spec.version}
        if change == "raised":
            text = f"{key} looks wrong: {', '.join(channels) or 'its channels together'} (score {score:.1f})"
        else:
            text = f"{key} back to normal"
        log.warning("inference: %s", text)
        self._alerts.raise_alert("equipment_anomaly", text, doc, key=f"anomaly:{key}", standing=change == "raised")

    def _set_state(self, slot: Slot, key: str, state: str, channels: tuple[str, ...], reason: str | None) -> None:
        reason = reason if state == "not scored" else None
        if slot.state.get(key) == (state, channels, reason):
            return
        slot.state[key] = (state, channels, reason)
        with contextlib.suppress(TwinFrozen):
            self._twin.report(key, {"anomaly": state, "anomaly_channels": list(channels),
                                    "anomaly_reason": reason}, OWNER)

    def _mood(self, slot: Slot, model: Model, batches: list[Batch], outputs: Outputs) -> None:
        now, readings = time.time(), []
        for batch in batches:
            name = batch.group.name
            energy = np.full(len(batch.keys), np.nan)
            classes = np.zeros(len(batch.keys), dtype=np.int64)
            if batch.scored.any():
                e, c = outputs[f"{name}_energy"], outputs[f"{name}_class"]
                bad = ~np.isfinite(e) | (c < 0) | (c >= len(model.classes))
                energy[batch.scored], classes[batch.scored] = e, np.where(bad, 0, c)
                if bad.any():
                    self._not_finite(slot, model, batch, bad)
            for zone, ok, value, cls, missing, reason in zip(batch.keys, batch.scored.tolist(), energy.tolist(),
                                                             classes.tolist(), batch.missing, batch.reasons,
                                                             strict=True):
                asset = f"mood:{zone}"
                if asset not in slot.state:
                    with contextlib.suppress(TwinFrozen):
                        self._twin.declare(asset, "audience_mood", zone, OWNER)
                if ok:
                    readings.append(Reading(now, asset, "energy", round(value, 3)))
                    state = model.classes[cls]
                else:
                    state = "not scored"
                if slot.state.get(asset) != (state, missing, reason):
                    slot.state[asset] = (state, missing, reason)
                    with contextlib.suppress(TwinFrozen):
                        self._twin.report(asset, {"class": state, "model_version": model.spec.version,
                                                  "reason": reason, "without": list(missing)}, OWNER)
        self._ingest.publish(readings, OWNER)


def next_cycle(now: float, phase: float, bin_s: float) -> float:
    """The point of the grid `phase + k * bin_s` that follows `now` by at least half a bin."""
    return phase + (round((now - phase) / bin_s) + 1) * bin_s


def _infer(model: Model, front: FrontEnd) -> tuple[list[Batch], Outputs, float]:
    """In the model's worker thread: the features of every group, then one run for all the rows scored."""
    began = time.thread_time()
    batches = front.batches()
    # Every group is fed, with no rows when none is scored: a graph needs all of its inputs.
    inputs = {b.group.name: np.ascontiguousarray(b.x[b.scored]) for b in batches}
    outputs = model.run(inputs) if any(b.scored.any() for b in batches) else {}
    return batches, outputs, time.thread_time() - began


def _channels(batch: Batch, z: Any, limit: float) -> tuple[str, ...]:
    """The channels of the features whose residuals are at least `limit` sigmas off, worst first."""
    worst: dict[str, float] = {}
    for f, value in zip(batch.group.features, np.abs(z).tolist(), strict=True):
        if value >= limit:
            for ch in f.channels:
                worst[ch] = max(worst.get(ch, 0.0), value)
    return tuple(sorted(worst, key=lambda c: -worst[c]))

