"""The equipment anomaly model: per group a model of normal behaviour fitted on normal rows only (standardised
features reconstructed by PCA, or by a small tanh autoencoder where a linear model cannot follow the amplifiers'
thermal lag), scored by how far each feature is from its reconstruction; its fit, its numpy/scikit-learn
reference, its alarm thresholds, a per-feature z-score baseline, and the ONNX graph built by hand."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

Array = npt.NDArray[np.float64]
Method = Literal["pca", "autoencoder"]
OPSET = 17
IR_VERSION = 8  # the oldest IR that carries opset 17: older onnxruntime builds on the box still open it
PRODUCER = "venue-gateway models"
# A feature that never moves in normal operation (an amplifier's protect flag) has no residual spread to divide
# by: its residual is measured against this floor (standardised units), so one step of it is many sigmas.
RESIDUAL_FLOOR = 0.05
ON_QUANTILE, OFF_QUANTILE, ON_MARGIN = 0.999, 0.99, 1.5


@dataclass
class GroupModel:
    """One group's model of normal: scaler, reconstruction (PCA or autoencoder) and the residuals' spread."""

    name: str
    features: list[str]
    method: Method
    scaler: Any  # StandardScaler
    reducer: Any  # PCA or MLPRegressor (X -> X)
    residual_std: Array  # per feature, the normal residual's spread (calibrated: see `calibrate`)

    def reconstruct(self, xs: Array) -> Array:
        if self.method == "pca":
            return np.asarray(self.reducer.inverse_transform(self.reducer.transform(xs)), dtype=np.float64)
        return np.asarray(self.reducer.predict(xs), dtype=np.float64).reshape(xs.shape)

    def predict(self, x: Array) -> tuple[Array, Array]:
        """The reference (scikit-learn): each row's score (mean of z^2) and z (signed standardised residuals)."""
        xs = np.asarray(self.scaler.transform(x), dtype=np.float64)
        z = (xs - self.reconstruct(xs)) / self.residual_std
        return (z * z).mean(axis=1), z


def fit_group(name: str, features: Sequence[str], x_normal: Array, method: Method, *, components: int = 3,
              hidden: tuple[int, ...] = (32, 4, 32), max_rows: int = 120_000, iterations: int = 60,
              seed: int = 0) -> GroupModel:
    """Fit on normal rows only. The autoencoder learns on at most `max_rows` of them, drawn with `seed`."""
    scaler = StandardScaler().fit(x_normal)
    xs = np.asarray(scaler.transform(x_normal), dtype=np.float64)
    reducer: Any
    if method == "pca":
        reducer = PCA(n_components=components, svd_solver="full").fit(xs)
    else:
        rng = np.random.default_rng(seed)
        sample = xs[np.sort(rng.choice(len(xs), min(len(xs), max_rows), replace=False))]
        reducer = MLPRegressor(hidden_layer_sizes=hidden, activation="tanh", solver="adam", batch_size=256,
                               max_iter=iterations, tol=1e-6, n_iter_no_change=iterations, random_state=seed)
        with warnings.catch_warnings():  # a fixed number of epochs, not convergence, is the stopping rule
            warnings.simplefilter("ignore", ConvergenceWarning)
            reducer.fit(sample, sample)
    model = GroupModel(name, list(features), method, scaler, reducer, np.ones(xs.shape[1]))
    residual = xs - model.reconstruct(xs)
    model.residual_std = np.maximum(residual.std(axis=0), RESIDUAL_FLOOR)
    return model


def calibrate(models: Sequence[GroupModel], x_normal: Sequence[Array]) -> tuple[float, float, float]:
    """Scale each group's residual spreads on normal rows of nights the model was not fitted on, so that their
    score's 99.9th percentile is 1 in every group and one alert rule serves them all; then the thresholds: `on`
    a margin above that (so the show's rare but normal moments, the first loud song after a break, do not alarm),
    `off` at the lowest group's 99th percentile (so a fault that wavers stays one alarm), and `channel_z` at the
    99.9th percentile of a normal feature's |z| (a channel is named when it is that far off)."""
    offs, zs = [], []
    for m, x in zip(models, x_normal, strict=True):
        m.residual_std = m.residual_std * np.sqrt(np.quantile(m.predict(x)[0], ON_QUANTILE))
        score, z = m.predict(x)
        offs.append(float(np.quantile(score, OFF_QUANTILE)))
        zs.append(np.abs(z).reshape(-1))
    channel_z = round(float(np.quantile(np.concatenate(zs), ON_QUANTILE)), 1)
    return ON_MARGIN, round(min(min(offs), ON_MARGIN), 4), channel_z


@dataclass
class ZBaseline:
    """The baseline the model is measured against: each feature's z-score against its normal mean and spread,
    a row's score the largest |z|."""

    mean: Array
    std: Array
    unit: float = 1.0  # its 99.9th percentile on normal rows of calibration nights, as the model's

    @classmethod
    def fit(cls, x_normal: Array) -> ZBaseline:
        return cls(x_normal.mean(axis=0), np.maximum(x_normal.std(axis=0), 1e-9))

    def score(self, x: Array) -> Array:
        return np.asarray(np.abs((x - self.mean) / self.std).max(axis=1), dtype=np.float64) / self.unit


def _const(name: str, value: Array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float64), name)


def _group_graph(m: GroupModel) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    g = m.name
    inits = [_const(f"{g}_mean", m.scaler.mean_), _const(f"{g}_scale", m.scaler.scale_),
             _const(f"{g}_residual_std", m.residual_std)]
    nodes = [helper.make_node("Sub", [g, f"{g}_mean"], [f"{g}_centred"]),
             helper.make_node("Div", [f"{g}_centred", f"{g}_scale"], [f"{g}_std"])]
    if m.method == "pca":  # what PCA.inverse_transform(PCA.transform(x)) computes
        inits += [_const(f"{g}_pca_mean", m.reducer.mean_), _const(f"{g}_components_t", m.reducer.components_.T),
                  _const(f"{g}_components", m.reducer.components_)]
        nodes += [helper.make_node("Sub", [f"{g}_std", f"{g}_pca_mean"], [f"{g}_pca_in"]),
                  helper.make_node("MatMul", [f"{g}_pca_in", f"{g}_components_t"], [f"{g}_code"]),
                  helper.make_node("MatMul", [f"{g}_code", f"{g}_components"], [f"{g}_back"]),
                  helper.make_node("Add", [f"{g}_back", f"{g}_pca_mean"], [f"{g}_recon"])]
    else:  # the autoencoder: tanh hidden layers, identity output, as MLPRegressor.predict
        h = f"{g}_std"
        last = len(m.reducer.coefs_) - 1
        for i, (w, b) in enumerate(zip(m.reducer.coefs_, m.reducer.intercepts_, strict=True)):
            inits += [_const(f"{g}_w{i}", w), _const(f"{g}_b{i}", b)]
            out = f"{g}_recon" if i == last else f"{g}_a{i}"
            nodes.append(helper.make_node("Gemm", [h, f"{g}_w{i}", f"{g}_b{i}"], [out]))
            if i != last:
                nodes.append(helper.make_node("Tanh", [out], [f"{g}_h{i}"]))
                h = f"{g}_h{i}"
    nodes += [helper.make_node("Sub", [f"{g}_std", f"{g}_recon"], [f"{g}_residual"]),
              helper.make_node("Div", [f"{g}_residual", f"{g}_residual_std"], [f"{g}_z"]),
              helper.make_node("Mul", [f"{g}_z", f"{g}_z"], [f"{g}_z2"]),
              helper.make_node("ReduceMean", [f"{g}_z2"], [f"{g}_score"], axes=[1], keepdims=0)]
    return nodes, inits


def onnx_model(graph: onnx.GraphProto, metadata: dict[str, Any], doc: str, version: int) -> onnx.ModelProto:
    """A model file with the venue_gateway metadata and nothing that changes from one build to the next."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER,
                              producer_version=str(metadata["version"]), model_version=version, doc_string=doc)
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"venue_gateway": json.dumps(metadata)})
    onnx.checker.check_model(model, full_check=True)
    return model


def build_onnx(spec_doc: dict[str, Any], models: Sequence[GroupModel], metadata: dict[str, Any],
               version: int) -> onnx.ModelProto:
    """The equipment model: input `{group}` [N, F]; outputs `{group}_score` [N] and `{group}_z` [N, F]."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    inputs, outputs = [], []
    for m in models:
        n, i = _group_graph(m)
        nodes += n
        inits += i
        f, rows = len(m.features), f"{m.name}_rows"  # one symbol per group: their row counts differ
        inputs.append(helper.make_tensor_value_info(m.name, TensorProto.DOUBLE, [rows, f]))
        outputs += [helper.make_tensor_value_info(f"{m.name}_score", TensorProto.DOUBLE, [rows]),
                    helper.make_tensor_value_info(f"{m.name}_z", TensorProto.DOUBLE, [rows, f])]
    graph = helper.make_graph(nodes, "equipment_anomaly", inputs, outputs, inits)
    methods = ", ".join(f"{m.name}: {'PCA' if m.method == 'pca' else 'tanh autoencoder'}" for m in models)
    doc = ("Equipment anomaly (venue-gateway): per group, standardised features reconstructed by a model of normal "
           f"behaviour ({methods}); z = residual / its normal spread, score = mean of z^2. Built by hand with "
           "onnx.helper (skl2onnx cannot express the reconstruction residual).")
    return onnx_model(graph, {**spec_doc, **metadata}, doc, version)
