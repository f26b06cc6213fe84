"""Broker failover: `[cloud] brokers` checked as `broker` is, and a real gateway daemon under telemetry load that
loses the broker it uses and resumes on the next, against two independent Mosquittos (a consumer on each, their
union holding every reading once) and against a NATS cluster with JetStream and its MQTT gateway (a consumer with a
persistent session on a node that stays up). Nothing the outbox held is lost; what arrives twice is dropped by id
and counted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import config as configuration
from gateway.cloud import link as cloud_link
from gateway.cloud.mirror import GatewayMirror, Mirror
from gateway.cloud.settings import Broker, parse_brokers, topic_root
from peers import PeerMissing
from peers.mosquitto import Mosquitto
from peers.nats import NatsCluster
from tests.cloud import cloud_config, mirroring, running, until
from tests.conftest import Daemon, free_port

BASE = '[gateway]\nid = "box-1"\nvenue = "hall"\n[cloud]\n'


def problems(text: str) -> list[str]:
    with pytest.raises(configuration.ConfigError) as refused:
        configuration.parse(Path("/etc/vg.toml"), BASE + text)
    return [str(p) for p in refused.value.problems]


def test_brokers_are_checked_as_broker_is() -> None:
    allowed = 'allowed: broker = "mqtt://HOST[:PORT]", or brokers = ["mqtt://HOST[:PORT]", ...] tried in turn'
    assert problems('broker = "mqtt://a"\nbrokers = ["mqtt://b"]\n') == [
        f"cloud.brokers: give broker or brokers, not both ({allowed})"]
    assert problems('keepalive_s = 30\n') == [
        f"cloud.broker: is required: the broker's address, or several in brokers ({allowed})"]
    assert problems("brokers = []\n") == [f"cloud.brokers: is empty ({allowed})"]
    assert problems('brokers = ["mqtt://a", "http://b", "mqtt://a:1883"]\n') == [
        "cloud.brokers[1]: 'http://b' is not a broker address (allowed: mqtt://HOST[:PORT] or mqtts://HOST[:PORT])",
        "cloud.brokers[2]: 'mqtt://a:1883' is brokers[0] again (allowed: each broker once)"]
    # the password rule holds for every address it could be sent to
    assert problems('brokers = ["mqtts://a", "mqtt://b", "mqtt://127.0.0.1"]\nusername = "hall/box-1"\n'
                    'password_env = "P"\n') == [
        "cloud.password_env: the password would cross the network in clear to b (allowed: an mqtts:// broker, or a "
        "plain one on loopback)"]
    assert problems('brokers = ["mqtt://a", "mqtt://b"]\nca_file = "ca.pem"\n') == [
        "cloud.ca_file: is for TLS, but every broker is plain (allowed: an mqtts:// broker)"]
    cfg = configuration.parse(Path("/etc/vg.toml"), BASE + 'brokers = ["mqtts://a", "mqtt://[::1]:1884"]\n'
                                                           'username = "hall/box-1"\npassword_env = "P"\n')
    assert cfg.cloud is not None and cfg.cloud.tls
    assert cfg.cloud.addresses() == [Broker("a", 8883, True), Broker("::1", 1884, False)]
    # the helper the mirror's repeated --broker takes
    assert [str(b) for b in parse_brokers(["mqtt://a", "mqtts://b:9"])] == ["mqtt://a:1883", "mqtts://b:9"]
    for urls, message in (([], "no broker address"), (["mqtt://a", "ftp://b"], "broker 2: 'ftp://b' is not"),
                          (["mqtt://a", "mqtt://a:1883"], "broker 2: 'mqtt://a:1883' is broker 1 again")):
        with pytest.raises(ValueError, match=message):
            parse_brokers(urls)


def failover_config(directory: Path, urls: list[str], port: int, batch: int = 20, cloud: str = "",
                    backoff_s: float = 0.1) -> Path:
    """The cloud tests' gateway with four racks sampled every 50 ms (about 2,000 readings a second), sent in small
    batches (several in flight at any moment) to `urls` in turn."""
    path = cloud_config(directory, urls[0], sample_s=0.05, api_port=port,
                        cloud=f"batch_readings = {batch}\nbatch_delay_ms = 20\n{cloud}")
    text = path.read_text().replace(f'broker = "{urls[0]}"', "brokers = [" + ", ".join(f'"{u}"' for u in urls) + "]")
    text = text.replace("racks = 1\nchannels_per_rack = 2", "racks = 4\nchannels_per_rack = 4")
    text = text.replace("backoff_initial_s = 0.1\nbackoff_max_s = 1.0", f"backoff_initial_s = {backoff_s}\n"
                        f"backoff_max_s = {max(1.0, backoff_s)}")
    path.write_text(text)
    return path


async def test_a_lost_address_moves_on_at_once_and_a_failed_round_waits_the_backoff(tmp_path: Path) -> None:
    """Two addresses whose brokers refuse every connection (MQTT 5 CONNACK 0x88, server unavailable): each is tried
    once, in turn, and then the link waits its backoff (2 to 4 s here, with its jitter) before the next round. The
    second address is tried at once: well within the backoff's least, whatever the machine's load."""
    tried: dict[int, list[float]] = {}

    async def unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tried[writer.get_extra_info("sockname")[1]].append(time.monotonic())
        await reader.read(1024)  # the CONNECT
        writer.write(b"\x20\x03\x00\x88\x00")
        await writer.drain()
        writer.close()

    servers = [await asyncio.start_server(unavailable, "127.0.0.1", free_port()) for _ in range(2)]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    tried.update({port: [] for port in ports})
    urls = [f"mqtt://127.0.0.1:{port}" for port in ports]
    cfg = cloud_config(tmp_path, urls[0])
    cfg.write_text(cfg.read_text().replace(f'broker = "{urls[0]}"', f'brokers = ["{urls[0]}", "{urls[1]}"]')
                   .replace("backoff_initial_s = 0.1\nbackoff_max_s = 1.0", "backoff_initial_s = 4\nbackoff_max_s = 4"))
    try:
        async with running(cfg) as gw:
            assert gw.cloud is not None
            await until(lambda: gw.cloud is not None and gw.cloud.retry_in_s is not None, 5, "a round to fail")
            assert [len(tried[p]) for p in ports] == [1, 1] and tried[ports[1]][0] - tried[ports[0]][0] < 1.9
            assert gw.cloud.retry_in_s is not None and gw.cloud.retry_in_s >= 2.0
            await asyncio.sleep(0.8)
            assert [len(tried[p]) for p in ports] == [1, 1]  # waiting the backoff
            assert gw.cloud.connects == 0 and gw.cloud.health()["brokers"] == urls
    finally:
        for server in servers:
            server.close()


class Settling:
    """An MQTT 3.1.1 broker on a real socket, as a cluster node still electing its leaders answers: it refuses
    MQTT 5, takes publishes, and refuses the first subscription (SUBACK 0x80); later ones it grants. It records each
    SUBSCRIBE's topic filters, and `send` publishes a message to the connected client."""

    def __init__(self) -> None:
        self.subscribes: list[list[str]] = []
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                kind = (await reader.readexactly(1))[0]
                size, shift = 0, 0
                while True:  # the remaining length: 7 bits a byte, least significant first
                    byte = (await reader.readexactly(1))[0]
                    size, shift = size | (byte & 0x7F) << shift, shift + 7
                    if byte < 0x80:
                        break
                body = await reader.readexactly(size)
                if kind == 0x10:  # CONNECT: refused under MQTT 5 (0x84), accepted under 3.1.1
                    if body[6] == 5:
                        writer.write(b"\x20\x03\x00\x84\x00")
                        await writer.drain()
                        writer.close()
                        return
                    self.writer = writer
                    writer.write(b"\x20\x02\x00\x00")
                elif kind >> 4 == 3 and kind & 0x06:  # PUBLISH, QoS 1: PUBACK its message id
                    at = 2 + int.from_bytes(body[:2], "big")
                    writer.write(b"\x40\x02" + body[at:at + 2])
                elif kind == 0x82:  # SUBSCRIBE: the first refused
                    filters, at = [], 2
                    while at < len(body):
                        length = int.from_bytes(body[at:at + 2], "big")
                        filters.append(body[at + 2:at + 2 + length].decode())
                        at += 3 + length
                    self.subscribes.append(filters)
                    code = b"\x80" if len(self.subscribes) == 1 else b"\x01"
                    writer.write(bytes([0x90, 2 + len(filters)]) + body[:2] + code * len(filters))
                elif kind == 0xC0:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 0xE0:  # DISCONNECT
                    return
                await writer.drain()

    async def send(self, topic: str, payload: bytes) -> None:
        assert self.writer is not None
        name = topic.encode()
        body = len(name).to_bytes(2, "big") + name + payload
        self.writer.write(bytes([0x30, len(body)]) + body)
        await self.writer.drain()


async def test_a_refused_subscription_is_asked_for_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster node electing its leaders may refuse the command subscriptions of a gateway that has just failed
    over to it; the link asks again while it stays connected, and commands arrive once they are granted."""
    monkeypatch.setattr(cloud_link, "SUBSCRIBE_RETRY_S", 0.2)
    node = Settling()
    server = await asyncio.start_server(node.serve, "127.0.0.1", free_port())
    url = f"mqtt://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with running(cloud_config(tmp_path, url)) as gw:
            await until(lambda: len(node.subscribes) >= 2, 5, "the subscriptions asked for again")
            root = topic_root("hall", "gw-1")
            assert node.subscribes[:2] == [[f"{root}/desired", f"{root}/cmd/+"]] * 2
            await node.send(f"{root}/cmd/snapshot", b'{"request_id": "r1"}')
            await until(lambda: gw.cloud is not None and gw.cloud.commands_ok == 1, 5, "the command carried out")
            assert gw.cloud is not None and gw.cloud.connects == 1 and len(node.subscribes) == 2
    finally:
        server.close()


def link(daemon: Daemon) -> dict[str, Any]:
    detail: dict[str, Any] = daemon.get("/api/v1/health")["services"]["cloud"].get("detail", {})
    return detail


def exactly_once(mirrored: GatewayMirror, last: int) -> bool:
    """Every reading from 1 to `last` is held, each from one batch, once duplicates are dropped by id."""
    return len(mirrored.seqs) == 1 and mirrored.seqs[0][0] == 1 and mirrored.seqs[0][1] >= last


def batch_ids(mirror: Mirror) -> dict[str, tuple[int, int]]:
    """The telemetry batches `mirror` takes from now on: id -> (first, last sequence number)."""
    held: dict[str, tuple[int, int]] = {}

    def take(gw: GatewayMirror, what: str, doc: Any) -> None:
        if what == "telemetry" and doc["readings"]:
            held[doc["batch_id"]] = (doc["readings"][0][0], doc["readings"][-1][0])

    mirror.listeners.append(take)
    return held


async def test_two_brokers_the_first_killed_under_load(tmp_path: Path) -> None:
    """Independent brokers, one consumer on each. What the first broker had acknowledged and not yet delivered when
    it was killed is lost (docs/cloud-protocol.md: its consumer's queue died with it; under load that may be the last
    batches before the kill); everything else arrives: the first broker's consumer holds the readings from 1 on, the
    second's every reading the box had not seen acknowledged, up to the last, and a batch both hold has one id, so
    that a consumer of both drops it."""
    first, second = Mosquitto(tmp_path / "a", persistence=False), Mosquitto(tmp_path / "b", persistence=False)
    port = free_port()
    # a backoff longer than the test waits: the link must move on at once, not after a failed round
    daemon = Daemon(failover_config(tmp_path / "gw", [first.url, second.url], port, backoff_s=30), port)
    with first, second:
        async with mirroring(first.url) as on_first, mirroring(second.url) as on_second:
            taken = {"first": batch_ids(on_first), "second": batch_ids(on_second)}
            daemon.start(wait=False)
            try:
                daemon.wait_healthy()
                mirrored = await until(lambda: on_first.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
                await until(lambda: mirrored.readings > 300, 10, "telemetry under way")
                assert link(daemon)["broker"] == first.url
                assert first.proc is not None
                first.proc.kill()  # the broker in use dies with batches in flight
                await until(lambda: link(daemon)["broker"] == second.url and link(daemon)["link"] == "online", 5,
                            "the link to resume on the second broker")
                after = await until(lambda: on_second.gateways.get(("hall", "gw-1")), 5, "the birth on the second")
                await until(lambda: after.readings > 200, 10, "telemetry through the second broker")
                committed = daemon.get("/api/v1/health")["store"]["committed_seq"]
                await until(lambda: after.seqs and after.seqs[-1][1] >= committed, 15, "every reading since")
                before, since = mirrored.seqs, after.seqs
                # each consumer's readings in one run: the first's from 1, the second's up to the last; between
                # them, at most what the first broker acknowledged and lost
                assert len(before) == 1 and before[0][0] == 1 and len(since) == 1, (before, since)
                assert mirrored.overlaps == after.overlaps == 0
                both = {b: r for b, r in taken["second"].items() if r[0] <= before[0][1]}
                assert all(taken["first"].get(b) == r for b, r in both.items()), "a batch sent again has a new id"
                cloud = link(daemon)
                assert cloud["brokers"] == [first.url, second.url] and cloud["failovers"] == 1
                twin = daemon.get("/api/v1/twin")["assets"]["service:cloud"]["reported"]
                assert twin["broker"] == second.url and twin["brokers"] == [first.url, second.url]
            finally:
                daemon.cleanup()


async def test_a_nats_cluster_node_killed_under_load(tmp_path: Path) -> None:
    try:
        cluster = NatsCluster(tmp_path / "nats")
    except PeerMissing as exc:
        pytest.skip(str(exc))
    port = free_port()
    # Larger batches: each QoS 1 message is stored by the cluster's JetStream before it is acknowledged. A node
    # whose JetStream request timed out (after 4 s) answers nothing: the gateway gives up on a connection sooner.
    daemon = Daemon(failover_config(tmp_path / "gw", cluster.urls, port, 100,
                                    "connect_timeout_s = 2\nack_timeout_s = 5"), port)
    with cluster:
        # a persistent session on a node that stays up: the cluster keeps its messages whatever node took them
        async with mirroring(cluster.urls[2], client_id="fleet-consumer") as consumer:
            daemon.start(wait=False)
            try:
                daemon.wait_healthy()
                mirrored = await until(lambda: consumer.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
                assert mirrored.status.get("protocol") == "3.1.1"  # NATS refuses MQTT 5: auto fell back
                await until(lambda: mirrored.readings > 500, 10, "telemetry under way")
                assert link(daemon)["broker"] == cluster.urls[0]
                cluster.kill(0)  # the node the gateway uses, with batches in flight
                # the cluster elects new leaders for what the lost node led (seconds), then takes the session
                await until(lambda: link(daemon)["broker"] != cluster.urls[0] and link(daemon)["link"] == "online",
                            20, "the link to resume on another node")
                resumed = mirrored.readings
                await until(lambda: mirrored.readings > resumed + 500, 10, "telemetry through another node")
                committed = daemon.get("/api/v1/health")["store"]["committed_seq"]
                await until(lambda: exactly_once(mirrored, committed), 15, "every reading up to the failover")
                # a session may go online on a node and be lost again while the cluster settles: one or more
                assert mirrored.overlaps == 0 and link(daemon)["failovers"] >= 1
            finally:
                daemon.cleanup()


async def test_sessions_the_brokers_drop_at_once_wait_the_backoff(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Two Mosquittos whose ACL takes the box's status and twin but refuses its telemetry (MQTT 5 PUBACK 0x87): each
    session is accepted, born, and ended by the refusal. Such a session is a failed attempt of its round, so the link
    reconnects only as fast as its backoff (0.1 s growing to 1 s here) allows, not at once every time, and says so
    at a bounded rate."""
    acl = tmp_path / "acl"
    root = topic_root("hall", "gw-1")
    acl.write_text(f"topic write {root}/status\ntopic write {root}/twin/#\ntopic read {root}/desired\n"
                   f"topic read {root}/cmd/+\n")
    brokers = [Mosquitto(tmp_path / name, acl=acl, persistence=False) for name in ("a", "b")]
    cfg = cloud_config(tmp_path / "gw", brokers[0].url, sample_s=0.05)
    cfg.write_text(cfg.read_text().replace(f'broker = "{brokers[0].url}"',
                                           f'brokers = ["{brokers[0].url}", "{brokers[1].url}"]'))
    with brokers[0], brokers[1], caplog.at_level("WARNING", "gateway.cloud.link"):
        async with running(cfg) as gw:
            assert gw.cloud is not None
            await until(lambda: gw.cloud is not None and gw.cloud.connects >= 2, 10, "sessions on both brokers")
            start, at_start = time.monotonic(), gw.cloud.connects
            await asyncio.sleep(3.0)
            made, took = gw.cloud.connects - at_start, time.monotonic() - start
    # rounds of two sessions, each round then waiting at least 0.05, 0.1, 0.2, 0.4, 0.5, 0.5, ... s: at most ten
    # rounds in 3 s (before, a session accepted and then lost moved on at once: about a thousand)
    assert 2 <= made <= 2 * 10 + 2, (made, took)
    moves = [r for r in caplog.records if "ended soon after it began" in r.getMessage()]
    assert 1 <= len(moves) <= 2, [r.getMessage() for r in moves]


async def test_two_mirrors_with_one_client_id_back_off(tmp_path: Path) -> None:
    """Two replicas given one --client-id take each other's session over, again and again: each takeover ends a
    session soon after it began, a failed attempt, so each mirror reconnects at its growing backoff (0.2 s to 5 s)
    rather than at its first step every time."""
    with Mosquitto(tmp_path / "broker", persistence=False) as broker:
        async with mirroring(broker.url, client_id="replica") as one, mirroring(broker.url, client_id="replica") \
                as two:
            start = one.connects + two.connects
            await asyncio.sleep(3.0)
            made = one.connects + two.connects - start
    # each waits at least 0.1, 0.2, 0.4, 0.8, 1.6 s after a takeover: at most five sessions each in 3 s (before, a
    # session that subscribed started the backoff again: one every 0.1 to 0.2 s, about twenty each)
    assert made <= 12, made
