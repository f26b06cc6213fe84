"""Small model files made for the runtime's tests with onnx's own helpers (the `train` extra): the shipped models'
contract with simple arithmetic inside, and files broken in each way the runtime must refuse."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

AMP = ("temperature_c", "current_a")


def equipment_spec(version: str = "t1", bin_s: float = 0.05, on: float = 4.0, **extra: Any) -> dict[str, Any]:
    """An amplifier group of two channels: the score is the mean square of the features, z the features."""
    return {"format": 1, "kind": "equipment_anomaly", "version": version, "bin_s": bin_s, "window_bins": 4,
            "short_bins": 2, "min_coverage": 0.5,
            "alert": {"on": on, "off": on / 2, "on_cycles": 2, "off_cycles": 2, "channel_z": 1.5},
            "groups": [{"name": "amplifier", "rows": "asset", "sources": {c: [f"amplifier.{c}"] for c in AMP},
                        "required": list(AMP), "stuck_check": list(AMP),
                        "features": ["mean(temperature_c)", "mean(current_a)"]}], **extra}


def mood_spec(version: str = "m1", bin_s: float = 0.05) -> dict[str, Any]:
    """Energy = sigmoid(level - 90 dB); the class by edges 0.45 and 0.75."""
    return {"format": 1, "kind": "audience_mood", "version": version, "bin_s": bin_s, "window_bins": 4,
            "short_bins": 2, "min_coverage": 0.5, "classes": ["calm", "engaged", "peak"],
            "groups": [{"name": "zone", "rows": "zone",
                        "sources": {"laeq_db": ["spl_meter.laeq_db"], "vibration_g": ["zone.vibration_g"]},
                        "required": ["laeq_db"], "features": ["mean(laeq_db)", "present(vibration_g)"],
                        "impute": [90.0, 0.0]}]}


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], spec: dict[str, Any] | None,
           initializers: list[Any] | None = None) -> bytes:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    if spec is not None:
        helper.set_model_props(model, {"venue_gateway": json.dumps(spec)})
    data: bytes = model.SerializeToString()
    return data


def equipment(spec: dict[str, Any] | None = None, *, width: int = 2, nan: bool = False, metadata: bool = True) -> bytes:
    spec = (spec or equipment_spec()) if metadata else None
    x = helper.make_tensor_value_info("amplifier", TensorProto.DOUBLE, ["rows", width])
    score = helper.make_tensor_value_info("amplifier_score", TensorProto.DOUBLE, ["rows"])
    z = helper.make_tensor_value_info("amplifier_z", TensorProto.DOUBLE, ["rows", width])
    nodes = [helper.make_node("Identity", ["amplifier"], ["amplifier_z"]),
             helper.make_node("Mul", ["amplifier", "amplifier"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[1], keepdims=0)]
    inits = []
    if nan:  # sqrt of a negative number: NaN for every row
        inits.append(helper.make_tensor("neg", TensorProto.DOUBLE, [], [-1.0]))
        nodes += [helper.make_node("Mul", ["ms", "neg"], ["negms"]), helper.make_node("Sqrt", ["negms"], ["nanms"]),
                  helper.make_node("Add", ["ms", "nanms"], ["amplifier_score"])]
    else:
        nodes.append(helper.make_node("Identity", ["ms"], ["amplifier_score"]))
    return _model(nodes, [x], [score, z], spec, inits)


def mood(spec: dict[str, Any] | None = None) -> bytes:
    spec = spec or mood_spec()
    x = helper.make_tensor_value_info("zone", TensorProto.DOUBLE, ["rows", 2])
    energy = helper.make_tensor_value_info("zone_energy", TensorProto.DOUBLE, ["rows"])
    cls = helper.make_tensor_value_info("zone_class", TensorProto.INT64, ["rows"])
    inits = [helper.make_tensor("w", TensorProto.DOUBLE, [2, 1], [1.0, 0.0]),
             helper.make_tensor("b", TensorProto.DOUBLE, [1], [-90.0]),
             helper.make_tensor("edges", TensorProto.DOUBLE, [1, 2], [0.45, 0.75])]
    nodes = [helper.make_node("MatMul", ["zone", "w"], ["lin"]), helper.make_node("Add", ["lin", "b"], ["shift"]),
             helper.make_node("Sigmoid", ["shift"], ["e2"]),
             helper.make_node("Flatten", ["e2"], ["e2f"], axis=1),
             helper.make_node("Squeeze", ["e2f", "one"], ["zone_energy"]),
             helper.make_node("GreaterOrEqual", ["e2", "edges"], ["ge"]),
             helper.make_node("Cast", ["ge"], ["gei"], to=TensorProto.INT64),
             helper.make_node("ReduceSum", ["gei", "one"], ["zone_class"], keepdims=0)]
    inits.append(helper.make_tensor("one", TensorProto.INT64, [1], [1]))
    return _model(nodes, [x], [energy, cls], spec, inits)


def replace_file(path: Path, data: bytes) -> None:
    """As a venue tech should: write beside, then rename over (never a half-written model)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
