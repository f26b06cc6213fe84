"""Loading a model file: an onnxruntime session on one thread, its feature specification from the file's metadata,
and every check a file must pass before it replaces the running model (it opens, it is one of ours, of a format and
kind this gateway knows, its inputs and outputs have the specification's shapes, and a trial run gives finite
numbers). A file that fails any of them is refused with a ModelError saying which."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from gateway.inference.alarms import AlarmRule
from gateway.inference.spec import METADATA_KEY, Kind, Spec, SpecError, parse

MAX_BYTES = 64 * 1024 * 1024
Outputs = dict[str, npt.NDArray[Any]]


class ModelError(Exception):
    """A model file that cannot run here; the message names the file and the reason."""


def stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced: (inode, size, mtime), or None when it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def output_names(spec: Spec) -> list[str]:
    if spec.kind == "equipment_anomaly":
        return [n for g in spec.groups for n in (f"{g.name}_score", f"{g.name}_z")]
    return [n for g in spec.groups for n in (f"{g.name}_energy", f"{g.name}_class")]


@dataclass
class Model:
    path: Path
    spec: Spec
    session: ort.InferenceSession
    sha256: str
    stamp: tuple[int, int, int] | None
    rule: AlarmRule | None  # equipment_anomaly: when a score alarms
    classes: tuple[str, ...]  # audience_mood: the class names

    def run(self, inputs: dict[str, npt.NDArray[np.float64]]) -> Outputs:
        """One call for every group, each fed (runs in the model's worker thread)."""
        names = output_names(self.spec)
        return dict(zip(names, self.session.run(names, inputs), strict=True))

    def document(self) -> dict[str, Any]:
        return {"state": "loaded", "version": self.spec.version, "file": str(self.path), "sha256": self.sha256,
                "features": {g.name: [f.name for f in g.features] for g in self.spec.groups}}


def load(path: Path, kind: Kind) -> Model:
    """Open and check `path` as a model of `kind`; ModelError says what is wrong with it."""
    before = stamp(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ModelError(f"{path}: {len(data)} bytes is too large for a model here (allowed: up to {MAX_BYTES})")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread each: the show and the loop keep the other cores
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a corrupt or unsupported file
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a model onnxruntime can open: {reason}") from None
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if meta is None:
        raise ModelError(f"{path}: no {METADATA_KEY!r} specification in its metadata (not a venue-gateway model)")
    try:
        spec = parse(meta)
    except SpecError as exc:
        raise ModelError(f"{path}: {exc}") from None
    if spec.kind != kind:
        raise ModelError(f"{path}: is a model of kind {spec.kind} (allowed here: {kind})")
    _check_io(path, spec, session)
    rule, classes = _check_extra(path, spec)
    model = Model(path, spec, session, hashlib.sha256(data).hexdigest(), before, rule, classes)
    _trial(model)
    return model


def _check_io(path: Path, spec: Spec, session: ort.InferenceSession) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    for g in spec.groups:
        i = inputs.get(g.name)
        if i is None:
            raise ModelError(f"{path}: no input {g.name!r} (its inputs: {', '.join(inputs) or 'none'})")
        width = i.shape[-1] if i.shape else None
        if i.type != "tensor(double)" or len(i.shape) != 2 or width != len(g.features):
            raise ModelError(f"{path}: input {g.name!r} is {i.type} {i.shape}; its specification needs "
                             f"tensor(double) [rows, {len(g.features)}]")
    outputs = {o.name for o in session.get_outputs()}
    missing = [n for n in output_names(spec) if n not in outputs]
    if missing:
        wanted = ", ".join(output_names(spec))
        raise ModelError(f"{path}: no output {missing[0]!r} (a {spec.kind} model gives {wanted})")


def _check_extra(path: Path, spec: Spec) -> tuple[AlarmRule | None, tuple[str, ...]]:
    if spec.kind == "equipment_anomaly":
        try:
            return AlarmRule.from_spec(spec.extra.get("alert")), ()
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{path}: {exc}") from None
    classes = spec.extra.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelError(f"{path}: its specification names no classes (a list of names)")
    return None, tuple(classes)


def _trial(model: Model) -> None:
    """A run on rows of imputed values: the file must compute, with the shapes promised and finite numbers."""
    inputs = {g.name: np.tile(np.asarray(g.impute, dtype=np.float64), (2, 1)) for g in model.spec.groups}
    try:
        out = model.run(inputs)
    except Exception as exc:
        raise ModelError(f"{model.path}: a trial run failed: {str(exc).strip()[:300]}") from None
    for name, value in out.items():
        if value.shape[0] != 2 or not np.all(np.isfinite(value)):
            raise ModelError(f"{model.path}: a trial run gave {name} of shape {value.shape} or not finite")
        if name.endswith("_class") and not np.all((value >= 0) & (value < len(model.classes))):
            raise ModelError(f"{model.path}: a trial run gave {name} outside its {len(model.classes)} classes")
