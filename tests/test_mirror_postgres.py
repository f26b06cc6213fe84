"""The fleet mirror on a real PostgreSQL (peers/postgres.py) and a real Mosquitto: idempotent writes, twins rebuilt
from the database however the deltas interleave, replicas sharing the load, a replica killed with SIGKILL under load
and started again (nothing lost, nothing doubled), the database going away and coming back, and a real gateway's
twin from the database equal to the in-memory mirror's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import psycopg
import pytest

from gateway import cli
from gateway.cloud import mirror_db, mirror_fleet
from gateway.cloud.mirror import GatewayMirror
from gateway.cloud.mirror_db import Database, DatabaseUnavailable, Item, SchemaTooNew
from gateway.cloud.mirror_fleet import DatabaseView, FleetMirror
from gateway.cloud.mirror_http import Unavailable, app
from gateway.cloud.settings import parse_broker
from peers.mosquitto import Mosquitto
from peers.postgres import Postgres
from tests.cloud import cloud_config, mirroring, running, until
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
NAMES = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[Postgres]:
    with Postgres(options={"fsync": "off"}) as pg:
        yield pg


@pytest.fixture
def postgres(server: Postgres) -> str:
    """A new schema on the module's server (quicker to make than a database): the URL that works in it."""
    if server.proc is None:  # a test stopped it and failed before starting it again
        server.start()
    name = f"t{next(NAMES)}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}".encode())
    return f"{server.url}?options=-csearch_path%3D{name}"


def change(version: int, asset: str, reported: dict[str, Any] | None, removed: bool = False) -> dict[str, Any]:
    return {"version": version, "asset": asset, "at": f"2026-01-01T00:00:{version % 60:02d}Z", "kind": "rack",
            "zone": None, "owner": "venue", "reported": reported, "desired": None, "removed": removed}


def history(venue: str, gateway_id: str, deltas: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A snapshot at version 10 and `deltas` deltas of two changes each after it (merge patches, a removal)."""
    snapshot = {"gateway_id": gateway_id, "venue": venue, "version": 10, "taken_at": "2026-01-01T00:00:00Z",
                "assets": {"rack:1": {"kind": "rack", "zone": None, "owner": "venue",
                                      "reported": {"temp": 30, "fan": 1}, "desired": {}, "version": 9,
                                      "updated_at": "2026-01-01T00:00:00Z"}}}
    out, version = [], 10
    for i in range(deltas):
        changes = [change(version + 1, "rack:1", {"temp": 30 + i, "fan": None if i % 3 == 0 else i}),
                   change(version + 2, f"rack:{2 + i % 4}", {"load": i}, removed=i % 5 == 4)]
        out.append({"gateway_id": gateway_id, "from": version, "to": version + 2, "changes": changes})
        version += 2
    return snapshot, out


def folded(snapshot: dict[str, Any], deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """The twin as the in-memory mirror rebuilds it from the snapshot and the deltas in order."""
    gw = GatewayMirror(snapshot["venue"], snapshot["gateway_id"])
    gw.snapshot(orjson.loads(orjson.dumps(snapshot)))
    for d in deltas:
        assert gw.delta(orjson.loads(orjson.dumps(d)))
    return gw.twin()


def batch(gateway_id: str, first: int, count: int = 20) -> dict[str, Any]:
    readings = [[first + i, 1.7e9 + first + i, f"rack:{i % 2}", "temp", 20.0 + i] for i in range(count)]
    return {"batch_id": f"store-1:{first}-{first + count - 1}", "gateway_id": gateway_id, "first_seq": first,
            "fields": ["seq", "ts", "asset", "metric", "value"], "readings": readings}


async def test_writes_are_idempotent_and_twins_fold_deltas_however_the_replicas_interleave(postgres: str) \
        -> None:
    one, two = Database(postgres), Database(postgres)
    await one.open()
    await two.open()  # the schema is there: the second replica finds it
    try:
        first = await one.write([Item("hall", "gw-1", "telemetry", batch("gw-1", 1)),
                                 Item("hall", "gw-1", "telemetry", batch("gw-1", 1))])  # twice in one group
        again = await two.write([Item("hall", "gw-1", "telemetry", batch("gw-1", 1)),
                                 Item("hall", "gw-1", "events", {"event_id": "e1", "kind": "alert"})])
        assert (first.batches, first.readings, first.duplicates) == (1, 20, 1)
        assert (again.batches, again.events, again.duplicates) == (0, 1, 1)
        assert len(await one.telemetry("hall", "gw-1", limit=100)) == 20

        snapshot, deltas = history("hall", "gw-1", 12)
        await one.write([Item("hall", "gw-1", "twin/snapshot", snapshot)])
        order = list(range(12))
        random.Random(5).shuffle(order)
        held_back = order.pop(order.index(4))
        for n, i in enumerate(order):  # the replicas write the deltas out of order, each some of them
            await (one if n % 2 else two).write([Item("hall", "gw-1", "twin/delta", deltas[i])])
        (twin,) = await two.twins("hall", "gw-1")
        assert twin.version == 18 and twin.held_to == 34 and twin.behind == 16  # delta 4 (18 -> 20) is missing
        assert twin.document == folded(snapshot, deltas[:4])
        assert await one.gaps(await _gids(postgres)) == {1: ("hall", "gw-1", 18, 34)}
        dup = await one.write([Item("hall", "gw-1", "twin/delta", deltas[held_back]),
                               Item("hall", "gw-1", "twin/delta", deltas[3])])
        assert dup.changes == 2 and dup.duplicates == 2
        (twin,) = await one.twins("hall")
        assert twin.behind == 0 and twin.document == folded(snapshot, deltas)
        assert await one.gaps(await _gids(postgres)) == {}
        with psycopg.connect(postgres) as conn:
            counts = conn.execute("SELECT (SELECT count(*) FROM mirror_readings), (SELECT count(*) FROM "
                                  "mirror_changes), (SELECT duplicates FROM mirror_gateways)").fetchone()
        assert counts == (20, 24, 4)
    finally:
        await one.close()
        await two.close()


async def _gids(postgres: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(postgres) as conn:
        return [r[0] for r in await (await conn.execute("SELECT gid FROM mirror_gateways")).fetchall()]


def replica(mosquitto: Mosquitto, postgres: str, name: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "mirror", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--broker",
         mosquitto.url, "--database", postgres, "--share", "fleet", "--client-id", name, "--serve",
         f"127.0.0.1:{port}", "--quiet"], env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response)


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], seconds: float = 15) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return get(port, path)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the replica did not serve: {proc.stderr.read() if proc.stderr else ''!r}") \
                    from None
            time.sleep(0.1)


async def test_replicas_share_the_load_and_one_killed_under_load_loses_and_doubles_nothing(
        mosquitto: Mosquitto, postgres: str) -> None:
    port = free_port()
    killed = replica(mosquitto, postgres, "replica-0", port)
    async with fleet(mosquitto.url, postgres, "replica-1", share="fleet") as survivor:
        try:
            await asyncio.to_thread(wait_http, port, "/mirror", killed)
            await until(lambda: get(port, "/mirror")["connected"], 10, "the other replica subscribed")
            snapshot, deltas = history("hall", "gw-1", 40)
            batches = [batch(f"gw-{g}", 1 + 20 * n) for n in range(150) for g in (1, 2)]
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="boxes") as boxes:
                async def send(n: int) -> None:
                    doc = batches[n]
                    await boxes.publish(f"venues/hall/{doc['gateway_id']}/telemetry", orjson.dumps(doc), qos=1)
                    if n % 7 == 0:  # sent again, as after a reconnect
                        await boxes.publish(f"venues/hall/{doc['gateway_id']}/telemetry", orjson.dumps(doc), qos=1)
                    if n < len(deltas):
                        await boxes.publish("venues/hall/gw-1/twin/delta", orjson.dumps(deltas[n]), qos=1)
                        await boxes.publish("venues/hall/gw-1/events", orjson.dumps(
                            {"event_id": f"e{n}", "gateway_id": "gw-1", "kind": "alert", "alert": "test"}), qos=1)

                await boxes.publish("venues/hall/gw-1/status", orjson.dumps({"online": True, "gateway_id": "gw-1"}),
                                    qos=1, retain=True)
                await boxes.publish("venues/hall/gw-1/twin/snapshot", orjson.dumps(snapshot), qos=1, retain=True)
                await asyncio.gather(*(send(n) for n in range(150)))  # a burst: the replicas hold it as they write
                killed.send_signal(signal.SIGKILL)  # mid-load, as by a crash or the OOM killer
                killed.wait(5)
                await asyncio.gather(*(send(n) for n in range(150, 300)))
                killed = replica(mosquitto, postgres, "replica-0", port)  # started again as systemd would
            await asyncio.to_thread(wait_http, port, "/mirror", killed)

            async def stored() -> tuple[int, ...]:
                async with await psycopg.AsyncConnection.connect(postgres) as conn:
                    row = await (await conn.execute(
                        "SELECT (SELECT count(*) FROM mirror_batches), (SELECT count(*) FROM mirror_readings), "
                        "(SELECT count(*) FROM mirror_events), (SELECT count(*) FROM (SELECT gid, seq FROM "
                        "mirror_readings GROUP BY gid, seq HAVING count(*) > 1) d)")).fetchone()
                assert row is not None
                return tuple(row)

            deadline = time.monotonic() + 20
            while (found := await stored()) != (300, 6000, 40, 0):  # nothing lost, nothing doubled
                assert time.monotonic() < deadline, f"stored (batches, readings, events, doubled): {found}"
                await asyncio.sleep(0.1)
            assert survivor.stored.readings > 0  # it took its share (the killed one's waited in its session)
            twins = await asyncio.to_thread(get, port, "/venues/hall/twins")
            assert [t["mirror"]["behind"] for t in twins["twins"]] == [0]
            assert {k: v for k, v in twins["twins"][0].items() if k != "mirror"} == folded(snapshot, deltas)
            assert (await asyncio.to_thread(get, port, "/gateways/hall/gw-1"))["online"] is True
            series = "/gateways/hall/gw-2/history/telemetry?asset=rack:1&metric=temp"
            page = await asyncio.to_thread(get, port, f"{series}&limit=500")
            assert len(page["readings"]) == 500 and page["next"]
            rest = await asyncio.to_thread(get, port, f"{series}&after={page['next']}")
            assert len(rest["readings"]) == 1000 and rest["next"] is None
            assert [r[0] for r in page["readings"] + rest["readings"]] == list(range(2, 3001, 2))
        finally:
            killed.terminate()
            killed.wait(10)


@contextlib.asynccontextmanager
async def fleet(url: str, database: str, client_id: str, **options: Any) -> AsyncIterator[FleetMirror]:
    mirror = FleetMirror(parse_broker(url), Database(database), client_id=client_id, **options)
    task = asyncio.create_task(mirror.run())
    try:
        await asyncio.wait_for(mirror.connected.wait(), 10)
        yield mirror
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await mirror.database.close()


async def test_a_real_gateway_twin_from_the_database_equals_the_in_memory_mirror_through_a_database_outage(
        tmp_path: Path, mosquitto: Mosquitto, server: Postgres, postgres: str) -> None:
    async with fleet(mosquitto.url, postgres, "fleet-1") as stored, mirroring(mosquitto.url) as memory:
        async with running(cloud_config(tmp_path, mosquitto.url, sample_s=0.05)):
            await until(lambda: stored.stored.readings > 20, 10, "telemetry in the database")
            view = DatabaseView(stored)
            for _ in range(mirror_db.READERS):  # every reading connection opened before the outage
                await view.gateways(None)
            server.stop()  # the database goes away: nothing is acknowledged, the broker holds the rest
            await until(lambda: stored.database_error is not None, 10, "the outage noticed")
            with pytest.raises(Unavailable, match="the database is unavailable"):  # the HTTP answer: a 503
                await view.gateways(None)
            await asyncio.sleep(0.5)
            server.start()
            await until(lambda: stored.database_error is None, 15, "the database back")
            assert [g["gateway_id"] for g in await view.gateways(None)] == ["gw-1"]  # not a connection of before
        mirrored = memory.gateways[("hall", "gw-1")]
        await until(lambda: mirrored.status.get("online") is False, 10, "the gateway's last word")

        async def same() -> bool:  # the gateway stopped: both mirrors settle on what it sent
            twins = await stored.database.twins("hall", "gw-1")
            async with await psycopg.AsyncConnection.connect(postgres) as conn:
                row = await (await conn.execute("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM "
                                                "mirror_readings")).fetchone()
            return bool(twins) and twins[0].document == mirrored.twin() and twins[0].behind == 0 \
                and row == (mirrored.readings, mirrored.readings, 1, mirrored.readings)

        deadline = time.monotonic() + 10
        while not await same():  # nothing lost across the outage, nothing doubled
            assert time.monotonic() < deadline, "the database never held what the in-memory mirror holds"
            await asyncio.sleep(0.05)


async def test_what_the_database_refuses_is_dropped_alone_and_the_answers_say_what_is_wrong(
        postgres: str, aiohttp_client: Any) -> None:
    mirror = FleetMirror(parse_broker("mqtt://127.0.0.1:1"), Database(postgres), client_id="fleet-1")
    await mirror.database.open()
    try:
        await mirror._store([Item("hall", "gw-1", "events", {"event_id": "e1", "kind": "alert"}),
                             Item("hall", "gw-1", "events", {"event_id": "e2", "note": "nul \u0000 inside"}),
                             Item("hall", "gw-1", "telemetry", batch("gw-1", 1))])
        assert (mirror.stored.events, mirror.stored.readings, mirror.malformed) == (1, 20, 1)
        client = await aiohttp_client(app(DatabaseView(mirror), token="s3cret"))
        assert (await client.get("/gateways")).status == 401
        auth = {"Authorization": "Bearer s3cret"}
        for path, status, error in (("/gateways/hall/nobody", 404, "not_found"),
                                    ("/gateways/hall/gw-1/twin", 503, "no_snapshot"),
                                    ("/gateways/hall/gw-1/history/telemetry?limit=0", 400, "bad_request"),
                                    ("/gateways/hall/gw-1/history/telemetry?since=soon", 400, "bad_request"),
                                    ("/gateways/hall/gw-1/history/telemetry?asset=rack:0", 400, "bad_request"),
                                    ("/gateways/hall/gw-1/history/telemetry?after=x", 400, "bad_request"),
                                    ("/gateways/hall/gw-1/history/events?after=-1", 400, "bad_request")):
            answer = await client.get(path, headers=auth)
            assert (answer.status, (await answer.json())["error"]) == (status, error), path
        page = await (await client.get("/gateways/hall/gw-1/history/telemetry?limit=15&asset=rack:0&metric=temp",
                                       headers=auth)).json()
        assert [r[0] for r in page["readings"]] == list(range(1, 20, 2)) and page["next"] is None
        window = await (await client.get(f"/gateways/hall/gw-1/history/telemetry?since={1.7e9 + 5}&until={1.7e9 + 8}",
                                         headers=auth)).json()
        assert [r[0] for r in window["readings"]] == [5, 6, 7]
        events = await (await client.get("/gateways/hall/gw-1/history/events", headers=auth)).json()
        assert [e["event"]["event_id"] for e in events["events"]] == ["e1"]
        async with await psycopg.AsyncConnection.connect(postgres) as conn:
            await conn.execute("TRUNCATE mirror_gateways CASCADE")  # retention by hand: the gateway's rows gone
        await mirror._store([Item("hall", "gw-1", "events", {"event_id": "e3", "kind": "alert"})])
        assert (mirror.stored.events, mirror.malformed) == (2, 1)
        async with await psycopg.AsyncConnection.connect(postgres) as conn:
            await conn.execute("UPDATE mirror_schema SET version = 99")
        with pytest.raises(SchemaTooNew, match="version 99"):
            await Database(postgres).open()
    finally:
        await mirror.database.close()


def test_the_command_line_refuses_a_fleet_it_cannot_run(postgres: str, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKEN", raising=False)
    for args, message in ((["--database", postgres], "needs --client-id"),
                          (["--share", "fleet", "--client-id", "f1"], "--share needs --database"),
                          (["--retire", "--client-id", "f1"], "--retire is for a replica of a share group"),
                          (["--broker", "mqtt://127.0.0.1:1883"], "is broker 1 again"),
                          (["--database", "mysql://db/fleet", "--client-id", "f1"], "is not a PostgreSQL URL"),
                          # what parses but libpq refuses at every connection: refused at the start, with its reason
                          (["--database", "postgresql://fleet@127.0.0.1:notaport/fleet", "--client-id", "f1"],
                           'refuses this URL: invalid integer value "notaport" for connection option "port"'),
                          (["--database", f"{postgres}&sslmode=bogus", "--client-id", "f1"],
                           'refuses this URL: invalid sslmode value: "bogus"'),
                          (["--database", "host=db.example.invalid,db2 port=5432,5433,5434", "--client-id", "f1"],
                           "refuses this URL: could not match 3 port numbers to 2 hosts"),
                          (["--serve", "0.0.0.0:8090"], "off loopback: give --token-env"),
                          (["--serve", "0.0.0.0:8090", "--token-env", "TOKEN"], "TOKEN is not set")):
        assert cli.main(["mirror", "--broker", "mqtt://127.0.0.1:1883", *args]) == 2
        assert message in capsys.readouterr().err, args


async def test_a_delta_lost_for_good_asks_the_gateway_for_a_snapshot_once_whichever_replicas_see_it(
        mosquitto: Mosquitto, postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror_fleet, "GAP_CHECK_S", 0.2)
    snapshot, deltas = history("hall", "gw-1", 6)
    async with fleet(mosquitto.url, postgres, "replica-1", share="fleet") as one, \
            fleet(mosquitto.url, postgres, "replica-2", share="fleet"), \
            aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="gw-1") as box:
        await box.subscribe("venues/hall/gw-1/cmd/snapshot", qos=1)
        await box.publish("venues/hall/gw-1/twin/snapshot", orjson.dumps(snapshot), qos=1, retain=True)
        for d in deltas[:2] + deltas[3:]:  # the third is lost
            await box.publish("venues/hall/gw-1/twin/delta", orjson.dumps(d), qos=1)
        async with asyncio.timeout(5):  # the hole seen twice in a row (0.2 s apart), then the ask
            asks = [orjson.loads((await anext(box.messages)).payload)]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):  # and no other replica asks again: 5 s between two
                async for message in box.messages:
                    asks.append(orjson.loads(message.payload))
        assert len(asks) == 1 and asks[0]["request_id"].startswith("mirror-")
        (twin,) = await one.database.twins("hall", "gw-1")
        assert (twin.version, twin.behind) == (14, 8)  # 16 to 22 held beyond the hole
        snapshot = {**folded(snapshot, deltas), "taken_at": "2026-01-01T00:01:00Z"}  # the gateway's answer
        await box.publish("venues/hall/gw-1/twin/snapshot", orjson.dumps(snapshot), qos=1, retain=True)
        deadline = time.monotonic() + 5
        while (twin := (await one.database.twins("hall", "gw-1"))[0]).version != 22:  # whichever replica wrote it
            assert time.monotonic() < deadline, "the fresh snapshot never arrived"
            await asyncio.sleep(0.05)
        assert (twin.behind, twin.document) == (0, snapshot)


async def test_a_replica_retired_from_its_group_hands_over_its_share_and_nothing_waits_for_it(
        mosquitto: Mosquitto, postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror_fleet, "RETIRE_IDLE_S", 1.0)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="boxes") as boxes, \
            fleet(mosquitto.url, postgres, "replica-1", share="fleet") as staying:
        async def send(first: int, count: int) -> None:
            await asyncio.gather(*(boxes.publish("venues/hall/gw-1/telemetry", orjson.dumps(batch("gw-1", n)), qos=1)
                                   for n in range(first, first + 20 * count, 20)))

        async with fleet(mosquitto.url, postgres, "replica-2", share="fleet"):
            pass  # subscribed, then stopped: its session stays, and the broker queues its share there
        await send(1, 40)
        await until(lambda: staying.stored.batches > 0, 5, "the staying replica's share")
        assert staying.stored.batches < 40  # the stopped one's share waits in its session
        leaving = FleetMirror(parse_broker(mosquitto.url), Database(postgres), client_id="replica-2", share="fleet",
                              retire=True)
        await asyncio.wait_for(leaving.run(), 10)  # returns once its session's share is stored
        assert leaving.stored.batches + staying.stored.batches == 40
        await send(801, 20)  # the group is one replica now: it takes all
        await until(lambda: staying.stored.batches + leaving.stored.batches == 60, 5, "every batch stored")


async def test_a_database_that_stops_answering_is_given_up_and_the_write_made_again(
        postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror_db, "WRITE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(mirror_db, "READ_TIMEOUT_S", 0.5)
    db = Database(postgres)
    await db.open()
    try:
        await db.write([Item("hall", "gw-1", "telemetry", batch("gw-1", 1))])
        async with await psycopg.AsyncConnection.connect(postgres) as locker, locker.transaction():
            await locker.execute("LOCK TABLE mirror_gateways IN ACCESS EXCLUSIVE MODE")  # everything waits
            with pytest.raises(DatabaseUnavailable, match=r"no answer within 0\.5 s"):
                await db.write([Item("hall", "gw-1", "telemetry", batch("gw-1", 21))])
            with pytest.raises(DatabaseUnavailable, match=r"no answer within 0\.5 s"):
                await db.gateways()
        await db.open()
        assert (await db.write([Item("hall", "gw-1", "telemetry", batch("gw-1", 21))])).batches == 1
        assert [r[0] for r in await db.telemetry("hall", "gw-1", limit=100)] == list(range(1, 41))
    finally:
        await db.close()
