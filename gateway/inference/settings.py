"""The `[inference]` section: which model files run, how often they are checked for replacement, and what the
venue tells the models that readings cannot (each zone's capacity)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.schema import Problem, setting


@dataclass(frozen=True)
class InferenceSection:
    # Paths relative to the configuration file; "" leaves that model out.
    equipment_model: str = "../models/equipment_anomaly.onnx"
    mood_model: str = "../models/audience_mood.onnx"
    # How often a model file is looked at for a replacement (mtime, size, inode): replace it by renaming a new file
    # over it, and the next look loads it; a file that fails to load is refused and the running model kept.
    reload_check_s: float = setting(5.0, min=0.5, max=3600)
    # The people a zone holds, for the share of it occupied; a zone asset's reported `capacity` is used otherwise.
    zone_capacity: dict[str, int] = field(default_factory=dict)
    # Anomaly alert thresholds instead of the model's own (its card says how they were chosen).
    alert_on: float | None = setting(None, min=0)
    alert_off: float | None = setting(None, min=0)

    def problems(self) -> list[Problem]:
        out = []
        if self.alert_on is not None and self.alert_off is not None and self.alert_off > self.alert_on:
            out.append(Problem("alert_off", f"{self.alert_off} is above alert_on {self.alert_on} "
                                            "(allowed: at most alert_on, so an alarm clears below where it rose)"))
        for zone, capacity in self.zone_capacity.items():
            if not isinstance(capacity, int) or capacity < 1:
                out.append(Problem(f"zone_capacity.{zone}", f"{capacity!r} (allowed: a whole number of people, >= 1)"))
        return out
