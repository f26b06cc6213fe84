"""The `air` driver: the virtual air for the demo and the tests (drivers/sim/air.py), inside the gateway.

It exposes a virtual BLE controller on a pseudo-terminal for the `wristband` driver to open as it would a USB
dongle, and scatters virtual wristbands over the show's zones. Each zone's group of bands is reported to the twin
(`wristbands:<zone>`) when an effect starts there and when its bands begin to show a live look (the console's), at
most once every REPORT_AFTER_S a zone for live looks however fast a fader moves: what most of them show then, as
their timelines say (the later of the live look and the effect), how many show it and how closely they began:
an effect by name and colour, a live look as effect "live" and its colour.
With `sensing_pty_prefix`, it also hosts the BLE sensing room (drivers/sim/ble_devices.py): beacons, sensor tags
and phones on a second virtual link, heard by a scanner per zone on `<prefix>-<zone>` for the `ble` driver.
Needs the `sim` extra (Bumble).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.sim.crowd import VirtualBand
from drivers.wristband.protocol import show_key
from drivers.wristband.radio import parse_key
from gateway.driver import Driver, DriverContext, Problem, importable, setting

if TYPE_CHECKING:
    from drivers.sim.ble_devices import VirtualRoom

REPORT_AFTER_S = 0.2  # a group is reported this long after its start, once every band has had its say


@dataclass(frozen=True)
class AirOptions:
    demo_key: str  # the venue key, the radio's: the virtual bands are given the show's key derived from it
    pty: str = "/tmp/venue-gateway-air"  # where the virtual controller's pty is linked: the radio's `port`
    show_id: int = setting(1, min=0, max=0xFFFF)
    bands_per_zone: int = setting(4, min=1, max=64)
    loss: float = setting(0.3, min=0, max=0.95)  # the share of advertisements each band misses
    seed: int | None = None
    # The BLE sensing room: off unless a prefix is given. A link of its own: the bands need not hear the phones.
    sensing_pty_prefix: str | None = None
    phones_per_zone: int = setting(20, min=0, max=200)
    sensing_tags: bool = True  # beacons always; Ruuvi and BTHome tags too

    def problems(self) -> list[Problem]:
        try:
            parse_key(self.demo_key)
        except ValueError as exc:
            return [Problem("demo_key", str(exc))]
        return []


class VirtualAirDriver(Driver[AirOptions]):
    Options = AirOptions

    @classmethod
    def preflight(cls, options: AirOptions) -> list[Problem]:
        return importable("bumble", "", "sim")

    def __init__(self, ctx: DriverContext, options: AirOptions) -> None:
        super().__init__(ctx, options)
        from drivers.sim.air import VirtualAir  # Bumble is the `sim` extra: needed only when this driver runs

        self.air = VirtualAir(show_key(parse_key(options.demo_key), options.show_id), options.show_id, options.loss,
                              options.seed)
        self.zones = {z.index: z.name for z in ctx.show.zones.values()} or {0: "all"}
        self._effects: dict[int, int] = {}  # zone -> the serial of the last effect whose report was scheduled there
        self._live_reports: set[int] = set()  # zones with a live report to come
        self._timers: set[asyncio.TimerHandle] = set()
        self.room: VirtualRoom | None = None

    async def start(self) -> None:
        zones = [index for index in self.zones for _ in range(self.options.bands_per_zone)]
        try:
            await self.air.open(self.options.pty, zones)
            if self.options.sensing_pty_prefix:
                from drivers.sim.ble_devices import VirtualRoom, furnish

                self.room = VirtualRoom(seed=self.options.seed)
                await furnish(self.room, list(self.zones.values()), self.options.sensing_pty_prefix,
                              self.options.phones_per_zone, self.options.sensing_tags, drift=0.05)
        except BaseException:
            await self._close()  # the supervisor calls stop only after a start that succeeded
            raise
        self.air.listeners.append(self._scheduled)
        for name in self.zones.values():
            self.ctx.declare(f"wristbands:{name}", "wristband_group", None if name == "all" else name)
            self.ctx.report(f"wristbands:{name}", {"bands": self.options.bands_per_zone})
        self.ctx.log.info("virtual air: controller on %s, %d bands", self.options.pty, len(zones))

    def _scheduled(self, band: VirtualBand) -> None:
        loop = asyncio.get_running_loop()
        showing = band.band.showing
        if showing is not None and showing.live and band.zone not in self._live_reports:
            self._live_reports.add(band.zone)
            self._timers.add(loop.call_later(REPORT_AFTER_S, self._report_live, band.zone))
        current = band.band.current
        if current is None or self._effects.get(band.zone) == current.packet.serial:
            return
        self._effects[band.zone] = current.packet.serial
        start = band.starts[current.packet.serial]
        at = loop.time() + max(0.0, start - time.monotonic()) + REPORT_AFTER_S
        self._timers.add(loop.call_at(at, self._report, band.zone))

    def _report_live(self, zone: int) -> None:
        self._live_reports.discard(zone)
        self._report(zone)

    def _report(self, zone: int) -> None:
        """What the zone's bands show now: the effect or live look most of them show, how many, and how closely
        they began to show it."""
        now = time.monotonic()
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()}
        group = [b for b in self.air.bands if b.zone == zone]
        # (what a band shows: effect, colour, and its strobe or serial; when it began on the host's clock)
        showing: list[tuple[tuple[str, tuple[int, int, int], int], float]] = []
        for band in group:
            band.settle(now)
            shown = band.band.showing
            if shown is None or shown.began is None:
                continue
            if shown.effect is None:
                showing.append((("live", shown.rgb, shown.strobe_ms), band.true_time(shown.began)))
            elif shown.effect.serial in band.starts:
                packet = shown.effect
                showing.append(((packet.effect.name.lower(), packet.colour, packet.serial), band.starts[packet.serial]))
        if not showing:
            return
        look = Counter(what for what, _ in showing).most_common(1)[0][0]
        began = [t for what, t in showing if what == look]
        effect, (r, g, b), _ = look
        self.ctx.report(f"wristbands:{self.zones.get(zone, zone)}", {
            "bands": len(group), "effect": effect, "colour": f"#{r:02x}{g:02x}{b:02x}", "started": len(began),
            "start_spread_ms": round((max(began) - min(began)) * 1000, 2)})

    async def run(self) -> None:
        await asyncio.Future()

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        await self._close()

    async def _close(self) -> None:
        await self.air.close()
        if self.room is not None:
            await self.room.close()
            self.room = None

    def health(self) -> dict[str, Any]:
        doc = {"pty": self.options.pty, "bands": len(self.air.bands),
               "heard": sum(b.heard for b in self.air.bands), "lost": sum(b.lost for b in self.air.bands)}
        if self.room is not None:
            doc["sensing"] = {"scanners": {z: s.reported for z, s in self.room.scanners.items()},
                              "phones": len(self.room.phones), "tags": len(self.room.tags)}
        return doc
