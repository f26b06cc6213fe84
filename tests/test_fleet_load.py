"""The fleet load generator (bench/fleet_load.py) against a real Mosquitto: its boxes publish what a running gateway
publishes, document for document, and the reference mirror ends with exactly the ledger (the twins equal, each
reading counted once, the batches and events sent twice dropped and counted), in memory and, with two replicas
sharing the load, in a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from bench import fleet_load
from gateway.cloud.mirror_db import Database
from gateway.cloud.mirror_fleet import FleetMirror
from gateway.cloud.settings import parse_broker, topic_root, user_name
from peers.mosquitto import Mosquitto
from peers.postgres import Postgres
from tests.cloud import cloud_config, mirroring, running, until

Message = tuple[str, bool, dict[str, Any]]  # (the topic under the gateway's root, retained, the document)


@contextlib.asynccontextmanager
async def capture(port: int) -> AsyncIterator[dict[str, list[Message]]]:
    """Every gateway's messages as the broker delivers them (retain as published), by gateway root."""
    seen: dict[str, list[Message]] = {}

    async def listen(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parts = str(message.topic).split("/", 3)
            assert isinstance(message.payload, bytes)
            if parts[3] != "cmd/snapshot" and message.payload:
                seen.setdefault("/".join(parts[:3]), []).append(
                    (parts[3], message.retain, orjson.loads(message.payload)))

    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("venues/#", qos=1, options=None)
        task = asyncio.create_task(listen(client))
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def first(messages: list[Message], what: str, **match: Any) -> Message:
    return next(m for m in messages if m[0] == what and all(m[2].get(k) == v for k, v in match.items()))


STATES = ("reported", "desired", "assets")  # what a gateway holds, not the protocol: compared apart


def has(seen: dict[str, list[Message]], root: str, what: str, count: int = 1, **match: Any) -> Callable[[], bool]:
    return lambda: sum(m[0] == what and all(m[2].get(k) == v for k, v in match.items())
                       for m in seen.get(root, ())) >= count


def shape(doc: Any) -> Any:
    """A document's keys, recursively, in order (a list by its first item); leaves by kind (null and strings
    alike: a zone or owner may be either)."""
    if isinstance(doc, dict):
        return [(k, "state" if k in STATES else shape(v)) for k, v in doc.items()]
    if isinstance(doc, list):
        return [shape(doc[0])] if doc else []
    return "number" if isinstance(doc, int | float) and not isinstance(doc, bool) else \
        "bool" if isinstance(doc, bool) else "text"


async def test_a_load_box_publishes_what_a_running_gateway_publishes(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = fleet_load.LoadSettings(boxes=1, rate=400, seconds=60, events_per_s=0, fold_s=0.1, progress_s=0)
    load = fleet_load.fleet(settings, parse_broker(mosquitto.url))
    box = load.boxes[0]
    stop = asyncio.Event()
    async with capture(mosquitto.port) as seen, aiomqtt.Client("127.0.0.1", mosquitto.port) as cloud:
        async with running(cloud_config(tmp_path, mosquitto.url, sample_s=0.05)):
            runner = asyncio.create_task(fleet_load.run(load, stop))
            real, fake = topic_root("hall", "gw-1"), box.root
            for root in (real, fake):
                await until(has(seen, root, "telemetry"), 10, f"{root}'s batch")
                await until(has(seen, root, "twin/delta"), 10, f"{root}'s delta")
                await cloud.publish(f"{root}/cmd/snapshot", b'{"request_id": "r1"}', qos=1)
            for root in (real, fake):
                await until(has(seen, root, "events", kind="command_result"), 10, f"{root}'s command_result")
                await until(has(seen, root, "twin/snapshot", 2), 10, f"{root}'s fresh snapshot")
            stop.set()
            await runner
        await until(lambda: all(m[0] == "status" and not m[2]["online"] for m in (seen[real][-1], seen[fake][-1])),
                    10, "both stopped")
    ours, theirs = seen[fake], seen[real]
    for what, match in (("status", {"online": True}), ("status", {"online": False}), ("twin/snapshot", {}),
                        ("twin/delta", {}), ("telemetry", {}), ("events", {"kind": "command_result"})):
        a, b = first(ours, what, **match), first(theirs, what, **match)
        assert a[1] == b[1], f"{what}: retained {a[1]}, the gateway's {b[1]}"
        assert shape(a[2]) == shape(b[2]), what
    for snap in (first(ours, "twin/snapshot")[2], first(theirs, "twin/snapshot")[2]):  # the asset entries alike
        assert {tuple(a) for a in snap["assets"].values()} == {
            ("kind", "zone", "owner", "reported", "desired", "version", "updated_at")}
    for messages in (ours, theirs):
        batch = first(messages, "telemetry")[2]
        _, lo, hi = re.fullmatch(r"([0-9a-f]{12}):(\d+)-(\d+)", batch["batch_id"]).groups()  # type: ignore[union-attr]
        assert (int(lo), int(hi)) == (batch["first_seq"], batch["readings"][-1][0])
        answer = first(messages, "events", kind="command_result")[2]
        assert answer["request_id"] == "r1" and answer["command"] == "cmd/snapshot"
        stopped = first(messages, "status", online=False)[2]
        assert stopped["reason"] == "stopped"
    assert first(ours, "telemetry")[2]["fields"] == first(theirs, "telemetry")[2]["fields"]
    assert first(ours, "status", online=True)[2]["protocol"] == "5"
    assert box.ledger.snapshots == 2 and box.ledger.twin_version == box.twin.version
    # the will: the documents of a lost connection and a clean stop differ only in the reason
    assert orjson.loads(box.mqtt_client()._client._will_payload) == {
        **first(ours, "status", online=False)[2], "reason": "connection lost"}
    assert box.mqtt_client()._client._username == user_name(box.venue, box.gateway_id).encode()


async def test_the_mirror_ends_with_exactly_the_ledger(mosquitto: Mosquitto) -> None:
    settings = fleet_load.LoadSettings(boxes=6, boxes_per_venue=3, rate=3000, seconds=1.0, events_per_s=8,
                                       resend=0.25, fold_s=0.2, snapshot_s=0.4, progress_s=0.5)
    load = fleet_load.fleet(settings, parse_broker(mosquitto.url))
    lines: list[str] = []
    async with mirroring(mosquitto.url) as mirror:
        await fleet_load.run(load, progress=lines.append)
        ledgers = [box.ledger for box in load.boxes]
        await until(lambda: all((g := mirror.gateways.get((x.venue, x.gateway_id))) is not None
                                and g.status.get("online") is False and g.readings == x.readings
                                and g.events_total == len(x.events) for x in ledgers), 10, "the mirror to catch up")
    assert {x.venue for x in ledgers} == {"load-v000", "load-v001"}
    assert sum(x.resent_batches + x.resent_events for x in ledgers) > 0
    for x in ledgers:
        g = mirror.gateways[(x.venue, x.gateway_id)]
        assert g.version == x.twin_version and g.assets == x.twin["assets"] and g.gaps == 0
        assert x.snapshots >= 2  # the periodic snapshot, the deltas going on from it
        assert g.readings == x.readings == x.last_seq and g.seqs == [[1, x.last_seq]] and g.overlaps == 0
        assert g.batches == len(x.batches) == len(set(x.batches))
        assert g.events_total == len(x.events) == len(set(x.events)) >= 5
        assert g.duplicates == x.resent_batches + x.resent_events
    assert lines and "boxes online" in lines[0]
    assert load.totals.readings == sum(x.readings for x in ledgers) > 6 * 2000


async def test_replicas_into_postgresql_end_with_exactly_the_ledger(mosquitto: Mosquitto) -> None:
    """Two replicas of the fleet mirror sharing the load (MQTT 5 shared subscription) into a real PostgreSQL."""
    with Postgres(options={"fsync": "off"}) as pg:
        database = pg.url  # the server is the test's own
        settings = fleet_load.LoadSettings(boxes=4, boxes_per_venue=2, rate=3000, seconds=0.8, events_per_s=8,
                                           resend=0.25, fold_s=0.2, progress_s=0)
        load = fleet_load.fleet(settings, parse_broker(mosquitto.url))
        replicas = [FleetMirror(parse_broker(mosquitto.url), Database(database), client_id=f"fleet-{i}",
                                share="fleet") for i in range(2)]
        tasks = [asyncio.create_task(r.run()) for r in replicas]
        reader = Database(database)
        try:
            await until(lambda: all(r.connected.is_set() for r in replicas), 10, "both replicas subscribed")
            await fleet_load.run(load)
            ledgers = [box.ledger for box in load.boxes]
            total = sum(x.readings for x in ledgers)
            await until(lambda: sum(r.stored.readings for r in replicas) >= total, 15, "every reading stored")
            assert all(r.stored.readings > 0 for r in replicas)  # the load was shared
            summaries = {(g["venue"], g["gateway_id"]): g for g in await reader.gateways()}
            for x in ledgers:
                rows: list[int] = []
                after: tuple[float, int] | None = None
                while page := await reader.telemetry(x.venue, x.gateway_id, after=after, limit=5000):
                    rows += [r[0] for r in page]
                    after = (page[-1][1], page[-1][0])
                assert sorted(rows) == list(range(1, x.last_seq + 1))  # every reading once
                (twin,) = await reader.twins(x.venue, x.gateway_id)
                assert twin.version == x.twin_version and twin.document["assets"] == x.twin["assets"]
                telemetry = summaries[(x.venue, x.gateway_id)]["telemetry"]
                assert telemetry["batches"] == len(x.batches) and telemetry["readings"] == x.readings
                assert telemetry["duplicates"] == x.resent_batches + x.resent_events
                assert summaries[(x.venue, x.gateway_id)]["events"] == len(x.events)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for db in (reader, *(r.database for r in replicas)):
                await db.close()
