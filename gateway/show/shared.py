"""Several boxes, one show: the boxes of a venue agree over the venue's MQTT broker (docs/multi-box.md).

The unit keeps one connection to the venue's broker (`[show.shared] brokers`, tried in turn, with backoff). On it,
under `venues/{venue}/show/{box}/`, each box says it is there (its retained presence; its will says it is lost),
publishes the effects fired on it and the console's looks applied on it, and answers the others' clock exchanges.
What the other boxes of `boxes` publish is carried by this box's engine as they fired it (the same effect id,
serial and start; a look at the same instant), so every box's radio sends the same show. Anything malformed, or
from a box not in `boxes`, is dropped, counted and logged at a bounded rate.

A box lost (its will, a goodbye, or silence) is marked so in the twin asset `shared_show` and the others go on; one
that joins mid-show takes from the others' retained presence the show's epoch, the effects still counting down and
the live looks. With the bus down, this box goes on alone with what it fires, and says so: the twin, a health
problem, and "not shared: ..." in each effect's delivery.

Clocks: every `clock_interval_s` this box asks every other box's show clock (NTP-style: t1 sent here, t2 and t3
there, t4 back here); `clocks()` gives each box's offset from the least-delayed recent exchange (the clock watch
compares them with `clock_bound_ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.cloud.settings import Broker, Credentials
from gateway.show import shared_messages as msg
from gateway.show.engine import Fired, ShowEngine
from gateway.show.live import LiveChange
from gateway.show.shared_settings import SharedSection
from gateway.supervisor import NotReady, Rounds, Unit
from gateway.twin import Twin, TwinFrozen, rfc3339

log = logging.getLogger(__name__)

ASSET = "shared_show"
TRANSMITTER = "shared"  # its name in an effect's delivery
CONNECT_TIMEOUT_S = 3.0  # a broker on the venue's network answers in milliseconds; a stuck attempt is tried again
GOODBYE_S = 0.5
CLOCK_SAMPLES = 16  # exchanges kept per box: the best of them is its clock
CLOCK_RECENT_S = 30.0  # an exchange older than this no longer counts
PRESENCE_EVERY_S = 0.1  # the presence is published again at most this often (effects and looks change it)
WATCH_S = 0.25  # how often silence is looked for
REPORT_S = 1.0  # the twin hears the boxes' clocks at most this often
DROP_LOG_S = 10.0  # dropped messages are logged at most this often, with counts
BusState = Literal["connecting", "online", "offline"]


@dataclass(frozen=True)
class PeerClock:
    """Another box's show clock: `offset_ms` its clock minus this box's, from the exchange of least round trip
    `delay_ms` among the recent ones, which is `age_s` old."""

    offset_ms: float
    delay_ms: float
    age_s: float


@dataclass
class Peer:
    state: Literal["unknown", "online", "lost"] = "unknown"
    since: float = field(default_factory=time.time)
    reason: str | None = None
    heard: float = -math.inf  # monotonic: its last valid message
    carried: int = 0  # effects fired on it and carried here
    malformed: int = 0
    samples: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=CLOCK_SAMPLES))

    def best(self, now: float) -> PeerClock | None:
        recent = [s for s in self.samples if now - s[2] <= CLOCK_RECENT_S]
        if not recent:
            return None
        offset, delay, at = min(recent, key=lambda s: s[1])
        return PeerClock(offset, delay, now - at)


async def _publish(client: aiomqtt.Client, name: str, payload: bytes | Callable[[], bytes], qos: int,
                   retain: bool) -> None:
    """One message to the client; a payload made as it is sent is made here, in the same step as the client takes
    it (the client writes it to the socket when the loop next finds the socket writable)."""
    await client.publish(name, payload() if callable(payload) else payload, qos=qos, retain=retain)


def _settled(task: asyncio.Task[None]) -> None:
    """A publish's outcome read: one that failed with the connection is said by the session's end."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("shared show: a publish failed: %s", task.exception())


class SharedShow(Unit):
    def __init__(self, engine: ShowEngine, twin: Twin, settings: SharedSection, gateway_id: str, venue: str,
                 access: Callable[[], tuple[Credentials, ssl.SSLContext | None]], *,
                 rng: random.Random | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.id = gateway_id
        self.venue = venue
        self._twin = twin
        self._access = access
        self._rng = rng or random.Random()
        self.brokers: list[Broker] = settings.parsed_brokers()
        self.broker = self.brokers[0]
        self.client_id = settings.client_id or f"vg-show-{gateway_id}"[:23]
        self.peers = {box: Peer() for box in settings.boxes if box != gateway_id}
        self.state: BusState = "connecting"
        self.last_error: str | None = None
        self.since = time.time()
        self.connects = 0
        self.published = 0
        self.foreign = 0  # messages from boxes not in `boxes` (or off the show's topics)
        self._creds: Credentials | None = None
        self._tls: ssl.SSLContext | None = None
        # What this box says, in order: (topic, payload, qos, retain); a payload made as it is sent (a clock answer's
        # t3) is a function giving it.
        self._out: asyncio.Queue[tuple[str, bytes | Callable[[], bytes], int, bool]] = asyncio.Queue()
        self._presence_wanted = asyncio.Event()
        self._undo: list[Callable[[], None]] = []
        self._rounds = Rounds(len(self.brokers), settings.backoff_initial_s, settings.backoff_max_s,
                              settings.keepalive_s, self._rng)
        self._dropped_since_log = 0
        self._last_drop_log = -math.inf
        self._last_report = -math.inf
        self._reported: dict[str, Any] | None = None

    # -- what others read ------------------------------------------------------------------------------
    def clocks(self) -> dict[str, PeerClock]:
        """Each other box heard recently (not lost), its clock minus this box's from its best recent exchange."""
        now = time.monotonic()
        out = {}
        for box, peer in self.peers.items():
            best = peer.best(now) if peer.state == "online" else None
            if best is not None:
                out[box] = best
        return out

    def unclocked(self) -> list[str]:
        """The other boxes online whose clock is not known yet (no recent exchange with them)."""
        now = time.monotonic()
        return [box for box, peer in self.peers.items() if peer.state == "online" and peer.best(now) is None]

    def document(self) -> dict[str, Any]:
        clocks = self.clocks()
        boxes: dict[str, Any] = {}
        for box, peer in self.peers.items():
            clock = clocks.get(box)
            boxes[box] = {"state": peer.state, "since": rfc3339(peer.since), "reason": peer.reason,
                          "offset_ms": None if clock is None else round(clock.offset_ms, 3),
                          "delay_ms": None if clock is None else round(clock.delay_ms, 3),
                          "effects_carried": peer.carried, "malformed": peer.malformed}
        return {"box": self.id, "bus": self.state, "broker": str(self.broker), "bus_error": self.last_error,
                "since": rfc3339(self.since), "boxes": boxes, "foreign": self.foreign}

    def health(self) -> dict[str, Any]:
        return {**self.document(), "connects": self.connects, "published": self.published}

    def problem(self) -> str | None:
        """Why the shared show degrades the box: the bus is down (it goes on alone), or boxes are lost."""
        if self.state != "online" and self.last_error is not None:
            return f"shared show: the bus is {self.state} ({self.last_error}): this box goes on alone"
        lost = [f"{box} ({peer.reason})" for box, peer in self.peers.items() if peer.state == "lost"]
        if lost:
            return f"shared show: lost {', '.join(lost)}; the show goes on without {'it' if len(lost) == 1 else 'them'}"
        return None

    # -- the unit ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._creds, self._tls = self._access()
        except ValueError as exc:
            raise NotReady(str(exc)) from None

    def attach(self) -> None:
        engine = self.engine
        self._undo = [engine.attach_transmitter(TRANSMITTER, self._take), engine.live.subscribe(self._looked),
                      engine.epochs.on_change(self._presence_wanted.set)]
        self._report(force=True)

    def detach(self) -> None:
        for undo in self._undo:
            undo()
        self._undo = []
        self._set_state("offline", "stopped")

    async def run(self) -> None:
        while True:
            self.broker = self.brokers[self._rounds.index]
            self._set_state("connecting", self.last_error)
            try:
                async with self._client() as client:
                    self.connects += 1
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                message = str(exc) or type(exc).__name__
                if message != self.last_error or self.state == "online":
                    log.warning("shared show: the bus at %s: %s; this box goes on alone meanwhile", self.broker,
                                message)
                self._set_state("offline", message)
            # The next broker at once; the backoff after a whole round (a session counts once it has lasted a
            # keepalive: one the broker drops at once is a failed attempt).
            await asyncio.sleep(self._rounds.ended().delay_s)

    def _client(self) -> aiomqtt.Client:
        assert self._creds is not None
        gone = msg.encode(self.id, {"online": False, "reason": "connection lost"})
        will = aiomqtt.Will(self._topic("presence"), gone, qos=1, retain=True)
        return aiomqtt.Client(
            self.broker.host, self.broker.port, username=self._creds.username, password=self._creds.password,
            identifier=self.client_id, logger=logging.getLogger("gateway.show.shared.mqtt"),
            protocol=aiomqtt.ProtocolVersion.V5, will=will, clean_start=True, keepalive=self.settings.keepalive_s,
            timeout=CONNECT_TIMEOUT_S, tls_context=self._tls if self.broker.tls else None)

    def _topic(self, kind: str) -> str:
        return msg.topic(self.venue, self.id, kind)

    async def _session(self, client: aiomqtt.Client) -> None:
        options: Any = SubscribeOptions(qos=1, noLocal=True)
        await client.subscribe(msg.subscription(self.venue), options=options)
        # Online before the presence is made: an effect fired from here on is queued (sent once the presence is),
        # one fired before is in the presence. What was waiting for a bus now gone is in the presence too.
        self._out = asyncio.Queue()
        self._set_state("online")
        await client.publish(self._topic("presence"), self._presence(), qos=1, retain=True)
        self._rounds.connected()
        log.info("shared show: on the bus at %s as %s, with %s", self.broker, self.id, ", ".join(self.peers) or
                 "no other box")
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(coro) for coro in (self._receive(client), self._send(client),
                                                     self._announce(client), self._ask_clocks(), self._watch())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        except asyncio.CancelledError:  # stopping: the others hear it went, at once
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.publish(self._topic("presence"), msg.encode(
                    self.id, {"online": False, "reason": "stopped"}), qos=1, retain=True), GOODBYE_S)
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _set_state(self, state: BusState, error: str | None = None) -> None:
        if (state, error) == (self.state, self.last_error):
            return
        self.state, self.last_error, self.since = state, error, time.time()
        self._report(force=True)

    # -- what this box says ------------------------------------------------------------------------------
    def _queue(self, kind: str, body: dict[str, Any], qos: int = 1, retain: bool = False) -> None:
        self._out.put_nowait((self._topic(kind), msg.encode(self.id, body), qos, retain))

    def _take(self, fired: Fired) -> str:
        """The engine's transmitter: an effect fired here goes to every other box; one carried from there does
        not go back."""
        if fired.origin is not None:
            return f"carried from {fired.origin}"
        if self.state != "online":
            return f"not shared: the show's bus is {self.state} ({self.last_error or 'connecting'}): this box goes " \
                   "on alone"
        self._queue("effect", msg.effect_body(fired, self.id))
        self._presence_wanted.set()
        return "shared"

    def _looked(self, change: LiveChange) -> None:
        if change.origin is None and self.state == "online":
            self._queue("live", msg.live_body(change), qos=0)
            self._presence_wanted.set()

    def _presence(self) -> bytes:
        now = time.monotonic()
        effects = [msg.effect_body(f, f.origin or self.id) for f in self.engine.recent if f.start_mono > now]
        looks = [msg.live_body(c) for c in self.engine.live.current().values()]
        return msg.encode(self.id, {"online": True, "since": rfc3339(self.since),
                                    "epochs": {str(k): v for k, v in self.engine.epochs.local.items()},
                                    "effects": effects[-msg.MAX_LISTED:], "live": looks[-msg.MAX_LISTED:]})

    async def _send(self, client: aiomqtt.Client) -> None:
        """What this box says, in order, none waiting for the broker's acknowledgement of the one before (an
        effect never queues behind a presence's PUBACK); a lost connection ends the session by its reader."""
        acknowledging: set[asyncio.Task[None]] = set()
        try:
            while True:
                name, payload, qos, retain = await self._out.get()
                task = asyncio.ensure_future(_publish(client, name, payload, qos, retain))
                acknowledging.add(task)
                task.add_done_callback(_settled)
                task.add_done_callback(acknowledging.discard)
                self.published += 1
        finally:
            for task in acknowledging:
                task.cancel()

    async def _announce(self, client: aiomqtt.Client) -> None:
        """The presence again whenever what it lists changes (at most every PRESENCE_EVERY_S)."""
        while True:
            await self._presence_wanted.wait()
            await asyncio.sleep(PRESENCE_EVERY_S)
            self._presence_wanted.clear()
            self._out.put_nowait((self._topic("presence"), self._presence(), 1, True))

    async def _ask_clocks(self) -> None:
        while True:
            self._out.put_nowait((self._topic("clock"), lambda: msg.encode(self.id, {"t1": self._now_ms()}), 0, False))
            await asyncio.sleep(self.settings.clock_interval_s)

    def _now_ms(self) -> float:
        """The show clock now, in ms with its fraction."""
        return self.engine.wall(time.monotonic()) * 1000

    # -- what the others say -----------------------------------------------------------------------------
    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            self.receive(str(message.topic), payload)

    def receive(self, name: str, payload: bytes) -> None:
        """One message from the bus: checked, then taken; dropped and counted when it is not a box's of the show."""
        arrived = self._now_ms()
        try:
            box, kind = msg.parse_topic(self.venue, name)
        except msg.Malformed as exc:
            self._drop(None, str(exc))
            return
        if box == self.id or not payload:  # its own presence retained from before; a retained message cleared
            return
        peer = self.peers.get(box)
        if peer is None:
            self._drop(None, f"from {box!r}, not a box of this show (allowed: {', '.join(self.peers)})")
            return
        try:
            doc = msg.decode(payload, box)
            if kind == "presence":
                self._presence_of(box, peer, msg.presence_of(doc))
            elif kind == "effect":
                fired = msg.effect_of(doc, self.engine.mono, self.engine.settings.max_flash_hz)
                if fired.origin != box:
                    raise msg.Malformed(f"an effect of {fired.origin!r} sent as {box!r}'s own")
                self._carry(peer, fired)
            elif kind == "live":
                self._carry_look(box, msg.look_of(doc, self.engine.settings.max_flash_hz))
            else:
                self._clock(box, peer, msg.clock_of(doc), arrived)
        except Exception as exc:  # whatever one message does, it never ends the unit (a retained one would again)
            self._malformed(box, peer, kind, exc)
            return
        if kind != "presence":
            self._heard(box, peer)

    def _malformed(self, box: str, peer: Peer, what: str, exc: Exception) -> None:
        """A message (or one entry of a presence) that could not be taken: dropped and counted. An error other
        than Malformed (a message the checks missed) is said with its type."""
        peer.malformed += 1
        self._drop(box, f"{what}: {exc}" if isinstance(exc, msg.Malformed) else f"{what}: {type(exc).__name__}: {exc}")

    def _heard(self, box: str, peer: Peer) -> None:
        peer.heard = time.monotonic()
        if peer.state != "online":
            log.info("shared show: %s is on the show's bus", box)
            peer.state, peer.since, peer.reason = "online", time.time(), None
            self._report(force=True)

    def _lost(self, box: str, peer: Peer, reason: str) -> None:
        if peer.state == "lost":
            return
        log.warning("shared show: %s lost (%s); the show goes on without it", box, reason)
        peer.state, peer.since, peer.reason = "lost", time.time(), reason
        self._report(force=True)

    def _presence_of(self, box: str, peer: Peer, presence: msg.Presence) -> None:
        if not presence.online:
            self._lost(box, peer, presence.reason or "gone")
            return
        self._heard(box, peer)
        self.engine.epochs.heard(box, presence.epochs)
        # A box that joins takes what still counts down and the looks; an entry that cannot be taken is dropped and
        # counted alone, and the rest of the presence is still taken.
        for i, doc in enumerate(presence.effects):
            try:
                fired = msg.effect_of(doc, self.engine.mono, self.engine.settings.max_flash_hz)
                if fired.origin != self.id and fired.start_mono > time.monotonic():
                    self._carry(self.peers.get(fired.origin or box, peer), fired)
            except Exception as exc:
                self._malformed(box, peer, f"presence: effects[{i}]", exc)
        for i, doc in enumerate(presence.looks):
            try:
                self._carry_look(box, msg.look_of(doc, self.engine.settings.max_flash_hz))
            except Exception as exc:
                self._malformed(box, peer, f"presence: live[{i}]", exc)

    def _carry(self, peer: Peer, fired: Fired) -> None:
        boxes = self.settings.boxes
        size = 256 // len(boxes)
        first = boxes.index(fired.origin) * size if fired.origin in boxes else -size
        if not first <= fired.serial < first + size:
            raise msg.Malformed(f"serial {fired.serial} of {fired.origin!r} is not in its block ({first} to "
                                f"{first + size - 1}): is show.shared.boxes the same list, in the same order, on "
                                "every box?")
        if self.engine.carry(fired):
            peer.carried += 1

    def _carry_look(self, box: str, carried: msg.CarriedLook) -> None:
        # An effect that started in the zone at or after the look's instant took it from live control.
        if any(carried.zone in f.zones and f.starts_at * 1000 >= carried.show_ms for f in self.engine.recent):
            return
        self.engine.live.carry(carried.zone, carried.look, carried.show_ms, carried.fade_ms, box)

    def _clock(self, box: str, peer: Peer, clock: msg.ClockMessage, arrived: float) -> None:
        if clock.to is None:  # asked: answered at once, its t3 stamped as the answer is handed to the client
            answer = {"to": box, "t1": clock.t1, "t2": arrived}
            self._out.put_nowait((self._topic("clock"), lambda: msg.encode(self.id, {**answer, "t3": self._now_ms()}),
                                  0, False))
        elif clock.to == self.id:
            assert clock.t2 is not None and clock.t3 is not None
            delay = (arrived - clock.t1) - (clock.t3 - clock.t2)
            if delay < 0:
                raise msg.Malformed(f"a clock answer with a negative round trip ({delay:.3f} ms)")
            offset = ((clock.t2 - clock.t1) + (clock.t3 - arrived)) / 2
            peer.samples.append((offset, delay, time.monotonic()))

    def _drop(self, box: str | None, why: str) -> None:
        if box is None:
            self.foreign += 1
        self._dropped_since_log += 1
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_S:
            log.warning("shared show: dropped %d message(s) since the last word; the latest: %s",
                        self._dropped_since_log, why)
            self._dropped_since_log, self._last_drop_log = 0, now

    async def _watch(self) -> None:
        """Boxes heard nothing from for `silence_s` are lost; the twin hears the boxes' clocks."""
        while True:
            await asyncio.sleep(WATCH_S)
            now = time.monotonic()
            for box, peer in self.peers.items():
                if peer.state == "online" and now - peer.heard > self.settings.silence_s:
                    self._lost(box, peer, f"silent for {now - peer.heard:.1f} s")
            self._report()

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < REPORT_S:
            return
        doc = self.document()
        if doc == self._reported:
            return
        self._last_report, self._reported = now, doc
        with contextlib.suppress(TwinFrozen):
            self._twin.declare(ASSET, "shared_show")
            self._twin.report(ASSET, doc)
