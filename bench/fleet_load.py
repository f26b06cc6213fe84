"""The fleet load generator: N gateways (boxes, not daemons) in one process, speaking the gateway's exact cloud
protocol (docs/cloud-protocol.md) to a broker, for scale tests of the cloud side.

Each box is its own MQTT client, with the gateway's client id, user name (`{venue}/{id}`) and will; it publishes the
retained `status` birth, a retained twin snapshot, then deltas that continue it, telemetry batches and events, and
answers `cmd/snapshot` as a gateway does. The documents come from the gateway's own code: a real `Twin` folds the
readings into reported state (its snapshot document, its change log and `change_document` make the snapshot and
the deltas), a real `Outbox` on an in-memory copy of the store's schema cuts and encodes the batches (their ids,
fields and readings) and holds the events (`event_payload`, with their ids). Only the envelopes the link writes
inline (the status documents and the delta's `from`/`to`) are restated here; tests/test_fleet_load.py holds them
against a running gateway's.

A ledger keeps what each box had acknowledged by the broker: its batch ids, readings and sequence range, event
ids, the twin's version and the twin itself, and what it sent twice (`resend`: a share of batches and events
published again after their acknowledgement, as a reconnect does), so that a consumer can be checked against it.

    python -m bench.fleet_load --broker mqtt://127.0.0.1:1883 --boxes 200 --rate 500 --seconds 60 --ledger l.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from gateway import __version__
from gateway.cloud import commands
from gateway.cloud.client import Client
from gateway.cloud.settings import Broker, CloudSection, parse_broker, topic_root, user_name
from gateway.database import open_database
from gateway.outbox import Outbox, OutboxSettings, event_payload
from gateway.readings import Reading
from gateway.twin import Twin, change_document, rfc3339

log = logging.getLogger("bench.fleet_load")

DEFAULTS = CloudSection(broker="mqtt://127.0.0.1")  # the gateway's own defaults: batch size, delay, window
CHANGE_LOG = 2_000  # the twin's change log per box: deltas go out every tick, so a short one is enough
METRICS = ("temperature_c", "load_pct", "fan_rpm")
KINDS = ("amplifier", "rack", "fixture", "sensor")
ZONES = ("floor", "balcony", "stage")
CONNECT_S = 30.0
MAX_PAYLOAD = DEFAULTS.max_payload_kb * 1024


@dataclass(frozen=True)
class LoadSettings:
    boxes: int = 10
    boxes_per_venue: int = 10
    assets: int = 20  # per box
    rate: float = 100.0  # readings/s per box; 0: as fast as the broker takes them
    seconds: float = 10.0  # how long to run (the end also comes at `readings`)
    readings: int = 0  # per box, then stop (0: no bound)
    events_per_s: float = 0.5  # per box
    resend: float = 0.0  # the share of batches and events published again once acknowledged
    tick_s: float = 0.1  # how often a box takes its readings (and sends what its outbox holds)
    # How often the readings taken are folded into the twin: a driver's sample interval, one change per asset each
    # time (the gateway folds each driver batch into the twin as it comes).
    fold_s: float = 1.0
    snapshot_s: float = DEFAULTS.snapshot_interval_s  # the retained snapshot is refreshed this often, as the link
    batch_readings: int = DEFAULTS.batch_readings
    batch_delay_ms: int = DEFAULTS.batch_delay_ms
    inflight: int = DEFAULTS.inflight
    prefix: str = "load"  # venues are {prefix}-v000, ...; boxes {prefix}-0000, ...
    seed: int = 1
    progress_s: float = 5.0  # a progress line this often (0: none)
    password: str | None = None  # every box's, with its own user name (a broker's password file holding them)


@dataclass
class Ledger:
    """What one box had acknowledged by the broker."""

    venue: str
    gateway_id: str
    store_id: str
    batches: list[str] = field(default_factory=list)  # batch ids, each once
    readings: int = 0
    last_seq: int = 0  # readings carry 1..last_seq
    events: list[str] = field(default_factory=list)  # event ids, each once
    resent_batches: int = 0
    resent_events: int = 0
    snapshots: int = 0
    snapshot_version: int = 0  # the last snapshot's
    deltas: int = 0
    twin_version: int = 0
    twin: dict[str, Any] = field(default_factory=dict)  # the twin document at the end (GET /api/v1/twin's)

    def document(self) -> dict[str, Any]:
        return {"venue": self.venue, "gateway_id": self.gateway_id, "store_id": self.store_id,
                "batches": self.batches, "readings": self.readings, "last_seq": self.last_seq,
                "events": self.events, "resent_batches": self.resent_batches, "resent_events": self.resent_events,
                "snapshots": self.snapshots, "snapshot_version": self.snapshot_version, "deltas": self.deltas,
                "twin_version": self.twin_version, "twin": self.twin}


def status_online(gateway_id: str, venue: str, protocol: str) -> bytes:
    """The retained birth, as the link publishes it on every connect."""
    return orjson.dumps({"online": True, "gateway_id": gateway_id, "venue": venue, "software": __version__,
                         "protocol": protocol, "since": rfc3339(time.time())})


def status_offline(gateway_id: str, venue: str, reason: str) -> bytes:
    """The will (`connection lost`) and the clean stop's status (`stopped`)."""
    return orjson.dumps({"online": False, "gateway_id": gateway_id, "venue": venue, "reason": reason})


class Box:
    """One simulated gateway: its twin, its outbox, its MQTT client and its ledger."""

    def __init__(self, index: int, settings: LoadSettings, broker: Broker, totals: Totals) -> None:
        self.settings = settings
        self.venue = f"{settings.prefix}-v{index // settings.boxes_per_venue:03d}"
        self.gateway_id = f"{settings.prefix}-{index:04d}"
        self.root = topic_root(self.venue, self.gateway_id)
        self.client_id = f"vg-{self.gateway_id}"[:23]  # the link's default client id
        self._broker = broker
        self._totals = totals
        self._rng = random.Random(settings.seed * 100_003 + index)
        self.twin = Twin(self.gateway_id, self.venue, change_log=CHANGE_LOG)
        self._assets = [f"{KINDS[i % len(KINDS)]}:{index:04d}.{i:03d}" for i in range(settings.assets)]
        for i, asset in enumerate(self._assets):
            self.twin.declare(asset, asset.split(":")[0], ZONES[i % len(ZONES)], "venue")
        self._db = open_database(Path(":memory:"), "off")  # the store's schema: the outbox's table and meta
        store_id = self._db.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
        self.outbox = Outbox(OutboxSettings(self.gateway_id, settings.batch_readings,
                                            settings.batch_delay_ms / 1000, 2**62, math.inf), store_id)
        self.outbox.online = True
        self.ledger = Ledger(self.venue, self.gateway_id, store_id)
        self._seq = 0  # the last reading's sequence number
        self._sent_version = 0  # the twin version the broker holds (snapshot and deltas)
        self._events = 0  # events made
        self._snapshot_wanted = False
        self._unfolded: list[Reading] = []
        self._window = asyncio.Semaphore(settings.inflight)
        self._sends: set[asyncio.Task[None]] = set()
        self._client: Client | None = None

    # -- taking readings -----------------------------------------------------------------------------
    def take(self, count: int, now: float) -> None:
        """`count` readings into the outbox (cut into batches as the store does), held for the next fold."""
        if count <= 0:
            return
        rng, assets = self._rng, self._assets
        seq = self._seq  # asset and metric by sequence number: the same readings however they are taken
        readings = [Reading(now + i * 1e-6, assets[(seq + i) % len(assets)], METRICS[(seq + i) % len(METRICS)],
                            round(rng.uniform(20.0, 80.0), 3)) for i in range(count)]
        self._unfolded += readings
        self.outbox.add(self._db, readings, self._seq + 1)
        self._seq += count

    def fold(self) -> None:
        """The readings taken since the last fold into the twin's reported state: one change per asset."""
        if self._unfolded:
            self.twin.apply_readings(self._unfolded, "venue")
            self._unfolded = []

    def event(self, now: float) -> None:
        """A sound-level alert, through the outbox as the gateway's events go."""
        level = round(self._rng.uniform(90.0, 104.0), 1)
        state = "ok" if level < 99 else "warning" if level < 102 else "over"
        doc = {"alert": "sound_level", "zone": self._rng.choice(ZONES), "limit": "show", "limit_db": 102.0,
               "level_db": level, "state": state, "was": "ok"}
        self.outbox.add_events(self._db, [event_payload(self.gateway_id, "alert", doc, now)])
        self._events += 1

    # -- sending -------------------------------------------------------------------------------------
    def mqtt_client(self) -> Client:
        """The link's client: its id, its user name, its will, MQTT 5."""
        return Client(self._broker.host, self._broker.port, identifier=self.client_id,
                      username=user_name(self.venue, self.gateway_id), password=self.settings.password, logger=log,
                      protocol=aiomqtt.ProtocolVersion.V5, clean_start=True, timeout=CONNECT_S,
                      will=aiomqtt.Will(f"{self.root}/status", status_offline(self.gateway_id, self.venue,
                                                                               "connection lost"), qos=1, retain=True),
                      max_inflight_messages=self.settings.inflight + 16)

    async def birth(self, client: Client) -> None:
        self._client = client
        await client.publish(f"{self.root}/status", status_online(self.gateway_id, self.venue, "5"), qos=1,
                             retain=True, timeout=math.inf)
        await client.subscribe(f"{self.root}/cmd/snapshot", qos=1)
        await self.snapshot()

    async def snapshot(self) -> int:
        assert self._client is not None
        self._sent_version = self.twin.version
        await self._client.publish(f"{self.root}/twin/snapshot", self.twin.snapshot_json(), qos=1, retain=True,
                                   timeout=math.inf)
        self.ledger.snapshots += 1
        self.ledger.snapshot_version = self._sent_version
        return self._sent_version

    async def deltas(self) -> None:
        """Every change since what the broker holds, in deltas of the link's size, each continuing the last."""
        assert self._client is not None
        while changes := self.twin.changes_since(self._sent_version, DEFAULTS.delta_max_changes):
            to = changes[-1][0]
            await self._client.publish(f"{self.root}/twin/delta", orjson.dumps({
                "gateway_id": self.gateway_id, "from": self._sent_version, "to": to,
                "changes": [change_document(c) for c in changes]}), qos=1, timeout=math.inf)
            self.ledger.deltas += 1
            self._sent_version = to

    @property
    def seq(self) -> int:
        """The last reading's sequence number."""
        return self._seq

    def taken(self, force: bool = False) -> list[tuple[str, int, int | None, bytes]]:
        """What the outbox holds, oldest first, taken out of it: (kind, readings, first sequence number, payload);
        `force` cuts the last batch first, as a clean stop does."""
        if force:
            self.outbox.cut(self._db, force=True)
        rows = self._db.execute("SELECT id, kind, rows, first_seq, payload FROM outbox ORDER BY id").fetchall()
        if rows:
            self._db.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
        return [row[1:] for row in rows]

    async def drain(self, force: bool = False) -> None:
        """Publish what the outbox holds, oldest first, with the drain's window of messages in flight."""
        for kind, count, first, payload in self.taken(force):
            await self._window.acquire()
            task = asyncio.create_task(self._send(kind, count, first, payload))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, kind: str, count: int, first: int | None, payload: bytes) -> None:
        assert self._client is not None
        topic = f"{self.root}/{'events' if kind == 'event' else 'telemetry'}"
        try:
            await self._client.publish(topic, payload, qos=1, timeout=math.inf)
            again = self._rng.random() < self.settings.resend
            if again:  # as a reconnect sends what was in flight: the same message, the same id
                await self._client.publish(topic, payload, qos=1, timeout=math.inf)
        finally:
            self._window.release()
        ledger, totals = self.ledger, self._totals
        if kind == "event":
            ledger.events.append(orjson.loads(payload)["event_id"])
            ledger.resent_events += again
            totals.events += 1
        else:
            assert first is not None
            ledger.batches.append(f"{self.ledger.store_id}:{first}-{first + count - 1}")
            ledger.readings += count
            ledger.last_seq = max(ledger.last_seq, first + count - 1)
            ledger.resent_batches += again
            totals.readings += count
            totals.batches += 1
        totals.resent += again

    async def settle(self) -> None:
        """Wait for every publish in flight to be acknowledged."""
        while self._sends:
            await asyncio.gather(*list(self._sends))

    async def commands(self, client: Client) -> None:
        """Answer `cmd/snapshot` as the gateway does: `command_result` with the version, and a fresh retained
        snapshot with the next tick."""
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if not payload or message.retain:
                continue
            name = str(message.topic)[len(self.root) + 1:]
            try:
                command = commands.parse(name, payload, MAX_PAYLOAD)
            except commands.CommandError as exc:
                self.outbox.add_events(self._db, [event_payload(self.gateway_id, "command_error", {
                    "command": name, "request_id": None, "error": exc.code, "message": str(exc)}, time.time())])
                continue
            self._snapshot_wanted = True
            self.outbox.add_events(self._db, [event_payload(self.gateway_id, "command_result", {
                "command": name, "request_id": command.request_id, "version": self.twin.version}, time.time())])

    # -- a run ---------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, began: float) -> None:
        """Connect, be born, then take and send readings, events and deltas at the configured rates until `stop`
        is set or the run's end; then send what waits and say `stopped`, as a clean stop does."""
        s = self.settings
        limit = s.readings or 2**62
        async with self.mqtt_client() as client:
            self._totals.online += 1
            await self.birth(client)
            listener = asyncio.create_task(self.commands(client))
            try:
                await asyncio.sleep(self._rng.uniform(0, s.tick_s))  # the boxes' ticks spread over the tick
                ticks = 0
                fold_at = time.monotonic() - began + s.fold_s
                snapshot_at = time.monotonic() + s.snapshot_s
                while not stop.is_set() and self._seq < limit:
                    now, elapsed = time.time(), time.monotonic() - began
                    if elapsed >= s.seconds:
                        break
                    due = s.batch_readings if s.rate <= 0 else int(s.rate * elapsed) - self._seq
                    self.take(min(due, limit - self._seq), now)
                    if elapsed >= fold_at:
                        self.fold()
                        fold_at += s.fold_s
                    for _ in range(int(s.events_per_s * elapsed) - self._events):
                        self.event(now)
                    # as the link: asked for, or the periodic one; the deltas go on from it
                    if self._snapshot_wanted or time.monotonic() >= snapshot_at:
                        self._snapshot_wanted = False
                        await self.snapshot()
                        snapshot_at = time.monotonic() + s.snapshot_s
                    await self.deltas()
                    await self.drain()
                    ticks += 1
                    await asyncio.sleep(0 if s.rate <= 0 else max(0.0, began + ticks * s.tick_s - time.monotonic()))
                self.fold()
                await self.deltas()
                await self.drain(force=True)
                await self.settle()
                self.ledger.twin_version = self.twin.version
                self.ledger.twin = orjson.loads(self.twin.snapshot_json())
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await client.publish(f"{self.root}/status", status_offline(self.gateway_id, self.venue, "stopped"),
                                 qos=1, retain=True, timeout=math.inf)
        self._totals.online -= 1


@dataclass
class Totals:
    online: int = 0
    readings: int = 0
    batches: int = 0
    events: int = 0
    resent: int = 0


@dataclass
class Fleet:
    """A run's boxes and their ledgers."""

    settings: LoadSettings
    boxes: list[Box]
    totals: Totals
    seconds: float = 0.0

    def ledger(self) -> dict[str, Any]:
        t = self.totals
        settings = {k: v for k, v in asdict(self.settings).items() if k != "password"}  # never into a file
        return {"settings": settings, "seconds": self.seconds, "readings": t.readings,
                "batches": t.batches, "events": t.events, "resent": t.resent,
                "boxes": [b.ledger.document() for b in self.boxes]}


def fleet(settings: LoadSettings, broker: Broker) -> Fleet:
    totals = Totals()
    return Fleet(settings, [Box(i, settings, broker, totals) for i in range(settings.boxes)], totals)


async def run(load: Fleet, stop: asyncio.Event | None = None,
              progress: Callable[[str], None] | None = None) -> Fleet:
    """Run every box of `load` until its end (or `stop`), printing progress with `progress`; the boxes' ledgers
    hold what the broker acknowledged."""
    stop = stop or asyncio.Event()
    began = time.monotonic()
    tasks = [asyncio.create_task(box.run(stop, began)) for box in load.boxes]
    reporter = asyncio.create_task(_progress(load, began, progress)) if progress and load.settings.progress_s else None
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
    load.seconds = time.monotonic() - began
    return load


async def _progress(load: Fleet, began: float, say: Callable[[str], None]) -> None:
    last, last_at = 0, began
    while True:
        await asyncio.sleep(load.settings.progress_s)
        t, now = load.totals, time.monotonic()
        say(f"fleet load: {now - began:5.0f} s, {t.online} boxes online, {t.readings:,} readings acknowledged "
            f"({(t.readings - last) / (now - last_at):,.0f}/s lately), {t.batches:,} batches, {t.events:,} events, "
            f"{t.resent:,} sent twice")
        last, last_at = t.readings, now


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.fleet_load", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = LoadSettings()
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST[:PORT]")
    p.add_argument("--boxes", type=int, default=d.boxes, help=f"simulated gateways (default {d.boxes})")
    p.add_argument("--boxes-per-venue", type=int, default=d.boxes_per_venue, metavar="N",
                   help=f"gateways per venue (default {d.boxes_per_venue})")
    p.add_argument("--assets", type=int, default=d.assets, help=f"assets per box (default {d.assets})")
    p.add_argument("--rate", type=float, default=d.rate,
                   help=f"readings/s per box (default {d.rate:g}; 0: as fast as the broker takes them)")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"how long to run (default {d.seconds:g})")
    p.add_argument("--readings", type=int, default=d.readings, help="readings per box, then stop (default: no bound)")
    p.add_argument("--events-per-s", type=float, default=d.events_per_s, metavar="N",
                   help=f"events per box per second (default {d.events_per_s:g})")
    p.add_argument("--resend", type=float, default=d.resend, metavar="SHARE",
                   help="the share of batches and events sent twice, as a reconnect does (default 0)")
    p.add_argument("--fold-s", type=float, default=d.fold_s, metavar="S",
                   help=f"fold the readings into the twin this often: a change per asset (default {d.fold_s:g})")
    p.add_argument("--snapshot-s", type=float, default=d.snapshot_s, metavar="S",
                   help=f"refresh the retained snapshot this often (default {d.snapshot_s:g}, the gateway's)")
    p.add_argument("--batch-readings", type=int, default=d.batch_readings, metavar="N",
                   help=f"readings per batch at most (default {d.batch_readings}, the gateway's)")
    p.add_argument("--prefix", default=d.prefix, help=f"venue and gateway name prefix (default {d.prefix!r})")
    p.add_argument("--password-env", metavar="NAME",
                   help="the environment variable holding the boxes' password (each box its own user name)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--progress-s", type=float, default=d.progress_s, metavar="S",
                   help=f"a progress line this often (default {d.progress_s:g}; 0: none)")
    p.add_argument("--ledger", type=Path, metavar="FILE", help="write the ledger (JSON) here at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        broker = parse_broker(args.broker)
        if args.boxes < 1 or args.boxes_per_venue < 1 or args.assets < 1:
            raise ValueError("--boxes, --boxes-per-venue and --assets must be at least 1")
        if not 0 <= args.resend <= 1:
            raise ValueError("--resend is a share: 0 to 1")
        if args.rate < 0 or args.events_per_s < 0:
            raise ValueError("--rate and --events-per-s must not be negative")
        if min(args.seconds, args.fold_s, args.snapshot_s) <= 0:
            raise ValueError("--seconds, --fold-s and --snapshot-s must be positive")
        if not 1 <= args.batch_readings <= 20_000:
            raise ValueError("--batch-readings: 1 to 20000, as cloud.batch_readings")
        password = (os.environ.get(args.password_env) or None) if args.password_env else None
        if args.password_env and password is None:
            raise ValueError(f"environment variable {args.password_env} is not set or empty")
    except ValueError as exc:
        print(f"fleet load: {exc}", file=sys.stderr)
        return 2
    settings = LoadSettings(boxes=args.boxes, boxes_per_venue=args.boxes_per_venue, assets=args.assets,
                            rate=args.rate, seconds=args.seconds, readings=args.readings,
                            events_per_s=args.events_per_s, resend=args.resend, fold_s=args.fold_s,
                            snapshot_s=args.snapshot_s, batch_readings=args.batch_readings,
                            prefix=args.prefix, seed=args.seed, progress_s=args.progress_s, password=password)

    async def go() -> Fleet:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run(fleet(settings, broker), stop, lambda line: print(line, flush=True))

    try:
        done = asyncio.run(go())
    except aiomqtt.MqttError as exc:
        print(f"fleet load: the broker {broker}: {exc}", file=sys.stderr)
        return 1
    t = done.totals
    print(f"fleet load: {len(done.boxes)} boxes sent {t.readings:,} readings in {t.batches:,} batches and "
          f"{t.events:,} events in {done.seconds:.1f} s ({t.readings / done.seconds:,.0f} readings/s), "
          f"{t.resent:,} sent twice", flush=True)
    if args.ledger:
        args.ledger.write_bytes(orjson.dumps(done.ledger()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
