"""The virtual venue: a believable night, deterministic for a seed, with faults that look like faults."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.sim.driver import SimOptions, SimVenueDriver
from drivers.sim.show import Show
from drivers.sim.venue import Fault, VenueLayout, VirtualVenue, Zone, random_faults
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.readings import Reading
from gateway.twin import DesiredRefused, Twin
from tests.conftest import Daemon

LAYOUT = VenueLayout((Zone("floor", 1200, 10), Zone("balcony", 400, 35)), racks=2, channels_per_rack=4, circuits=2)


def series(venue: VirtualVenue, asset: str, metric: str, start: float, end: float) -> dict[float, float]:
    return {t: r.value for t, rs in venue.run(start, end) for r in rs if r.asset == asset and r.metric == metric}


def test_the_same_seed_gives_the_same_night() -> None:
    a = [r for _, rs in VirtualVenue(5, LAYOUT, []).run(0, 600) for r in rs]
    b = [r for _, rs in VirtualVenue(5, LAYOUT, []).run(0, 600) for r in rs]
    c = [r for _, rs in VirtualVenue(6, LAYOUT, []).run(0, 600) for r in rs]
    assert a == b
    assert a != c


def test_the_show_follows_its_script() -> None:
    show = Show(3)
    names = [s.name for s in show.segments]
    assert names == ["doors", "support", "changeover", "headline", "encore_break", "encore", "egress"]
    headline = show.segments[3]
    songs = show.songs["headline"]
    assert 14 <= len(songs) <= 30 and any(s.quiet for s in songs)
    assert all(headline.start <= s.start < s.end <= headline.end for s in songs)
    chorus = next(s for s in songs if not s.quiet).choruses[0]
    verse_t = chorus[0] - 5
    assert show.energy((chorus[0] + chorus[1]) / 2) > show.energy(verse_t)
    assert show.music_db((chorus[0] + chorus[1]) / 2) == show.music_db(verse_t) + 3
    quiet = next(s for s in songs if s.quiet)
    assert show.energy((quiet.start + quiet.end) / 2) < show.energy(verse_t)
    assert show.attendance(60) < 0.1 < show.attendance(headline.start + 600) and show.attendance(show.duration - 1) == 0
    assert all(0 <= show.energy(t) <= 1 for t in np.linspace(0, show.duration, 500))


def test_sound_levels_and_air_follow_the_crowd() -> None:
    venue = VirtualVenue(2, LAYOUT, [])
    spl = series(venue, "spl:floor", "laeq_db", 0, venue.show.duration)
    doors = np.mean([v for t, v in spl.items() if t < 600])
    headline = venue.show.segments[3]
    loud = np.mean([v for t, v in spl.items() if headline.start < t < headline.end])
    assert doors < 88 < 95 < loud < 106
    venue = VirtualVenue(2, LAYOUT, [])
    co2 = series(venue, "env:floor", "co2_ppm", 0, headline.start + 1800)
    assert co2[600.0] < 700 < co2[headline.start + 1800]


def test_a_stalled_fan_heats_the_amplifier_until_it_protects() -> None:
    start = Show(1).segments[3].start
    fault = Fault("fan_stall", "amp:r01.2", start + 60, math.inf)
    venue = VirtualVenue(1, LAYOUT, [fault])
    ts = {t: {(r.asset, r.metric): r.value for r in rs} for t, rs in venue.run(start - 600, start + 3000)}
    before = ts[start][("amp:r01.2", "temperature_c")]
    assert ts[start + 600][("amp:r01.2", "fan_rpm")] < 50
    hottest = max(v[("amp:r01.2", "temperature_c")] for v in ts.values())
    assert hottest > 80 > before + 20
    assert any(v[("amp:r01.2", "protect")] == 1.0 for v in ts.values())
    healthy = max(v[("amp:r01.1", "temperature_c")] for v in ts.values())
    assert healthy < 60
    assert venue.fault_active("amp:r01.2", start + 100) == "fan_stall" and venue.fault_active("amp:r01.1", 0) is None


def test_an_open_driver_doubles_the_impedance_and_a_breaker_trip_kills_its_circuit() -> None:
    start = Show(1).segments[3].start
    faults = [Fault("driver_open", "amp:r01.1", start + 10, start + 100), Fault("breaker_trip", "mains:B", start + 10,
                                                                             start + 100)]
    venue = VirtualVenue(1, LAYOUT, faults)
    ts = {t: {(r.asset, r.metric): r.value for r in rs} for t, rs in venue.run(start - 60, start + 200)}
    ohm_before, ohm_during = ts[start][("amp:r01.1", "load_ohm")], ts[start + 50][("amp:r01.1", "load_ohm")]
    assert 1.8 < ohm_during / ohm_before < 2.2
    assert ts[start + 50][("mains:B", "current_a")] == 0.0 < ts[start + 50][("mains:A", "current_a")]
    assert ts[start + 50][("amp:r02.1", "current_a")] == 0.0  # rack 2 hangs on circuit B
    assert ts[start + 150][("mains:B", "current_a")] > 0  # the breaker was reset
    assert venue.fault_active("amp:r02.3", start + 50) == "breaker_trip"


def test_random_faults_are_drawn_from_the_seed() -> None:
    show = Show(4)
    a = random_faults(4, LAYOUT, show, per_hour=2.0)
    assert a == random_faults(4, LAYOUT, show, per_hour=2.0) and len(a) >= 2
    assert all(30 * 60 <= f.start < f.end for f in a)


class Recorder:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def publish(self, readings: Any, owner: str | None = None) -> None:
        self.readings += readings


async def test_amplifiers_take_desired_state_and_report_it_back() -> None:
    twin = Twin("gw", "hall")
    ctx = DriverContext("venue", twin, Recorder(), DmxUniverses(twin, []), FrameClock(40), None)  # type: ignore[arg-type]
    driver = SimVenueDriver(ctx, SimOptions(zones=[], racks=1))
    await driver.start()
    assert twin.get("amp:r01.1") is not None and twin.get("show") is not None
    await driver.apply_desired("amp:r01.1", {"enabled": False, "gain_db": -6})
    asset = twin.get("amp:r01.1")
    assert asset is not None and asset.reported["enabled"] is False and asset.reported["gain_db"] == -6.0
    readings = driver.venue.step(100.0, 1.0, 0.0)
    current = {r.asset: r.value for r in readings if r.metric == "current_a"}
    assert current["amp:r01.1"] == 0.0 < current["amp:r01.2"]
    await driver.apply_desired("amp:r01.2", {"gain_db": 99})  # set while the driver was down: reported
    amp2 = twin.get("amp:r01.2")
    assert amp2 is not None and "allowed" in amp2.reported["desired_error"]
    driver.attach()  # running: refused at once, nothing changed
    for asset_id, desired, why in (
            ("amp:r01.1", {"gain_db": 99}, "allowed: enabled (true/false), gain_db (-40 to 6)"),
            ("amp:r01.1", {"enabled": "no"}, "allowed: enabled (true/false), gain_db (-40 to 6)"),
            ("amp:r01.1", {"mute": True}, "allowed: enabled (true/false), gain_db (-40 to 6); no key 'mute'"),
            ("show", {"segment": "encore"}, "show takes no desired state (allowed: the amplifier channels amp:*)")):
        with pytest.raises(DesiredRefused, match=re.escape(why)):
            twin.patch_desired(asset_id, desired)
    assert twin.get("amp:r01.1").desired == {}  # type: ignore[union-attr]
    driver.detach()


def test_the_venues_devices_are_read_by_the_real_drivers(daemon_factory: Any, tmp_path: Path) -> None:
    """The demo: the venue's meters are simulated hardware on ptys (no socat), read by the modbus, xl2 and nodes
    drivers; compliance judges what the XL2s measure."""
    d: Daemon = daemon_factory().start()

    def reported(asset: str) -> dict[str, Any]:
        return d.get("/api/v1/twin")["assets"].get(asset, {}).get("reported", {})

    def wait(asset: str, metric: str) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while not (found := reported(asset)).get(metric):
            assert time.monotonic() < deadline, (asset, found)
            time.sleep(0.2)
        return found

    assert 200 < wait("mains:A", "voltage_v")["voltage_v"] < 260
    assert 45 <= wait("mains:B", "frequency_hz")["frequency_hz"] <= 55
    assert wait("bus:rs485", "requests")["connected"] is True
    assert 50 < wait("spl:floor", "laeq_db")["laeq_db"] < 130
    assert 10 < wait("env:bar", "temperature_c")["temperature_c"] < 40
    assert wait("compliance:floor", "meter")["meter"] == "spl:floor"
    assert d.get("/api/v1/twin")["assets"]["spl:floor"]["kind"] == "spl_meter"
    d.terminate()
    assert not list(tmp_path.glob("dev-*"))  # the devices' links go with the gateway
