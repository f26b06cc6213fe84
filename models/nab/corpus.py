"""Reading and writing a directory in NAB's layout: data files, label windows, cost profiles, thresholds and the
published detectors' per-row results."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.nab.scorer import CostMatrix

FloatArray = NDArray[np.float64]
Window = tuple[np.datetime64, np.datetime64]

# NAB's config/profiles.json, used when a directory carries data and labels but no config.
NAB_PROFILES = {
    "standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": CostMatrix(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": CostMatrix(tp=1.0, fp=0.11, fn=2.0),
}
LABELS = Path("labels") / "combined_windows.json"


class NotNabDirectory(Exception):
    """The path lacks what NAB's layout requires (data/<category>/*.csv and labels/combined_windows.json)."""


@dataclass(frozen=True)
class Series:
    """One data file: `name` is its path under data/ ("realKnownCause/nyc_taxi.csv")."""

    name: str
    timestamps: NDArray[np.datetime64]
    values: FloatArray


@dataclass(frozen=True)
class Published:
    """One published detector's results for one file: its anomaly scores, labels and `S(t)_<profile>` columns."""

    detector: str
    name: str
    anomaly: FloatArray
    label: FloatArray
    per_row: dict[str, FloatArray]


@dataclass
class Corpus:
    """A NAB-format directory, read."""

    root: Path
    series: dict[str, Series]
    windows: dict[str, list[Window]]
    profiles: dict[str, CostMatrix]
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    def detectors(self) -> list[str]:
        """The detectors with a results directory here."""
        results = self.root / "results"
        return sorted(p.name for p in results.iterdir() if p.is_dir()) if results.is_dir() else []

    def published(self, detector: str) -> dict[str, Published]:
        """A detector's result files for the data files present, keyed by data file name; NotNabDirectory if one
        is malformed or does not have a row for each data row."""
        out: dict[str, Published] = {}
        for name, series in self.series.items():
            category, filename = name.split("/", 1)
            path = self.root / "results" / detector / category / f"{detector}_{filename}"
            if not path.is_file():
                continue
            try:
                header, columns = read_columns(path)
                per_row = {h[len("S(t)_") :]: _floats(c) for h, c in zip(header, columns, strict=True)
                           if h.startswith("S(t)_")}
                result = Published(detector, name, _floats(columns[header.index("anomaly_score")]),
                                   _floats(columns[header.index("label")]), per_row)
            except (ValueError, StopIteration) as e:
                raise NotNabDirectory(f"{path}: not a NAB results file ({e})") from e
            if len(result.anomaly) != len(series.values):
                raise NotNabDirectory(f"{path}: {len(result.anomaly)} rows, its data file has {len(series.values)}")
            out[name] = result
        return out


def read_columns(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV file's header and its columns as strings."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [row for row in reader if row]
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in header]
    return header, columns


def _floats(column: Sequence[str]) -> FloatArray:
    return np.array([float(x) if x else np.nan for x in column], dtype=np.float64)


def _timestamps(column: Iterable[str]) -> NDArray[np.datetime64]:
    return np.array(list(column), dtype="datetime64[s]")


def read_series(path: Path, name: str) -> Series:
    header, columns = read_columns(path)
    if "timestamp" not in header or "value" not in header:
        raise NotNabDirectory(f"{path}: expected columns timestamp,value, found {','.join(header)}")
    return Series(name, _timestamps(columns[header.index("timestamp")]), _floats(columns[header.index("value")]))


def load(root: Path) -> Corpus:
    """Read a NAB-format directory; raise NotNabDirectory naming what is missing."""
    data = root / "data"
    labels_path = root / LABELS
    if not data.is_dir() or not labels_path.is_file():
        raise NotNabDirectory(f"{root}: not a NAB directory (needs data/<category>/*.csv and {LABELS})")
    files = sorted(p for p in data.glob("*/*.csv"))
    if not files:
        raise NotNabDirectory(f"{root}: no data/<category>/*.csv files")
    try:
        labels: dict[str, list[list[str]]] = json.loads(labels_path.read_text())
    except (OSError, ValueError) as e:
        raise NotNabDirectory(f"{labels_path}: unreadable labels ({e})") from e
    series: dict[str, Series] = {}
    windows: dict[str, list[Window]] = {}
    for path in files:
        name = path.relative_to(data).as_posix()
        if name not in labels:
            continue  # NAB scores only labelled files
        try:
            series[name] = read_series(path, name)
            windows[name] = [(np.datetime64(a.replace(" ", "T"), "s"), np.datetime64(b.replace(" ", "T"), "s"))
                             for a, b in labels[name]]
        except (ValueError, TypeError, AttributeError, StopIteration) as e:
            raise NotNabDirectory(f"{path} or its labels: not in NAB's format ({e})") from e
    if not series:
        raise NotNabDirectory(f"{root}: none of the data files is in {LABELS}")
    return Corpus(root, series, windows, _profiles(root), _thresholds(root))


def _profiles(root: Path) -> dict[str, CostMatrix]:
    path = root / "config" / "profiles.json"
    if not path.is_file():
        return dict(NAB_PROFILES)
    raw: dict[str, Any] = json.loads(path.read_text())
    return {name: CostMatrix(tp=float(p["CostMatrix"]["tpWeight"]), fp=float(p["CostMatrix"]["fpWeight"]),
                             fn=float(p["CostMatrix"]["fnWeight"])) for name, p in raw.items()}


def _thresholds(root: Path) -> dict[str, dict[str, float]]:
    path = root / "config" / "thresholds.json"
    if not path.is_file():
        return {}
    raw: dict[str, dict[str, dict[str, float]]] = json.loads(path.read_text())
    return {det: {prof: float(v["threshold"]) for prof, v in by_profile.items()} for det, by_profile in raw.items()}


def write_results(directory: Path, detector: str, series: Series, anomaly: FloatArray, label: FloatArray,
                  per_row: dict[str, FloatArray]) -> Path:
    """Write one file's results as NAB does: results/<detector>/<category>/<detector>_<file>.csv with columns
    timestamp, value, anomaly_score, label and S(t)_<profile> per profile."""
    category, filename = series.name.split("/", 1)
    path = directory / detector / category / f"{detector}_{filename}"
    path.parent.mkdir(parents=True, exist_ok=True)
    profiles = sorted(per_row)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "value", "anomaly_score", "label", *(f"S(t)_{p}" for p in profiles)])
        stamps = np.datetime_as_string(series.timestamps, unit="s")
        for i in range(len(stamps)):
            writer.writerow([str(stamps[i]).replace("T", " "), repr(float(series.values[i])),
                             repr(float(anomaly[i])), int(label[i]), *(repr(float(per_row[p][i])) for p in profiles)])
    return path
