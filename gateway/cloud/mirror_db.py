"""The fleet mirror's tables in PostgreSQL (`venue-gateway mirror --database postgresql://...`): every gateway's
status, its latest twin snapshot, the twin's changes, telemetry and events, written idempotently by any number of
mirror replicas and read back for the HTTP answers (docs/fleet.md).

Idempotence is the tables' keys: a telemetry batch by (gateway, batch_id), its readings written in the same
transaction as the batch row and only when that row is new; an event by (gateway, event_id); a twin change by
(gateway, version); a snapshot by (gateway, version). A duplicate inserts nothing and is counted. A twin is the
latest snapshot with the contiguous changes after it (the deltas' `from`-`to` ranges, chained from the snapshot's
version), however the replicas' writes interleave; a change beyond a missing range waits until the range or a newer
snapshot arrives. So that a read does not fold every change since the snapshot (up to 300 s of them), `mirror_twins`
holds each twin folded to a version: a writer advances it in its transaction once FOLD_AFTER contiguous versions wait
after it (the row's version the guard between two writers), and a read folds only the changes after it.

The schema is created on first start and its version kept in `mirror_schema`; a later version adds its step to
MIGRATIONS (mirror_schema.py), run once, in one transaction, under an advisory lock, by the first replica started on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import errors

from gateway.cloud.mirror import GatewayMirror
from gateway.cloud.mirror_schema import LOCK_KEY, MIGRATIONS, SCHEMA_VERSION

READERS = 4  # connections answering reads (each read is one short transaction)
READ_TIMEOUT_S = 10.0  # a read (an HTTP answer) that waits longer is given up: 503
WRITE_TIMEOUT_S = 60.0  # a write that waits longer is given up and written again on a new connection
FOLD_AFTER = 100  # a writer folds a twin's changes into mirror_twins once this many contiguous versions wait after it
EVENTS_LATEST = 1000  # GET .../events without paging: the latest this many, as the in-memory mirror keeps

class DatabaseUnavailable(Exception):
    """The database cannot be reached, refused the connection, or went away; the message says which."""


class Refused(Exception):
    """The database refused what a write held (a value it cannot store); nothing of it was stored."""


class SchemaTooNew(Exception):
    """The database holds a schema newer than this mirror knows."""


class Malformed(ValueError):
    """A gateway's document that does not follow docs/cloud-protocol.md: the message says what is wrong."""


@dataclass(frozen=True)
class Item:
    """One message to store: the gateway's venue and id, the topic after them, the document."""

    venue: str
    gateway_id: str
    what: str
    doc: dict[str, Any]


@dataclass
class Written:
    """What one `write` stored and what it found already there."""

    batches: int = 0
    readings: int = 0
    events: int = 0
    changes: int = 0
    snapshots: int = 0
    statuses: int = 0
    duplicates: int = 0
    deltas_of: set[int] = field(default_factory=set)  # gateways (gid) whose deltas or snapshots were written


@dataclass(frozen=True)
class Twin:
    """A twin as the database holds it: the document (the gateway's `GET /api/v1/twin`), how far the chain of
    deltas after its snapshot reaches contiguously (`version`), and the highest version any stored delta reaches."""

    document: dict[str, Any]
    version: int
    held_to: int

    @property
    def behind(self) -> int:
        """Versions held beyond a missing range: more than 0 means a snapshot is needed to catch up."""
        return self.held_to - self.version

    def answer(self) -> dict[str, Any]:
        return {**self.document, "mirror": {"behind": self.behind, "held_to": self.held_to}}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(what: str, doc: dict[str, Any]) -> None:
    """Malformed when `doc` is not a `what` of docs/cloud-protocol.md (the parts this mirror stores)."""
    if what == "twin/snapshot":
        assets = doc.get("assets")
        if not _is_int(doc.get("version")) or not isinstance(doc.get("taken_at"), str | None) \
                or not isinstance(assets, dict) or not all(
                isinstance(a, dict) and isinstance(a.get("reported", {}), dict)
                and isinstance(a.get("desired", {}), dict) for a in assets.values()):
            raise Malformed("a snapshot has a whole version, taken_at (a string), and assets, an object of objects")
    elif what == "twin/delta":
        changes = doc.get("changes")
        if not (_is_int(doc.get("from")) and _is_int(doc.get("to")) and isinstance(changes, list)):
            raise Malformed("a delta has whole `from` and `to` and a list of changes")
        for change in changes:
            if not (isinstance(change, dict) and _is_int(change.get("version"))
                    and isinstance(change.get("asset"), str) and isinstance(change.get("removed"), bool)
                    and all(k in change for k in ("at", "kind", "zone", "owner", "reported", "desired"))
                    and isinstance(change["reported"], dict | None) and isinstance(change["desired"], dict | None)):
                raise Malformed("a change has a whole version, an asset, removed, at, kind, zone, owner, and "
                                "reported and desired (objects or null)")
            if not doc["from"] < change["version"] <= doc["to"]:
                raise Malformed(f"a change at version {change['version']} outside its delta's "
                                f"{doc['from']}-{doc['to']}")
    elif what == "telemetry":
        readings = doc.get("readings")
        if not isinstance(doc.get("batch_id"), str) or not isinstance(readings, list):
            raise Malformed("a telemetry batch has a batch_id (a string) and readings (a list)")
        for r in readings:
            if not (isinstance(r, list) and len(r) == 5 and _is_int(r[0]) and isinstance(r[1], int | float)
                    and math.isfinite(r[1]) and isinstance(r[2], str) and isinstance(r[3], str)
                    and (r[4] is None or (isinstance(r[4], int | float) and not isinstance(r[4], bool)))):
                raise Malformed("a reading is [seq (whole), ts (seconds), asset, metric, value (a number or null)]")
    elif what == "events" and not isinstance(doc.get("event_id"), str):
        raise Malformed("an event has an event_id (a string)")


def chain(version: int, ranges: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """(how far the deltas' ranges reach contiguously from `version`, the highest version any of them reaches)."""
    tip = held = version
    for lo, hi in sorted(ranges):
        held = max(held, hi)
        if lo <= tip:
            tip = max(tip, hi)
    return tip, held


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _text(rows: Iterable[Any]) -> list[str]:
    return [orjson.dumps(r).decode() for r in rows]


class _Group:
    """One transaction's messages by table and key (the first of two with one key: the other is a duplicate), and
    what each gateway sent that has an id, and what of it was new."""

    def __init__(self) -> None:
        self.status: dict[int, dict[str, Any]] = {}  # the last of each gateway's
        self.snapshots: dict[tuple[int, int], dict[str, Any]] = {}
        self.deltas: set[tuple[int, int, int]] = set()  # (gid, to, from)
        self.changes: dict[tuple[int, int], dict[str, Any]] = {}
        self.batches: dict[tuple[int, str], list[list[Any]]] = {}
        self.events: dict[tuple[int, str], dict[str, Any]] = {}
        self.given: dict[int, int] = defaultdict(int)
        self.new: dict[int, dict[str, int]] = defaultdict(lambda: {"batches": 0, "readings": 0, "events": 0,
                                                                   "changes": 0})

    def add(self, gid: int, item: Item) -> None:
        doc = item.doc
        if item.what == "status":
            self.status[gid] = doc
        elif item.what == "twin/snapshot":
            self.snapshots.setdefault((gid, doc["version"]), doc)
        elif item.what == "twin/delta":
            self.deltas.add((gid, doc["to"], doc["from"]))
            for change in doc["changes"]:
                self.given[gid] += 1
                self.changes.setdefault((gid, change["version"]), change)
        elif item.what == "telemetry":
            self.given[gid] += 1
            self.batches.setdefault((gid, doc["batch_id"]), doc["readings"])
        elif item.what == "events":
            self.given[gid] += 1
            self.events.setdefault((gid, doc["event_id"]), doc)


class Database:
    """The tables at `url` (a libpq connection string or postgresql:// URL): one connection writes, a few read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._readers: asyncio.Queue[psycopg.AsyncConnection[Any] | None] = asyncio.Queue()
        for _ in range(READERS):
            self._readers.put_nowait(None)  # opened on first use
        self._claims: psycopg.AsyncConnection[Any] | None = None
        self._gids: dict[tuple[str, str], int] = {}

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(self.url, connect_timeout=5,
                                                         application_name="venue-gateway mirror")
        except psycopg.Error as exc:
            raise DatabaseUnavailable(_explain(exc)) from None

    async def open(self) -> None:
        """Connect the writer and create or migrate the schema; DatabaseUnavailable, SchemaTooNew."""
        await self.close_writer()
        conn = await self._connect()
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                await conn.execute("CREATE TABLE IF NOT EXISTS mirror_schema (version integer NOT NULL)")
                row = await (await conn.execute("SELECT version FROM mirror_schema")).fetchone()
                version = 0 if row is None else int(row[0])
                if version > SCHEMA_VERSION:
                    raise SchemaTooNew(f"the database holds the mirror's schema version {version}, newer than this "
                                       f"mirror's {SCHEMA_VERSION}: run the newer venue-gateway")
                for step in range(version, SCHEMA_VERSION):
                    await conn.execute(MIGRATIONS[step].encode())
                if row is None:
                    await conn.execute("INSERT INTO mirror_schema VALUES (%s)", (SCHEMA_VERSION,))
                elif version != SCHEMA_VERSION:
                    await conn.execute("UPDATE mirror_schema SET version = %s", (SCHEMA_VERSION,))
        except psycopg.OperationalError as exc:
            await conn.close()
            raise DatabaseUnavailable(_explain(exc)) from None
        except BaseException:
            await conn.close()
            raise
        self._writer = conn

    async def close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(psycopg.Error):
                await self._writer.close()
            self._writer = None

    async def close(self) -> None:
        await self.close_writer()
        if self._claims is not None:
            with contextlib.suppress(psycopg.Error):
                await self._claims.close()
            self._claims = None
        while not self._readers.empty():
            conn = self._readers.get_nowait()
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()

    # -- writing -----------------------------------------------------------------------------------------
    async def _gid(self, conn: psycopg.AsyncConnection[Any], venue: str, gateway_id: str) -> int:
        key = (venue, gateway_id)
        gid = self._gids.get(key)
        while gid is None:
            async with conn.transaction():
                row = await (await conn.execute(
                    "INSERT INTO mirror_gateways (venue, gateway_id) VALUES (%s, %s) ON CONFLICT DO NOTHING "
                    "RETURNING gid", key)).fetchone()
                if row is None:
                    row = await (await conn.execute("SELECT gid FROM mirror_gateways WHERE venue = %s AND "
                                                    "gateway_id = %s", key)).fetchone()
            if row is not None:
                gid = self._gids[key] = int(row[0])
        return gid

    async def write(self, items: Sequence[Item]) -> Written:
        """Store `items` (each `check`ed first) in one transaction. Refused: the database refused something in it,
        nothing was stored. DatabaseUnavailable: the connection was lost or the database gave no answer within
        WRITE_TIMEOUT_S (`open` again); the transaction may or may not have committed, and writing the items again
        stores what it had not (every write is idempotent)."""
        conn = self._writer
        if conn is None:
            raise DatabaseUnavailable("not connected")
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                return await self._write_retrying(conn, items)
        except TimeoutError:
            await self.close_writer()
            raise DatabaseUnavailable(f"no answer within {WRITE_TIMEOUT_S:g} s") from None

    async def _write_retrying(self, conn: psycopg.AsyncConnection[Any], items: Sequence[Item]) -> Written:
        try:
            for attempt in range(5):
                try:
                    return await self._write(conn, items)
                except (errors.DeadlockDetected, errors.SerializationFailure, errors.ForeignKeyViolation) as exc:
                    if attempt == 4:
                        raise
                    if isinstance(exc, errors.ForeignKeyViolation):
                        self._gids.clear()  # a gateway's row deleted by hand (retention): made again
            raise AssertionError("unreachable")
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) or conn.broken or conn.closed:
                await self.close_writer()
                raise DatabaseUnavailable(_explain(exc)) from None
            raise Refused(_explain(exc)) from None  # rolled back; the connection goes on

    async def _write(self, conn: psycopg.AsyncConnection[Any], items: Sequence[Item]) -> Written:
        gids = {(i.venue, i.gateway_id): 0 for i in items}
        for key in sorted(gids):  # every write takes its locks in one order: two replicas never deadlock on them
            gids[key] = await self._gid(conn, *key)
        group = _Group()
        for item in items:
            group.add(gids[(item.venue, item.gateway_id)], item)
        done = Written(statuses=len(group.status))
        async with conn.transaction():
            cur = conn.cursor()
            await self._snapshots(cur, group, done)
            await self._changes(cur, group, done)
            await self._telemetry(cur, group)
            await self._events(cur, group)
            await self._fold(cur, sorted(gid for gid, n in group.new.items() if n["changes"]))
            rows = []
            for gid in sorted(set(gids.values())):
                n = group.new[gid]
                duplicates = group.given[gid] - n["batches"] - n["events"] - n["changes"]
                status = group.status.get(gid)
                rows.append((None if status is None else orjson.dumps(status).decode(), n["batches"], n["readings"],
                             n["events"], n["changes"], duplicates, gid))
                done.batches += n["batches"]
                done.readings += n["readings"]
                done.events += n["events"]
                done.changes += n["changes"]
                done.duplicates += duplicates
            await cur.executemany(
                "UPDATE mirror_gateways SET status = COALESCE(%s::jsonb, status), last_seen = now(), "
                "batches = batches + %s, readings = readings + %s, events = events + %s, changes = changes + %s, "
                "duplicates = duplicates + %s WHERE gid = %s", rows)
        return done

    @staticmethod
    async def _snapshots(cur: psycopg.AsyncCursor[Any], group: _Group, done: Written) -> None:
        if not group.snapshots:
            return
        keys = sorted(group.snapshots)
        await cur.execute(
            "INSERT INTO mirror_snapshots (gid, version, taken_at, assets) SELECT * FROM unnest(%s::int[], "
            "%s::bigint[], %s::text[], %s::text[]::jsonb[]) ON CONFLICT DO NOTHING RETURNING gid, version",
            ([k[0] for k in keys], [k[1] for k in keys], [group.snapshots[k].get("taken_at") for k in keys],
             _text(group.snapshots[k]["assets"] for k in keys)))
        stored = await cur.fetchall()
        done.snapshots = len(stored)
        if stored:  # only the newest snapshot is kept, and the ranges of the deltas it covers go with the rest
            newest = dict(sorted(stored))
            args = (list(newest), list(newest.values()))
            await cur.execute("DELETE FROM mirror_snapshots s USING unnest(%s::int[], %s::bigint[]) n(gid, version) "
                              "WHERE s.gid = n.gid AND s.version < n.version", args)
            await cur.execute("DELETE FROM mirror_deltas d USING unnest(%s::int[], %s::bigint[]) n(gid, version) "
                              "WHERE d.gid = n.gid AND d.to_version <= n.version", args)
            # the folded twin starts again from a snapshot newer than it (one it has passed is kept)
            await cur.execute(
                "INSERT INTO mirror_twins (gid, version, assets) SELECT s.gid, s.version, s.assets FROM "
                "mirror_snapshots s JOIN unnest(%s::int[], %s::bigint[]) n(gid, version) ON s.gid = n.gid AND "
                "s.version = n.version ORDER BY s.gid ON CONFLICT (gid) DO UPDATE SET version = EXCLUDED.version, "
                "assets = EXCLUDED.assets WHERE mirror_twins.version < EXCLUDED.version", args)
            done.deltas_of.update(newest)

    @staticmethod
    async def _changes(cur: psycopg.AsyncCursor[Any], group: _Group, done: Written) -> None:
        """The deltas' ranges, and their changes each once."""
        if group.deltas:
            ranges = sorted(group.deltas)
            await cur.execute(
                "INSERT INTO mirror_deltas (gid, to_version, from_version) SELECT * FROM unnest(%s::int[], "
                "%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING",
                ([k[0] for k in ranges], [k[1] for k in ranges], [k[2] for k in ranges]))
            done.deltas_of.update(k[0] for k in ranges)
        if group.changes:
            keys = sorted(group.changes)
            await cur.execute(
                "INSERT INTO mirror_changes (gid, version, change) SELECT * FROM unnest(%s::int[], %s::bigint[], "
                "%s::text[]::jsonb[]) ON CONFLICT DO NOTHING RETURNING gid",
                ([k[0] for k in keys], [k[1] for k in keys], _text(group.changes[k] for k in keys)))
            for (gid,) in await cur.fetchall():
                group.new[gid]["changes"] += 1

    @staticmethod
    async def _fold(cur: psycopg.AsyncCursor[Any], gids: list[int]) -> None:
        """Advance the folded twins of `gids` (which got new changes) over the contiguous changes after them, where
        FOLD_AFTER versions or more wait. What this transaction sees is what committed before each statement and its
        own writes: the ranges chain from the row's version through those only, and the row is updated only if its
        version is still the one folded from (another writer that advanced it first wins; the next fold goes on from
        there). A fold is the same whoever makes it, so a write made twice folds to the same twin."""
        if not gids:
            return
        await cur.execute(
            "SELECT t.gid, t.version, d.from_version, d.to_version FROM mirror_twins t LEFT JOIN LATERAL (SELECT "
            "from_version, to_version FROM mirror_deltas WHERE gid = t.gid AND to_version > t.version) d ON true "
            "WHERE t.gid = ANY(%s)", (gids,))
        found: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        for gid, version, lo, hi in await cur.fetchall():
            entry = found.setdefault(gid, (version, []))
            if lo is not None:
                entry[1].append((lo, hi))
        due = {}
        for gid, (version, ranges) in found.items():
            tip = chain(version, ranges)[0]
            if tip - version >= FOLD_AFTER:
                due[gid] = (version, tip)
        if not due:
            return
        keys = sorted(due)
        was, tips = [due[g][0] for g in keys], [due[g][1] for g in keys]
        await cur.execute("SELECT t.gid, t.assets::text FROM mirror_twins t JOIN unnest(%s::int[], %s::bigint[]) "
                          "n(gid, version) ON t.gid = n.gid AND t.version = n.version", (keys, was))
        twins = {gid: GatewayMirror("", "", version=due[gid][0], assets=orjson.loads(assets))
                 for gid, assets in await cur.fetchall()}
        await cur.execute(
            "SELECT n.gid, c.change FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) n(gid, lo, hi) JOIN LATERAL "
            "(SELECT version, change::text FROM mirror_changes WHERE gid = n.gid AND version > n.lo AND version <= "
            "n.hi) c ON true ORDER BY n.gid, c.version",
            (keys, was, tips))
        for gid, change in await cur.fetchall():
            if gid in twins:
                twins[gid].apply(orjson.loads(change))
        await cur.executemany(  # the rows one by one in order of gid, as every write takes its locks
            "UPDATE mirror_twins SET version = %s, assets = %s::jsonb WHERE gid = %s AND version = %s",
            [(due[g][1], orjson.dumps(twins[g].assets).decode(), g, due[g][0]) for g in sorted(twins)])

    @staticmethod
    async def _telemetry(cur: psycopg.AsyncCursor[Any], group: _Group) -> None:
        """The batches each once, and the readings of those new here by COPY."""
        if not group.batches:
            return
        keys = sorted(group.batches)
        readings = [group.batches[k] for k in keys]
        await cur.execute(
            "INSERT INTO mirror_batches (gid, batch_id, first_seq, last_seq, readings) SELECT * FROM unnest(%s::int[], "
            "%s::text[], %s::bigint[], %s::bigint[], %s::int[]) ON CONFLICT DO NOTHING RETURNING gid, batch_id",
            ([k[0] for k in keys], [k[1] for k in keys], [r[0][0] if r else None for r in readings],
             [r[-1][0] if r else None for r in readings], [len(r) for r in readings]))
        fresh = sorted((int(g), str(b)) for g, b in await cur.fetchall())
        if not fresh:
            return
        async with cur.copy("COPY mirror_readings (gid, seq, ts, asset, metric, value) FROM STDIN") as copy:
            for key in fresh:
                gid = key[0]
                for seq, ts, asset, metric, value in group.batches[key]:
                    await copy.write_row((gid, seq, ts, asset, metric, value))
                group.new[gid]["batches"] += 1
                group.new[gid]["readings"] += len(group.batches[key])

    @staticmethod
    async def _events(cur: psycopg.AsyncCursor[Any], group: _Group) -> None:
        if not group.events:
            return
        keys = sorted(group.events)
        await cur.execute(
            "INSERT INTO mirror_events (gid, event_id, kind, doc) SELECT * FROM unnest(%s::int[], %s::text[], "
            "%s::text[], %s::text[]::jsonb[]) ON CONFLICT DO NOTHING RETURNING gid",
            ([k[0] for k in keys], [k[1] for k in keys], [_str(group.events[k].get("kind")) for k in keys],
             _text(group.events[k] for k in keys)))
        for (gid,) in await cur.fetchall():
            group.new[gid]["events"] += 1

    async def claim_snapshot_ask(self, gid: int, every_s: float) -> bool:
        """True for one replica at most every `every_s` per gateway: it asks that gateway for a snapshot."""
        try:
            if self._claims is None or self._claims.closed:  # its own: the writer may be inside a transaction
                self._claims = await self._connect()
                await self._claims.set_autocommit(True)
            row = await (await self._claims.execute(
                "UPDATE mirror_gateways SET asked_snapshot_at = now(), snapshot_asks = snapshot_asks + 1 "
                "WHERE gid = %s AND (asked_snapshot_at IS NULL OR asked_snapshot_at < now() - make_interval("
                "secs => %s)) RETURNING gid", (gid, every_s))).fetchone()
        except psycopg.Error as exc:
            if self._claims is not None:
                await self._claims.close()
            self._claims = None
            raise DatabaseUnavailable(_explain(exc)) from None
        return row is not None

    async def gaps(self, gids: Iterable[int]) -> dict[int, tuple[str, str, int, int]]:
        """The gateways among `gids` whose twin cannot be rebuilt to the newest delta held (a range is missing, or
        there is no snapshot): gid -> (venue, gateway id, contiguous version, highest version held)."""
        wanted = sorted(set(gids))
        if not wanted:
            return {}
        rows = await self._read((
            "SELECT g.gid, g.venue, g.gateway_id, s.version, d.from_version, d.to_version FROM mirror_gateways g "
            "LEFT JOIN LATERAL (SELECT version FROM mirror_snapshots WHERE gid = g.gid ORDER BY version DESC LIMIT 1) "
            "s ON true LEFT JOIN mirror_deltas d ON d.gid = g.gid AND d.to_version > coalesce(s.version, -1) "
            "WHERE g.gid = ANY(%s)", (wanted,)))
        found: dict[int, tuple[str, str, int | None, list[tuple[int, int]]]] = {}
        for gid, venue, gateway_id, version, lo, hi in rows[0]:
            entry = found.setdefault(gid, (venue, gateway_id, version, []))
            if lo is not None:
                entry[3].append((lo, hi))
        out = {}
        for gid, (venue, gateway_id, version, ranges) in found.items():
            if version is None:
                if ranges:
                    out[gid] = (venue, gateway_id, -1, max(hi for _, hi in ranges))
                continue
            tip, held = chain(version, ranges)
            if held > tip:
                out[gid] = (venue, gateway_id, tip, held)
        return out

    # -- reading -----------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _reader(self, fresh: bool = False) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A reading connection from the pool (`fresh`: a new one, the pool's closed)."""
        conn = await self._readers.get()
        done = False
        try:
            if fresh and conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            if fresh or conn is None or conn.closed:
                conn = await self._connect()
                await conn.set_read_only(True)
                await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            yield conn
            done = True
        except psycopg.Error as exc:
            raise DatabaseUnavailable(_explain(exc)) from None
        finally:
            if not done and conn is not None:  # failed, or given up on: a connection in an unknown state
                with contextlib.suppress(Exception):
                    await conn.close()
                conn = None
            self._readers.put_nowait(conn)

    async def _read(self, *queries: tuple[str, Sequence[Any]]) -> list[list[Any]]:
        """Run the (sql, args) queries in one consistent read, sent together (libpq's pipeline: one round trip);
        the rows of each. DatabaseUnavailable when the database does not answer within READ_TIMEOUT_S."""
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                try:
                    return await self._read_on(False, queries)
                except DatabaseUnavailable:  # a pooled connection the database has closed (a restart): once more
                    return await self._read_on(True, queries)
        except TimeoutError:
            raise DatabaseUnavailable(f"no answer within {READ_TIMEOUT_S:g} s") from None

    async def _read_on(self, fresh: bool, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        async with self._reader(fresh) as conn, conn.pipeline(), conn.transaction():
            cursors = [await conn.execute(sql, args) for sql, args in queries]
            return [list(await cur.fetchall()) for cur in cursors]

    async def gateways(self, venue: str | None = None, gateway_id: str | None = None) -> list[dict[str, Any]]:
        """Every gateway's summary (of one venue, or one gateway), ordered by venue and id."""
        where, args = [], []
        if venue is not None:
            where.append("venue = %s")
            args.append(venue)
        if gateway_id is not None:
            where.append("gateway_id = %s")
            args.append(gateway_id)
        rows = (await self._read((
            "SELECT venue, gateway_id, status::text, extract(epoch FROM last_seen), batches, readings, events, "
            "changes, duplicates, snapshot_asks, (SELECT max(version) FROM mirror_snapshots s WHERE s.gid = g.gid) "
            f"FROM mirror_gateways g {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY venue, gateway_id",
            args)))[0]
        out = []
        for venue_, gw, status, seen, batches, readings, events, changes, duplicates, asks, snapshot in rows:
            doc = orjson.loads(status) if status else {}
            out.append({"venue": venue_, "gateway_id": gw, "online": doc.get("online"), "status": doc or None,
                        "last_seen": None if seen is None else float(seen), "snapshot_version": snapshot,
                        "twin_changes": changes, "snapshot_asks": asks,
                        "telemetry": {"batches": batches, "readings": readings, "duplicates": duplicates},
                        "events": events})
        return out

    async def twins(self, venue: str, gateway_id: str | None = None) -> list[Twin]:
        """The twins of a venue's gateways (or of one), each from its latest snapshot and the contiguous changes
        after it, in one consistent read; gateways without a snapshot are left out. The fold starts from the twin
        folded in `mirror_twins` where that is at or past the snapshot: only the changes after it are read."""
        one = "" if gateway_id is None else " AND g.gateway_id = %s"
        args: list[Any] = [venue] if gateway_id is None else [venue, gateway_id]
        # each gateway of the venue with a snapshot: the version the fold starts from (base), the snapshot's taken_at
        base = ("SELECT g.gid, g.gateway_id, s.taken_at, greatest(s.version, t.version) AS version, "
                "t.version >= s.version AS folded, s.version AS snapshot FROM mirror_gateways g JOIN LATERAL (SELECT "
                "version, taken_at FROM mirror_snapshots WHERE gid = g.gid ORDER BY version DESC LIMIT 1) s ON true "
                f"LEFT JOIN mirror_twins t ON t.gid = g.gid WHERE g.venue = %s{one}")
        with_base = f"WITH b AS MATERIALIZED ({base})"
        snaps, ranges, changes = await self._read(
            (f"{with_base} SELECT b.gid, b.gateway_id, b.version, b.taken_at, CASE WHEN b.folded THEN (SELECT "
             "assets::text FROM mirror_twins WHERE gid = b.gid) ELSE (SELECT assets::text FROM mirror_snapshots "
             "WHERE gid = b.gid AND version = b.snapshot) END FROM b ORDER BY b.gateway_id", args),
            (f"{with_base} SELECT b.gid, d.from_version, d.to_version FROM b JOIN LATERAL (SELECT from_version, "
             "to_version FROM mirror_deltas WHERE gid = b.gid AND to_version > b.version) d ON true", args),
            (f"{with_base} SELECT b.gid, c.version, c.change FROM b JOIN LATERAL (SELECT version, change::text "
             "FROM mirror_changes WHERE gid = b.gid AND version > b.version ORDER BY version) c ON true "
             "ORDER BY b.gid, c.version", args))
        held: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for gid, lo, hi in ranges:
            held[gid].append((lo, hi))
        after: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for gid, version, change in changes:
            after[gid].append((version, change))
        out = []
        for gid, gw, version, taken_at, assets in snaps:
            tip, top = chain(version, held[gid])
            mirrored = GatewayMirror(venue, gw)  # folds the changes as the in-memory mirror does
            mirrored.snapshot({"version": version, "assets": orjson.loads(assets), "taken_at": taken_at})
            for v, change in after[gid]:
                if v > tip:
                    break
                mirrored.apply(orjson.loads(change))
            mirrored.version = tip
            out.append(Twin(mirrored.twin(), tip, top))
        return out

    async def events(self, venue: str, gateway_id: str, *, after: int | None = None,
                     limit: int = EVENTS_LATEST) -> list[tuple[int, float, dict[str, Any]]]:
        """A gateway's events as (id, received at, the event), oldest first: those after the id `after`, or the
        latest `limit`."""
        head = ("SELECT e.id, extract(epoch FROM e.received_at), e.doc::text FROM mirror_events e JOIN "
                "mirror_gateways g ON g.gid = e.gid WHERE g.venue = %s AND g.gateway_id = %s")
        if after is None:
            sql = f"SELECT * FROM ({head} ORDER BY e.id DESC LIMIT %s) t ORDER BY 1"
            args: list[Any] = [venue, gateway_id, limit]
        else:
            sql = f"{head} AND e.id > %s ORDER BY e.id LIMIT %s"
            args = [venue, gateway_id, after, limit]
        rows = (await self._read((sql, args)))[0]
        return [(int(i), float(at), orjson.loads(doc)) for i, at, doc in rows]

    async def telemetry(self, venue: str, gateway_id: str, *, asset: str | None = None, metric: str | None = None,
                        since: float | None = None, until: float | None = None,
                        after: tuple[float, int] | None = None, limit: int = 1000) -> list[tuple[Any, ...]]:
        """A gateway's readings as (seq, ts, asset, metric, value), by time then sequence: of one asset and metric
        if given, `since` <= ts < `until`, after the (ts, seq) `after` (the last of the page before)."""
        where = ["g.venue = %s", "g.gateway_id = %s"]
        args: list[Any] = [venue, gateway_id]
        for column, value, op in (("r.asset", asset, "="), ("r.metric", metric, "="), ("r.ts", since, ">="),
                                  ("r.ts", until, "<")):
            if value is not None:
                where.append(f"{column} {op} %s")
                args.append(value)
        if after is not None:
            where.append("(r.ts, r.seq) > (%s, %s)")
            args += list(after)
        rows = (await self._read((
            "SELECT r.seq, r.ts, r.asset, r.metric, r.value FROM mirror_readings r JOIN mirror_gateways g ON "
            f"g.gid = r.gid WHERE {' AND '.join(where)} ORDER BY r.ts, r.seq LIMIT %s", [*args, limit])))[0]
        return [tuple(r) for r in rows]


def _explain(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
