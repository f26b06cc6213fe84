"""The MQTT link to the cloud: one connection at a time, to one of the broker addresses tried in turn. A lost
connection moves on to the next address at once; once a whole round of them has failed, the next round waits the
exponential backoff (with jitter). A session counts as good, starting a fresh round and the backoff's first step, only
once it has lasted a keepalive (gateway.supervisor.Rounds): one the broker accepts and then drops at once (an ACL
refusing telemetry, a payload over the broker's limit, another box with this client id) is a failed attempt, so the
link never reconnects faster than its backoff.

Every (re)connect is a birth: the retained `status` online (its will says offline), a retained twin snapshot, then
deltas that continue it, so a consumer rebuilds the exact twin from the snapshot and what follows. Telemetry and
events leave through the outbox drain; `desired` and `cmd/*` come in and are answered with events. What the outbox
holds leaves it only once a broker has acknowledged it, so after a failover everything unacknowledged goes again to
the next broker with the same batch and event ids, and a consumer drops duplicates by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import time
from typing import TYPE_CHECKING, Any, Literal

import aiomqtt
import orjson
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway import __version__
from gateway.cloud import commands
from gateway.cloud.client import Client, PublishRefused
from gateway.cloud.drain import Drain, DrainCounts
from gateway.cloud.settings import Broker, CloudSection, Credentials, topic_root, user_name
from gateway.preflight import read_secret
from gateway.store import StoreError
from gateway.supervisor import Rounds, Unit
from gateway.twin import ChangesGone, TwinFrozen, change_document, rfc3339

if TYPE_CHECKING:
    from gateway.daemon import Gateway

log = logging.getLogger(__name__)

State = Literal["connecting", "online", "offline", "refused"]  # refused: connected, messages refused
UNSUPPORTED_PROTOCOL = 132  # CONNACK reason code of a broker that does not speak MQTT 5
GOODBYE_S = 1.0
# Stopping, the outbox is sent for at most this long: with GOODBYE_S, within the 3.5 s the daemon gives its units
# (gateway.daemon.STOP_BUDGET_S less the store's close), itself within the service's TimeoutStopSec.
STOP_DRAIN_S = 2.0
ASSET = "service:cloud"
REFUSED = "cloud_refused"  # the standing alert while the broker refuses what the box sends
NOT_AUTHORIZED = 0x87
REFUSAL_LOG_S = 10.0  # refused commands are logged at most this often, with a count
MESSAGE_CHARS = 500  # a command_error's message is cut to this (it may quote what the command held)
# Commands wait here, read from the socket, until they are carried out one by one; past this many the client drops
# the newest with a warning (aiomqtt's queue is unbounded by default).
QUEUED_COMMANDS = 100
SUBSCRIBE_RETRY_S = 5.0  # a subscription the broker refused is asked for again this often, while connected
SUBSCRIPTIONS = ("desired", "cmd/+")  # the topics the box reads, under its root
PACKET_HEADROOM = 1024  # MQTT 5's Maximum Packet Size: a command's payload and this, for the topic and properties


class _SocketErrors(logging.Handler):
    """Keeps the MQTT client's last logged error: a TLS alert while waiting for CONNACK is only logged, and the
    attempt then ends as a bare timeout. The error makes that timeout's message say what happened."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def tls_context(creds: Credentials, key: str = "cloud") -> ssl.SSLContext:
    """Verify the broker against `ca_file` (default: the system's CAs); present this box's certificate for
    mutual TLS. ValueError says which file of the section (`key`: [cloud], [show.shared]) is wrong."""
    try:
        context = ssl.create_default_context(cafile=str(creds.ca_file) if creds.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{key}.ca_file {creds.ca_file} is not a usable CA certificate: {exc}") from None
    if creds.cert_file is not None:
        # the private key (in cert_file when there is no key_file) is a secret: not open to other users
        read_secret(creds.key_file or creds.cert_file, f"{key}.key_file" if creds.key_file else f"{key}.cert_file")
        try:
            context.load_cert_chain(str(creds.cert_file), str(creds.key_file) if creds.key_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{key}.cert_file {creds.cert_file} and {key}.key_file {creds.key_file} are not a "
                             f"certificate and its key: {exc}") from None
    return context


def _explain(exc: BaseException, connect_timeout_s: float, socket_error: str | None = None) -> str:
    """A connection failure in words a venue tech can act on."""
    if isinstance(exc, MqttConnectError) and exc.rc is not None:
        reason = str(exc.rc).strip() if not isinstance(exc.rc, int) else paho.connack_string(exc.rc)
        hint = " (check cloud.username or username_env, password_env, and the broker's password file and ACL)" \
            if "password" in reason.lower() or "author" in reason.lower() else ""
        return f"the broker refused the connection: {reason}{hint}"
    text = str(exc.__cause__ or exc) if str(exc) in ("", "Operation timed out") and exc.__cause__ else str(exc)
    if text == "Operation timed out":
        text = f"no answer from the broker within {connect_timeout_s:g} s" + \
            (f" ({socket_error})" if socket_error else "")
    if any(word in text for word in ("SSL", "certificate", "TLS", "tlsv1")):
        return f"TLS failed: {text} (check cloud.ca_file, cert_file and key_file against the broker's)"
    return text or type(exc).__name__


class CloudLink(Unit):
    def __init__(self, gw: Gateway, settings: CloudSection, creds: Credentials,
                 tls: ssl.SSLContext | None, *, rng: random.Random | None = None) -> None:
        self._gw = gw
        self.settings = settings
        self.brokers = settings.addresses()
        self._rng = rng or random.Random()
        # the addresses in turn; a session is good once it has lasted a keepalive
        self._rounds = Rounds(len(self.brokers), settings.backoff_initial_s, settings.backoff_max_s,
                              settings.keepalive_s, self._rng)
        self._v311: set[Broker] = set()  # brokers that refused MQTT 5 (protocol auto): 3.1.1 with them
        self._creds = creds
        self._tls = tls
        self.root = topic_root(gw.config.gateway.venue, gw.config.gateway.id)
        self.topics = {"telemetry": f"{self.root}/telemetry", "event": f"{self.root}/events"}
        self.client_id = settings.client_id or f"vg-{gw.config.gateway.id}"[:23]
        self.state: State = "connecting"
        self.last_error: str | None = None
        self.retry_in_s: float | None = None
        self.since = time.time()
        self.connects = 0
        self.failovers = 0  # lost connections after which the link moved on to another address
        self.snapshots = 0
        self.deltas = 0
        self.commands_ok = 0
        self.commands_refused = 0
        self._drain = Drain(gw.store, settings.inflight, settings.drain_rate, gw.frames, settings.ack_timeout_s)
        self._snapshot_wanted = asyncio.Event()
        self._mqtt_log = logging.getLogger("gateway.cloud.mqtt")
        self._socket_errors = _SocketErrors()
        self._last_refusal_log = -math.inf

    @property
    def broker(self) -> Broker:
        """The address in use, or being tried."""
        return self.brokers[self._rounds.index]

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The MQTT version spoken with the broker in use."""
        return "3.1.1" if self.settings.protocol == "3.1.1" or self.broker in self._v311 else "5"

    # -- what others see -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        outbox = self._gw.store.outbox
        doc: dict[str, Any] = {"link": self.state, "broker": str(self.broker),
                               "brokers": [str(b) for b in self.brokers], "since": rfc3339(self.since),
                               "connects": self.connects, "failovers": self.failovers}
        if self.state == "online":
            doc["protocol"] = self.protocol
        if self.last_error is not None:
            doc["last_error"] = self.last_error
        if self.retry_in_s is not None:
            doc["retry_in_s"] = round(self.retry_in_s, 3)
        if outbox is not None:
            s = outbox.stats
            doc["outbox"] = {"batches": s.batches, "readings": s.readings, "events": s.events, "bytes": s.bytes,
                             "oldest_age_s": None if s.oldest_ts is None else round(time.time() - s.oldest_ts, 1),
                             "evicted_readings": s.evicted_readings}
        c = self._drain.counts
        doc["sent"] = {"telemetry_batches": c.batches, "readings": c.readings, "events": c.events,
                       "snapshots": self.snapshots, "deltas": self.deltas}
        doc["commands"] = {"ok": self.commands_ok, "refused": self.commands_refused}
        return doc

    @property
    def drain_counts(self) -> DrainCounts:
        return self._drain.counts

    def request_snapshot(self) -> int:
        self._snapshot_wanted.set()
        return self._gw.twin.version

    def _set_state(self, state: State, error: str | None = None) -> None:
        if state == self.state and error == self.last_error:
            return
        self.state, self.last_error, self.since = state, error, time.time()
        outbox = self._gw.store.outbox
        if outbox is not None:
            outbox.online = state == "online"
        with contextlib.suppress(TwinFrozen):
            self._gw.twin.report(ASSET, {"link": state, "broker": str(self.broker),
                                         "brokers": [str(b) for b in self.brokers], "link_error": error})

    # -- the connection loop ---------------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why the cloud degrades the box: the broker refuses its messages, or the link is down (after a failed
        attempt) while readings or events wait; None while all is well or the first connection is being made."""
        if self.state == "online" or self.last_error is None:
            return None
        outbox = self._gw.store.outbox
        waiting = outbox.stats if outbox is not None else None
        if self.state != "refused" and (waiting is None or not (waiting.batches or waiting.events)):
            return None
        backlog = "" if waiting is None else (
            f"; waiting: {waiting.readings:,} readings and {waiting.events:,} events"
            + ("" if waiting.oldest_ts is None else f", the oldest {time.time() - waiting.oldest_ts:,.0f} s old"))
        return f"cloud {self.state}: {self.last_error}{backlog}"

    def _client(self) -> aiomqtt.Client:
        v5 = self.protocol == "5"
        connect = None
        if v5:  # the broker never sends this box a packet larger than a command may be: it drops it instead
            connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect.MaximumPacketSize = self.settings.max_payload_kb * 1024 + PACKET_HEADROOM
        offline = orjson.dumps({"online": False, "gateway_id": self._gw.config.gateway.id,
                                "venue": self._gw.config.gateway.venue, "reason": "connection lost"})
        return Client(
            self.broker.host, self.broker.port, username=self._creds.username, password=self._creds.password,
            identifier=self.client_id, logger=self._mqtt_log,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(f"{self.root}/status", offline, qos=1, retain=True),
            clean_session=None if v5 else True, clean_start=True if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=self.settings.keepalive_s,
            timeout=self.settings.connect_timeout_s, max_inflight_messages=self.settings.inflight + 16,
            max_queued_incoming_messages=QUEUED_COMMANDS, properties=connect,
            tls_context=self._tls if self.broker.tls else None)

    async def run(self) -> None:
        while True:
            self._set_state("connecting", self.last_error)
            self.retry_in_s = None
            self._socket_errors.last = None
            try:
                async with self._client() as client:
                    self.connects += 1
                    await self._session(client)
            except PublishRefused as exc:
                self._refused(exc)
            except MqttConnectError as exc:
                code = getattr(exc.rc, "value", exc.rc)
                if code == UNSUPPORTED_PROTOCOL and self.settings.protocol == "auto" and self.protocol == "5":
                    log.info("cloud: the broker %s does not speak MQTT 5; using 3.1.1", self.broker)
                    self._v311.add(self.broker)
                    continue
                self._failed(exc)
            except aiomqtt.MqttError as exc:
                self._failed(exc)
            lost = self.broker
            step = self._rounds.ended()
            if step.connected and not step.delay_s:
                self.failovers += 1
            if step.log_quiet is not None:  # at most once every few seconds, however often sessions end
                again = f" ({step.log_quiet} more sessions ended since the last such message)" if step.log_quiet \
                    else ""
                log.warning("cloud link: the session with %s ended%s%s; %s", lost,
                            "" if step.settled else " soon after it began", again,
                            f"moving on to the broker {self.broker}" if not step.delay_s
                            else f"trying again in {step.delay_s:.1f} s (every broker failed in this round)")
            if step.delay_s:
                self.retry_in_s = step.delay_s
                await asyncio.sleep(step.delay_s)

    def _failed(self, exc: BaseException) -> None:
        message = _explain(exc, self.settings.connect_timeout_s, self._socket_errors.last)
        if message != self.last_error or self.state == "online":
            log.warning("cloud link to %s: %s", self.broker, message)
        self._set_state("offline", message)

    def _refused(self, exc: PublishRefused) -> None:
        """The broker took the connection but not the box's messages (MQTT 5's PUBACK said so): what was refused
        stays in the outbox, the link is `refused` with the reason, one standing alert says so, and the link
        tries again after its backoff."""
        name = user_name(self._gw.config.gateway.venue, self._gw.config.gateway.id)
        hint = (f" (the broker's ACL does not let this box write there: config/mosquitto.acl lets a gateway write "
                f"only its own topics, so it connects with its venue and gateway id {name!r} as user name; this one "
                f"connected as {self._creds.username!r})") \
            if exc.reason.value == NOT_AUTHORIZED else ""
        message = f"{exc}{hint}"
        if message != self.last_error:
            log.warning("cloud link to %s: %s; what it refused stays in the outbox", self.broker, message)
        self._set_state("refused", message)
        if REFUSED not in self._gw.alerts.standing:
            self._gw.alerts.raise_alert(REFUSED, f"the cloud broker refuses this box's messages: {message}",
                                        {"alert": REFUSED, "topic": exc.topic, "reason": str(exc.reason),
                                         "reason_code": exc.reason.value, "message": message}, key=REFUSED)

    async def _session(self, client: aiomqtt.Client) -> None:
        gw = self._gw
        try:
            await client.publish(f"{self.root}/status", orjson.dumps({
                "online": True, "gateway_id": gw.config.gateway.id, "venue": gw.config.gateway.venue,
                "software": __version__, "protocol": self.protocol, "since": rfc3339(time.time())}),
                qos=1, retain=True, timeout=self.settings.ack_timeout_s)
            self._set_state("online")
            self._rounds.connected()  # the round and the backoff start again only once the session has lasted
            log.info("cloud link to %s online (MQTT %s, client %s)", self.broker, self.protocol, self.client_id)
            if REFUSED in gw.alerts.standing:
                log.info("cloud link to %s: the broker takes this box's messages again", self.broker)
                gw.alerts.raise_alert(REFUSED, "the cloud broker takes this box's messages again",
                                      {"alert": REFUSED, "cleared": True}, key=REFUSED, standing=False)
            try:
                async with asyncio.TaskGroup() as group:
                    # the outbox leaves at once; a cluster node may take seconds to set a subscription up
                    group.create_task(self._drain.run(client, self.topics, group))
                    refused = await self._subscribe(client, SUBSCRIPTIONS)
                    if refused:
                        log.warning("cloud link to %s: the broker refused the subscriptions %s: cloud commands and "
                                    "desired state will not arrive until it takes them (asked again every %g s; "
                                    "check the broker's ACL)", self.broker, ", ".join(refused.values()),
                                    SUBSCRIBE_RETRY_S)
                        group.create_task(self._subscribe_again(client, tuple(refused)))
                    group.create_task(self._twin_sync(client))  # the snapshot: once commands can arrive
                    group.create_task(self._commands(client))
            except* aiomqtt.MqttError as failed:
                raise failed.exceptions[0] from None
        except asyncio.CancelledError:  # stopping: send what waits, then say so (a clean disconnect fires no will)
            if self.state == "online":
                try:
                    async with asyncio.timeout(STOP_DRAIN_S):
                        await self._drain.finish(client, self.topics, gw.twin)
                except (TimeoutError, aiomqtt.MqttError, StoreError) as exc:
                    outbox = gw.store.outbox
                    why = _explain(exc, self.settings.connect_timeout_s) if str(exc) else type(exc).__name__
                    log.warning("cloud link to %s: stopping with %s waiting in the outbox (%s)", self.broker,
                                "nothing" if outbox is None else f"{outbox.stats.readings} readings and "
                                f"{outbox.stats.events} events", why)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(GOODBYE_S):
                    await client.publish(f"{self.root}/status", orjson.dumps({
                        "online": False, "gateway_id": gw.config.gateway.id, "venue": gw.config.gateway.venue,
                        "reason": "stopped"}), qos=1, retain=True)
            raise

    async def _subscribe(self, client: aiomqtt.Client, names: tuple[str, ...]) -> dict[str, str]:
        """Subscribe to `names` under the root; those the broker refused, with its reason."""
        # MQTT 5: retained commands are not sent at subscription (a reconnect replays nothing), and a retained
        # publish keeps its flag on live delivery, so that it can be refused as the docs say. 3.1.1 has neither.
        options: Any = SubscribeOptions(qos=1, retainAsPublished=True,
                                        retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND) \
            if self.protocol == "5" else 1
        granted = await client.subscribe([(f"{self.root}/{name}", options) for name in names],
                                         timeout=self.settings.ack_timeout_s)
        return {name: f"{name}: {code}" for name, code in zip(names, granted, strict=False)
                if getattr(code, "is_failure", False) or code == 0x80}

    async def _subscribe_again(self, client: aiomqtt.Client, names: tuple[str, ...]) -> None:
        """Ask for refused subscriptions until the broker takes them: a cluster node still electing its leaders
        refuses what it takes a moment later; an ACL that denies them is asked quietly, as long as the connection
        lasts."""
        while names:
            await asyncio.sleep(SUBSCRIBE_RETRY_S)
            names = tuple(await self._subscribe(client, names))
        log.info("cloud link to %s: the broker took the subscriptions: cloud commands arrive", self.broker)

    # -- the twin: snapshot, then deltas -----------------------------------------------------------------
    async def _twin_sync(self, client: aiomqtt.Client) -> None:
        twin = self._gw.twin
        interval = self.settings.snapshot_interval_s
        self._snapshot_wanted.set()  # the birth snapshot
        sent = twin.version
        due = time.monotonic() + interval
        while True:
            if self._snapshot_wanted.is_set():
                self._snapshot_wanted.clear()
                sent = twin.version
                await client.publish(f"{self.root}/twin/snapshot", twin.snapshot_json(), qos=1, retain=True,
                                     timeout=self.settings.ack_timeout_s)
                self.snapshots += 1
                due = time.monotonic() + interval
            try:
                changes = twin.changes_since(sent, self.settings.delta_max_changes)
            except ChangesGone:  # the link fell further behind than the change log: start over from state
                self._snapshot_wanted.set()
                continue
            if changes:
                to = changes[-1][0]
                await client.publish(f"{self.root}/twin/delta", orjson.dumps({
                    "gateway_id": twin.gateway_id, "from": sent, "to": to,
                    "changes": [change_document(c) for c in changes]}), qos=1, timeout=self.settings.ack_timeout_s)
                self.deltas += 1
                sent = to
                continue
            waits = [asyncio.ensure_future(twin.wait_for_change(sent)),
                     asyncio.ensure_future(self._snapshot_wanted.wait())]
            try:
                _, pending = await asyncio.wait(waits, timeout=max(0.0, due - time.monotonic()),
                                                return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if len(pending) == len(waits):  # time for the periodic snapshot
                self._snapshot_wanted.set()

    # -- commands from the cloud -------------------------------------------------------------------------
    async def _commands(self, client: aiomqtt.Client) -> None:
        limit = self.settings.max_payload_kb * 1024
        async for message in client.messages:
            name = str(message.topic)[len(self.root) + 1:]
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if not payload:  # an empty message clears a retained one: nothing to do, nothing to answer
                log.debug("cloud command %s: empty (a retained message cleared); nothing to do", name)
                continue
            if message.retain and self.protocol != "5":
                # Under 3.1.1 only a subscription delivers the flag: this one was retained before it, and is left.
                log.info("cloud command %s ignored: retained on the broker from before this connection (clear it "
                         "with an empty retained message)", name)
                continue
            request_id = None
            try:
                command = commands.parse(name, payload, limit)
                request_id = command.request_id
                if message.retain:
                    raise commands.CommandError("retained", "a retained command is refused: it would run again for "
                                                            "every new subscriber (publish commands with retain "
                                                            "false; clear this one with an empty retained message)")
                result = await commands.execute(self._gw, command, self.request_snapshot)
                self._gw.event("command_result", {"command": name, "request_id": request_id, **result})
            except commands.CommandError as exc:
                self._refuse(name, request_id, exc.code, str(exc), exc.extra)
                continue
            except Exception as exc:  # what a command holds must never end the link
                self._refuse(name, request_id, "failed", f"the command could not be carried out: "
                                                         f"{type(exc).__name__}: {exc}", {})
                continue
            self.commands_ok += 1
            log.info("cloud command %s done", name)

    def _refuse(self, name: str, request_id: str | None, code: str, message: str, extra: dict[str, Any]) -> None:
        """Answer a command with `command_error`; logged at most once every REFUSAL_LOG_S, with a count."""
        self.commands_refused += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= REFUSAL_LOG_S:
            log.warning("cloud command %s refused (%s): %s (%d refused so far)", name, code, message,
                        self.commands_refused)
            self._last_refusal_log = now
        self._gw.event("command_error", {"command": name, "request_id": request_id, "error": code,
                                         "message": message[:MESSAGE_CHARS], **extra})

    async def start(self) -> None:
        self._mqtt_log.addHandler(self._socket_errors)

    async def stop(self) -> None:
        self._mqtt_log.removeHandler(self._socket_errors)
        self._drain.close()
