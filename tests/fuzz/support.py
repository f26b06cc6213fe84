"""What the fuzz targets share: JSON documents of any shape, objects nested deeper than any encoder allows, and a
log handler that catches tracebacks."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from hypothesis import strategies as st

# Scalars as a JSON parser (orjson) gives them: whole numbers from -2^63 to 2^64-1, finite floats, text without
# lone surrogates; with the extremes that have broken handlers before.
json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False,
                                                                                       allow_infinity=False)
                | st.text(max_size=20) | st.sampled_from([5e-324, 1e308, -1e308, 2**63 - 1, -(2**63), 2**64 - 1, 0.1,
                                                          "", "\x00", "#ff0000", "strobe", "all"]))
keys = st.text(max_size=10) | st.sampled_from(["kind", "colour", "bpm", "period_ms", "duration_s", "intensity",
                                                "preset", "effect", "zones", "lead_ms", "levels", "request_id",
                                                "asset", "desired", "version", "0", "1", "512"])
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=4), max_leaves=20)
json_objects = st.dictionaries(keys, json_values, max_size=6)


def nested(depth: int, leaf: Any = 1, key: str = "a") -> dict[str, Any]:
    """An object nested `depth` levels deep: {"a": {"a": ... leaf}}."""
    doc: Any = leaf
    for _ in range(depth):
        doc = {key: doc}
    return dict(doc) if isinstance(doc, dict) else {key: doc}


# Deep enough to pass every recursion limit on the way: orjson's (254), json's and Python's (1000).
deep_objects = st.integers(200, 1200).map(nested)
# The same as JSON text, which orjson cannot make past its own limit: {"a":{"a":...1}}, and arrays never closed.
deep_json = st.one_of(st.integers(200, 1200).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
                      st.integers(200, 2000).map(lambda n: b"[" * n))


def encodable(doc: Any) -> bytes:
    """`doc` as JSON, the way the box encodes its state (orjson): a failure here is state that cannot be served."""
    return orjson.dumps(doc)


class Tracebacks(logging.Handler):
    """Log records that carry a traceback (bad input must never cause one), once added to the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)

    def lines(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]
