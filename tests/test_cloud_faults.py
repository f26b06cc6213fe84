"""Cloud sync when things go wrong, against a real Mosquitto: a broker away for 20 s, a gateway killed mid-drain,
an outbox that reaches its bound, TLS and mutual TLS with good and wrong certificates, refused credentials with the
shipped ACL, and a broker that speaks only MQTT 3.1.1."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import trustme

from gateway.cloud.client import Client, PublishRefused
from gateway.cloud.link import tls_context
from gateway.cloud.mirror import GatewayMirror
from gateway.cloud.settings import Credentials, topic_root, user_name
from peers.mosquitto import Mosquitto, TlsFiles
from tests.cloud import cloud_config, events, in_step, mirroring, running, until
from tests.conftest import ROOT, Daemon, free_port

OUTAGE_S = 20.0


def covered(mirrored: GatewayMirror, last: int) -> bool:
    """Every reading from 1 to `last` is held, each from exactly one batch."""
    return bool(mirrored.seqs) and mirrored.seqs[0][0] == 1 and mirrored.seqs[0][1] >= last


async def test_a_broker_away_for_a_while_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = cloud_config(tmp_path, mosquitto.url, sample_s=0.1)
    async with mirroring(mosquitto.url, client_id="mirror-chaos") as mirror, running(cfg) as gw:
        mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
        await until(lambda: mirrored.readings > 100, 10, "telemetry before the outage")
        assert gw.cloud is not None and gw.store.outbox is not None
        mosquitto.stop()
        await until(lambda: gw.cloud is not None and gw.cloud.state == "offline", 10, "the link to notice")
        await asyncio.sleep(OUTAGE_S)
        assert gw.store.outbox.stats.readings > 1000  # the backlog waits in the outbox
        health = gw.health()  # degraded, saying what waits and for how long
        assert health["status"] == "degraded", health
        assert [p for p in health["problems"] if p.startswith("cloud offline: ") and "readings" in p
                and " s old" in p], health["problems"]
        mosquitto.start()
        await until(lambda: gw.cloud is not None and gw.cloud.state == "online", 10, "the link to come back")
        assert gw.cloud.connects == 2
        committed = gw.store.stats.committed_seq
        await until(lambda: covered(mirrored, committed), 30, "every reading up to the reconnection")
        assert len(mirrored.seqs) == 1 and mirrored.overlaps == 0  # exactly once, after dropping duplicates
        await in_step(gw, mirrored)
        assert gw.health()["status"] == "ok"


async def test_kill_9_mid_drain_loses_nothing_acknowledged(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = free_port()
    # A slow drain (500 readings a second) of a backlog built while the broker is away.
    cfg = cloud_config(tmp_path, mosquitto.url, sample_s=0.05, api_port=port,
                       cloud="batch_readings = 50\ndrain_rate = 500")
    daemon = Daemon(cfg, port)
    async with mirroring(mosquitto.url, client_id="mirror-kill") as mirror:
        mosquitto.stop()
        daemon.start(wait=False)
        try:
            daemon.wait_healthy(status=("degraded",))  # offline, with a backlog growing
            await asyncio.sleep(8)
            mosquitto.start()
            mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 15, "the gateway's birth")
            await until(lambda: mirrored.readings > 500, 20, "the drain to be under way")
            daemon.kill()  # kill -9 mid-drain
            with sqlite3.connect(tmp_path / "data" / "gateway.db") as db:
                committed = db.execute("SELECT max(rowid) FROM telemetry").fetchone()[0]
                waiting = db.execute("SELECT count(*) FROM outbox WHERE kind = 'telemetry'").fetchone()[0]
            assert waiting > 0, "the drain finished before the kill"
            daemon.start(wait=False)
            daemon.wait_healthy(status=("ok", "degraded"))  # degraded until the backlog has drained
            await until(lambda: covered(mirrored, committed), 60, "every reading committed before the kill")
            assert len(mirrored.seqs) == 1 and mirrored.overlaps == 0
        finally:
            daemon.cleanup()


async def test_at_the_outbox_bound_the_oldest_telemetry_goes_and_the_twin_still_arrives(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = cloud_config(tmp_path, mosquitto.url, sample_s=0.05,
                       cloud="outbox_max_mb = 0.02\nbatch_readings = 50")
    async with mirroring(mosquitto.url, client_id="mirror-bound") as mirror:
        mosquitto.stop()  # the persistent session keeps what arrives while the mirror is away
        async with running(cfg) as gw:
            assert gw.store.outbox is not None
            await until(lambda: gw.store.outbox is not None and gw.store.outbox.stats.evicted_readings > 0, 20,
                        "an eviction")
            mosquitto.start()
            mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 15, "the gateway's birth")
            announced = await until(lambda: events(mirrored, "outbox_evicted"), 15, "the eviction event")
            assert announced[0]["readings"] > 0 and announced[0]["first_seq"] == 1
            assert announced[0]["by_bytes"] == announced[0]["readings"]
            await in_step(gw, mirrored)  # the twin is never evicted: it arrives whole as a fresh snapshot
            detail = gw.health()["services"]["cloud"]["detail"]
            assert detail["outbox"]["evicted_readings"] == gw.store.outbox.stats.evicted_readings
            assert mirrored.seqs[0][0] == announced[0]["last_seq"] + 1  # what was evicted is all that is missing
            from prometheus_client import generate_latest

            assert b"vg_cloud_outbox_evicted_readings_total" in generate_latest(gw.metrics)


@pytest.fixture
def passwords(tmp_path: Path) -> Path:
    """A Mosquitto password file: the gateway gw-1 of the hall, one of the same id in the arena, the cloud backend,
    and a user named for its rack."""
    path = tmp_path / "passwords"
    for user, password in (("hall/gw-1", "gw-secret"), ("arena/gw-1", "arena-secret"), ("cloud", "cloud-secret"),
                           ("stage-left", "stage-secret")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if user == "hall/gw-1" else []), str(path), user,
                        password], check=True)
    return path


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """A CA, the broker's certificate, a client certificate it signed, and one from a CA nobody trusts."""
    directory = tmp_path / "certs"
    directory.mkdir()
    ca, stranger = trustme.CA(), trustme.CA()
    files: dict[str, Path] = {}

    def write(name: str, blob: trustme.Blob) -> None:
        files[name] = directory / f"{name}.pem"
        blob.write_to_path(files[name])
        if name.endswith("_key"):
            files[name].chmod(0o600)  # a private key open to other users is refused

    write("ca", ca.cert_pem)
    write("stranger_ca", stranger.cert_pem)
    server = ca.issue_cert("127.0.0.1", "localhost")
    write("server_cert", server.cert_chain_pems[0])
    write("server_key", server.private_key_pem)
    for name, issuer in (("client", ca), ("stranger", stranger)):
        cert = issuer.issue_cert("gw-1")
        write(f"{name}_cert", cert.cert_chain_pems[0])
        write(f"{name}_key", cert.private_key_pem)
    return files


@contextlib.asynccontextmanager
async def tls_broker(tmp_path: Path, certs: dict[str, Path], *, mutual: bool) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "tls-broker", tls=TlsFiles(certs["ca"], certs["server_cert"], certs["server_key"]),
                       require_certificate=mutual).start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_tls_and_mutual_tls_with_good_certificates(tmp_path: Path, mosquitto: Mosquitto,
                                                          certificates: dict[str, Path]) -> None:
    c = certificates
    async with tls_broker(tmp_path, c, mutual=False) as broker:
        cfg = cloud_config(tmp_path / "tls", broker.url, cloud=f'ca_file = "{c["ca"]}"')
        async with running(cfg) as gw:
            await until(lambda: gw.cloud is not None and gw.cloud.state == "online", 10, "a TLS link")
    async with tls_broker(tmp_path, c, mutual=True) as broker:
        cfg = cloud_config(tmp_path / "mtls", broker.url, cloud=f'ca_file = "{c["ca"]}"\n'
                           f'cert_file = "{c["client_cert"]}"\nkey_file = "{c["client_key"]}"')
        async with running(cfg) as gw:
            await until(lambda: gw.cloud is not None and gw.cloud.state == "online", 10, "a mutual TLS link")


def test_a_private_key_open_to_other_users_is_refused_before_it_is_used(certificates: dict[str, Path]) -> None:
    c = certificates
    tls_context(Credentials(None, None, c["ca"], c["client_cert"], c["client_key"]))
    c["client_key"].chmod(0o644)
    with pytest.raises(ValueError, match=r"^cloud.key_file .* has mode 0644, open to other users \(allowed: 0600 or "
                                         r"0640; chmod 600 "):
        tls_context(Credentials(None, None, c["ca"], c["client_cert"], c["client_key"]))


async def test_wrong_certificates_are_refused_with_a_clear_message(tmp_path: Path, mosquitto: Mosquitto,
                                                                    certificates: dict[str, Path]) -> None:
    c = certificates
    async with tls_broker(tmp_path, c, mutual=True) as broker:
        # The broker's certificate is not from the CA this box trusts.
        cfg = cloud_config(tmp_path / "a", broker.url, cloud=f'ca_file = "{c["stranger_ca"]}"\n'
                           f'cert_file = "{c["client_cert"]}"\nkey_file = "{c["client_key"]}"')
        async with running(cfg) as gw:
            await until(lambda: gw.cloud is not None and gw.cloud.connects == 0 and gw.cloud.last_error, 15,
                        "the refusal")
            assert gw.cloud is not None and gw.cloud.state != "online"
            assert "TLS failed" in gw.cloud.last_error and "certificate verify failed" in gw.cloud.last_error
        # This box's certificate is from a CA the broker does not trust.
        cfg = cloud_config(tmp_path / "b", broker.url, cloud=f'ca_file = "{c["ca"]}"\n'
                           f'cert_file = "{c["stranger_cert"]}"\nkey_file = "{c["stranger_key"]}"')
        async with running(cfg) as gw:
            await until(lambda: gw.cloud is not None and gw.cloud.last_error, 20, "the refusal")
            assert gw.cloud is not None and gw.cloud.state != "online" and gw.cloud.connects == 0
            assert "TLS failed" in gw.cloud.last_error and "unknown ca" in gw.cloud.last_error, gw.cloud.last_error


async def test_the_shipped_acl_lets_a_gateway_in_and_bad_credentials_are_refused_and_retried(
        tmp_path: Path, mosquitto: Mosquitto, passwords: Path) -> None:
    broker = Mosquitto(tmp_path / "acl-broker", acl=ROOT / "config" / "mosquitto.acl", passwords=passwords).start()
    try:
        cfg = cloud_config(tmp_path / "good", broker.url, cloud='username = "hall/gw-1"\npassword_env = "VG_TEST_MQTT"')
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VG_TEST_MQTT", "gw-secret")
            async with mirroring(broker.url, username="cloud", password="cloud-secret") as mirror, \
                    running(cfg) as gw:
                mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
                await in_step(gw, mirrored)
                await until(lambda: mirrored.readings > 0, 10, "telemetry through the ACL")
            env.setenv("VG_TEST_MQTT", "wrong")
            async with running(cfg) as gw:
                await until(lambda: gw.cloud is not None and gw.cloud.last_error, 10, "the refusal")
                assert gw.cloud is not None and gw.cloud.connects == 0
                assert "refused the connection: Not authorized" in gw.cloud.last_error
                assert "password_env" in gw.cloud.last_error
                await until(lambda: gw.cloud is not None and gw.cloud.retry_in_s, 5, "a retry")
    finally:
        broker.stop()


async def test_the_shipped_acl_keeps_two_venues_gateways_of_one_id_apart(tmp_path: Path, passwords: Path) -> None:
    """A gateway `gw-1` in two venues: each connects as venue/id, and the shipped ACL holds each to its own topics.
    Neither reads the other's commands or desired state (a subscription, wildcards or not, delivers it nothing) nor
    writes the other's status, twin or telemetry (MQTT 5 refuses the publish, 0x87); the cloud user reaches both."""
    broker = Mosquitto(tmp_path / "acl-broker", acl=ROOT / "config" / "mosquitto.acl", passwords=passwords).start()
    hall, arena = topic_root("hall", "gw-1"), topic_root("arena", "gw-1")

    def box() -> Client:
        return Client("127.0.0.1", broker.port, username=user_name("hall", "gw-1"), password="gw-secret",
                      protocol=aiomqtt.ProtocolVersion.V5)

    try:
        async with box() as listener, \
                aiomqtt.Client("127.0.0.1", broker.port, username="cloud", password="cloud-secret") as cloud:
            for pattern in (f"{arena}/cmd/+", f"{arena}/desired", "venues/+/gw-1/cmd/+", "venues/#"):
                await listener.subscribe(pattern, qos=1)
            for root in (arena, hall):
                for name in ("cmd/fire", "desired"):
                    await cloud.publish(f"{root}/{name}", f'{{"request_id": "{root}"}}'.encode(), qos=1)
            got: list[str] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # everything the broker delivers has arrived by then
                    async for message in listener.messages:
                        got.append(str(message.topic))
            assert {f"{hall}/cmd/fire", f"{hall}/desired"} <= set(got), got
            assert all(t.startswith(f"{hall}/") for t in got), got
        # Mosquitto ends a session after a publish it denies: one session for each.
        for topic in (f"{arena}/status", f"{arena}/twin/delta", f"{arena}/telemetry", f"{arena}/cmd/fire",
                      f"{topic_root('hall', 'gw-2')}/status"):
            async with box() as writer:
                with pytest.raises(PublishRefused) as refused:
                    await writer.publish(topic, b"{}", qos=1)
                assert refused.value.reason.value == 0x87, topic
        async with box() as writer:
            await writer.publish(f"{hall}/status", b"{}", qos=1)  # its own: taken
    finally:
        broker.stop()


async def test_publishes_the_acl_refuses_stay_in_the_outbox_and_arrive_once_the_name_is_right(
        tmp_path: Path, mosquitto: Mosquitto, passwords: Path) -> None:
    """MQTT 5: the shipped ACL lets a gateway write only its own topics, as venue/id. Connected under another
    name, every publish is refused (PUBACK 0x87): nothing leaves the outbox, the link says why, one standing alert
    is raised however often it retries, and health is degraded. With the right name everything arrives, once."""
    broker = Mosquitto(tmp_path / "acl-broker", acl=ROOT / "config" / "mosquitto.acl", passwords=passwords).start()
    cfg = cloud_config(tmp_path / "gw", broker.url, sample_s=0.1,
                       cloud='username_env = "VG_TEST_MQTT_USER"\npassword_env = "VG_TEST_MQTT"')
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VG_TEST_MQTT_USER", "stage-left")
            env.setenv("VG_TEST_MQTT", "stage-secret")
            async with mirroring(broker.url, username="cloud", password="cloud-secret") as mirror, \
                    running(cfg) as gw:
                told: list[str] = []
                gw.alerts.listen(lambda kind, text, doc: told.append(kind))
                await until(lambda: gw.cloud is not None and gw.cloud.connects >= 3, 20, "three refused sessions")
                assert gw.cloud is not None and gw.store.outbox is not None
                # between sessions the link is connecting again: refused once its next session is
                await until(lambda: gw.cloud is not None and gw.cloud.state == "refused", 10, "the link refused")
                assert gw.cloud.last_error is not None and "Not authorized" in gw.cloud.last_error
                assert "gateway id 'hall/gw-1'" in gw.cloud.last_error and "'stage-left'" in gw.cloud.last_error
                assert told.count("cloud_refused") == 1 and gw.alerts.raised == 1
                # Backing off: a connection that is refused is no success, so the steps grow past the first one's.
                await until(lambda: gw.cloud is not None and (gw.cloud.retry_in_s or 0) > 0.1, 10, "a longer backoff")
                health = gw.health()
                assert health["status"] == "degraded"
                assert any("cloud refused" in p and "readings" in p for p in health["problems"]), health["problems"]
                await until(lambda: gw.store.outbox is not None and gw.store.outbox.stats.readings > 50, 10,
                            "telemetry waiting")
                assert gw.cloud.drain_counts.readings == 0
                assert ("hall", "gw-1") not in mirror.gateways or mirror.gateways[("hall", "gw-1")].readings == 0
                held = gw.store.stats.committed_seq
            env.setenv("VG_TEST_MQTT_USER", "hall/gw-1")
            env.setenv("VG_TEST_MQTT", "gw-secret")
            async with mirroring(broker.url, username="cloud", password="cloud-secret") as mirror, \
                    running(cfg) as gw:
                mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
                await until(lambda: covered(mirrored, held), 20, "every reading the broker refused before")
                assert len(mirrored.seqs) == 1 and mirrored.overlaps == 0 and mirrored.duplicates == 0
                await until(lambda: any(e.get("alert") == "cloud_refused" for e in events(mirrored, "alert")), 10,
                            "the refusal's alert, kept in the outbox")
                assert gw.cloud is not None and gw.cloud.state == "online" and gw.health()["status"] == "ok"
    finally:
        broker.stop()


async def _old_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    """Answer an MQTT 5 CONNECT as a 3.1.1-only broker does (CONNACK 'unacceptable protocol version'); pass
    anything else through to the real broker."""
    head = await reader.readexactly(2)
    length, shift, extra = head[1] & 0x7F, 7, b""
    while head[-1] & 0x80 if not extra else extra[-1] & 0x80:
        extra += await reader.readexactly(1)
        length += (extra[-1] & 0x7F) << shift
        shift += 7
    body = await reader.readexactly(length)
    if body[6] == 5:  # protocol name "MQTT" (2 + 4 bytes), then the level
        writer.write(b"\x20\x02\x00\x01")
        await writer.drain()
        writer.close()
        return
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    up_writer.write(head + extra + body)

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_broker_that_speaks_only_3_1_1_gets_3_1_1(tmp_path: Path, mosquitto: Mosquitto) -> None:
    server = await asyncio.start_server(lambda r, w: _old_broker(r, w, mosquitto.port), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with mirroring(mosquitto.url) as mirror, \
                running(cloud_config(tmp_path, f"mqtt://127.0.0.1:{port}")) as gw:
            mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
            await until(lambda: mirrored.status.get("online"), 10, "status online")
            assert mirrored.status["protocol"] == "3.1.1" and gw.cloud is not None and gw.cloud.protocol == "3.1.1"
            await in_step(gw, mirrored)
    finally:
        server.close()
