"""The daemon: one asyncio loop that opens the store, restores the twin, starts every unit under the
supervisor, tells systemd, and on SIGTERM/SIGINT stops it all within 5 s with pending writes flushed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sqlite3
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway import history, registry
from gateway.alerts import Alerts
from gateway.api.app import ApiService
from gateway.api.auth import Tokens
from gateway.cloud.link import CloudLink, tls_context
from gateway.cloud.settings import Credentials, credentials
from gateway.compliance.monitor import ComplianceMonitor
from gateway.compliance.settings import WINDOWS_MIN
from gateway.config import Config, DriverConfig
from gateway.discovery.announce import UNIT_NAME, announcer
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.logring import LogRing
from gateway.looplag import LoopLag
from gateway.metrics import build_registry
from gateway.outbox import OutboxSettings, event_payload
from gateway.readings import Ingest, Reading
from gateway.realtime import make_realtime
from gateway.show import shared_settings
from gateway.show.clock_watch import ClockWatch
from gateway.show.engine import Fired, ShowEngine
from gateway.show.shared import SharedShow
from gateway.store import Store
from gateway.supervisor import NotReady, Supervisor, Unit
from gateway.systemd import Notifier
from gateway.twin import Twin

log = logging.getLogger(__name__)

READY_WAIT_S = 10.0  # a unit stuck in its first start does not hold READY=1 back longer than this
STOP_BUDGET_S = 4.5
GIL_SWITCH_S = 0.0005  # SIGTERM to exit: under the 5 s promised, with room for the interpreter to leave


# The broker's credentials and TLS context from the [cloud] section, resolved at each start of the cloud unit: a
# secret the box lacks (its password's variable, a CA file) keeps that unit waiting (ValueError), not the box.
CloudAccess = Callable[[], tuple[Credentials, ssl.SSLContext | None]]


class Gateway:
    def __init__(self, config: Config, tokens: Tokens, *, data_dir: Path | None = None,
                 cloud: CloudAccess | None = None) -> None:
        """`cloud`: what resolves the broker credentials and TLS context (the caller's, from the [cloud] section)."""
        self.config = config
        self.twin = Twin(config.gateway.id, config.gateway.venue, change_log=config.twin.change_log)
        c = config.cloud
        outbox = None if c is None else OutboxSettings(config.gateway.id, c.batch_readings, c.batch_delay_ms / 1000,
                                                       int(c.outbox_max_mb * 1024 * 1024),
                                                       c.outbox_max_age_hours * 3600)
        retention = config.compliance.retention_days * 86400 if config.compliance is not None else 90 * 86400
        self.store = Store(data_dir or config.data_dir, config.store, outbox=outbox,
                           compliance_retention_s=retention)
        self.ingest = Ingest(self.twin, self.store)
        self.alerts = Alerts()
        self.alerts.listen(lambda kind, text, doc: self.event("alert", doc))
        self.compliance: ComplianceMonitor | None = None
        if config.compliance is not None:
            self.compliance = ComplianceMonitor(config.compliance, self.twin, self.ingest.publish,
                                                self.store.add_compliance, self.alerts.raise_alert)
            self.ingest.observers.append(self.compliance.observe)
        self.dmx = DmxUniverses(self.twin, config.dmx.universes)
        self.frames = FrameClock(config.dmx.frame_rate_hz)
        self.show = ShowEngine(config.show, self.twin)
        self.show.cues.load(config.path.parent)  # the timecode cue list's file, beside the configuration
        self.show.on_fire(self._fired)
        self.shared: SharedShow | None = None  # the running shared show's unit, when [show.shared] is configured
        if (shared := config.show.shared) is not None:  # this box's block of serials, the show's bus up or not
            self.show.use_serials(shared.boxes.index(config.gateway.id), len(shared.boxes))
        self.supervisor = Supervisor(config.supervisor, self.twin)
        self.supervisor.on_failure = self._unit_failed
        self.metrics = build_registry(self)
        self.loop_lag = LoopLag(self.metrics, config.loop.lag_interval_ms / 1000)
        self.notifier = Notifier()
        self._tokens = tokens
        self._cloud_access = cloud
        self.cloud: CloudLink | None = None  # the running link's unit, when the cloud is configured
        self._started_at = time.time()
        self._background: list[asyncio.Task[None]] = []
        self._store_task: asyncio.Task[None] | None = None
        self._up = False
        self.scheduling = "normal"  # how the loop's thread is scheduled (gateway.realtime)
        self.log_ring = LogRing()  # the recent log (GET /api/v1/log), on the root logger while the gateway runs

    def health(self) -> dict[str, Any]:
        units = self.supervisor.units
        s = self.store.stats
        status = self.supervisor.status() if self._up else "starting"
        problems = [p for p in (self.cloud.problem() if self.cloud is not None else None,
                                self.shared.problem() if self.shared is not None else None) if p is not None]
        if status == "ok" and (s.last_error or self.twin.frozen or problems):
            status = "degraded"
        return {
            "status": status,
            "problems": problems,  # what degrades the box beyond a failing unit, the store or the held twin
            "gateway_id": self.config.gateway.id,
            "venue": self.config.gateway.venue,
            "uptime_s": round(time.time() - self._started_at, 1),
            "drivers": {n: u.document() for n, u in units.items() if u.kind == "driver"},
            "services": {n: u.document() for n, u in units.items() if u.kind == "service"},
            "twin": {"version": self.twin.version, "assets": len(self.twin), "changes_from": self.twin.floor,
                     "held": self.twin.frozen, "refused_changes": self.twin.refused_changes},
            "store": {
                "state": "degraded" if s.last_error else "ok", "last_error": s.last_error,
                "committed_seq": s.committed_seq, "committed_rows": s.committed_rows,
                "dropped_rows": s.dropped_rows, "evicted_rows": s.evicted_rows, "used_bytes": s.used_bytes,
                "limit_bytes": int(self.config.store.max_mb * 1024 * 1024), "database_bytes": s.db_bytes,
                "wal_bytes": s.wal_bytes, "disk_free_bytes": s.disk_free_bytes,
            },
            "loop_lag": self.loop_lag.summary(),
            "scheduling": self.scheduling,
            "dmx": {"universes": list(self.dmx.universes), "frame_rate_hz": self.config.dmx.frame_rate_hz,
                    "frames": self.frames.frame, "skipped_frames": self.frames.skipped,
                    "frame_lateness": self.frames.jitter()},
            "readings_total": self.ingest.readings_total,
        }

    def event(self, kind: str, doc: dict[str, Any]) -> None:
        """An event for the cloud (alerts, show events, command answers): into the outbox, never evicted."""
        if self.store.outbox is not None:
            self.store.add_event(event_payload(self.config.gateway.id, kind, doc, time.time()))

    def _fired(self, fired: Fired) -> None:
        """Each effect fired, and each transmitter that did not send it, to the cloud; the latter to the recent
        alerts too."""
        self.event("effect_fired", fired.document())
        for transmitter, status in fired.not_sent().items():
            doc = {"alert": "not_sent", "effect_id": fired.effect_id, "unit": transmitter, "message": status}
            self.alerts.note("not_sent", f"effect {fired.effect_id}: {transmitter} {status}", doc)
            self.event("alert", doc)

    def _unit_failed(self, name: str, kind: str, error: str) -> None:
        """A unit's failure (once per outage) to the cloud and to the recent alerts."""
        doc = {"alert": "unit_failed", "unit": name, "unit_kind": kind, "message": error}
        self.alerts.note("unit_failed", f"{kind} {name} failed: {error}", doc)
        self.event("alert", doc)

    def _cloud_factory(self) -> Callable[[], Unit]:
        assert self.config.cloud is not None and self._cloud_access is not None
        settings, access = self.config.cloud, self._cloud_access

        def make() -> Unit:
            try:
                creds, tls = access()
            except ValueError as exc:
                raise NotReady(str(exc)) from None
            self.cloud = CloudLink(self, settings, creds, tls)
            return self.cloud

        return make

    def _shared_factory(self, section: shared_settings.SharedSection) -> Callable[[], Unit]:
        base, tls = self.config.path.parent, any(b.tls for b in section.parsed_brokers())

        def access() -> tuple[Credentials, ssl.SSLContext | None]:
            creds = credentials(section, base, "show.shared")
            return creds, tls_context(creds, "show.shared") if tls else None

        def make() -> Unit:
            self.shared = SharedShow(self.show, self.twin, section, self.config.gateway.id, self.config.gateway.venue,
                                     access)
            return self.shared

        return make

    def _driver_factory(self, dc: DriverConfig) -> Callable[[], Unit]:
        cls = registry.find(dc.type)
        if cls.TRANSMITS_EFFECTS:
            self.show.expect_transmitter(dc.name)

        def make() -> Unit:
            return cls(DriverContext(dc.name, self.twin, self.ingest, self.dmx, self.frames, self.show,
                                     alerts=self.alerts, data_dir=self.store.path.parent), dc.options)

        return make

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._background.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set. A store that cannot open raises StoreError before anything starts."""
        logging.getLogger().addHandler(self.log_ring)
        try:
            await self._run(stop)
        finally:
            logging.getLogger().removeHandler(self.log_ring)

    async def _run(self, stop: asyncio.Event) -> None:
        # The frame clock's pacing thread and the store's writer share the GIL with the loop; by default a thread
        # that wants it waits up to 5 ms for the holder to let go, the whole budget of a frame slot.
        sys.setswitchinterval(GIL_SWITCH_S)
        priority = self.config.gateway.realtime_priority
        self.scheduling = make_realtime(priority, "the event loop")
        if self.scheduling.startswith("fifo"):  # the pacer too, which wakes the loop for each frame
            self.frames.realtime_priority = priority
        await self.store.open(self.twin)
        if self.compliance is not None:
            await self._restore_compliance(self.compliance)
        self.supervisor.add("api", "service", lambda: ApiService(self, self._tokens))
        if self.config.inference is not None:
            # onnxruntime is loaded only by a box that runs models (some 20 MB resident of its own)
            from gateway.inference.service import InferenceService

            inference = self.config.inference
            self.supervisor.add("inference", "service", lambda: InferenceService(
                inference, self.config.path.parent, self.twin, self.ingest, self.alerts))
        if self.config.cloud is not None:
            self.supervisor.add("cloud", "service", self._cloud_factory())
        if self.config.show.shared is not None:
            self.supervisor.add("shared", "service", self._shared_factory(self.config.show.shared))
            bound_ms = self.config.show.shared.clock_bound_ms  # the clock watch (gateway/show/clock_watch.py)
            self.supervisor.add("clock", "service", lambda: ClockWatch(
                self.show, self.twin, self.alerts, bound_ms=bound_ms,
                clocks=lambda: self.shared.clocks() if self.shared is not None else {},
                unclocked=lambda: self.shared.unclocked() if self.shared is not None else ()))
        if (announce := announcer(self)) is not None:
            self.supervisor.add(UNIT_NAME, "service", announce)
        for dc in self.config.drivers:
            if dc.enabled:
                self.supervisor.add(dc.name, "driver", self._driver_factory(dc), after=dc.after)
        self._forget_removed_units()
        self._store_task = asyncio.get_running_loop().create_task(self.store.run(self.twin), name="store-flush")
        self._spawn(self.loop_lag.run(), "loop-lag")
        self._spawn(self.notifier.watchdog(), "watchdog")
        if self.dmx.universes:
            self.dmx.declare()
            self._spawn(self.dmx.report(), "dmx-report")
            self._spawn(self.frames.run(), "frame-clock")
        if self.config.show.feedback.universe:  # the zones' looks for a visualiser, carried by the DMX outputs
            self._spawn(self.show.looks.feed(self.dmx), "zone-looks")
        self.supervisor.start()
        try:
            # Ready once every unit has started or failed once (the API listens before systemd is told),
            # unless a stop comes first.
            waits = [asyncio.ensure_future(self.supervisor.settled.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waits, timeout=READY_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if not stop.is_set():
                self._up = True
                # What start-up made lives as long as the process: keep it out of every later garbage
                # collection, so a full collection scans only what the running box makes (a loop pause).
                gc.collect()
                gc.freeze()
                self.notifier.notify(f"READY=1\nSTATUS=twin version {self.twin.version}, {len(self.twin)} assets")
                log.info("gateway %s (venue %s) up: %d drivers, twin version %d", self.config.gateway.id,
                         self.config.gateway.venue, len(self.config.drivers), self.twin.version)
                await stop.wait()
        finally:
            await self._shutdown()

    async def _restore_compliance(self, monitor: ComplianceMonitor) -> None:
        """The sound-level windows from the readings the store holds, so a restart mid-show (a watchdog's, a
        power cut's) does not under-read LAeq for the next hour."""
        since = time.time() - WINDOWS_MIN[-1] * 60
        try:
            rows = await asyncio.get_running_loop().run_in_executor(
                None, history.read_recent, self.store.path, ("laeq_db", "lafmax_db"), since)
        except sqlite3.Error as exc:
            log.warning("compliance: the last hour's sound levels could not be read from the store (%s); the "
                        "windows start empty", exc)
            return
        monitor.restore([Reading(ts, asset, metric, value) for ts, asset, metric, value in rows])

    def _forget_removed_units(self) -> None:
        """Drop the twin's state assets of drivers no longer configured, so none shows 'running' forever."""
        configured = {f"{u.kind}:{name}" for name, u in self.supervisor.units.items()}
        for asset in list(self.twin.assets().values()):
            if asset.kind in ("driver", "service") and asset.id not in configured:
                self.twin.remove(asset.id)

    async def _shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        began = time.monotonic()
        try:
            async with asyncio.timeout(STOP_BUDGET_S - 1.0):
                await self.supervisor.stop()
        except TimeoutError:
            log.error("drivers did not stop in time; closing the store anyway")
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # The flush task ends after the write it may be in (never cancelled mid-write), then close writes the rest.
        self.store.stop()
        if self._store_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._store_task), max(0.5, STOP_BUDGET_S - 1.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.5, STOP_BUDGET_S - (time.monotonic() - began))):
                await self.store.close(self.twin)
        self.notifier.close()
        log.info("stopped in %.3f s at twin version %d, telemetry committed to %d", time.monotonic() - began,
                 self.twin.version, self.store.stats.committed_seq)


async def serve(gateway: Gateway) -> None:
    """Run a gateway in the current loop until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
