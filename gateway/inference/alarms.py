"""Alarms from anomaly scores, with hysteresis: a row alarms after `on_cycles` cycles in a row at or above `on`,
and clears after `off_cycles` cycles in a row below `off` (< `on`). A cycle in which a row is not scored counts
for neither, so a sensor that drops out neither raises nor clears an alarm. The runtime and the evaluation of the
models (models/) use this same class, so the figures measured are the behaviour shipped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Change = Literal["raised", "cleared"]


@dataclass(frozen=True)
class AlarmRule:
    on: float
    off: float
    on_cycles: int = 3
    off_cycles: int = 6
    channel_z: float = 3.0  # a channel "looks wrong" when one of its features' residuals is this many sigmas off

    @classmethod
    def from_spec(cls, doc: Any) -> AlarmRule:
        """From a model's `alert` metadata; ValueError names what is wrong."""
        if not isinstance(doc, dict) or not {"on", "off"} <= set(doc):
            raise ValueError("the model's specification has no alert thresholds (alert.on, alert.off)")
        rule = cls(float(doc["on"]), float(doc["off"]), int(doc.get("on_cycles", 3)), int(doc.get("off_cycles", 6)),
                   float(doc.get("channel_z", 3.0)))
        if not (rule.off <= rule.on and rule.on_cycles >= 1 and rule.off_cycles >= 1):
            raise ValueError("alert thresholds: off must not exceed on, and cycles must be at least 1")
        return rule


class Hysteresis:
    def __init__(self, rule: AlarmRule) -> None:
        self.rule = rule
        self.alarmed: set[str] = set()
        self._above: dict[str, int] = {}
        self._below: dict[str, int] = {}

    def update(self, keys: Sequence[str], scores: npt.NDArray[np.float64],
               scored: npt.NDArray[np.bool_]) -> list[tuple[str, Change]]:
        """One cycle's scores; returns the rows whose alarm was raised or cleared by it."""
        rule = self.rule
        out: list[tuple[str, Change]] = []
        for key, score, ok in zip(keys, scores.tolist(), scored.tolist(), strict=True):
            if not ok:
                continue
            if key in self.alarmed:
                n = self._below[key] = self._below.get(key, 0) + 1 if score < rule.off else 0
                if n >= rule.off_cycles:
                    self.alarmed.discard(key)
                    self._below.pop(key, None)
                    out.append((key, "cleared"))
            else:
                n = self._above[key] = self._above.get(key, 0) + 1 if score >= rule.on else 0
                if n >= rule.on_cycles:
                    self.alarmed.add(key)
                    self._above.pop(key, None)
                    out.append((key, "raised"))
        return out

    def forget(self, keep: set[str]) -> None:
        """Drop the state of rows no longer there."""
        self.alarmed &= keep
        self._above = {k: v for k, v in self._above.items() if k in keep}
        self._below = {k: v for k, v in self._below.items() if k in keep}
