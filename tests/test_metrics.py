"""The venue's figures on /metrics, scraped from the demo daemon as Prometheus would and read with prometheus_client's
own parser: every family is there with values that make sense, and the series are the same with a crowd of six
phones as with one of a hundred and twenty."""

from __future__ import annotations

import re
import socket
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pythonosc.udp_client import SimpleUDPClient

from tests.conftest import ADMIN, ROOT, VIEWER, Daemon, demo_config, free_port

# an sACN output of this test's own on the demo's universe 1
EXTRA = """
[drivers.sacn-metrics]
type = "sacn"
universes = [1]
multicast = false
targets = ["127.0.0.1"]
"""
MODELS = {"inference.equipment_model": str(ROOT / "models" / "equipment_anomaly.onnx"),
          "inference.mood_model": str(ROOT / "models" / "audience_mood.onnx")}
ZONES = {"floor", "balcony", "bar"}
VENUE_FAMILIES = {
    "vg_sound_laeq_db", "vg_sound_lmax_db", "vg_sound_meter_db", "vg_sound_compliance", "vg_sound_limit_db",
    "vg_sound_limit_level_db", "vg_sound_limit_allowed_db", "vg_zone_occupancy_people", "vg_zone_capacity_people",
    "vg_zone_crowd_energy", "vg_amp_temperature_celsius", "vg_amp_protect", "vg_equipment_anomaly",
    "vg_equipment_anomaly_score", "vg_power_kw", "vg_energy_kwh", "vg_dmx_frames", "vg_dmx_frames_skipped",
    "vg_dmx_frame_lateness_seconds", "vg_dmx_channels_lit", "vg_dmx_level_changes", "vg_osc_messages_handled",
    "vg_osc_dropped", "vg_osc_feedback_sent", "vg_wristband_copies_sent", "vg_wristband_effects_taken",
    "vg_dmx_output_packets", "vg_cloud_outbox", "vg_cloud_outbox_oldest_age_seconds",
}
# what an attendee's device or band would look like as a label: an address, a hash, a long number
ATTENDEE = re.compile(r"([0-9a-f]{2}[:-]){5}[0-9a-f]{2}|[0-9a-f]{12,}|\d{6,}", re.IGNORECASE)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(d: Daemon) -> tuple[dict[str, Any], Samples]:
    status, headers, body = d.request("GET", "/metrics", VIEWER)
    assert status == 200 and headers["Content-Type"].startswith("text/plain"), status
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples
               if f.name.startswith("vg_")}
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def of(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)
    return result


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[[int], Daemon]]:
    """Demo gateways at 20x with `phones_per_zone`, each in a directory of its own, so that several run at once."""
    started: list[Daemon] = []

    def start(phones_per_zone: int) -> Daemon:
        directory = tmp_path / f"phones-{phones_per_zone}"
        directory.mkdir()
        port = free_port()
        d = Daemon(demo_config(directory, port, speed=20,
                               extra=EXTRA + f'[cloud]\nbroker = "mqtt://127.0.0.1:{free_port()}"\n',
                               overrides={**MODELS, "drivers.air.phones_per_zone": phones_per_zone}), port)
        started.append(d)
        return d.start(wait=False)

    yield start
    for d in started:
        d.cleanup()


def healthy(d: Daemon) -> Daemon:
    d.wait_healthy(30, status=("ok", "degraded"))  # degraded: the cloud link is down on purpose, with a backlog
    return d


EQUIPMENT = 18  # the demo's amplifier channels (4 racks of 4) and mains circuits (A, B)


def settled(d: Daemon, compliance: bool = True) -> Samples:
    """Once every source of figures has reported: the meters and (with `compliance`) the compliance monitor's first
    minute (on the wall clock's minute), BLE occupancy, the radio, the outbox, and the equipment model's first cycle
    (every amplifier and mains circuit in one of its three states)."""
    def ready() -> Samples | None:
        samples = scrape(d)[1]
        people = of(samples, "vg_zone_occupancy_people")
        if ((not compliance or (len(of(samples, "vg_sound_compliance")) == 3 * len(ZONES)
                                and len(of(samples, "vg_sound_laeq_db")) == 3 * len(ZONES)
                                and len(of(samples, "vg_sound_limit_level_db")) == len(ZONES)))
                and len(people) == 2 * len(ZONES)
                and all(people.values()) and of(samples, "vg_wristband_copies_sent_total")
                and all(of(samples, "vg_wristband_copies_sent_total").values())
                and value(samples, "vg_cloud_outbox", what="readings") > 0
                and len(of(samples, "vg_equipment_anomaly")) == 3 * EQUIPMENT):
            return samples
        return None
    found: Samples = until(ready, 90, "every figure reported")
    return found


def crowd(keys: set[tuple[str, frozenset[tuple[str, str]]]]) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """The series but the sound families, whose labels are the configured zones and limits alone."""
    return {key for key in keys if not key[0].startswith("vg_sound_")}


def test_the_venue_figures_and_their_bounded_series(gateways: Callable[[int], Daemon]) -> None:
    # A crowd of six phones and, beside it, one of a hundred and twenty, started together.
    d, many = gateways(2), gateways(40)
    healthy(d)
    osc_port = int(tomllib.loads(d.config.read_text())["drivers"]["osc"]["listen"].rpartition(":")[2])
    osc = SimpleUDPClient("127.0.0.1", osc_port)
    osc.send_message("/vg/ping", [])
    osc.send_message("/vg/no/such/address", [])
    osc.send_message("/vg/dmx/1/3", [300])  # out of range: refused, never clamped
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"not OSC at all", ("127.0.0.1", osc_port))
    status, _, _ = d.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN,
                             {"levels": {"1": 255, "2": 128, "3": 1}})
    assert status == 200
    settled(d)
    samples = until(lambda: (s := scrape(d)[1])
                    and value(s, "vg_dmx_channels_lit", universe="1") == 3
                    and value(s, "vg_osc_messages_handled_total", driver="osc") >= 1 and s, 10, "OSC and DMX counted")
    families, samples = scrape(d)
    assert set(families) >= VENUE_FAMILIES, sorted(VENUE_FAMILIES - set(families))

    # sound: each zone's windows and maximum, its meter, its compliance state (exactly one), its limit
    for zone in ZONES:
        for window in ("1min", "15min", "60min"):
            assert 50 < value(samples, "vg_sound_laeq_db", zone=zone, window=window) < 125
        assert 50 < value(samples, "vg_sound_lmax_db", zone=zone) < 130
        for measure in ("laeq", "lafmax", "lcpeak"):
            assert 50 < value(samples, "vg_sound_meter_db", asset=f"spl:{zone}", zone=zone, measure=measure) < 140
        states = {dict(labels)["state"]: v for labels, v in of(samples, "vg_sound_compliance").items()
                  if dict(labels)["zone"] == zone}
        assert set(states) == {"ok", "warning", "over"} and sorted(states.values()) == [0, 0, 1]
        assert value(samples, "vg_sound_limit_db", zone=zone, limit="LAeq,15min") == 100  # the WHO profile
        assert 0 < value(samples, "vg_sound_limit_level_db", zone=zone, limit="LAeq,15min") < 125

    # occupancy: the venue's count near its capacity (a crowd is counted with noise), the BLE estimate of the phones
    # there; no energy before the mood model has two minutes of readings, and then only between 0 and 1
    capacity = {"floor": 1200, "balcony": 400, "bar": 150}
    for zone in ZONES:
        assert value(samples, "vg_zone_capacity_people", zone=zone) == capacity[zone]
        assert 0 < value(samples, "vg_zone_occupancy_people", zone=zone, asset=f"zone:{zone}") <= 1.1 * capacity[zone]
        assert 1 <= value(samples, "vg_zone_occupancy_people", zone=zone, asset=f"occupancy:{zone}") <= 4
    assert all(0 <= v <= 1 for v in of(samples, "vg_zone_crowd_energy").values())

    # amplifiers: sixteen channels on stage, each warm, none in protection yet; every amplifier and mains circuit in
    # exactly one anomaly state, unscored while the model's window fills
    temperatures = of(samples, "vg_amp_temperature_celsius")
    assert len(temperatures) == 16 and all(15 < t < 90 for t in temperatures.values())
    assert {dict(labels)["zone"] for labels in temperatures} == {"stage"}
    assert set(of(samples, "vg_amp_protect").values()) == {0.0}
    anomaly = of(samples, "vg_equipment_anomaly")
    assets = {dict(labels)["asset"] for labels in anomaly}
    assert {f"amp:r0{r}.{c}" for r in range(1, 5) for c in range(1, 5)} | {"mains:A", "mains:B"} == assets
    assert len(anomaly) == 3 * len(assets) and sum(anomaly.values()) == len(assets)
    assert {dict(labels)["state"] for labels in anomaly} == {"ok", "alarm", "not_scored"}
    assert all(0 < value(samples, "vg_power_kw", asset=a, zone="") < 200 for a in ("mains:A", "mains:B"))

    # DMX: frames run, on time at the median, the three channels set, an output sending
    assert value(samples, "vg_dmx_frames_total") > 40
    lateness = of(samples, "vg_dmx_frame_lateness_seconds")
    assert len(lateness) == 3 and min(lateness.values()) >= 0 and max(lateness.values()) < 1
    assert value(samples, "vg_dmx_frame_lateness_seconds", quantile="0.5") < 0.025
    assert value(samples, "vg_dmx_level_changes_total", universe="1") >= 1
    assert value(samples, "vg_dmx_output_packets_total", driver="sacn-metrics") >= 1

    # OSC: the ping handled (and answered); the unknown address, the level refused and the packet that is not OSC
    # dropped
    assert value(samples, "vg_osc_messages_handled_total", driver="osc") == 1
    assert value(samples, "vg_osc_dropped_total", driver="osc", reason="unknown_address") == 1
    assert value(samples, "vg_osc_dropped_total", driver="osc", reason="refused") == 1
    assert value(samples, "vg_osc_dropped_total", driver="osc", reason="malformed") == 1
    assert value(samples, "vg_osc_dropped_total", driver="osc", reason="not_allowed") == 0

    # the radio and the outbox, which holds a backlog while the broker is away
    assert value(samples, "vg_wristband_copies_sent_total", driver="wristbands") > 0
    assert value(samples, "vg_cloud_outbox", what="readings") > 0
    assert value(samples, "vg_cloud_outbox_oldest_age_seconds") > 0

    # every label a configured name or a fixed word
    for name, labels in samples:
        for key, text in labels:
            assert not ATTENDEE.fullmatch(text), (name, key, text)
            if key == "zone":
                assert text in ZONES | {"stage", ""}, (name, text)

    # The series: the same ten seconds later, and the same with twenty times the phones (each changing its address
    # now and then, as phones do), which the BLE estimate counts. The second gateway is not waited for until its
    # first compliance minute: the sound families, whose labels are the configured zones and limits alone, are left
    # out of that comparison.
    first = settled(healthy(many), compliance=False)
    time.sleep(10)
    few = set(scrape(d)[1])
    assert few == set(samples), few ^ set(samples)
    second = scrape(many)[1]
    assert crowd(set(first)) == crowd(set(second)), set(first) ^ set(second)
    people = sum(v for labels, v in of(second, "vg_zone_occupancy_people").items()
                 if dict(labels)["asset"].startswith("occupancy:"))
    assert 60 <= people <= 180, people

    assert crowd(set(second)) == crowd(few), crowd(set(second)) ^ crowd(few)
    venue = [key for key in few if key[0].removesuffix("_total") in VENUE_FAMILIES]
    print(f"series: {len(few)} with 6 phones ({len(venue)} of the venue's families), {len(set(second))} with 120")
