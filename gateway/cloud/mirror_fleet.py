"""The fleet service: `venue-gateway mirror --database postgresql://...`, the mirror that keeps what every gateway
says in PostgreSQL (gateway/cloud/mirror_db.py) and answers from there, as one of several replicas if need be
(`--share`). A message is acknowledged to the broker only once the transaction holding it has committed: messages
are taken in groups (whatever has arrived, up to GROUP_MAX), written in one transaction, then acknowledged in the
order they came. A replica killed at any moment has acknowledged nothing it had not stored; the broker sends the
rest again (to it, once restarted with its client id) and the tables' keys drop what was already there.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aiomqtt
import orjson

from gateway.cloud.mirror import SNAPSHOT_ASK_S, Mirror
from gateway.cloud.mirror_db import Database, DatabaseUnavailable, Item, Malformed, Refused, Written, check
from gateway.cloud.mirror_http import NotFound, TelemetryQuery, Unavailable
from gateway.cloud.settings import Broker, topic_root
from gateway.supervisor import backoff_delay

log = logging.getLogger(__name__)

GROUP_MAX = 500  # messages written in one transaction
GAP_CHECK_S = 2.0  # how often the twins written to are checked for a missing range of deltas
STORED = ("status", "twin/snapshot", "twin/delta", "telemetry", "events")
LOG_EVERY_S = 10.0
RETIRE_IDLE_S = 2.0  # retiring: the session's queue is empty once nothing has come for this long


class Retired(Exception):
    """The replica has left its share group for good: its session held nothing more."""


class FleetMirror(Mirror):
    """The mirror writing to `database`; the options are Mirror's (a `client_id` is needed: its session holds what
    was in flight when the replica stopped). `retire`: take this client id out of its share group for good (below)."""

    manual_acks = True

    def __init__(self, broker: Broker | Sequence[Broker], database: Database, *, retire: bool = False,
                 **options: Any) -> None:
        super().__init__(broker, **options)
        self.retire = retire
        if retire:  # the session ends when this connection does
            self.session_expiry_s = 0
        if self.client_id is None:
            raise ValueError("a mirror with a database needs a fixed client id (one per replica): its session "
                             "holds what the broker sent and the replica had not stored when it stopped")
        self.database = database
        self.stored = Written()
        self.groups = 0
        self.database_error: str | None = "not connected yet"
        self._recent: set[int] = set()  # gateways whose deltas or snapshots this replica wrote since the last check
        self._suspects: dict[int, int] = {}  # gateway -> the contiguous version where the last check found a gap
        self._last_log = -LOG_EVERY_S
        self._rng = random.Random()

    async def run(self) -> None:
        """Follow until cancelled; with `retire`, until the session's share is stored (then return)."""
        try:
            await self._open()
            await super().run()
        except Retired:
            log.warning("mirror: %s has left the share group %s: its session is ended", self.client_id, self.share)
        finally:
            await self.database.close()

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """Retiring: no new subscription; the session's are dropped, so that the broker gives this client id nothing
        more, and what it had queued for it is still delivered (stored below before the session ends)."""
        if not self.retire:
            await super()._subscribe(client)
            return
        for topic in self.subscriptions():
            await client.unsubscribe(topic)

    async def _open(self) -> None:
        """Connect to the database (and create or migrate its schema), retrying with backoff until it answers."""
        attempt = 0
        while True:
            try:
                await self.database.open()
            except DatabaseUnavailable as exc:
                self._unavailable(str(exc))
                await asyncio.sleep(backoff_delay(attempt, 0.2, 10.0, self._rng))
                attempt += 1
                continue
            if self.database_error is not None and attempt:
                log.warning("mirror: the database answers again")
            self.database_error = None
            return

    def _unavailable(self, message: str) -> None:
        if message != self.database_error:
            log.error("mirror: the database is unavailable: %s; nothing is acknowledged to the broker until it "
                      "answers (retrying)", message)
        self.database_error = message

    def _malformed(self, what: str, venue: str, gateway_id: str, reason: str) -> None:
        self.malformed += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.warning("mirror: malformed %s from %s/%s dropped: %s (%d so far)", what, venue, gateway_id, reason,
                        self.malformed)

    def _item(self, message: aiomqtt.Message) -> Item | None:
        parts = str(message.topic).split("/", 3)
        if len(parts) < 4 or parts[0] != "venues" or parts[3] not in STORED:
            return None  # the cloud's own commands, or not a gateway's topic
        venue, gateway_id, what = parts[1], parts[2], parts[3]
        try:
            doc = orjson.loads(message.payload) if isinstance(message.payload, bytes | bytearray) else None
            if not isinstance(doc, dict):
                raise Malformed("not a JSON object")
            check(what, doc)
        except (orjson.JSONDecodeError, Malformed) as exc:
            self._malformed(what, venue, gateway_id, str(exc))
            return None
        return Item(venue, gateway_id, what, doc)

    async def _consume(self, client: aiomqtt.Client) -> None:
        """Take what has arrived (up to GROUP_MAX), store it in one transaction, acknowledge it; again."""
        watcher = asyncio.create_task(self._watch_gaps(client))
        queue = client._queue  # aiomqtt's own queue: what has arrived, taken without a task per message
        try:
            while True:
                try:
                    async with asyncio.timeout(RETIRE_IDLE_S if self.retire else None):
                        first = await anext(client.messages)
                except TimeoutError:
                    raise Retired() from None
                group = [first]
                while len(group) < GROUP_MAX and not queue.empty():
                    group.append(queue.get_nowait())
                items = [i for i in map(self._item, group) if i is not None]
                if items:
                    await self._store(items)
                for message in group:  # in the order they came, as MQTT asks (4.6)
                    if message.qos > 0:
                        client._client.ack(message.mid, message.qos)
                for item in items:
                    if item.what != "telemetry" and item.what != "twin/delta":
                        for listener in self.listeners:
                            listener(self.gateway(item.venue, item.gateway_id), item.what, item.doc)
        finally:
            watcher.cancel()

    async def _store(self, items: list[Item]) -> None:
        """Write `items` until committed, waiting out the database; an item the database refuses alone is dropped
        as malformed."""
        attempt = 0
        while True:
            try:
                if self.database_error is not None:
                    await self.database.open()
                    log.warning("mirror: the database answers again")
                    self.database_error = None
                written = await self.database.write(items)
                break
            except DatabaseUnavailable as exc:
                self._unavailable(str(exc))
            except Refused as exc:
                if len(items) == 1:
                    item = items[0]
                    self._malformed(item.what, item.venue, item.gateway_id, f"the database refused it: {exc}")
                    return
                for item in items:  # find the one refused; the others are stored one by one
                    await self._store([item])
                return
            await asyncio.sleep(backoff_delay(attempt, 0.2, 10.0, self._rng))
            attempt += 1
        self.groups += 1
        s = self.stored
        s.batches += written.batches
        s.readings += written.readings
        s.events += written.events
        s.changes += written.changes
        s.snapshots += written.snapshots
        s.statuses += written.statuses
        s.duplicates += written.duplicates
        self._recent |= written.deltas_of

    async def _watch_gaps(self, client: aiomqtt.Client) -> None:
        """Every GAP_CHECK_S, the twins this replica wrote to: one whose deltas have a missing range in two checks
        in a row (not another replica's commit still on its way) gets a cmd/snapshot, from one replica at most
        every SNAPSHOT_ASK_S."""
        while True:
            await asyncio.sleep(GAP_CHECK_S)
            wanted, self._recent = self._recent | set(self._suspects), set()
            try:
                gaps = await self.database.gaps(wanted)
                suspects = {}
                for gid, (venue, gateway_id, tip, _held) in gaps.items():
                    if self._suspects.get(gid) == tip and self.ask_snapshots \
                            and await self.database.claim_snapshot_ask(gid, SNAPSHOT_ASK_S):
                        self.gateway(venue, gateway_id).gaps += 1
                        await client.publish(f"{topic_root(venue, gateway_id)}/cmd/snapshot", orjson.dumps(
                            {"request_id": f"mirror-{uuid.uuid4().hex[:8]}"}), qos=1)
                    suspects[gid] = tip
                self._suspects = suspects
            except DatabaseUnavailable:
                self._recent |= wanted  # checked again once the database answers

    def service(self) -> dict[str, Any]:
        s = self.stored
        return {"broker": str(self.broker), "connected": self.connected.is_set(), "share": self.share,
                "database": "ok" if self.database_error is None else f"unavailable: {self.database_error}",
                "stored": {"batches": s.batches, "readings": s.readings, "events": s.events, "changes": s.changes,
                           "snapshots": s.snapshots, "statuses": s.statuses, "duplicates": s.duplicates,
                           "transactions": self.groups},
                "malformed": self.malformed}


class DatabaseView:
    """The HTTP answers from the database (mirror_http.View)."""

    def __init__(self, fleet: FleetMirror) -> None:
        self.fleet = fleet
        self.db = fleet.database

    async def _guarded(self, call: Any) -> Any:
        try:
            return await call
        except DatabaseUnavailable as exc:
            raise Unavailable("database_unavailable", f"the database is unavailable: {exc}") from None

    async def gateways(self, venue: str | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._guarded(self.db.gateways(venue))
        return found

    async def gateway(self, venue: str, gateway_id: str) -> dict[str, Any]:
        found = await self._guarded(self.db.gateways(venue, gateway_id))
        if not found:
            raise NotFound(f"no gateway {venue}/{gateway_id} seen")
        one: dict[str, Any] = found[0]
        return one

    async def twin(self, venue: str, gateway_id: str) -> dict[str, Any]:
        twins = await self._guarded(self.db.twins(venue, gateway_id))
        if not twins:
            await self.gateway(venue, gateway_id)  # NotFound for a gateway never seen
            raise Unavailable("no_snapshot", "no snapshot received yet")
        answer: dict[str, Any] = twins[0].answer()
        return answer

    async def venue_twins(self, venue: str) -> list[dict[str, Any]]:
        return [t.answer() for t in await self._guarded(self.db.twins(venue))]

    async def events(self, venue: str, gateway_id: str, limit: int) -> list[dict[str, Any]]:
        await self.gateway(venue, gateway_id)
        return [doc for _, _, doc in await self._guarded(self.db.events(venue, gateway_id, limit=limit))]

    async def event_history(self, venue: str, gateway_id: str, after: int, limit: int) -> dict[str, Any]:
        await self.gateway(venue, gateway_id)
        rows = await self._guarded(self.db.events(venue, gateway_id, after=after, limit=limit + 1))
        page = rows[:limit]
        return {"events": [{"id": i, "received_at": at, "event": doc} for i, at, doc in page],
                "next": page[-1][0] if len(rows) > limit else None}

    async def telemetry(self, venue: str, gateway_id: str, query: TelemetryQuery) -> dict[str, Any]:
        await self.gateway(venue, gateway_id)
        rows = await self._guarded(self.db.telemetry(
            venue, gateway_id, asset=query.asset, metric=query.metric, since=query.since, until=query.until,
            after=query.after, limit=query.limit + 1))
        page = rows[:query.limit]
        return {"fields": ["seq", "ts", "asset", "metric", "value"], "readings": page,
                "next": f"{page[-1][1]!r}:{page[-1][0]}" if len(rows) > query.limit else None}

    def service(self) -> dict[str, Any]:
        return self.fleet.service()
