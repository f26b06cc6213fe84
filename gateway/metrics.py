"""Prometheus metrics: the gateway's state read at scrape time, so nothing on the hot path counts twice.

`GatewayCollector` has the core's figures (twin, store, cloud link and outbox, units); `VenueCollector` the venue's
own, read from the twin's assets and the drivers' health details: sound levels and compliance, occupancy, crowd
energy, amplifiers, equipment alarms, mains power, DMX, OSC and the wristband radio. Every label is a name the
configuration gives (a zone, the id of a configured asset, a universe, a driver) or a fixed word; nothing an
attendee brings (a device address, a wristband) is ever a label, so the number of series follows the venue's
configuration, never its crowd.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.daemon import Gateway


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self._gw
        yield GaugeMetricFamily("vg_twin_version", "Global version of the venue twin", value=gw.twin.version)
        yield GaugeMetricFamily("vg_twin_assets", "Assets in the venue twin", value=len(gw.twin))
        yield CounterMetricFamily("vg_readings", "Readings ingested", value=gw.ingest.readings_total)
        s = gw.store.stats
        yield GaugeMetricFamily("vg_store_committed_seq", "Sequence number of the last telemetry row committed",
                                value=s.committed_seq)
        for name, value, text in (
            ("vg_store_rows_committed", s.committed_rows, "Telemetry rows committed"),
            ("vg_store_rows_dropped", s.dropped_rows, "Readings dropped because the writer fell behind"),
            ("vg_store_rows_evicted", s.evicted_rows, "Telemetry rows evicted by retention or the size bound"),
            ("vg_store_write_errors", s.errors, "Store batches that failed to commit (retried)"),
        ):
            yield CounterMetricFamily(name, text, value=value)
        size = GaugeMetricFamily("vg_store_bytes", "Store size on disk", labels=["part"])
        size.add_metric(["database"], s.db_bytes)
        size.add_metric(["wal"], s.wal_bytes)
        size.add_metric(["used"], s.used_bytes)
        size.add_metric(["limit"], gw.config.store.max_mb * 1024 * 1024)
        yield size
        yield GaugeMetricFamily("vg_store_disk_free_bytes", "Free space on the data directory's disk",
                                value=s.disk_free_bytes)
        yield from _cloud(gw)
        up = GaugeMetricFamily("vg_unit_up", "1 when the driver or service runs", labels=["unit", "kind"])
        restarts = CounterMetricFamily("vg_unit_restarts", "Restarts of a driver or service", labels=["unit", "kind"])
        for name, unit in gw.supervisor.units.items():
            up.add_metric([name, unit.kind], 1.0 if unit.state == "running" else 0.0)
            restarts.add_metric([name, unit.kind], unit.restarts)
        yield up
        yield restarts


def _cloud(gw: Gateway) -> Iterator[Metric]:
    link, outbox = gw.cloud, gw.store.outbox
    if link is not None:
        yield GaugeMetricFamily("vg_cloud_link_up", "1 while the MQTT link to the cloud is online",
                                value=1.0 if link.state == "online" else 0.0)
        yield CounterMetricFamily("vg_cloud_connects", "Successful connections to the broker", value=link.connects)
        sent = CounterMetricFamily("vg_cloud_sent", "Messages acknowledged by the broker", labels=["kind"])
        c = link.drain_counts
        for kind, value in (("telemetry", c.batches), ("event", c.events), ("snapshot", link.snapshots),
                            ("delta", link.deltas)):
            sent.add_metric([kind], value)
        yield sent
        yield CounterMetricFamily("vg_cloud_readings_sent", "Readings acknowledged by the broker", value=c.readings)
        commands = CounterMetricFamily("vg_cloud_commands", "Commands from the cloud", labels=["result"])
        commands.add_metric(["ok"], link.commands_ok)
        commands.add_metric(["refused"], link.commands_refused)
        yield commands
    if outbox is not None:
        s = outbox.stats
        waiting = GaugeMetricFamily("vg_cloud_outbox", "What waits in the outbox for the broker", labels=["what"])
        for what, value in (("batches", s.batches), ("readings", s.readings), ("events", s.events),
                            ("bytes", s.bytes)):
            waiting.add_metric([what], value)
        yield waiting
        yield GaugeMetricFamily("vg_cloud_outbox_oldest_age_seconds", "Age of the oldest reading waiting",
                                value=0.0 if s.oldest_ts is None else max(0.0, time.time() - s.oldest_ts))
        yield CounterMetricFamily("vg_cloud_outbox_evicted_readings", "Readings evicted from the outbox at its bound",
                                  value=s.evicted_readings)


SOUND_WINDOWS = (("1min", "laeq_1min_db"), ("15min", "laeq_15min_db"), ("60min", "laeq_60min_db"))
METER_MEASURES = (("laeq", "laeq_db"), ("lafmax", "lafmax_db"), ("lcpeak", "lcpeak_db"))
COMPLIANCE_STATES = ("ok", "warning", "over")
ANOMALY_STATES = ("ok", "alarm", "not scored")  # as labels: not_scored
# The `osc` driver's health counters of what it did not obey: packets (off the allow list, not OSC, nested too deep,
# a SLIP frame cut short) and messages (timed beyond the horizon or with max_pending waiting, an address it does
# not know, arguments or a preset refused).
OSC_DROPPED = (("not_allowed", "not_allowed"), ("malformed", "malformed"), ("too_deep", "too_deep"),
               ("slip", "slip_dropped"), ("beyond_horizon", "beyond_horizon"), ("pending_full", "pending_full"),
               ("unknown_address", "unknown"), ("refused", "refused"))
DMX_OUTPUTS = {"artnet": "packets_sent", "sacn": "packets_sent", "enttec": "frames_sent"}  # driver type -> counter


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class _Families:
    """The venue's families, filled while the twin's assets are read once."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.laeq = g("vg_sound_laeq_db", "A zone's LAeq over the window, as the compliance monitor holds it",
                      labels=["zone", "window"])
        self.lmax = g("vg_sound_lmax_db", "A zone's maximum level over the last hour (LAFmax where the meter gives "
                                          "it)", labels=["zone"])
        self.meter = g("vg_sound_meter_db", "A sound level meter's last interval: LAeq, LAFmax, LCpeak",
                       labels=["asset", "zone", "measure"])
        self.compliance = g("vg_sound_compliance", "1 for a zone's worst sound-level limit state (ok, warning, over), "
                                                   "0 for the others", labels=["zone", "state"])
        self.limit = g("vg_sound_limit_db", "A sound-level limit of a zone", labels=["zone", "limit"])
        self.limit_level = g("vg_sound_limit_level_db", "A zone's level as judged against the limit",
                             labels=["zone", "limit"])
        self.limit_allowed = g("vg_sound_limit_allowed_db", "The level a zone can keep from now to the show's end and "
                                                            "stay under the limit", labels=["zone", "limit"])
        self.people = g("vg_zone_occupancy_people", "People in a zone, by the asset that counts them (the venue's "
                                                    "count, a BLE estimate)", labels=["zone", "asset"])
        self.capacity = g("vg_zone_capacity_people", "A zone's capacity", labels=["zone"])
        self.energy = g("vg_zone_crowd_energy", "A zone's crowd energy from the audience-mood model, 0 to 1",
                        labels=["zone"])
        self.amp_temperature = g("vg_amp_temperature_celsius", "An amplifier channel's temperature",
                                 labels=["asset", "zone"])
        self.amp_protect = g("vg_amp_protect", "1 while an amplifier channel is in protection",
                             labels=["asset", "zone"])
        self.anomaly = g("vg_equipment_anomaly", "1 for an asset's equipment-anomaly state (ok, alarm, not_scored), 0 "
                                                 "for the others", labels=["asset", "kind", "state"])
        self.anomaly_score = g("vg_equipment_anomaly_score", "An asset's last equipment-anomaly score",
                               labels=["asset", "kind"])
        self.power = g("vg_power_kw", "Active power of a mains circuit", labels=["asset", "zone"])
        self.energy_kwh = c("vg_energy_kwh", "Energy meter reading of a mains circuit", labels=["asset", "zone"])

    def all(self) -> list[Metric]:
        return list(vars(self).values())

    def add(self, asset_id: str, kind: str, zone: str, reported: Mapping[str, Any]) -> None:
        read = self._READERS.get(kind)
        if read is not None:
            read(self, asset_id, zone, reported)
        state = reported.get("anomaly")
        if isinstance(state, str):
            for name in ANOMALY_STATES:
                self.anomaly.add_metric([asset_id, kind, name.replace(" ", "_")], 1.0 if state == name else 0.0)
            if (score := _number(reported.get("anomaly_score"))) is not None:
                self.anomaly_score.add_metric([asset_id, kind], score)

    def _compliance(self, asset_id: str, zone: str, reported: Mapping[str, Any]) -> None:
        for window, key in SOUND_WINDOWS:
            if (value := _number(reported.get(key))) is not None:
                self.laeq.add_metric([zone, window], value)
        if (value := _number(reported.get("lmax_db"))) is not None:
            self.lmax.add_metric([zone], value)
        state = reported.get("state")
        if state in COMPLIANCE_STATES:
            for name in COMPLIANCE_STATES:
                self.compliance.add_metric([zone, name], 1.0 if state == name else 0.0)
        for limit in reported.get("limits") or ():
            if not isinstance(limit, dict) or not isinstance(limit.get("limit"), str):
                continue
            for family, key in ((self.limit, "limit_db"), (self.limit_level, "level_db"),
                                (self.limit_allowed, "allowed_db")):
                if (value := _number(limit.get(key))) is not None:
                    family.add_metric([zone, limit["limit"]], value)

    def _meter(self, asset_id: str, zone: str, reported: Mapping[str, Any]) -> None:
        for measure, key in METER_MEASURES:
            if (value := _number(reported.get(key))) is not None:
                self.meter.add_metric([asset_id, zone, measure], value)

    def _zone(self, asset_id: str, zone: str, reported: Mapping[str, Any]) -> None:
        if (value := _number(reported.get("occupancy"))) is not None:
            self.people.add_metric([zone, asset_id], value)
        if (value := _number(reported.get("capacity"))) is not None:
            self.capacity.add_metric([zone], value)

    def _occupancy(self, asset_id: str, zone: str, reported: Mapping[str, Any]) -> None:
        if (value := _number(reported.get("people"))) is not None:
            self.people.add_metric([zone, asset_id], value)

    def _mood(self, asset_id: str, zone: str, reported: Mapping[str, Any]) -> None:
        if reported.get("class") != "not scored" and (value := _number(reported.get("energy"))) is not None:
            self.energy.add_metric([zone], value)

    def _amp(self, asset_id: str, zone: str, reported: Mapping[str, Any]) -> None:
        if (value := _number(reported.get("temperature_c"))) is not None:
            self.amp_temperature.add_metric([asset_id, zone], value)
        if (value := _number(reported.get("protect"))) is not None:
            self.amp_protect.add_metric([asset_id, zone], 1.0 if value else 0.0)

    def _power(self, asset_id: str, zone: str, reported: Mapping[str, Any]) -> None:
        if (value := _number(reported.get("power_kw"))) is not None:
            self.power.add_metric([asset_id, zone], value)
        if (value := _number(reported.get("energy_kwh"))) is not None:
            self.energy_kwh.add_metric([asset_id, zone], value)

    # by the asset's kind: what each kind of configured asset reports
    _READERS: Mapping[str, Callable[[_Families, str, str, Mapping[str, Any]], None]] = {
        "sound_compliance": _compliance, "spl_meter": _meter, "zone": _zone, "occupancy_estimate": _occupancy,
        "audience_mood": _mood, "amplifier": _amp, "power": _power,
    }


class VenueCollector(Collector):
    """The venue's own figures at scrape time: one pass over the twin's assets, the frame clock's counters and the
    health details of the drivers that keep counters (osc, wristband, the DMX outputs)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for asset in self._gw.twin.assets().values():
            zone = asset.zone or ""
            if asset.kind in ("sound_compliance", "audience_mood") and not zone:
                zone = asset.id.partition(":")[2]
            families.add(asset.id, asset.kind, zone, asset.reported)
        yield from families.all()
        yield from self._dmx()
        yield from self._drivers()

    def _dmx(self) -> Iterator[Metric]:
        frames, dmx = self._gw.frames, self._gw.dmx
        yield CounterMetricFamily("vg_dmx_frames", "DMX frames run by the frame clock", value=frames.frame)
        yield CounterMetricFamily("vg_dmx_frames_skipped", "DMX frames the loop could only run a whole period late: "
                                                           "skipped, never sent in a burst", value=frames.skipped)
        late = GaugeMetricFamily("vg_dmx_frame_lateness_seconds", "How late the recent DMX frames ran (the last "
                                                                  "2,400 frames; quantile 1 is the maximum)",
                                 labels=["quantile"])
        jitter = frames.jitter()
        for quantile, key in (("0.5", "p50_ms"), ("0.99", "p99_ms"), ("1", "max_ms")):
            late.add_metric([quantile], jitter[key] / 1000)
        yield late
        lit = GaugeMetricFamily("vg_dmx_channels_lit", "Channels of a universe above 0", labels=["universe"])
        changes = CounterMetricFamily("vg_dmx_level_changes", "Changes of a universe's levels", labels=["universe"])
        for number, universe in dmx.universes.items():
            lit.add_metric([str(number)], len(universe.levels) - universe.levels.count(0))
            changes.add_metric([str(number)], universe.changes)
        yield lit
        yield changes

    def _drivers(self) -> Iterator[Metric]:
        c = CounterMetricFamily
        handled = c("vg_osc_messages_handled", "OSC messages the osc driver acted on", labels=["driver"])
        dropped = c("vg_osc_dropped", "OSC packets or messages the osc driver did not obey, by why",
                    labels=["driver", "reason"])
        feedback = c("vg_osc_feedback_sent", "OSC feedback messages sent to the destinations", labels=["driver"])
        copies = c("vg_wristband_copies_sent", "Wristband packets handed to the radio", labels=["driver"])
        taken = c("vg_wristband_effects_taken", "Effects the wristband radio took to send", labels=["driver"])
        packets = c("vg_dmx_output_packets", "DMX packets (or frames) an output sent", labels=["driver"])
        for dc in self._gw.config.drivers:
            if dc.type not in ("osc", "wristband", *DMX_OUTPUTS):
                continue
            detail = self._detail(dc.name)
            if detail is None:
                continue
            if dc.type == "osc":
                not_obeyed = sum(_number(detail.get(key)) or 0.0 for key in ("unknown", "refused"))
                handled.add_metric([dc.name], max(0.0, (_number(detail.get("received")) or 0.0) - not_obeyed))
                for reason, key in OSC_DROPPED:
                    dropped.add_metric([dc.name, reason], _number(detail.get(key)) or 0.0)
                feedback.add_metric([dc.name], _number(detail.get("sent")) or 0.0)
            elif dc.type == "wristband":
                copies.add_metric([dc.name], _number(detail.get("copies_sent")) or 0.0)
                taken.add_metric([dc.name], _number(detail.get("effects_taken")) or 0.0)
            else:
                packets.add_metric([dc.name], _number(detail.get(DMX_OUTPUTS[dc.type])) or 0.0)
        yield from (handled, dropped, feedback, copies, taken, packets)

    def _detail(self, name: str) -> Mapping[str, Any] | None:
        """A running driver's health detail (where its own counters are), or None."""
        status = self._gw.supervisor.units.get(name)
        if status is None or status.unit is None or status.state != "running":
            return None
        try:
            detail = status.unit.health()
        except Exception:  # a driver's bug must not take the scrape down; its health says so
            return None
        return detail if isinstance(detail, Mapping) else None


def build_registry(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    registry.register(VenueCollector(gateway))
    return registry
