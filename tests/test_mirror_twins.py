"""The fleet mirror's folded twins (`mirror_twins`) on a real PostgreSQL: the writers advance them in their
transactions however two replicas' deltas interleave, and a read folds only the changes after them."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from gateway.cloud import mirror_db
from gateway.cloud.mirror import GatewayMirror
from gateway.cloud.mirror_db import Database, Item
from tests.test_mirror_postgres import folded, history, postgres, server  # noqa: F401 (fixtures)


def twin_row(url: str) -> tuple[int, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version, assets FROM mirror_twins").fetchone()
    assert row is not None
    return int(row[0]), row[1]


async def test_the_folded_twin_follows_two_writers_interleaving_and_equals_the_fold_of_the_changes(
        postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(mirror_db, "FOLD_AFTER", 6)  # a fold every few deltas, so the two writers race on them
    one, two = Database(postgres), Database(postgres)
    await one.open()
    await two.open()
    try:
        snapshot, deltas = history("hall", "gw-1", 120)  # versions 10 -> 250
        await one.write([Item("hall", "gw-1", "twin/snapshot", snapshot)])
        order = list(range(len(deltas)))
        random.Random(7).shuffle(order)
        order.sort(key=lambda i: i // 10)  # out of order within windows of ten, as two replicas take them
        held_back = order.pop(order.index(57))  # a hole: the fold stops before it

        async def writer(db: Database, mine: list[int]) -> None:
            for k in range(0, len(mine), 3):  # a few deltas to a transaction, some of them twice
                group = [Item("hall", "gw-1", "twin/delta", deltas[i]) for i in mine[k:k + 3]]
                await db.write(group + group[:1])

        await asyncio.gather(writer(one, order[0::2]), writer(two, order[1::2]))
        version, assets = twin_row(postgres)
        hole = deltas[held_back]["from"]
        assert snapshot["version"] < version <= hole  # folded, never past the hole
        assert assets == folded(snapshot, [d for d in deltas if d["to"] <= version])["assets"]
        (twin,) = await two.twins("hall", "gw-1")
        assert (twin.version, twin.held_to) == (hole, 250)
        assert twin.document == folded(snapshot, deltas[:57])

        await asyncio.gather(one.write([Item("hall", "gw-1", "twin/delta", deltas[held_back])]),
                             two.write([Item("hall", "gw-1", "twin/delta", deltas[held_back])]))
        version, assets = twin_row(postgres)
        assert version == 250 and assets == folded(snapshot, deltas)["assets"]  # the whole tail at once
        (twin,) = await one.twins("hall")
        assert twin.behind == 0 and twin.document == folded(snapshot, deltas)

        newer, more = history("hall", "gw-1", 130)  # a newer snapshot (version 260) restarts the fold from it
        newer = {**folded(snapshot, more[:125]), "version": 260}
        await two.write([Item("hall", "gw-1", "twin/snapshot", newer)])
        assert twin_row(postgres) == (260, newer["assets"])
        await one.write([Item("hall", "gw-1", "twin/snapshot", snapshot)])  # an older one, again: nothing moves back
        (twin,) = await two.twins("hall", "gw-1")
        assert twin_row(postgres)[0] == 260 and twin.version == 260
        assert twin.document == folded(snapshot, more[:125])
    finally:
        await one.close()
        await two.close()


async def test_a_fold_that_loses_the_race_to_another_writers_leaves_the_twin_it_advanced(
        postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    one = Database(postgres)
    await one.open()
    other = await psycopg.AsyncConnection.connect(postgres)  # another replica's writer, inside its transaction
    try:
        snapshot, deltas = history("hall", "gw-1", 15)
        monkeypatch.setattr(mirror_db, "FOLD_AFTER", 1000)
        await one.write([Item("hall", "gw-1", "twin/snapshot", snapshot),
                         *(Item("hall", "gw-1", "twin/delta", d) for d in deltas[:10])])
        assert twin_row(postgres)[0] == 10  # not folded yet
        monkeypatch.setattr(mirror_db, "FOLD_AFTER", 6)
        async with other.transaction():
            await other.execute("UPDATE mirror_twins SET version = 30, assets = %s WHERE version = 10",
                                (Jsonb(folded(snapshot, deltas[:10])["assets"]),))
            writing = asyncio.create_task(one.write([Item("hall", "gw-1", "twin/delta", d) for d in deltas[10:12]]))
            await asyncio.sleep(0.5)
            assert not writing.done()  # its fold (10 -> 34) waits for the row
        await writing  # ... and, the row's version no longer the one it folded from, leaves it
        assert twin_row(postgres) == (30, folded(snapshot, deltas[:10])["assets"])
        (twin,) = await one.twins("hall", "gw-1")
        assert twin.version == 34 and twin.document == folded(snapshot, deltas[:12])
        await one.write([Item("hall", "gw-1", "twin/delta", d) for d in deltas[12:]])  # the next fold goes on
        assert twin_row(postgres) == (40, folded(snapshot, deltas)["assets"])
    finally:
        await other.close()
        await one.close()


async def test_a_read_folds_only_the_changes_after_the_folded_twin(
        postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    one = Database(postgres)
    await one.open()
    try:
        snapshot, deltas = history("hall", "gw-1", 3030)  # 6,060 changes after the snapshot: 300 s of 20 assets
        await one.write([Item("hall", "gw-1", "twin/snapshot", snapshot)])
        for k in range(0, len(deltas), 500):
            await one.write([Item("hall", "gw-1", "twin/delta", d) for d in deltas[k:k + 500]])
        await one.write([Item("hall", "gw-1", "twin/delta", d) for d in deltas[3000:]])  # 60: a tail left to fold
        version, _ = twin_row(postgres)
        assert version == 6010
        await one.twins("hall", "gw-1")  # the reading connection made

        applied = 0
        apply = GatewayMirror.apply

        def counted(self: GatewayMirror, change: dict[str, Any]) -> None:
            nonlocal applied
            applied += 1
            apply(self, change)

        monkeypatch.setattr(GatewayMirror, "apply", counted)
        want = folded(snapshot, deltas)
        applied = 0
        began = time.perf_counter()
        (twin,) = await one.twins("hall", "gw-1")
        tail_s = time.perf_counter() - began
        assert twin.document == want and twin.behind == 0
        assert applied == 60

        with psycopg.connect(postgres) as conn:  # as before the folded twins: every change since the snapshot
            conn.execute("DELETE FROM mirror_twins")
        applied = 0
        began = time.perf_counter()
        (twin,) = await one.twins("hall", "gw-1")
        whole_s = time.perf_counter() - began
        assert twin.document == want and applied == 6060
        print(f"a twin read: {tail_s * 1000:.1f} ms folding 60 changes after the folded twin, "
              f"{whole_s * 1000:.1f} ms folding all 6,060 after the snapshot")
    finally:
        await one.close()


async def test_a_database_of_schema_1_gets_its_folded_twins_from_the_snapshots(postgres: str) -> None:  # noqa: F811
    one = Database(postgres)
    await one.open()
    snapshot, deltas = history("hall", "gw-1", 10)
    await one.write([Item("hall", "gw-1", "twin/snapshot", snapshot),
                     *(Item("hall", "gw-1", "twin/delta", d) for d in deltas)])
    await one.close()
    with psycopg.connect(postgres) as conn:  # the schema as version 1 left it
        conn.execute("DROP TABLE mirror_twins")
        conn.execute("UPDATE mirror_schema SET version = 1")
    again = Database(postgres)
    await again.open()
    try:
        assert twin_row(postgres) == (snapshot["version"], snapshot["assets"])
        (twin,) = await again.twins("hall", "gw-1")
        assert twin.document == folded(snapshot, deltas)
        with psycopg.connect(postgres) as conn:
            assert conn.execute("SELECT version FROM mirror_schema").fetchone() == (mirror_db.SCHEMA_VERSION,)
    finally:
        await again.close()
