"""The audience mood model: a small tanh MLP from a zone's standardised features to its crowd energy (0..1), with
the class (calm, engaged, peak) counted from fixed edges in the graph; trained with channel dropout so zones
without microphones, occupancy, vibration or environment sensors still score. Fit, reference, ONNX graph."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from models.equipment import onnx_model

Array = npt.NDArray[np.float64]
CLASSES = ["calm", "engaged", "peak"]
CLASS_EDGES = [0.45, 0.75]
# The optional sensors a zone may lack, each with the channels it feeds: dropped together in training.
OPTIONAL = {"microphone": ("band_low_db", "band_mid_db", "band_high_db"), "occupancy": ("occupancy",),
            "vibration": ("vibration_g",), "environment": ("temperature_c", "co2_ppm")}
DROP_CHANCE = 0.35  # per sensor, per augmented row


@dataclass
class MoodModel:
    features: list[str]
    scaler: Any  # StandardScaler
    mlp: Any  # MLPRegressor
    impute: list[float]  # per feature, what the runtime puts in when the channel is missing

    def predict(self, x: Array) -> tuple[Array, npt.NDArray[np.int64]]:
        """The reference (scikit-learn): energy clipped to [0, 1] and the class index."""
        out = np.asarray(self.mlp.predict(self.scaler.transform(x)), dtype=np.float64).reshape(-1)
        energy = np.clip(out, 0.0, 1.0)
        return energy, classify(energy)


def classify(energy: Array) -> npt.NDArray[np.int64]:
    return np.asarray((energy[:, None] >= np.asarray(CLASS_EDGES)[None, :]).sum(axis=1), dtype=np.int64)


def feature_channels(features: Sequence[str]) -> list[tuple[str, ...]]:
    """Each feature's channels, read from its text ("diff(a,b)" -> (a, b))."""
    return [tuple(f[f.index("(") + 1:-1].replace(" ", "").split(",")) for f in features]


def imputes(features: Sequence[str], x: Array) -> list[float]:
    """The training means (of rows with every channel present) as the values of a missing channel's features;
    a present(...) flag is 0 when its channel is missing."""
    return [0.0 if f.startswith("present(") else round(float(x[:, j].mean()), 6) for j, f in enumerate(features)]


def drop_channels(features: Sequence[str], x: Array, impute: Sequence[float], rng: np.random.Generator) -> Array:
    """A copy of `x` in which each optional sensor is missing from a row with DROP_CHANCE: its features set to what
    the runtime's front end gives then (the imputed values, present(...) 0)."""
    out = x.copy()
    chans = feature_channels(features)
    for sensor_channels in OPTIONAL.values():
        cols = [j for j, c in enumerate(chans) if set(c) & set(sensor_channels)]
        rows = rng.random(len(x)) < DROP_CHANCE
        for j in cols:
            out[rows, j] = 0.0 if features[j].startswith("present(") else impute[j]
    return out


def fit(features: Sequence[str], x: Array, energy: Array, *, hidden: tuple[int, ...] = (32, 16),
        iterations: int = 80, seed: int = 0) -> MoodModel:
    """Train on the rows as they are plus one copy with sensors dropped."""
    impute = imputes(features, x)
    rng = np.random.default_rng(seed)
    xa = np.concatenate([x, drop_channels(features, x, impute, rng)])
    ya = np.concatenate([energy, energy])
    scaler = StandardScaler().fit(xa)
    mlp = MLPRegressor(hidden_layer_sizes=hidden, activation="tanh", solver="adam", batch_size=256,
                       max_iter=iterations, tol=1e-6, n_iter_no_change=iterations, alpha=1e-4, random_state=seed)
    with warnings.catch_warnings():  # a fixed number of epochs is the stopping rule
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(scaler.transform(xa), ya)
    return MoodModel(list(features), scaler, mlp, impute)


def _const(name: str, value: Any, dtype: Any = np.float64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name)


def build_onnx(model: MoodModel, spec_doc: dict[str, Any], metadata: dict[str, Any], version: int,
               group: str = "zone") -> onnx.ModelProto:
    """Input `zone` [N, F]; outputs `zone_energy` [N] in [0, 1] and `zone_class` int64 [N]."""
    g = group
    inits = [_const(f"{g}_mean", model.scaler.mean_), _const(f"{g}_scale", model.scaler.scale_),
             _const("lo", 0.0), _const("hi", 1.0), _const("class_edges", CLASS_EDGES),
             _const("axis1", [1], np.int64)]
    nodes = [helper.make_node("Sub", [g, f"{g}_mean"], [f"{g}_centred"]),
             helper.make_node("Div", [f"{g}_centred", f"{g}_scale"], [f"{g}_std"])]
    h = f"{g}_std"
    last = len(model.mlp.coefs_) - 1
    for i, (w, b) in enumerate(zip(model.mlp.coefs_, model.mlp.intercepts_, strict=True)):
        inits += [_const(f"w{i}", w), _const(f"b{i}", b)]
        out = "raw" if i == last else f"a{i}"
        nodes.append(helper.make_node("Gemm", [h, f"w{i}", f"b{i}"], [out]))
        if i != last:
            nodes.append(helper.make_node("Tanh", [out], [f"h{i}"]))
            h = f"h{i}"
    nodes += [helper.make_node("Clip", ["raw", "lo", "hi"], ["clipped"]),  # [N, 1]
              helper.make_node("Squeeze", ["clipped", "axis1"], [f"{g}_energy"]),
              helper.make_node("GreaterOrEqual", ["clipped", "class_edges"], ["above"]),  # [N, edges]
              helper.make_node("Cast", ["above"], ["above_n"], to=TensorProto.INT64),
              helper.make_node("ReduceSum", ["above_n", "axis1"], [f"{g}_class"], keepdims=0)]
    f = len(model.features)
    graph = helper.make_graph(
        nodes, "audience_mood", [helper.make_tensor_value_info(g, TensorProto.DOUBLE, [f"{g}_rows", f])],
        [helper.make_tensor_value_info(f"{g}_energy", TensorProto.DOUBLE, [f"{g}_rows"]),
         helper.make_tensor_value_info(f"{g}_class", TensorProto.INT64, [f"{g}_rows"])], inits)
    sizes = "-".join(str(n) for n in model.mlp.hidden_layer_sizes)
    doc = (f"Audience mood (venue-gateway): a zone's standardised features through a tanh MLP ({sizes}) to its crowd "
           f"energy, clipped to [0, 1]; class = how many of the edges {CLASS_EDGES} the energy reaches "
           f"({', '.join(CLASSES)}). Trained on simulated nights with sensors dropped at random.")
    return onnx_model(graph, {**spec_doc, **metadata}, doc, version)
