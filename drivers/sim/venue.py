"""The virtual venue's physics: crowd, sound levels, crowd microphones and air per zone, amplifier racks with a
thermal model, mains circuits, and scheduled equipment faults. Pure computation (no I/O, no clock): stepping it with the
same seed and the same steps gives the same readings, so tests and model training can rely on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from drivers.sim.show import Show, ShowTiming
from gateway.driver import Reading

FaultKind = Literal["fan_stall", "driver_open", "driver_short", "breaker_trip", "sensor_drift", "thermal_runaway"]
AMP_FAULTS: tuple[FaultKind, ...] = ("fan_stall", "driver_open", "driver_short", "sensor_drift", "thermal_runaway")

RATED_W = 1200.0  # per amplifier channel
FULL_DRIVE_DB = 106.0  # PA level at which the amplifiers deliver their rated power
MAINS_V = 230.0
# The spectra at a crowd microphone, in dB relative to each source's A-weighted level, for the bands
# low (63-250 Hz), mid (500 Hz-2 kHz) and high (4-8 kHz): music through a PA is heavy in the low end, a cheering
# crowd is a mid and high sound. The microphone faces the crowd and rejects the PA by PA_REJECTION_DB.
PA_BANDS_DB = np.array([4.0, -3.0, -9.0])
CROWD_BANDS_DB = np.array([-14.0, 0.0, -4.0])
MIC_BANDS = ("band_low_db", "band_mid_db", "band_high_db")
PA_REJECTION_DB = 8.0


@dataclass(frozen=True)
class Zone:
    name: str
    capacity: int
    distance_m: float


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    asset: str
    start: float  # seconds from doors
    end: float  # math.inf: until the end of the night

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


def amp_id(rack: int, channel: int) -> str:
    return f"amp:r{rack + 1:02d}.{channel + 1}"


def circuit_id(index: int) -> str:
    return f"mains:{chr(ord('A') + index)}"


@dataclass(frozen=True)
class VenueLayout:
    zones: tuple[Zone, ...]
    racks: int
    channels_per_rack: int
    circuits: int

    def assets(self) -> dict[str, tuple[str, str | None]]:
        """Every asset of the venue: id -> (kind, zone)."""
        out: dict[str, tuple[str, str | None]] = {}
        for z in self.zones:
            out[f"zone:{z.name}"] = ("zone", z.name)
            out[f"spl:{z.name}"] = ("spl_meter", z.name)
            out[f"env:{z.name}"] = ("environment", z.name)
            out[f"mic:{z.name}"] = ("crowd_mic", z.name)
        for r in range(self.racks):
            for c in range(self.channels_per_rack):
                out[amp_id(r, c)] = ("amplifier", "stage")
        for i in range(self.circuits):
            out[circuit_id(i)] = ("power", None)
        return out


def random_faults(seed: int, layout: VenueLayout, show: Show, per_hour: float) -> list[Fault]:
    """Faults drawn from the seed, for training and evaluation: amplifier faults, now and then a breaker."""
    rng = np.random.default_rng([seed, 0xFA17])
    amps = [amp_id(r, c) for r in range(layout.racks) for c in range(layout.channels_per_rack)]
    if not amps or per_hour <= 0:
        return []
    faults = []
    for _ in range(int(rng.poisson(per_hour * show.duration / 3600))):
        start = float(rng.uniform(30 * 60, show.duration - 10 * 60))
        end = start + float(rng.uniform(5, 25)) * 60
        if rng.random() < 0.1:
            faults.append(Fault("breaker_trip", circuit_id(int(rng.integers(layout.circuits))), start, end))
        else:
            kind = AMP_FAULTS[int(rng.integers(len(AMP_FAULTS)))]
            faults.append(Fault(kind, amps[int(rng.integers(len(amps)))], start, end))
    return sorted(faults, key=lambda f: f.start)


class VirtualVenue:
    def __init__(self, seed: int, layout: VenueLayout, faults: list[Fault], timing: ShowTiming | None = None) -> None:
        self.seed = seed
        self.layout = layout
        self.show = Show(seed, timing)
        self.faults = faults
        self._rng = np.random.default_rng([seed, 0x7E_4_0E])
        zones = layout.zones
        nz = len(zones)
        self._distance = np.array([z.distance_m for z in zones], dtype=float)
        self._capacity = np.array([z.capacity for z in zones], dtype=float)
        self._zone_noise = np.zeros(nz)
        self._temp = np.full(nz, 19.0)
        self._humidity = np.full(nz, 38.0)
        self._co2 = np.full(nz, 430.0)
        n = layout.racks * layout.channels_per_rack
        self._amp_ids = [amp_id(r, c) for r in range(layout.racks) for c in range(layout.channels_per_rack)]
        self._amp_index = {a: i for i, a in enumerate(self._amp_ids)}
        self._nominal_ohm = self._rng.choice([4.0, 8.0], size=n)
        self._amp_circuit = np.repeat(np.arange(layout.racks) % layout.circuits, layout.channels_per_rack)
        self._amp_temp = np.full(n, 24.0)
        self._fan = np.full(n, 1400.0)
        self._protect = np.zeros(n, dtype=bool)
        self.enabled = np.ones(n, dtype=bool)
        # How much more of the PA the crowd microphones hear than designed (dB): a mic turned towards a stack.
        self.pa_leak_db = 0.0
        self.gain_db = np.zeros(n)
        self._circuit_ids = [circuit_id(i) for i in range(layout.circuits)]

    def amp_index(self, asset: str) -> int | None:
        return self._amp_index.get(asset)

    def fault_active(self, asset: str, t: float) -> FaultKind | None:
        """The truth: which fault, if any, affects `asset` at show time `t`."""
        for f in self.faults:
            if f.asset == asset and f.active(t):
                return f.kind
        if asset.startswith("amp:"):
            circuit = self._circuit_ids[int(self._amp_circuit[self._amp_index[asset]])]
            if any(f.kind == "breaker_trip" and f.asset == circuit and f.active(t) for f in self.faults):
                return "breaker_trip"
        return None

    def _masks(self, t: float) -> tuple[dict[FaultKind, Any], Any, Any, Any]:
        """Which amplifiers each fault kind affects now, each one's sensor drift and lost cooling, and the
        tripped circuits."""
        n = len(self._amp_ids)
        masks = {k: np.zeros(n, dtype=bool) for k in AMP_FAULTS}
        drift = np.zeros(n)
        clogged = np.zeros(n)  # share of the cooling lost
        tripped = np.zeros(self.layout.circuits, dtype=bool)
        for f in self.faults:
            if not f.active(t):
                continue
            if f.kind == "breaker_trip":
                tripped[self._circuit_ids.index(f.asset)] = True
            else:
                i = self._amp_index[f.asset]
                masks[f.kind][i] = True
                if f.kind == "sensor_drift":
                    drift[i] = 0.5 * (t - f.start) / 60  # half a degree a minute
                elif f.kind == "thermal_runaway":  # a heatsink clogging up: cooling lost over ten minutes
                    clogged[i] = min(0.8, (t - f.start) / 750)
        return masks, drift, clogged, tripped

    def step(self, t: float, dt: float, ts: float) -> list[Reading]:
        """Advance the physics by `dt` seconds to show time `t`; the readings are stamped `ts`."""
        show, rng = self.show, self._rng
        attendance = show.attendance(t)
        music = show.music_db(t)
        energy = np.array([show.zone_energy(t, d) for d in self._distance])
        a = math.exp(-dt / 30)
        self._zone_noise = a * self._zone_noise + math.sqrt(1 - a * a) * rng.normal(0, 0.03, len(energy))
        fill = np.clip(attendance * (1 + self._zone_noise), 0, 1.05)
        occupancy = np.round(self._capacity * fill)
        music_at = music - 10 * np.log10(np.maximum(self._distance, 5.0) / 20.0)
        crowd_db = 62 + 30 * energy * fill
        laeq = 10 * np.log10(10 ** (music_at / 10) + 10 ** (crowd_db / 10)) + rng.normal(0, 0.4, len(energy))
        pa_at_mic = (music_at - PA_REJECTION_DB + self.pa_leak_db)[:, None] + PA_BANDS_DB
        crowd_at_mic = (crowd_db + 6)[:, None] + CROWD_BANDS_DB  # the microphone is in the crowd
        bands = 10 * np.log10(10 ** (pa_at_mic / 10) + 10 ** (crowd_at_mic / 10))
        bands += rng.normal(0, 0.5, bands.shape)
        vibration = 0.01 + 0.2 * (energy ** 2) * fill + np.abs(rng.normal(0, 0.005, len(energy)))
        k = min(1.0, dt / 600)
        self._temp += (19 + 8 * fill + 2 * energy - self._temp) * k
        self._humidity += (38 + 25 * fill - self._humidity) * k
        self._co2 += (430 + 1800 * fill - self._co2) * k
        out = []
        for i, z in enumerate(self.layout.zones):
            out += [
                Reading(ts, f"zone:{z.name}", "occupancy", float(occupancy[i])),
                Reading(ts, f"zone:{z.name}", "vibration_g", round(float(vibration[i]), 4)),
                Reading(ts, f"spl:{z.name}", "laeq_db", round(float(laeq[i]), 2)),
                Reading(ts, f"env:{z.name}", "temperature_c", round(float(self._temp[i] + rng.normal(0, 0.05)), 2)),
                Reading(ts, f"env:{z.name}", "humidity_pct", round(float(self._humidity[i]), 1)),
                Reading(ts, f"env:{z.name}", "co2_ppm", round(float(self._co2[i] + rng.normal(0, 8)), 0)),
            ]
            out += [Reading(ts, f"mic:{z.name}", band, round(float(v), 2)) for band, v in zip(MIC_BANDS, bands[i],
                                                                                                strict=True)]
        out += self._amps(t, dt, ts, music, float(np.mean(self._temp)) if len(self._temp) else 22.0,
                          float(np.mean(energy)) if len(energy) else 0.0)
        return out

    def _amps(self, t: float, dt: float, ts: float, music: float, ambient: float, energy: float) -> list[Reading]:
        rng = self._rng
        n = len(self._amp_ids)
        masks, drift, clogged, tripped = self._masks(t)
        powered = ~tripped[self._amp_circuit] & self.enabled if n else np.zeros(0, dtype=bool)
        load = self._nominal_ohm * (1 + 0.003 * (self._amp_temp - 25)) * (1 + rng.normal(0, 0.004, n))
        load = np.where(masks["driver_open"], load * 2.0, load)
        load = np.where(masks["driver_short"], load * 0.15, load)
        self._protect |= masks["driver_short"] | (self._amp_temp > 85)
        self._protect &= ~((self._amp_temp < 65) & ~masks["driver_short"])
        drive = 10 ** ((music + self.gain_db - FULL_DRIVE_DB) / 10) * (1 + rng.normal(0, 0.12, n))
        power = RATED_W * np.clip(drive, 0, 1) * (self._nominal_ohm / load)
        power = np.where(powered & ~self._protect, np.clip(power, 0, 2 * RATED_W), 0.0)
        current = np.where(powered, (power / 0.82 + np.where(self._protect, 15.0, 25.0)) / MAINS_V, 0.0)
        cooling = (0.25 + 0.75 * self._fan / 4500) * (1 - clogged)
        target = ambient + 6 + 45 * (power / RATED_W) / cooling
        self._amp_temp += (target - self._amp_temp) * min(1.0, dt / 150)
        fan_target = np.clip(1400 + 120 * (self._amp_temp - 38), 1400, 4500)
        fan_target = np.where(masks["fan_stall"] | ~powered, 0.0, fan_target)
        self._fan += (fan_target - self._fan) * min(1.0, dt / 5)
        temp_read = self._amp_temp + drift + rng.normal(0, 0.1, n)
        fan_read = np.maximum(0, self._fan + rng.normal(0, 15, n))
        out = []
        for i, (aid, tc, cur, rpm, ohm, prot) in enumerate(zip(
                self._amp_ids, temp_read.tolist(), current.tolist(), fan_read.tolist(), load.tolist(),
                self._protect.tolist(), strict=True)):
            out += [Reading(ts, aid, "temperature_c", round(tc, 2)), Reading(ts, aid, "current_a", round(cur, 3)),
                    Reading(ts, aid, "fan_rpm", round(rpm, 0)),
                    Reading(ts, aid, "load_ohm", round(ohm, 3) if powered[i] else 0.0),
                    Reading(ts, aid, "protect", 1.0 if prot else 0.0)]
        for c, cid in enumerate(self._circuit_ids):
            amps_a = float(current[self._amp_circuit == c].sum()) if n else 0.0
            amps_a = 0.0 if tripped[c] else amps_a + 12 + 8 * energy + float(rng.normal(0, 0.3))
            volts = MAINS_V + 1.0 - 0.04 * amps_a + float(rng.normal(0, 0.3))
            out += [Reading(ts, cid, "voltage_v", round(volts, 1)), Reading(ts, cid, "current_a", round(amps_a, 2)),
                    Reading(ts, cid, "power_kw", round(volts * amps_a * 0.95 / 1000, 3)),
                    Reading(ts, cid, "frequency_hz", round(50 + float(rng.normal(0, 0.01)), 3))]
        return out

    def run(self, start: float = 0.0, end: float | None = None, dt: float = 1.0,
            epoch: float = 0.0) -> Iterator[tuple[float, list[Reading]]]:
        """Step through the night offline (for training and tests): yields (show time, readings)."""
        t = start
        stop = self.show.duration if end is None else end
        while t < stop:
            t += dt
            yield t, self.step(t, dt, epoch + t)
