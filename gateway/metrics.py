"""Prometheus metrics: the gateway's state read at scrape time, so nothing on the hot path counts twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

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


def build_registry(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    return registry
