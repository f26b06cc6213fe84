"""The reference consumer: subscribes to one or many gateways on a broker, rebuilds each one's twin from the
retained snapshot and the deltas after it, drops duplicate telemetry batches and events, and keeps what it saw.
`venue-gateway mirror` prints it or serves it over HTTP; the tests use it as the cloud's side of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.cloud.settings import Broker, topic_root
from gateway.supervisor import Rounds
from gateway.twin import merge_patch

log = logging.getLogger(__name__)

# With --share: what every replica takes (the retained ones reach only an ordinary subscription), and what the
# replicas split among them.
EVERY_REPLICA = ("status", "twin/snapshot")
SHARED = ("telemetry", "events", "twin/delta")
SESSION_EXPIRY_S = 3600  # a replica with a fixed client id that is away this long loses what its session held
RECEIVE_MAXIMUM = 1000  # messages the broker may send before this mirror acknowledges the first (MQTT 5)
SEEN_IDS = 200_000  # ids remembered for dropping duplicates
SNAPSHOT_ASK_S = 5.0
# A session is good (a fresh round of brokers, the backoff from its first step) once it has lasted this long; one the
# broker drops sooner (another replica with this client id takes it over) is a failed attempt of its round.
SETTLED_S = 10.0
BACKOFF_S = (0.2, 5.0)  # the backoff's first step and its most
EVENTS_KEPT = 1000


class Seen:
    """The most recent ids, for dropping duplicates in bounded memory."""

    def __init__(self, size: int = SEEN_IDS) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._size = size

    def add(self, key: str) -> bool:
        """True when `key` is new."""
        if key in self._ids:
            return False
        self._ids.add(key)
        self._order.append(key)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        return True


def _add_range(ranges: list[list[int]], lo: int, hi: int) -> bool:
    """Merge [lo, hi] into sorted, disjoint ranges; False when it overlaps what is there (a duplicate)."""
    overlap = any(a <= hi and lo <= b for a, b in ranges)
    ranges.append([lo, hi])
    ranges.sort()
    merged: list[list[int]] = []
    for a, b in ranges:
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    ranges[:] = merged
    return not overlap


@dataclass
class GatewayMirror:
    venue: str
    gateway_id: str
    status: dict[str, Any] = field(default_factory=dict)
    version: int | None = None  # None: no snapshot yet
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    taken_at: str | None = None
    gaps: int = 0  # deltas that did not continue what was held: a snapshot was needed
    batches: int = 0
    readings: int = 0
    duplicates: int = 0  # batches and events dropped as already seen
    overlaps: int = 0  # readings in a new batch id already held from another (never expected)
    seqs: list[list[int]] = field(default_factory=list)  # telemetry sequence ranges held
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    events_total: int = 0
    last_seen: float = 0.0
    asked_snapshot: float = 0.0
    seen: Seen = field(default_factory=Seen)

    @property
    def complete(self) -> bool:
        return self.version is not None

    def twin(self) -> dict[str, Any]:
        """The twin document as the gateway's `GET /api/v1/twin` gives it (taken_at: the snapshot's)."""
        return {"gateway_id": self.gateway_id, "venue": self.venue, "version": self.version or 0,
                "taken_at": self.taken_at, "assets": self.assets}

    def summary(self) -> dict[str, Any]:
        return {"venue": self.venue, "gateway_id": self.gateway_id, "online": self.status.get("online"),
                "twin_version": self.version, "assets": len(self.assets), "gaps": self.gaps,
                "telemetry": {"batches": self.batches, "readings": self.readings, "duplicates": self.duplicates,
                              "overlaps": self.overlaps, "seq_ranges": self.seqs},
                "events": self.events_total}

    # -- applying what arrives ---------------------------------------------------------------------------
    def snapshot(self, doc: dict[str, Any]) -> None:
        """Take a snapshot unless it is older than the twin held; TypeError when it is not one (nothing changed)."""
        version, assets = doc["version"], doc["assets"]
        if not isinstance(version, int) or not isinstance(assets, dict) or not all(
                isinstance(a, dict) and isinstance(a.get("reported", {}), dict)
                and isinstance(a.get("desired", {}), dict) for a in assets.values()):
            raise TypeError("a snapshot has a whole version and assets, an object of objects")
        if self.version is not None and version < self.version:
            return  # an older retained snapshot, delivered again on a reconnect
        self.version, self.assets, self.taken_at = version, doc["assets"], doc.get("taken_at")

    def delta(self, doc: dict[str, Any]) -> bool:
        """Apply a delta; False when it does not continue the twin held (a snapshot is needed)."""
        if self.version is None:
            return False
        if doc["to"] <= self.version:
            return True  # already held (a duplicate, or covered by a newer snapshot)
        if doc["from"] > self.version:
            self.gaps += 1
            return False
        for change in doc["changes"]:
            if change["version"] <= self.version:
                continue
            self.apply(change)
        self.version = doc["to"]
        return True

    def apply(self, change: dict[str, Any]) -> None:
        """Fold one change of a delta into the twin held (docs/cloud-protocol.md, rebuilding the twin, step 2)."""
        asset_id = change["asset"]
        if change["removed"]:
            self.assets.pop(asset_id, None)
        else:
            asset = self.assets.get(asset_id) or {"reported": {}, "desired": {}}
            reported, desired = asset.get("reported", {}), asset.get("desired", {})
            if change["reported"] is not None:
                reported = merge_patch(reported, change["reported"])
            if change["desired"] is not None:
                desired = merge_patch(desired, change["desired"])
            self.assets[asset_id] = {"kind": change["kind"], "zone": change["zone"], "owner": change["owner"],
                                     "reported": reported, "desired": desired, "version": change["version"],
                                     "updated_at": change["at"]}
        self.version = change["version"]

    def telemetry(self, doc: dict[str, Any]) -> list[list[Any]] | None:
        """The batch's readings if it is new, else None (a duplicate)."""
        if not self.seen.add(f"b:{doc['batch_id']}"):
            self.duplicates += 1
            return None
        readings: list[list[Any]] = doc["readings"]
        if readings:
            first, last = readings[0][0], readings[-1][0]
            if not _add_range(self.seqs, first, last):
                self.overlaps += 1
        self.batches += 1
        self.readings += len(readings)
        return readings

    def event(self, doc: dict[str, Any]) -> bool:
        if not self.seen.add(f"e:{doc.get('event_id')}"):
            self.duplicates += 1
            return False
        self.events.append(doc)
        self.events_total += 1
        return True


Listener = Callable[[GatewayMirror, str, Any], None]  # (gateway, what: status|snapshot|delta|telemetry|event, doc)


class Mirror:
    """Follows the gateways under `venue` and `gateway` (`+`: every one) on the first of `brokers` that answers,
    trying the next when one fails. With `share`, several replicas split the load: telemetry, events and deltas come
    through the MQTT 5 shared subscription `$share/GROUP/...`, each message to one replica; status and snapshots
    through an ordinary subscription, so that every replica gets them, the retained ones included (the broker sends
    no retained message to a shared subscription: MQTT 5, 4.8.2)."""

    manual_acks = False  # a subclass that acknowledges each message itself, once it is safely kept

    def __init__(self, broker: Broker | Sequence[Broker], *, venue: str = "+", gateway: str = "+",
                 client_id: str | None = None, username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, ask_snapshots: bool = True, share: str | None = None,
                 session_expiry_s: int = SESSION_EXPIRY_S) -> None:
        self.brokers = [broker] if isinstance(broker, Broker) else list(broker)
        if not self.brokers:
            raise ValueError("a mirror needs a broker")
        self.broker = self.brokers[0]  # the one in use, or tried last
        self.filter = f"{topic_root(venue, gateway)}/#"
        self.share = share
        # A fixed client id gets a persistent session: the broker keeps what arrives while the mirror is away.
        self.client_id = client_id
        self.session_expiry_s = session_expiry_s
        self._username, self._password, self._tls = username, password, tls
        self.ask_snapshots = ask_snapshots
        self.gateways: dict[tuple[str, str], GatewayMirror] = {}
        self.listeners: list[Listener] = []
        self.connected = asyncio.Event()
        self.malformed = 0
        self.connects = 0  # sessions the broker accepted
        self._client: aiomqtt.Client | None = None

    @property
    def v5(self) -> bool:
        """MQTT 5 for shared subscriptions and for sessions that expire (the fleet's); 3.1.1 otherwise, as ever."""
        return self.share is not None or self.manual_acks

    def subscriptions(self) -> list[str]:
        if self.share is None:
            return [self.filter]
        root = self.filter.removesuffix("/#")
        return [f"{root}/{what}" for what in EVERY_REPLICA] + [f"$share/{self.share}/{root}/{what}"
                                                                 for what in SHARED]

    def gateway(self, venue: str, gateway_id: str) -> GatewayMirror:
        key = (venue, gateway_id)
        found = self.gateways.get(key)
        if found is None:
            found = self.gateways[key] = GatewayMirror(venue, gateway_id)
        return found

    def _connection(self, broker: Broker, identifier: str) -> aiomqtt.Client:
        persistent = self.client_id is not None
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry_s if persistent else 0
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
        client = aiomqtt.Client(
            broker.host, broker.port, identifier=identifier, username=self._username, password=self._password,
            tls_context=self._tls if broker.tls else None, logger=logging.getLogger("gateway.cloud.mqtt"),
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if self.v5 else not persistent,
            clean_start=(not persistent) if self.v5 else paho.MQTT_CLEAN_START_FIRST_ONLY, properties=properties)
        if self.manual_acks:  # paho's own switch: aiomqtt 2 has none (aiomqtt is held below 3)
            client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        """Subscribe and follow until cancelled. A failure moves on to the next broker at once; once a whole round
        of them has failed, the next round waits a backoff (as the gateway's link does: gateway.supervisor.Rounds).
        A session that ends before SETTLED_S is a failed attempt of its round."""
        rounds = Rounds(len(self.brokers), *BACKOFF_S, SETTLED_S, random.Random())
        identifier = self.client_id or f"mirror-{uuid.uuid4().hex[:8]}"
        while True:
            self.broker = self.brokers[rounds.index]
            try:
                async with self._connection(self.broker, identifier) as client:
                    self._client = client
                    self.connects += 1
                    await self._subscribe(client)
                    rounds.connected()
                    self.connected.set()
                    await self._consume(client)
            except aiomqtt.MqttError as exc:
                error: aiomqtt.MqttError | None = exc
            else:
                error = None
            finally:
                self._client = None
                self.connected.clear()
            lost = self.broker
            step = rounds.ended()
            if not step.connected or step.log_quiet is not None:
                more = f" ({step.log_quiet} more sessions ended since the last such message)" \
                    if step.log_quiet else ""
                log.warning("mirror: broker %s: %s%s%s; %s", lost, error or "the connection ended",
                            "" if step.settled or not step.connected else " (soon after it began)", more,
                            f"trying again in {step.delay_s:.1f} s" if step.delay_s else
                            f"moving on to {self.brokers[rounds.index]}")
            if step.delay_s:
                await asyncio.sleep(step.delay_s)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for topic in self.subscriptions():
            await client.subscribe(topic, qos=1)
        log.info("mirror subscribed to %s on %s", ", ".join(self.subscriptions()), self.broker)

    async def _consume(self, client: aiomqtt.Client) -> None:
        """Take each message as it comes (the client acknowledges it on receipt)."""
        async for message in client.messages:
            await self._handle(str(message.topic), message.payload)

    async def _handle(self, topic: str, payload: Any) -> None:
        parts = topic.split("/", 3)
        if len(parts) < 4 or parts[0] != "venues":
            return
        gw = self.gateway(parts[1], parts[2])
        what = parts[3]
        if what in ("desired",) or what.startswith("cmd/"):
            return  # the cloud's own commands
        try:
            doc = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            self.malformed += 1
            return
        if not isinstance(doc, dict):
            self.malformed += 1
            return
        gw.last_seen = time.time()
        try:
            if what == "status":
                gw.status = doc
            elif what == "twin/snapshot":
                gw.snapshot(doc)
            elif what == "twin/delta":
                if not gw.delta(doc):
                    await self._ask_snapshot(gw)
            elif what == "telemetry":
                if gw.telemetry(doc) is None:
                    return
            elif what == "events":
                if not gw.event(doc):
                    return
            else:
                return
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
            self.malformed += 1
            log.warning("mirror: malformed %s from %s/%s: %s", what, gw.venue, gw.gateway_id, exc)
            return
        for listener in self.listeners:
            listener(gw, what, doc)

    async def _ask_snapshot(self, gw: GatewayMirror) -> None:
        now = time.monotonic()
        if not self.ask_snapshots or self._client is None or now - gw.asked_snapshot < SNAPSHOT_ASK_S:
            return
        gw.asked_snapshot = now
        topic = f"{topic_root(gw.venue, gw.gateway_id)}/cmd/snapshot"
        await self._client.publish(topic, orjson.dumps({"request_id": f"mirror-{uuid.uuid4().hex[:8]}"}), qos=1)


class NoAnswer(Exception):
    """A command went unanswered in time, or its gateway is not known on the broker; the message says which."""


def command_topic(command: str) -> str:
    """`desired` or `cmd/NAME` for a command named `desired`, `NAME` or `cmd/NAME`."""
    name = command.removeprefix("cmd/")
    return "desired" if name == "desired" else f"cmd/{name}"


async def send_command(broker: Broker, gateway: str, command: str, payload: dict[str, Any], *, venue: str = "+",
                       wait_s: float = 10.0, username: str | None = None, password: str | None = None,
                       tls: ssl.SSLContext | None = None) -> tuple[str, dict[str, Any]]:
    """Publish one command to a gateway, as the cloud does, and wait for its answer: (the venue, the
    `command_result` or `command_error` event). With venue `+`, the venue is the one the gateway's retained
    `status` names. NoAnswer when nothing answers within `wait_s`; aiomqtt.MqttError when the broker cannot be
    reached."""
    request_id = f"cli-{uuid.uuid4().hex[:12]}"
    body = orjson.dumps({**payload, "request_id": request_id})
    statuses: dict[str, dict[str, Any]] = {}  # venue -> the gateway's last status there
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"mirror-cmd-{uuid.uuid4().hex[:8]}",
                              username=username, password=password, tls_context=tls if broker.tls else None,
                              logger=logging.getLogger("gateway.cloud.mqtt")) as client:
        await client.subscribe(f"{topic_root(venue, gateway)}/status", qos=1)
        await client.subscribe(f"{topic_root(venue, gateway)}/events", qos=1)
        if venue == "+":  # the retained status says where the gateway is
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(deadline, loop.time() + 3.0)):
                    while not statuses:
                        topic, doc = await _next_json(client)
                        if topic[3] == "status":
                            statuses[topic[1]] = doc
            if not statuses:
                raise NoAnswer(f"no gateway {gateway} is known on {broker} (it has no retained status): check the "
                               "id, or give --venue")
            with contextlib.suppress(TimeoutError):  # another venue's retained status arrives with the first
                async with asyncio.timeout(0.2):
                    while True:
                        topic, doc = await _next_json(client)
                        if topic[3] == "status":
                            statuses[topic[1]] = doc
            if len(statuses) > 1:
                raise NoAnswer(f"there is a gateway {gateway} in {', '.join(sorted(statuses))}: give --venue")
            venue = next(iter(statuses))
        name = command_topic(command)
        await client.publish(f"{topic_root(venue, gateway)}/{name}", body, qos=1)
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    topic, doc = await _next_json(client)
                    if topic[3] == "status":
                        statuses[topic[1]] = doc
                    elif topic[3] == "events" and doc.get("kind") in ("command_result", "command_error"):
                        if doc.get("request_id") == request_id:
                            return venue, doc
                        if doc.get("request_id") is None and doc.get("command") == name:
                            return venue, doc  # refused before its request_id was read: no such command, not JSON
        except TimeoutError:
            status = statuses.get(venue)
            if status is None:
                state = "it has published no status on this broker"
            elif status.get("online"):
                state = "it is online (the answer may be waiting behind a backlog in its outbox)"
            else:
                state = f"it is offline ({status.get('reason', 'no reason given')})"
            raise NoAnswer(f"no answer from {venue}/{gateway} within {wait_s:g} s: {state}") from None


async def _next_json(client: aiomqtt.Client) -> tuple[list[str], dict[str, Any]]:
    """The next message that is a JSON object on a gateway's topic: (the topic's parts, the object)."""
    async for message in client.messages:
        parts = str(message.topic).split("/", 3)
        if len(parts) < 4 or not isinstance(message.payload, bytes | bytearray):
            continue
        try:
            doc = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            return parts, doc
    raise aiomqtt.MqttError("the broker closed the connection")
