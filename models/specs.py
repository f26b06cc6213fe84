"""The feature specifications the two models are trained on; each travels inside its ONNX file (see
gateway/inference/spec.py for the vocabulary)."""

from __future__ import annotations

from typing import Any

AMP_CHANNELS = ("temperature_c", "current_a", "fan_rpm", "load_ohm", "protect")
MAINS_CHANNELS = ("voltage_v", "current_a", "power_kw", "frequency_hz")


def equipment_spec(version: str) -> dict[str, Any]:
    """Amplifier channels and mains circuits, each scored against a model of normal of its own kind."""
    return {
        "format": 1, "kind": "equipment_anomaly", "version": version,
        "bin_s": 5.0, "window_bins": 60, "short_bins": 6, "baseline_bins": 360, "min_coverage": 0.5,
        "groups": [
            {"name": "amplifier", "rows": "asset",
             "sources": {c: [f"amplifier.{c}"] for c in AMP_CHANNELS},
             "required": list(AMP_CHANNELS),
             "stuck_check": ["temperature_c", "current_a", "fan_rpm", "load_ohm"],
             # No slope(fan_rpm): the fan sits at its minimum speed until the amplifier is warm, so its slope is
             # zero or not by a clip no smooth model of normal follows, which alarmed every amplifier at the start of
             # a loud set; mean(fan_rpm) shows a stalled fan within a bin.
             "features": ["mean(temperature_c)", "slope(temperature_c)", "mean(current_a)", "mean(fan_rpm)",
                          "rel(load_ohm)", "mean(protect)"]},
            {"name": "power", "rows": "asset",
             "sources": {c: [f"power.{c}"] for c in MAINS_CHANNELS},
             "required": list(MAINS_CHANNELS),
             "stuck_check": ["voltage_v", "frequency_hz"],
             # rel(current_a): a tripped breaker takes voltage, current and power along the line they follow when
             # the music stops, where a linear model of normal cannot see it; the log of the current against its
             # baseline falls to its floor and can.
             "features": ["mean(voltage_v)", "mean(current_a)", "slope(current_a)", "mean(power_kw)",
                          "mean(frequency_hz)", "rel(current_a)"]},
        ],
    }


def mood_spec(version: str) -> dict[str, Any]:
    """Per zone: what the meters and microphones hear, how full it is, how the floor and the air move. Only the
    sound level is required; the rest is used where the zone has it."""
    return {
        "format": 1, "kind": "audience_mood", "version": version,
        "bin_s": 5.0, "window_bins": 120, "short_bins": 6, "baseline_bins": 360, "min_coverage": 0.2,
        "classes": ["calm", "engaged", "peak"],
        "groups": [
            {"name": "zone", "rows": "zone",
             "sources": {"laeq_db": ["spl_meter.laeq_db"],
                         "band_low_db": ["crowd_mic.band_low_db"], "band_mid_db": ["crowd_mic.band_mid_db"],
                         "band_high_db": ["crowd_mic.band_high_db"],
                         "occupancy": ["zone.occupancy", "occupancy_estimate.people"],
                         "vibration_g": ["zone.vibration_g"],
                         "temperature_c": ["environment.temperature_c"], "co2_ppm": ["environment.co2_ppm"]},
             "required": ["laeq_db"],
             "stuck_check": ["laeq_db", "band_mid_db"],
             "features": ["mean(laeq_db)", "std(laeq_db)",
                          "diff(band_mid_db,band_low_db)", "diff(band_high_db,band_low_db)", "present(band_mid_db)",
                          "fill(occupancy)", "present(occupancy)",
                          "mean(vibration_g)", "present(vibration_g)",
                          "slope(temperature_c)", "slope(co2_ppm)", "present(co2_ppm)"]},
        ],
    }
