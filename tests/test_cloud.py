"""Cloud sync against a real Mosquitto: birth, twin snapshot and deltas, telemetry batches with ids, events,
desired state and commands from the cloud, and bad input refused with error events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from gateway import config as configuration
from gateway.api.auth import Tokens
from gateway.cloud.link import QUEUED_COMMANDS, CloudLink
from gateway.cloud.settings import credentials, topic_root
from gateway.daemon import STOP_BUDGET_S, Gateway
from peers.mosquitto import Mosquitto
from tests.cloud import cloud_config, events, in_step, mirroring, running, until
from tests.conftest import ADMIN, VIEWER, Daemon, free_port
from tests.conftest import ROOT as ROOT_DIR

ROOT = topic_root("hall", "gw-1")


async def test_birth_then_deltas_rebuild_the_exact_twin_and_telemetry_arrives_once(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with mirroring(mosquitto.url) as mirror, running(cloud_config(tmp_path, mosquitto.url)) as gw:
        mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
        await until(lambda: mirrored.status.get("online"), 10, "status online")
        assert mirrored.status["gateway_id"] == "gw-1" and mirrored.status["protocol"] == "5"
        await in_step(gw, mirrored)
        await until(lambda: mirrored.readings >= 50, 10, "telemetry")
        assert mirrored.duplicates == 0 and mirrored.overlaps == 0
        assert mirrored.seqs[0][0] == 1 and len(mirrored.seqs) == 1
        health = gw.health()["services"]["cloud"]
        assert health["state"] == "running" and health["detail"]["link"] == "online"
        assert gw.twin.get("service:cloud").reported["link"] == "online"  # type: ignore[union-attr]
        await in_step(gw, mirrored)
    assert mirrored.status["online"] is False and mirrored.status["reason"] == "stopped"


async def test_desired_state_from_the_cloud_merges_like_the_http_patch(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with mirroring(mosquitto.url) as mirror, running(cloud_config(tmp_path, mosquitto.url)) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as cloud:
        mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
        gw.twin.declare("fixture:1", "fixture", "floor")
        version = gw.twin.get("fixture:1").version  # type: ignore[union-attr]
        await cloud.publish(f"{ROOT}/desired", orjson.dumps(
            {"request_id": "r1", "asset": "fixture:1", "desired": {"dimmer": 0.5}, "version": version}), qos=1)
        done = await until(lambda: events(mirrored, "command_result"), 10, "the command's result")
        assert done[0]["request_id"] == "r1" and done[0]["desired"] == {"dimmer": 0.5}
        assert gw.twin.get("fixture:1").desired == {"dimmer": 0.5}  # type: ignore[union-attr]
        await in_step(gw, mirrored)
        assert mirrored.assets["fixture:1"]["desired"] == {"dimmer": 0.5}
        # The same stale version again: refused, naming the current one.
        await cloud.publish(f"{ROOT}/desired", orjson.dumps(
            {"request_id": "r2", "asset": "fixture:1", "desired": {"dimmer": 1}, "version": version}), qos=1)
        refused = await until(lambda: events(mirrored, "command_error"), 10, "the refusal")
        assert refused[0]["request_id"] == "r2" and refused[0]["error"] == "version_mismatch"
        assert refused[0]["version"] == gw.twin.get("fixture:1").version  # type: ignore[union-attr]
        assert gw.twin.get("fixture:1").desired == {"dimmer": 0.5}  # type: ignore[union-attr]
        # A value the amplifier's driver refuses at once, as the HTTP PATCH's 422: nothing changes.
        await until(lambda: gw.twin.get("amp:r01.1"), 10, "the virtual venue's amplifiers")
        await cloud.publish(f"{ROOT}/desired", orjson.dumps(
            {"request_id": "r3", "asset": "amp:r01.1", "desired": {"gain_db": 99}}), qos=1)
        refused = await until(lambda: events(mirrored, "command_error")[1:], 10, "the driver's refusal")
        assert refused[0]["request_id"] == "r3" and refused[0]["error"] == "desired_refused"
        assert refused[0]["message"] == "amp:r01.1: allowed: enabled (true/false), gain_db (-40 to 6)"
        assert gw.twin.get("amp:r01.1").desired == {}  # type: ignore[union-attr]


async def test_bad_commands_are_refused_with_error_events_and_the_link_stays_up(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = cloud_config(tmp_path, mosquitto.url, cloud="max_payload_kb = 1")
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as cloud, mirroring(mosquitto.url) as mirror, \
            running(cfg) as gw:
        mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
        # Retained by mistake: it would run again for every new subscriber, so it is refused, answered with its
        # request_id, and not run.
        await cloud.publish(f"{ROOT}/cmd/fire", orjson.dumps({"request_id": "r-1", "preset": "intro"}), qos=1,
                            retain=True)
        first = await until(lambda: events(mirrored, "command_error"), 10, "the retained command's refusal")
        assert first[0]["request_id"] == "r-1" and first[0]["error"] == "retained"
        await cloud.publish(f"{ROOT}/cmd/fire", b"", qos=1, retain=True)  # cleared: nothing to do or answer
        sent = [("desired", b"{not json"), ("desired", b"[1, 2]"), ("desired", b'{"asset": "nope", "desired": {}}'),
                ("desired", b'{"asset": 5}'), ("cmd/fire", b'{"preset": "nope"}'),
                ("cmd/fire", b'{"lead_ms": "x"}'), ("cmd/reboot", b"{}"), ("cmd/stop", b'{"extra": 1}'),
                ("desired", b"{" + b" " * 2000 + b"}")]
        for name, payload in sent:
            await cloud.publish(f"{ROOT}/{name}", payload, qos=1)
        refused = await until(lambda: len(events(mirrored, "command_error")) >= len(sent) + 1 and
                              events(mirrored, "command_error"), 10, "every refusal")
        assert [e["error"] for e in refused] == ["retained", "bad_json", "bad_request", "not_found",
                                                 "bad_request", "unknown_preset", "bad_effect", "unknown_command",
                                                 "bad_request", "too_large"]
        assert all(e["message"] for e in refused)
        link = gw.cloud
        assert link is not None and link.state == "online" and link.connects == 1
        assert link.commands_refused == len(sent) + 1
        assert events(mirrored, "effect_fired") == []


def deep(levels: int) -> bytes:
    """A JSON object `levels` deep: {"a":{"a":...1}}."""
    return b'{"a":' * levels + b"1" + b"}" * levels


async def test_commands_that_would_break_the_show_or_the_twin_are_refused_and_the_link_stays_up(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A fire with bpm 5e-324 or duration_s 1e308 (an OverflowError inside), a desired patch 300 deep (orjson cannot
    encode it) or 254 deep (1.6 KB: it encodes alone but not inside the snapshot, so the twin sync would fail at every
    connect): each is a command_error, the link never restarts, nothing enters the twin. A payload past
    max_payload_kb is not even sent to the box: MQTT 5's Maximum Packet Size, set in CONNECT, has the broker drop it."""
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as cloud, mirroring(mosquitto.url) as mirror, \
            running(cloud_config(tmp_path, mosquitto.url)) as gw:
        mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
        gw.twin.declare("fixture:1", "fixture", "floor")  # no driver's check: the twin alone decides
        sent = [("cmd/fire", b'{"request_id": "bpm", "effect": {"kind": "pulse", "bpm": 5e-324}}'),
                ("cmd/fire", b'{"request_id": "long", "effect": {"kind": "pulse", "duration_s": 1e308}}'),
                ("desired", b'{"request_id": "d300", "asset": "fixture:1", "desired": ' + deep(300) + b"}"),
                ("desired", b'{"request_id": "d254", "asset": "fixture:1", "desired": ' + deep(254) + b"}"),
                ("cmd/fire", b'{"request_id": "huge", "preset": "intro", "pad": "' + b" " * 70_000 + b'"}'),
                ("cmd/fire", b'{"request_id": "ok", "preset": "intro"}')]
        assert 1500 < len(sent[3][1]) < 1700
        for name, payload in sent:
            await cloud.publish(f"{ROOT}/{name}", payload, qos=1)
        await until(lambda: events(mirrored, "command_result"), 10, "the last command's result")
        answers = {e["request_id"]: e for e in events(mirrored, "command_error")}
        assert sorted(answers) == ["bpm", "d254", "d300", "long"]  # "huge" never arrived
        assert [answers[r]["error"] for r in ("bpm", "long", "d300", "d254")] == ["bad_effect", "bad_effect",
                                                                                   "bad_request", "bad_request"]
        assert "nested deeper than 32" in answers["d254"]["message"]
        link = gw.cloud
        assert link is not None and link.state == "online" and link.connects == 1
        assert gw.twin.get("fixture:1").desired == {}  # type: ignore[union-attr]
        await in_step(gw, mirrored)  # the snapshot still encodes, and the deltas flow
        assert gw.health()["services"]["cloud"]["restarts"] == 0


async def test_commands_queued_in_the_client_are_bounded(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The link's client holds at most QUEUED_COMMANDS messages read from the socket and not yet carried out; a
    burst past that is dropped by the client (aiomqtt's queue is unbounded by default)."""
    cfg = configuration.load(cloud_config(tmp_path, mosquitto.url))
    assert cfg.cloud is not None
    creds = credentials(cfg.cloud, cfg.path.parent)
    gateway = Gateway(cfg, Tokens([(VIEWER, "viewer"), (ADMIN, "admin")]), cloud=lambda: (creds, None))
    link = CloudLink(gateway, cfg.cloud, creds, None)
    burst = QUEUED_COMMANDS + 150
    async with link._client() as client, aiomqtt.Client("127.0.0.1", mosquitto.port) as cloud:
        await client.subscribe(f"{ROOT}/cmd/+", qos=1)
        for i in range(burst):
            await cloud.publish(f"{ROOT}/cmd/snapshot", b'{"request_id": %d}' % i, qos=1)
        await cloud.publish(f"{ROOT}/cmd/stop", b"{}", qos=1)
        await asyncio.sleep(0.5)  # everything has been delivered to the client by now
        held = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for _ in client.messages:
                    held += 1
    assert held == QUEUED_COMMANDS


async def test_a_clean_stop_sends_what_the_outbox_holds_within_the_stop_budget(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Readings flowing, the broker up, a clean stop: the readings committed up to the stop, and the last batch not
    yet cut, reach the broker's subscriber before the link says goodbye, and the outbox on disk is empty; the stop
    stays within the daemon's stop budget."""
    cfg = cloud_config(tmp_path, mosquitto.url, sample_s=0.05, cloud="batch_delay_ms = 1000")
    async with mirroring(mosquitto.url) as mirror:
        async with running(cfg):
            mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
            await until(lambda: mirrored.readings > 100, 10, "telemetry flowing")
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping
        await until(lambda: mirrored.status.get("reason") == "stopped", 5, "the goodbye")
    assert stopped_in < STOP_BUDGET_S, stopped_in
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "gateway.db")) as db:
        committed = db.execute("SELECT max(rowid) FROM telemetry").fetchone()[0]
        waiting = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert waiting == 0
    assert mirrored.seqs == [[1, committed]] and mirrored.overlaps == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_command_retained_from_before_is_never_run_or_refused_again(
        tmp_path: Path, mosquitto: Mosquitto, protocol: str) -> None:
    cfg = cloud_config(tmp_path, mosquitto.url, cloud=f'protocol = "{protocol}"')
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as cloud:
        await cloud.publish(f"{ROOT}/cmd/fire", b'{"preset": "intro"}', qos=1, retain=True)
    async with mirroring(mosquitto.url) as mirror, running(cfg) as gw:
        mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
        mosquitto.stop()  # a reconnect subscribes again, as a broker restart or a network blip makes it
        mosquitto.start()
        await until(lambda: gw.cloud is not None and gw.cloud.connects == 2 and gw.cloud.state == "online", 15,
                    "the reconnection")
        await asyncio.sleep(1.0)  # what a subscription would have delivered has arrived by now
        assert events(mirrored, "command_error") == [] and events(mirrored, "effect_fired") == []
        # nothing fired, nothing refused (the mirror may ask for a snapshot after the outage's gap: that one runs)
        assert gw.cloud is not None and gw.cloud.commands_refused == 0 and gw.show.last is None


async def test_fire_stop_and_snapshot_commands(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with mirroring(mosquitto.url) as mirror, running(cloud_config(tmp_path, mosquitto.url)) as gw, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as cloud:
        mirrored = await until(lambda: mirror.gateways.get(("hall", "gw-1")), 10, "the gateway's birth")
        await until(lambda: mirrored.complete, 10, "the birth snapshot")
        await cloud.publish(f"{ROOT}/cmd/fire", orjson.dumps({"request_id": 7, "preset": "intro",
                                                               "zones": ["floor"]}), qos=1)
        fired = await until(lambda: events(mirrored, "effect_fired"), 10, "the show event")
        result = await until(lambda: events(mirrored, "command_result"), 10, "the command's result")
        assert result[0]["request_id"] == "7" and result[0]["effect_id"] == fired[0]["effect_id"]
        assert fired[0]["preset"] == "intro" and fired[0]["zones"] == ["floor"]
        assert gw.show.last is not None and gw.show.last.effect_id == fired[0]["effect_id"]
        await cloud.publish(f"{ROOT}/cmd/stop", b"{}", qos=1)
        await until(lambda: len(events(mirrored, "effect_fired")) == 2, 10, "the stop")
        assert gw.show.last.effect.kind == "blackout"
        assert gw.cloud is not None
        before = gw.cloud.snapshots
        await cloud.publish(f"{ROOT}/cmd/snapshot", b"{}", qos=1)
        await until(lambda: gw.cloud is not None and gw.cloud.snapshots == before + 1, 10, "a fresh snapshot")


async def test_a_consumer_that_joins_late_rebuilds_the_exact_twin(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running(cloud_config(tmp_path, mosquitto.url)) as gw:
        await until(lambda: gw.cloud is not None and gw.cloud.deltas > 5, 10, "deltas before anyone listens")
        async with mirroring(mosquitto.url) as late:
            mirrored = await until(lambda: late.gateways.get(("hall", "gw-1")), 10, "the retained snapshot")
            await in_step(gw, mirrored)  # the retained snapshot was behind: it asked for a fresh one
            assert mirrored.gaps >= 1


def test_three_gateways_on_one_broker_and_the_mirror_shows_all_three(tmp_path: Path, mosquitto: Mosquitto) -> None:
    mirror_port = free_port()
    mirror = subprocess.Popen(
        [sys.executable, "-m", "gateway", "mirror", "--broker", mosquitto.url, "--venue", "hall", "--serve",
         f"127.0.0.1:{mirror_port}", "--quiet"], env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    daemons = []
    try:
        for gateway_id in ("stage-left", "stage-right", "bar"):
            port = free_port()
            cfg = cloud_config(tmp_path / gateway_id, mosquitto.url, gateway_id=gateway_id, api_port=port, sample_s=1.0)
            daemons.append(Daemon(cfg, port).start(wait=False))
        for d in daemons:
            d.wait_healthy()

        def mirrored(path: str) -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{mirror_port}{path}", timeout=5) as response:
                return json.load(response)

        deadline = time.monotonic() + 20
        seen: list[Any] = []
        while time.monotonic() < deadline and len([g for g in seen if g["online"]]) < 3:
            with contextlib.suppress(OSError):
                seen = mirrored("/gateways")
            time.sleep(0.2)
        assert sorted(g["gateway_id"] for g in seen if g["online"]) == ["bar", "stage-left", "stage-right"]
        for d in daemons:
            gateway_id = d.get("/api/v1/health")["gateway_id"]
            for _ in range(100):  # the twins move every second: compare when both are at one version
                own = d.get("/api/v1/twin")
                copy = mirrored(f"/gateways/hall/{gateway_id}/twin")
                if own["version"] == copy["version"]:
                    break
                time.sleep(0.05)
            assert copy["version"] == own["version"] and copy["assets"] == own["assets"]
            # telemetry follows the twin by up to a drain's batch: waited for, not caught in between
            deadline = time.monotonic() + 10
            while mirrored(f"/gateways/hall/{gateway_id}")["telemetry"]["readings"] == 0:
                assert time.monotonic() < deadline, f"no telemetry of {gateway_id} reached the mirror"
                time.sleep(0.1)
    finally:
        for d in daemons:
            d.cleanup()
        mirror.terminate()
        mirror.wait(10)


def test_a_password_never_crosses_the_network_in_clear() -> None:
    """check-config refuses a password for a plain mqtt:// broker off this box; TLS, or loopback, is allowed."""
    base = '[gateway]\nid = "box-1"\nvenue = "hall"\n[cloud]\nusername = "hall/box-1"\npassword_env = "P"\n'
    with pytest.raises(configuration.ConfigError) as refused:
        configuration.parse(Path("/etc/vg.toml"), base + 'broker = "mqtt://broker.example.net"\n')
    assert [str(p) for p in refused.value.problems] == [
        "cloud.password_env: the password would cross the network in clear to broker.example.net (allowed: an "
        "mqtts:// broker, or a plain one on loopback)"]
    for broker in ("mqtts://broker.example.net", "mqtt://127.0.0.1:1883", "mqtt://localhost", "mqtt://[::1]"):
        configuration.parse(Path("/etc/vg.toml"), base + f'broker = "{broker}"\n')
    configuration.parse(Path("/etc/vg.toml"), base.replace('password_env = "P"\n', "") +
                        'broker = "mqtt://broker.example.net"\n')  # a user name alone is no secret


def test_the_mirror_serves_off_loopback_only_a_token_over_https(tmp_path: Path, mosquitto: Mosquitto,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`--serve` off loopback takes a bearer token, so it needs HTTPS too (`--tls-cert`, `--tls-key`): without it
    the mirror refuses to start (exit 2, saying what is allowed); with it the answers go over TLS, the token
    checked."""
    import ssl

    import trustme

    from gateway import cli

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "mirror.pem", tmp_path / "mirror.key"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    key.chmod(0o600)
    monkeypatch.setenv("MIRROR_TOKEN", "s3cret")
    base = ["mirror", "--broker", mosquitto.url]
    for args, message in (
            (["--serve", "0.0.0.0:8090"], "give --token-env (only the token's holders read the fleet) and "
                                          "--tls-cert and --tls-key"),
            (["--serve", "0.0.0.0:8090", "--token-env", "MIRROR_TOKEN"],
             "is off loopback: give --tls-cert and --tls-key (HTTPS: the token never crosses the network in clear); "
             "or serve on 127.0.0.1 (allowed off loopback: a token over HTTPS)"),
            (["--tls-cert", str(cert), "--tls-key", str(key)], "--tls-cert is for --serve"),
            (["--serve", "0.0.0.0:8090", "--tls-key", str(key)], "--tls-key goes with --tls-cert"),
            (["--serve", "0.0.0.0:8090", "--token-env", "MIRROR_TOKEN", "--tls-cert", str(key), "--tls-key",
              str(key)], "are not a certificate and its key")):
        assert cli.main([*base, *args]) == 2, args
        assert message in capsys.readouterr().err, args
    key.chmod(0o644)
    assert cli.main([*base, "--serve", "0.0.0.0:8090", "--token-env", "MIRROR_TOKEN", "--tls-cert", str(cert),
                     "--tls-key", str(key)]) == 2
    assert "open to other users" in capsys.readouterr().err
    key.chmod(0o600)
    port = free_port()
    mirror = subprocess.Popen(
        [sys.executable, "-m", "gateway", *base, "--serve", f"0.0.0.0:{port}", "--token-env", "MIRROR_TOKEN",
         "--tls-cert", str(cert), "--tls-key", str(key), "--quiet"],
        env={**os.environ, "PYTHONPATH": str(ROOT_DIR)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert mirror.stdout is not None
        assert mirror.stdout.readline().decode().strip() == f"mirror serving https://0.0.0.0:{port}/gateways"
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        request = urllib.request.Request(f"https://127.0.0.1:{port}/gateways",
                                         headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(request, timeout=5, context=trusted) as response:
            assert response.status == 200 and json.load(response) == []
        with pytest.raises(urllib.error.HTTPError) as unauthorised:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/gateways", timeout=5, context=trusted)
        assert unauthorised.value.code == 401
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP: no answer in clear
            urllib.request.urlopen(request.full_url.replace("https", "http"), timeout=5)
    finally:
        mirror.terminate()
        mirror.wait(10)
