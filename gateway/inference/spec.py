"""A model's feature specification: which readings feed it, how they are windowed and which features it takes, in
the order of its input. It travels inside the ONNX file (metadata key `venue_gateway`), so the runtime computes
exactly what the model was trained on, and a file whose specification the runtime does not know is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

FORMAT = 1  # the specification format this runtime reads
METADATA_KEY = "venue_gateway"
Kind = Literal["equipment_anomaly", "audience_mood"]
KINDS: tuple[Kind, ...] = ("equipment_anomaly", "audience_mood")
# mean: the recent mean (the last `short_bins`); slope: least squares over the window, per minute; std: spread over
# the window; rel: log2 of the recent mean over the row's own slow baseline; fill: the recent mean over the row's
# capacity; diff: mean(a) - mean(b); present: 1 when the channel has readings enough, else 0.
OPS = ("mean", "slope", "std", "rel", "fill", "diff", "present")
_FEATURE = re.compile(r"(\w+)\((\w+)(?:,(\w+))?\)")


class SpecError(ValueError):
    """A specification this runtime cannot follow; the message says what and what is allowed."""


@dataclass(frozen=True)
class Feature:
    name: str
    op: str
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    """One kind of row the model scores: each asset of some kinds ("asset"), or each zone ("zone") with the
    readings of the zone's assets of some kinds."""

    name: str
    rows: Literal["asset", "zone"]
    sources: dict[str, tuple[str, ...]]  # channel -> "kind.metric" sources
    required: tuple[str, ...]  # channels without which a row is not scored (the others are optional)
    stuck_check: tuple[str, ...]  # channels that never hold one non-zero value for a whole window
    features: tuple[Feature, ...]
    impute: tuple[float, ...]  # a feature's value when its optional channel is missing

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.sources)

    def feature_channels(self) -> list[tuple[str, ...]]:
        return [f.channels for f in self.features]


@dataclass(frozen=True)
class Spec:
    kind: Kind
    version: str
    bin_s: float  # readings are averaged into bins this long (monotonic time of arrival)
    window_bins: int
    short_bins: int
    baseline_bins: float  # the time constant of `rel`'s baseline, in bins
    min_coverage: float  # the share of a window's bins a channel needs readings in
    groups: tuple[Group, ...]
    extra: dict[str, Any]  # the rest of the document: thresholds, classes, training provenance

    def document(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "bin_s": self.bin_s, "window_bins": self.window_bins,
                "groups": [g.name for g in self.groups]}


def _require(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise SpecError(f"{where}: missing {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SpecError(f"{where}: {key!r} has the wrong type")
    return value


def _feature(text: str, channels: tuple[str, ...], where: str) -> Feature:
    m = _FEATURE.fullmatch(text.replace(" ", ""))
    if m is None:
        raise SpecError(f"{where}: feature {text!r} is not op(channel) (allowed ops: {', '.join(OPS)})")
    op, a, b = m.groups()
    if op not in OPS:
        raise SpecError(f"{where}: unknown feature op {op!r} (allowed: {', '.join(OPS)})")
    used = (a, b) if b else (a,)
    if (op == "diff") != (b is not None):
        raise SpecError(f"{where}: {text!r}: diff takes two channels, every other op one")
    for c in used:
        if c not in channels:
            raise SpecError(f"{where}: feature {text!r} uses channel {c!r}, which has no sources")
    return Feature(text, op, used)


def _group(doc: Any, where: str) -> Group:
    if not isinstance(doc, dict):
        raise SpecError(f"{where}: not an object")
    name = _require(doc, "name", str, where)
    rows = _require(doc, "rows", str, where)
    if rows not in ("asset", "zone"):
        raise SpecError(f"{where}: rows {rows!r} (allowed: asset, zone)")
    raw_sources = _require(doc, "sources", dict, where)
    sources = {}
    for channel, src in raw_sources.items():
        if not isinstance(src, list) or not src or not all(isinstance(s, str) and s.count(".") == 1 for s in src):
            raise SpecError(f"{where}: sources of {channel!r} must be a list of \"kind.metric\"")
        sources[str(channel)] = tuple(src)
    channels = tuple(sources)
    required = tuple(_require(doc, "required", list, where))
    stuck = tuple(doc.get("stuck_check", []))
    for c in (*required, *stuck):
        if c not in channels:
            raise SpecError(f"{where}: {c!r} is not a channel")
    features = tuple(_feature(str(f), channels, where) for f in _require(doc, "features", list, where))
    if not features:
        raise SpecError(f"{where}: no features")
    impute = doc.get("impute", [0.0] * len(features))
    if not isinstance(impute, list) or len(impute) != len(features):
        raise SpecError(f"{where}: impute must hold one number per feature ({len(features)})")
    return Group(name, rows, sources, required, stuck, features, tuple(float(v) for v in impute))


def parse(text: str) -> Spec:
    """The specification from its JSON text; SpecError names what is wrong."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"the specification is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SpecError("the specification is not an object")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise SpecError(f"specification format {fmt!r} is unknown (this gateway reads format {FORMAT})")
    kind = _require(doc, "kind", str, "spec")
    if kind not in KINDS:
        raise SpecError(f"model kind {kind!r} is unknown (allowed: {', '.join(KINDS)})")
    groups = tuple(_group(g, f"groups[{i}]") for i, g in enumerate(_require(doc, "groups", list, "spec")))
    if not groups:
        raise SpecError("spec: no groups")
    spec = Spec(kind, str(_require(doc, "version", str, "spec")), float(_require(doc, "bin_s", (int, float), "spec")),
                int(_require(doc, "window_bins", int, "spec")), int(_require(doc, "short_bins", int, "spec")),
                float(doc.get("baseline_bins", 360)), float(doc.get("min_coverage", 0.5)), groups,
                {k: v for k, v in doc.items() if k not in {"format", "kind", "version", "bin_s", "window_bins",
                                                           "short_bins", "baseline_bins", "min_coverage", "groups"}})
    if not (0 < spec.bin_s <= 600 and 2 <= spec.window_bins <= 10_000 and 1 <= spec.short_bins <= spec.window_bins
            and 0 < spec.min_coverage <= 1 and spec.baseline_bins >= 1):
        raise SpecError("spec: bin_s, window_bins, short_bins, baseline_bins or min_coverage out of range")
    return spec
