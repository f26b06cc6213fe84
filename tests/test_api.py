"""The HTTP API in-process (aiohttp's test server on a real socket): auth, snapshot, changes, desired, stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from gateway import config
from gateway.api import stream, ui
from gateway.api.app import build_app
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.readings import Reading
from gateway.twin import rfc3339

VIEWER, OPERATOR, ADMIN = "v-token-123", "o-token-123", "a-token-123"
AUTH = {t: {"Authorization": f"Bearer {t}"} for t in (VIEWER, OPERATOR, ADMIN)}
DASHBOARD = "https://dashboard.example:8443"  # a page elsewhere that may open the stream


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = config.parse(tmp_path / "gw.toml", '[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n'
                       f'[api]\nheartbeat_s = 1\nstream_origins = ["{DASHBOARD}"]\n')
    gw = Gateway(cfg, Tokens([(VIEWER, "viewer"), (OPERATOR, "operator"), (ADMIN, "admin")]))
    await gw.store.open(gw.twin)
    gw.twin.declare("amp:1", "amplifier", "stage", "sim")
    gw.ingest.publish([Reading(1.7e9, "amp:1", "temperature_c", 40.0)], owner="sim")
    yield gw
    await gw.store.close(gw.twin)


@pytest.fixture
async def client(gateway: Gateway, aiohttp_client: Any) -> TestClient[Any, Any]:
    tokens = Tokens([(VIEWER, "viewer"), (OPERATOR, "operator"), (ADMIN, "admin")])
    c: TestClient[Any, Any] = await aiohttp_client(build_app(gateway, tokens))
    return c


async def error_of(resp: Any) -> str:
    body = await resp.json()
    assert set(body) >= {"error", "message"}
    return str(body["error"])


async def test_health_needs_no_token_for_the_status_and_one_for_the_details(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/health")
    assert resp.status == 200
    assert await resp.json() in ({"status": "ok"}, {"status": "starting"}, {"status": "degraded"})
    doc = await (await client.get("/api/v1/health", headers=AUTH[VIEWER])).json()
    assert doc["status"] in ("ok", "starting", "degraded") and doc["twin"]["assets"] == 1


async def test_tokens_and_roles(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/twin")
    assert resp.status == 401 and await error_of(resp) == "unauthorized"
    resp = await client.get("/api/v1/twin", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await client.get("/api/v1/twin", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert resp.status == 401
    resp = await client.patch("/api/v1/twin/assets/amp:1/desired", json={"enabled": False}, headers=AUTH[OPERATOR])
    assert resp.status == 403 and await error_of(resp) == "forbidden"
    for token in (VIEWER, OPERATOR, ADMIN):
        assert (await client.get("/api/v1/twin", headers=AUTH[token])).status == 200


async def test_snapshot_with_etag_and_304(client: TestClient[Any, Any], gateway: Gateway) -> None:
    resp = await client.get("/api/v1/twin", headers=AUTH[VIEWER])
    doc = await resp.json()
    assert resp.headers["ETag"] == f'"{doc["version"]}"'
    assert set(doc) == {"gateway_id", "venue", "version", "taken_at", "assets"}
    assert doc["assets"]["amp:1"]["reported"] == {"temperature_c": 40.0}
    assert set(doc["assets"]["amp:1"]) >= {"kind", "zone", "reported", "desired", "version", "updated_at"}
    resp = await client.get("/api/v1/twin", headers={**AUTH[VIEWER], "If-None-Match": resp.headers["ETag"]})
    assert resp.status == 304 and await resp.read() == b""
    gateway.twin.report("amp:1", {"fan_rpm": 1500.0})
    resp = await client.get("/api/v1/twin", headers={**AUTH[VIEWER], "If-None-Match": f'"{doc["version"]}"'})
    assert resp.status == 200


async def test_changes_since_and_410(client: TestClient[Any, Any], gateway: Gateway) -> None:
    v = gateway.twin.version
    gateway.twin.report("amp:1", {"fan_rpm": 1500.0})
    resp = await client.get(f"/api/v1/twin/changes?since={v}", headers=AUTH[VIEWER])
    doc = await resp.json()
    assert doc["from"] == v and doc["to"] == v + 1 and not doc["more"]
    (change,) = doc["changes"]
    assert change["asset"] == "amp:1" and change["reported"] == {"fan_rpm": 1500.0} and change["removed"] is False
    resp = await client.get(f"/api/v1/twin/changes?since={v + 1}", headers=AUTH[VIEWER])
    assert (await resp.json())["changes"] == []
    gateway.twin.restore(list(gateway.twin.assets().values()), 5_000_000)
    resp = await client.get(f"/api/v1/twin/changes?since={v}", headers=AUTH[VIEWER])
    assert resp.status == 410 and (await resp.json())["floor"] == 5_000_000
    resp = await client.get("/api/v1/twin/changes?since=abc", headers=AUTH[VIEWER])
    assert resp.status == 400
    ahead = gateway.twin.version + 10
    resp = await client.get(f"/api/v1/twin/changes?since={ahead}", headers=AUTH[VIEWER])
    doc = await resp.json()
    assert resp.status == 400 and doc["error"] == "ahead" and doc["version"] == gateway.twin.version
    assert doc["message"].startswith(f"version {ahead} is ahead of the twin, which is at version")
    resp = await client.get("/api/v1/twin/changes", headers=AUTH[VIEWER])
    assert resp.status == 400


async def test_desired_patch(client: TestClient[Any, Any], gateway: Gateway) -> None:
    url = "/api/v1/twin/assets/amp:1/desired"
    version = gateway.twin.get("amp:1").version  # type: ignore[union-attr]
    resp = await client.patch(url, data=b"{not json", headers=AUTH[ADMIN])
    assert resp.status == 400 and await error_of(resp) == "bad_json"
    resp = await client.patch(url, json=[1, 2], headers=AUTH[ADMIN])
    assert resp.status == 400
    resp = await client.patch("/api/v1/twin/assets/nope/desired", json={}, headers=AUTH[ADMIN])
    assert resp.status == 404 and await error_of(resp) == "not_found"
    resp = await client.patch(url, json={"gain_db": -3}, headers={**AUTH[ADMIN], "If-Match": f'"{version - 1}"'})
    assert resp.status == 412 and (await resp.json())["version"] == version
    resp = await client.patch(url, json={"gain_db": -3}, headers={**AUTH[ADMIN], "If-Match": f'"{version}"'})
    assert resp.status == 200
    doc = await resp.json()
    assert doc["desired"] == {"gain_db": -3} and resp.headers["ETag"] == f'"{doc["version"]}"'
    # answered only once it is on disk
    rows = gateway.store._conn.execute("SELECT desired FROM assets WHERE id='amp:1'").fetchone()  # type: ignore[union-attr]
    assert orjson.loads(rows[0]) == {"gain_db": -3}
    resp = await client.patch(url, data=b"x" * (300 * 1024), headers=AUTH[ADMIN])
    assert resp.status == 413


async def test_desired_state_its_owner_refuses_at_once_is_422_and_changes_nothing(
        client: TestClient[Any, Any], gateway: Gateway) -> None:
    def check(asset_id: str, desired: Any) -> str | None:
        return None if -40 <= desired.get("gain_db", 0) <= 6 else "allowed: gain_db (-40 to 6)"

    gateway.twin.on_desired("sim", lambda asset_id, desired: None, check)
    url = "/api/v1/twin/assets/amp:1/desired"
    before = gateway.twin.get("amp:1").version  # type: ignore[union-attr]
    resp = await client.patch(url, json={"gain_db": 20}, headers=AUTH[ADMIN])
    doc = await resp.json()
    assert resp.status == 422 and doc == {"error": "desired_refused", "message": "amp:1: allowed: gain_db (-40 to 6)"}
    asset = gateway.twin.get("amp:1")
    assert asset is not None and asset.desired == {} and asset.version == before
    resp = await client.patch(url, json={"gain_db": -6}, headers=AUTH[ADMIN])
    assert resp.status == 200 and (await resp.json())["desired"] == {"gain_db": -6}


async def test_one_asset_and_unknown_routes(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/twin/assets/amp:1", headers=AUTH[VIEWER])
    assert resp.status == 200 and (await resp.json())["id"] == "amp:1"
    resp = await client.get("/api/v1/twin/assets/missing", headers=AUTH[VIEWER])
    assert resp.status == 404
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404 and await error_of(resp) == "not_found"
    resp = await client.delete("/api/v1/twin", headers=AUTH[VIEWER])
    assert resp.status == 405 and "GET" in (await resp.json())["allowed"]


async def test_the_stream_sends_a_snapshot_then_changes(client: TestClient[Any, Any], gateway: Gateway) -> None:
    assert (await client.get("/api/v1/twin/stream")).status == 401
    async with client.ws_connect("/api/v1/twin/stream", headers=AUTH[VIEWER]) as ws:
        first = orjson.loads((await ws.receive(timeout=5)).data)
        assert first["type"] == "snapshot" and "amp:1" in first["twin"]["assets"]
        version = first["twin"]["version"]
        gateway.twin.report("amp:1", {"fan_rpm": 2000.0})
        gateway.twin.declare("amp:2", "amplifier", "stage", "sim")
        seen: list[dict[str, Any]] = []
        while len(seen) < 2:
            msg = orjson.loads((await ws.receive(timeout=5)).data)
            assert msg["type"] == "changes" and msg["from"] == (seen[-1]["version"] if seen else version)
            seen += msg["changes"]
        assert [c["version"] for c in seen] == [version + 1, version + 2]
    async with client.ws_connect(f"/api/v1/twin/stream?since={version}", headers=AUTH[VIEWER]) as ws:
        msg = orjson.loads((await ws.receive(timeout=5)).data)
        assert msg["type"] == "changes" and msg["from"] == version and len(msg["changes"]) == 2
        await ws.close()
        assert ws.closed
    async with client.ws_connect("/api/v1/twin/stream?since=1", headers=AUTH[VIEWER]) as ws:
        gateway.twin.restore(list(gateway.twin.assets().values()), 10**7)  # the client's version is gone
        gateway.twin.report("amp:1", {"x": 1.0})
        kinds = set()
        while "snapshot" not in kinds:
            msg = await ws.receive(timeout=5)
            assert msg.type == WSMsgType.TEXT  # JSON as text: a browser gets a string, not a Blob
            kinds.add(orjson.loads(msg.data)["type"])


async def handshake(client: TestClient[Any, Any], path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """A WebSocket opening handshake on a raw socket: the status and the headers exactly as the gateway sent them."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {client.host}:{client.port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    writer.close()
    status_line, *fields = head.strip().split("\r\n")
    return int(status_line.split()[1]), {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}


async def test_a_browser_authenticates_with_the_subprotocol_which_is_answered_without_the_token(
        client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/api/v1/twin/stream", protocols=("venue-gateway", f"bearer.{VIEWER}")) as ws:
        assert ws.protocol == "venue-gateway"
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.TEXT and orjson.loads(msg.data)["type"] == "snapshot"
    status, headers = await handshake(client, "/api/v1/twin/stream",
                                      {"Sec-WebSocket-Protocol": f"venue-gateway, bearer.{VIEWER}"})
    assert status == 101 and headers["sec-websocket-protocol"] == "venue-gateway"
    assert VIEWER not in str(headers)
    for protocols in (("venue-gateway", "bearer.wrong-token"), ("venue-gateway", "bearer.x", f"bearer.{VIEWER}")):
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/api/v1/twin/stream", protocols=protocols)
        assert refused.value.status == (401 if len(protocols) == 2 else 400)
    # the token alone, without the protocol the gateway answers, would be a connection the browser drops: refused
    status, _ = await handshake(client, "/api/v1/twin/stream", {"Sec-WebSocket-Protocol": f"bearer.{VIEWER}"})
    assert status == 400


async def test_a_browser_authenticates_with_its_first_message(client: TestClient[Any, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async with client.ws_connect("/api/v1/twin/stream") as ws:
        await ws.send_str(orjson.dumps({"token": VIEWER}).decode())
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.TEXT and orjson.loads(msg.data)["type"] == "snapshot"
    for first, reason in (({"token": "wrong-token"}, "the token is not valid"),
                          ({"token": VIEWER, "since": 1}, 'the first message must be {"token": TOKEN}'),
                          ("hello", 'the first message must be {"token": TOKEN}')):
        async with client.ws_connect("/api/v1/twin/stream") as ws:
            await ws.send_str(first if isinstance(first, str) else orjson.dumps(first).decode())
            msg = await ws.receive(timeout=5)
            assert msg.type == WSMsgType.CLOSE and (msg.data, msg.extra) == (4401, reason)
    monkeypatch.setattr(stream, "AUTH_TIMEOUT_S", 0.2)
    async with client.ws_connect("/api/v1/twin/stream") as ws:
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.CLOSE and msg.data == 4401
        assert msg.extra == 'no token within 0.2 s: send {"token": TOKEN} first'


async def test_a_token_in_the_url_is_never_taken(client: TestClient[Any, Any]) -> None:
    for query in (f"token={VIEWER}", f"access_token={VIEWER}"):
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect(f"/api/v1/twin/stream?{query}")
        assert refused.value.status == 400
        resp = await client.get(f"/api/v1/twin/stream?{query}")
        assert resp.status == 400 and await error_of(resp) == "token_in_url"
    resp = await client.get(f"/api/v1/twin?access_token={VIEWER}")
    assert resp.status == 401


async def test_the_stream_checks_the_origin_of_a_browser(client: TestClient[Any, Any]) -> None:
    own = f"http://{client.host}:{client.port}"
    for origin in (own, DASHBOARD, "https://DASHBOARD.example:8443"):
        async with client.ws_connect("/api/v1/twin/stream", headers={**AUTH[VIEWER], "Origin": origin}) as ws:
            assert orjson.loads((await ws.receive(timeout=5)).data)["type"] == "snapshot"
    for origin in ("https://evil.example", f"https://{client.host}:{client.port}", "https://dashboard.example",
                   f"http://{client.host}:{client.port + 1}", "null"):
        resp = await client.get("/api/v1/twin/stream", headers={**AUTH[VIEWER], "Origin": origin,
                                                                 "Upgrade": "websocket", "Connection": "Upgrade"})
        assert resp.status == 403 and await error_of(resp) == "origin_refused", origin
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/api/v1/twin/stream", protocols=("venue-gateway", f"bearer.{VIEWER}"),
                                    headers={"Origin": origin})
        assert refused.value.status == 403


async def test_the_stream_is_a_websocket_and_says_so(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/twin/stream", headers=AUTH[VIEWER])
    assert resp.status == 426 and resp.headers["Upgrade"] == "websocket"
    assert await error_of(resp) == "upgrade_required"
    resp = await client.get("/api/v1/twin/stream")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    for since in ("-1", "x", "1.5"):
        resp = await client.get(f"/api/v1/twin/stream?since={since}", headers=AUTH[VIEWER])
        assert resp.status == 400


async def test_a_client_that_takes_nothing_is_cut_off(client: TestClient[Any, Any], gateway: Gateway) -> None:
    """It answers no ping (every heartbeat_s, here 1 s) and is dropped half a heartbeat later, its stream with it."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /api/v1/twin/stream HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 + f"Authorization: Bearer {VIEWER}\r\n\r\n".encode())
    started = time.monotonic()
    await asyncio.sleep(2.0)  # reads nothing: the pings wait unanswered
    assert not client.app[stream.STREAMS]
    received = await asyncio.wait_for(reader.read(), 5)  # what was sent before, then the end of the connection
    assert received.startswith(b"HTTP/1.1 101") and reader.at_eof() and time.monotonic() - started < 3
    writer.close()


async def test_a_stopping_gateway_closes_its_streams_with_going_away(client: TestClient[Any, Any]) -> None:
    ws = await client.ws_connect("/api/v1/twin/stream", headers=AUTH[VIEWER])
    assert (await ws.receive(timeout=5)).type == WSMsgType.TEXT
    closing = asyncio.ensure_future(client.server.close())
    msg = await ws.receive(timeout=5)
    await closing
    assert msg.type == WSMsgType.CLOSE and (msg.data, msg.extra) == (1001, "the gateway is stopping")


async def test_metrics_in_prometheus_text(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/metrics")).status == 401
    resp = await client.get("/metrics", headers=AUTH[VIEWER])
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    assert families["vg_twin_version"].samples[0].value >= 2
    assert families["vg_readings"].samples[0].value == 1
    assert "vg_event_loop_lag_seconds" in families
    assert {s.labels["part"] for s in families["vg_store_bytes"].samples} == {"database", "wal", "used", "limit"}


async def test_openapi_describes_every_route(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/openapi.json")
    doc = await resp.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    routes = {r.resource.canonical for r in client.app.router.routes() if r.resource is not None}  # type: ignore[union-attr]
    assert routes - set(ui.PAGE_ROUTES) == set(doc["paths"])  # (the dashboard's page is no API path)


async def test_desired_patch_when_the_store_cannot_write(client: TestClient[Any, Any], gateway: Gateway) -> None:
    conn = gateway.store._conn
    assert conn is not None
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
    gateway.ingest.publish([Reading(1.7e9, f"amp:{i}", "x", 1.0) for i in range(3000)])
    resp = await client.patch("/api/v1/twin/assets/amp:1/desired", json={"gain_db": -1}, headers=AUTH[ADMIN])
    assert resp.status == 503 and await error_of(resp) == "store_unavailable"
    assert gateway.twin.get("amp:1").desired == {"gain_db": -1}  # type: ignore[union-attr]
    conn.execute("PRAGMA max_page_count=1073741823")


async def test_if_none_match_lists_and_weak_tags(client: TestClient[Any, Any], gateway: Gateway) -> None:
    etag = f'"{gateway.twin.version}"'
    for header in (f'"1",{etag}', f'W/{etag}', "*", f'"x", W/{etag} '):
        resp = await client.get("/api/v1/twin", headers={**AUTH[VIEWER], "If-None-Match": header})
        assert resp.status == 304, header
    resp = await client.get("/api/v1/twin", headers={**AUTH[VIEWER], "If-None-Match": '"999", "1000"'})
    assert resp.status == 200


async def test_auth_details(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/twin")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/api/v1/twin", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert (await resp.json())["message"] == "the bearer token is not valid"
    resp = await client.get("/api/v1/health", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 200  # open routes ignore credentials
    resp = await client.get("/api/v1/twin/changes?since=-1", headers=AUTH[VIEWER])
    assert resp.status == 400


async def test_query_parameters_outside_their_bounds_are_refused_not_clamped(client: TestClient[Any, Any]) -> None:
    for query, said in (("telemetry?limit=10001", "limit must be a whole number from 1 to 10000"),
                        ("telemetry?limit=0", "limit must be a whole number from 1 to 10000"),
                        ("telemetry?since=-5", "since must be a whole number from 0 to 9223372036854775807"),
                        ("telemetry?since=9223372036854775808", "since must be a whole number from 0 to"),
                        ("twin/changes?since=1&limit=-3", "limit must be a whole number from 1 to 10000"),
                        ("twin/changes?since=", "since must be a whole number"),
                        ("twin/changes?since=%D9%A1", "since must be a whole number"),  # an Arabic-Indic 1
                        ("twin/stream?since=9223372036854775808", "since must be a whole number")):
        resp = await client.get(f"/api/v1/{query}", headers=AUTH[VIEWER])
        doc = await resp.json()
        assert resp.status == 400 and doc["error"] == "bad_request" and said in doc["message"], (query, doc)
    for query in ("telemetry?limit=10000&since=9223372036854775807", "telemetry?limit=1",
                  "twin/changes?since=1&limit=1"):
        assert (await client.get(f"/api/v1/{query}", headers=AUTH[VIEWER])).status == 200, query


async def test_if_match_is_strong_and_takes_lists_and_star(client: TestClient[Any, Any], gateway: Gateway) -> None:
    url = "/api/v1/twin/assets/amp:1/desired"

    def version() -> int:
        return gateway.twin.get("amp:1").version  # type: ignore[union-attr]

    resp = await client.patch(url, json={"a": 1}, headers={**AUTH[ADMIN], "If-Match": f'W/"{version()}"'})
    assert resp.status == 412
    resp = await client.patch(url, json={"a": 1}, headers={**AUTH[ADMIN], "If-Match": f'"1", "{version()}"'})
    assert resp.status == 200
    resp = await client.patch(url, json={"a": 2}, headers={**AUTH[ADMIN], "If-Match": str(version())})
    assert resp.status == 200
    resp = await client.patch(url, json={"a": 3}, headers={**AUTH[ADMIN], "If-Match": "*"})
    assert resp.status == 200 and (await resp.json())["desired"] == {"a": 3}


async def test_a_held_twin_refuses_desired_changes(client: TestClient[Any, Any], gateway: Gateway) -> None:
    gateway.twin.version_limit = gateway.twin.version
    resp = await client.patch("/api/v1/twin/assets/amp:1/desired", json={"a": 1}, headers=AUTH[ADMIN])
    assert resp.status == 503 and "held" in (await resp.json())["message"]
    assert gateway.twin.get("amp:1").desired == {}  # type: ignore[union-attr]
    health = await (await client.get("/api/v1/health", headers=AUTH[VIEWER])).json()
    assert health["twin"]["held"] is True


async def test_telemetry_history_is_paged_by_sequence_and_filtered(client: TestClient[Any, Any],
                                                                   gateway: Gateway) -> None:
    now = round(time.time())  # (the fixture's first reading, from 2023, is past retention: gone at the flush)
    gateway.ingest.publish([Reading(now + i, "amp:1", "temperature_c", 41.0 + i) for i in range(5)]
                           + [Reading(now + i, "spl:floor", "laeq_db", 95.0) for i in range(3)], owner="sim")
    await gateway.store.flush(gateway.twin)  # history is what is committed
    resp = await client.get("/api/v1/telemetry?limit=4", headers=AUTH[VIEWER])
    assert resp.status == 200
    page = await resp.json()
    first = page["oldest"]
    assert page["from"] == 0 and page["more"] and len(page["readings"]) == 4
    assert page["readings"][0] == {"seq": first, "ts": rfc3339(now), "asset": "amp:1", "metric": "temperature_c",
                                   "value": 41.0}
    rest = await (await client.get(f"/api/v1/telemetry?since={page['to']}", headers=AUTH[VIEWER])).json()
    seqs = [r["seq"] for r in page["readings"] + rest["readings"]]
    assert not rest["more"] and seqs == list(range(first, first + 8))
    only = await (await client.get("/api/v1/telemetry?asset=spl:floor", headers=AUTH[VIEWER])).json()
    assert [r["value"] for r in only["readings"]] == [95.0] * 3
    end = seqs[-1]
    none = await (await client.get(f"/api/v1/telemetry?since={end}", headers=AUTH[VIEWER])).json()
    assert none == {"from": end, "to": end, "more": False, "oldest": first, "readings": []}
    assert (await client.get("/api/v1/telemetry?since=-1", headers=AUTH[VIEWER])).status == 400
    assert (await client.get("/api/v1/telemetry")).status == 401


def test_stream_origins_are_checked_with_the_configuration(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.parse(tmp_path / "gw.toml", '[gateway]\nid = "gw"\nvenue = "hall"\n[api]\nstream_origins = '
                     '["https://dash.example/", "ftp://x", 5, "http://ok.example:8080", "http://[::1]:8080"]\n')
    allowed = "(allowed: http:// or https://, a host and an optional port, nothing after it, e.g. " \
              "https://dashboard.example:8443)"
    assert sorted(refused.value.lines()) == [
        f"{tmp_path / 'gw.toml'}: api.stream_origins[0]: 'https://dash.example/' is not an origin {allowed}",
        f"{tmp_path / 'gw.toml'}: api.stream_origins[1]: 'ftp://x' is not an origin {allowed}",
        f"{tmp_path / 'gw.toml'}: api.stream_origins[2]: must be a string (got 5)"]
