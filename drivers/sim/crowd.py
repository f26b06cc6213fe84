"""The crowd model: wristbands as the reference band (drivers/wristband/band.py) runs them, each on its own clock
(an offset and a crystal's drift of up to 50 ppm) behind a receiver that loses a share of what is on the air.
Each band records when it started each effect and when each live look began to show, on the host's clock.

The virtual air's Bumble hosts are a few dozen such bands; the crowd is thousands more, fed with the log of what
the gateway really put on the air (when, which bytes), so the modelled crowd hears the gateway's own
transmissions with their own timing. A real controller adds its own delay before each advertising event
(advDelay, up to 10 ms, the same for every band that hears it); `controller_delay_ms` models it.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivers.wristband.band import Band
from drivers.wristband.protocol import LiveFrame, WristbandError, WristbandPacket, decode_any

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class LiveShown:
    """A live look as a band showed it: from when (the host's monotonic clock), its colour and strobe period (ms, 0:
    steady) as the band shows them."""

    at: float
    rgb: RGB
    strobe_ms: int

    def json(self) -> list[Any]:
        return [self.at, list(self.rgb), self.strobe_ms]

    @classmethod
    def from_json(cls, doc: list[Any]) -> LiveShown:
        at, (r, g, b), strobe_ms = doc
        return cls(at, (r, g, b), strobe_ms)


@dataclass
class VirtualBand:
    """One wristband: a reference band on its own clock, hearing the air through a lossy receiver."""

    index: int
    zone: int
    band: Band
    rng: random.Random
    loss: float
    offset_s: float  # its clock minus the host's monotonic clock
    drift: float  # its crystal's rate error (50 ppm: 5e-5)
    heard: int = 0
    lost: int = 0
    starts: dict[int, float] = field(default_factory=dict)  # effect serial -> its start, on the host's clock

    def clock(self, t: float) -> float:
        return t * (1 + self.drift) + self.offset_s

    def true_time(self, band_t: float) -> float:
        """A time on the band's clock as the host's monotonic clock reads it."""
        return (band_t - self.offset_s) / (1 + self.drift)

    def hear(self, data: bytes, t: float, loss: float | None = None) -> bool:
        """One advertisement on the air at host time `t`, lost at the band's rate (or `loss`, its transmitter's);
        True when the band scheduled a new effect or began to show a new live look."""
        if self._lost(loss):
            return False
        showing = self.band.showing
        self.band.hear(data, self.clock(t))
        return self._follow(t) | (self.band.showing is not showing)

    def accept(self, packet: WristbandPacket | LiveFrame, t: float, loss: float | None = None) -> bool:
        """`hear`, for a packet already decoded and authenticated (the crowd decodes each copy once)."""
        if self._lost(loss):
            return False
        showing = self.band.showing
        self.band.accept(packet, self.clock(t))
        return self._follow(t) | (self.band.showing is not showing)

    def settle(self, t: float) -> None:
        """The band's timers run up to host time `t`: what was due by then has begun to show."""
        self.band.settle(self.clock(t))

    @property
    def looks(self) -> list[LiveShown]:
        """The live looks the band showed, in order, each from when it began to show (on the host's clock)."""
        return [LiveShown(self.true_time(s.began), s.rgb, s.strobe_ms) for s in self.band.history
                if s.live and s.began is not None]

    def _lost(self, loss: float | None) -> bool:
        lost = self.rng.random() < (self.loss if loss is None else loss)
        self.lost += lost
        self.heard += not lost
        return lost

    def _follow(self, t: float) -> bool:
        current, estimate = self.band.current, self.band.starts_at()
        if current is None or estimate is None:
            return False
        serial, known = current.packet.serial, self.starts.get(current.packet.serial)
        if known is None or known > t:  # until it starts, the band's timer follows its sharpening estimate
            self.starts[serial] = self.true_time(estimate)
        return known is None


def make_bands(key: bytes, show_id: int, zones: Sequence[int], loss: float, rng: random.Random) -> list[VirtualBand]:
    return [VirtualBand(i, zone, Band(key, show_id, zone), random.Random(rng.random()), loss,
                        rng.uniform(-1000, 1000), rng.uniform(-50e-6, 50e-6)) for i, zone in enumerate(zones)]


class Crowd:
    def __init__(self, key: bytes, show_id: int, zones: Sequence[int], loss: float, controller_delay_ms: float = 0.0,
                 seed: int | None = None) -> None:
        self.key = key
        self.rng = random.Random(seed)
        self.bands = make_bands(key, show_id, zones, loss, self.rng)
        self.controller_delay_ms = controller_delay_ms
        self.refused = 0

    def hear(self, on_air: Iterable[tuple[float, bytes]]) -> None:
        """Every band hears (or loses) each advertisement of the log, effect packets and live frames; then their
        timers run to the last one."""
        last = None
        for t, data in on_air:
            try:
                packet = decode_any(data, self.key)
            except WristbandError:
                self.refused += 1
                continue
            at = last = t + self.rng.uniform(0, self.controller_delay_ms) / 1000
            for band in self.bands:
                band.accept(packet, at)
        if last is not None:
            for band in self.bands:
                band.settle(last)


@dataclass(frozen=True)
class Sync:
    """How well a crowd started one effect: start errors against each band's intended start."""

    bands: int
    started: int
    errors_ms: list[float] = field(repr=False)

    @property
    def spread_ms(self) -> float:
        return max(self.errors_ms) - min(self.errors_ms) if self.errors_ms else float("nan")

    def document(self) -> dict[str, Any]:
        errors = sorted(self.errors_ms)
        return {"bands": self.bands, "started": self.started, "started_pct": 100 * self.started / self.bands,
                "spread_ms": self.spread_ms, "error_median_ms": statistics.median(errors) if errors else None,
                "error_min_ms": errors[0] if errors else None, "error_max_ms": errors[-1] if errors else None}


class Started(Protocol):
    """A band as `sync` reads it: its zone and when it started each effect (serial -> the host's clock)."""
    zone: int
    starts: dict[int, float]


def sync(bands: Sequence[Started], serial: int, intended: dict[int, float]) -> Sync:
    """Start errors of `bands` for the effect `serial`; `intended`: zone -> its start on the host's clock."""
    errors = [(band.starts[serial] - intended[band.zone]) * 1000 for band in bands if serial in band.starts]
    return Sync(len(bands), len(errors), errors)
