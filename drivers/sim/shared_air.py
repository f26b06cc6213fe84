"""Several radios on one air: the virtual air (drivers/sim/air.py) for a show carried by several boxes.

Each box's radio is a Bumble controller of its own, exposed on its own pseudo-terminal for that box's `wristband`
driver to open as a USB dongle; all of them advertise on one simulated link. A band stands somewhere on the floor
and hears a given set of those radios: each radio's advertisements reach only the bands in its coverage, and each
band loses each copy at its transmitter's rate, independently. Every band runs the reference band
(drivers/wristband/band.py) on its own clock, whatever copies it hears from however many radios.

The floor (`FLOOR`): three radios along it, A, B and C, each with a patch of the crowd only it covers, the overlaps
of neighbours (A and B, B and C) and the middle, where all three are heard (A and C meet only where B is heard
too). The modelled crowd (`SharedCrowd`) is thousands of bands placed the same way, fed with the air's log of what
each radio put on the air (when, which bytes, which radio), so it hears the boxes' own transmissions with their
own timing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bumble.controller import Controller
from bumble.device import Advertisement, Device
from bumble.link import LocalLink
from bumble.ll import AdvertisingPdu
from bumble.transport import open_transport
from bumble.transport.common import Transport

from drivers.sim.air import _Radio, _remove_stale_link, scanning, stop_scanning
from drivers.sim.crowd import VirtualBand
from drivers.wristband.band import Band
from drivers.wristband.protocol import WristbandError, decode_any

RADIO_NAMES = "ABCDEFGH"

# Where the crowd stands on a floor with three radios along it: the radios each spot hears (0: A, 1: B, 2: C).
FLOOR: tuple[tuple[int, ...], ...] = ((0,), (0, 1), (1,), (0, 1, 2), (1, 2), (2,))


def spot_name(radios: Iterable[int]) -> str:
    """A spot named by the radios heard there: "A", "A+B", "A+B+C"."""
    return "+".join(RADIO_NAMES[r] for r in radios)


def placed(spots: Sequence[tuple[int, ...]], zones: Sequence[int], per_spot: int) -> list[tuple[int, tuple[int, ...]]]:
    """`per_spot` bands at each spot, their zones in turn: (zone, the radios it hears) for each band."""
    out: list[tuple[int, tuple[int, ...]]] = []
    for spot in spots:
        out += [(zones[len(out) % len(zones)], spot) for _ in range(per_spot)]
    return out


@dataclass
class PlacedBand(VirtualBand):
    """A band at a spot of the floor: it hears only the radios of `radios`."""

    radios: frozenset[int] = field(default_factory=frozenset)


def place_bands(key: bytes, show_id: int, bands: Sequence[tuple[int, Sequence[int]]], losses: Sequence[float],
                rng: random.Random) -> list[PlacedBand]:
    """A band per (zone, radios heard), each on its own clock (an offset and up to 50 ppm of drift)."""
    out = []
    for i, (zone, radios) in enumerate(bands):
        if not radios or not all(0 <= r < len(losses) for r in radios):
            raise ValueError(f"band {i} hears radios {list(radios)}: each is one of 0..{len(losses) - 1}, at least one")
        out.append(PlacedBand(i, zone, Band(key, show_id, zone), random.Random(rng.random()), max(losses),
                              rng.uniform(-1000, 1000), rng.uniform(-50e-6, 50e-6), radios=frozenset(radios)))
    return out


class _PlacedReceiver(Controller):
    """A band's controller, with the air time and the radio of every advertisement carried to it."""

    def __init__(self, name: str, link: LocalLink, address: str, radios: frozenset[int]) -> None:
        super().__init__(name, link=link, public_address=address)
        self.radios = radios
        self.carried: deque[tuple[bytes, float, int]] = deque(maxlen=1024)

    def arrival(self, data: bytes) -> tuple[float, int | None]:
        """When the advertisement reported with `data` was on the air, and which radio sent it (reports come in
        the order sent)."""
        while self.carried:
            sent, t, radio = self.carried.popleft()
            if sent == data:
                return t, radio
        return time.monotonic(), None


class _SharedLink(LocalLink):
    """The link, stamping each advertisement as it goes on the air with the radio that sent it, and carrying it
    only to the bands in that radio's coverage."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.radios: dict[Controller, int] = {}
        self.receivers: list[_PlacedReceiver] = []
        self.record: list[tuple[float, bytes, int]] | None = None

    def send_advertising_pdu(self, sender: Controller, packet: AdvertisingPdu) -> None:
        t, data = time.monotonic(), bytes(getattr(packet, "data", b""))
        radio = self.radios.get(sender)
        if radio is None:
            return  # a band's own controller does not advertise: nothing else is on this air
        if self.record is not None:
            self.record.append((t, data, radio))
        loop = asyncio.get_running_loop()
        for receiver in self.receivers:
            if radio in receiver.radios:
                receiver.carried.append((data, t, radio))
                loop.call_soon(receiver.on_ll_advertising_pdu, packet)


class SharedAir:
    """Radios on ptys and placed virtual wristbands, on one virtual link; `losses[i]`: the share of radio i's
    copies each band that hears it loses."""

    def __init__(self, key: bytes, show_id: int, losses: Sequence[float], seed: int | None = None) -> None:
        self.key = key  # the show's key (protocol.show_key), as its bands were given it
        self.show_id = show_id
        self.losses = list(losses)
        self.rng = random.Random(seed)
        self.link = _SharedLink()
        self.radios: list[_Radio] = []
        self.bands: list[PlacedBand] = []
        self._transports: list[Transport] = []
        self._devices: list[Device] = []

    async def open(self, pty_paths: Sequence[str], bands: Sequence[tuple[int, Sequence[int]]],
                   record: bool = False) -> None:
        """Expose radio i at `pty_paths[i]` (a symlink to its pty) and power on a band per (zone, radios heard)."""
        if len(pty_paths) != len(self.losses):
            raise ValueError(f"{len(pty_paths)} ptys for {len(self.losses)} radios")
        if record:
            self.link.record = []
        for i, path in enumerate(pty_paths):
            _remove_stale_link(path)
            transport = await open_transport(f"pty:{path}")
            self._transports.append(transport)
            radio = _Radio(transport, self.link)
            self.link.radios[radio] = i
            self.radios.append(radio)
        for band in place_bands(self.key, self.show_id, bands, self.losses, self.rng):
            self.bands.append(band)
            await self._listen(band)

    def power_off(self, radio: int) -> None:
        """Radio `radio` goes dark, as a dongle does when its box loses power: nothing more of it on the air
        (Bumble's controller would go on repeating its last advertisement)."""
        self.link.radios = {c: i for c, i in self.link.radios.items() if i != radio}

    @property
    def on_air(self) -> list[tuple[float, bytes, int]]:
        """Every advertisement on the air since `open(record=True)`: (when, data, the radio that sent it)."""
        return self.link.record or []

    async def _listen(self, band: PlacedBand) -> None:
        address = f"C0:00:00:00:{band.index >> 8:02X}:{band.index & 0xFF:02X}"
        controller = _PlacedReceiver(f"band-{band.index}", self.link, address, band.radios)
        self.link.receivers.append(controller)

        def heard(adv: Advertisement) -> None:
            if adv.is_scan_response:  # Bumble's controller reports every advertisement a second time as one
                return
            data = adv.data_bytes
            t, radio = controller.arrival(data)
            if radio is not None:
                band.hear(data, t, self.losses[radio])

        self._devices.append(await scanning(controller, address, heard))

    async def close(self) -> None:
        await stop_scanning(self._devices)
        for transport in self._transports:
            await transport.close()
        self._transports.clear()


class SharedCrowd:
    """Modelled bands placed on the floor, hearing the air's log (when, data, radio): each band only the radios
    it is placed to hear, each copy lost at its radio's rate; a real controller's advDelay of 0 to
    `controller_delay_ms` before each advertising event, the same for every band that hears it."""

    def __init__(self, key: bytes, show_id: int, bands: Sequence[tuple[int, Sequence[int]]], losses: Sequence[float],
                 controller_delay_ms: float = 0.0, seed: int | None = None) -> None:
        self.key = key
        self.losses = list(losses)
        self.rng = random.Random(seed)
        self.bands = place_bands(key, show_id, bands, losses, self.rng)
        self.controller_delay_ms = controller_delay_ms
        self.refused = 0

    def hear(self, on_air: Iterable[tuple[float, bytes, int]]) -> None:
        """Every band in a radio's coverage hears (or loses) each of its advertisements; then their timers run to
        the last one."""
        covered = {r: [b for b in self.bands if r in b.radios] for r in range(len(self.losses))}
        last = None
        for t, data, radio in on_air:
            try:
                packet = decode_any(data, self.key)
            except WristbandError:
                self.refused += 1
                continue
            at = last = t + self.rng.uniform(0, self.controller_delay_ms) / 1000
            loss = self.losses[radio]
            for band in covered[radio]:
                band.accept(packet, at, loss)
        if last is not None:
            for band in self.bands:
                band.settle(last)
