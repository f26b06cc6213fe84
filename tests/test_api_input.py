"""Bad input to the HTTP API, sent as raw bytes on a real socket (a client library would clean it up first): every
one is a 4xx saying what is wrong, never a 500; health tells a caller without a token only the status; the sound-level
CSV is read and sent a page at a time."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import config, history
from gateway.api import compliance
from gateway.api.app import build_app
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.readings import Reading
from gateway.settings import Role

VIEWER, OPERATOR, ADMIN = "v-token-123", "o-token-123", "a-token-123"
TOKENS: list[tuple[str, Role]] = [(VIEWER, "viewer"), (OPERATOR, "operator"), (ADMIN, "admin")]
CONFIG = """
[gateway]
id = "gw"
venue = "hall"
data_dir = "data"

[compliance]
profile = "who"

[[show.zones]]
name = "floor"
index = 0

[[show.presets]]
name = "intro"
kind = "pulse"
"""


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(config.parse(tmp_path / "gw.toml", CONFIG), Tokens(TOKENS))
    await gw.store.open(gw.twin)
    gw.twin.declare("amp:1", "amplifier", "stage", "sim")
    yield gw
    await gw.store.close(gw.twin)


@pytest.fixture
async def client(gateway: Gateway, aiohttp_client: Any) -> TestClient[Any, Any]:
    c: TestClient[Any, Any] = await aiohttp_client(build_app(gateway, Tokens(TOKENS)))
    return c


async def raw(client: TestClient[Any, Any], method: str, path: str, headers: bytes = b"",
              body: bytes = b"") -> tuple[int, dict[str, Any] | None]:
    """Send one request byte for byte; its status and JSON body (None when the body is not JSON)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode() + headers
    writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    return int(status_line.split()[1]), doc


def bearer(token: str) -> bytes:
    return f"Authorization: Bearer {token}\r\n".encode()


async def test_an_authorization_header_that_is_not_utf8_is_a_bad_token_on_every_route(
        client: TestClient[Any, Any]) -> None:
    header = b"Authorization: Bearer \xff\xfe\r\n"
    assert await raw(client, "GET", "/api/v1/health", header) == (200, {"status": "starting"})
    status, doc = await raw(client, "GET", "/api/v1/twin", header)
    assert status == 401 and doc is not None and doc["message"] == "the bearer token is not valid"
    status, _ = await raw(client, "GET", "/api/v1/twin/stream", header)
    assert status == 401
    status, _ = await raw(client, "GET", "/api/v1/openapi.json", b"Authorization: \xff\xfe\r\n")
    assert status == 200


async def test_a_body_that_is_not_what_its_content_encoding_says_is_a_400(client: TestClient[Any, Any]) -> None:
    path = "/api/v1/twin/assets/amp:1/desired"
    status, doc = await raw(client, "PATCH", path, bearer(ADMIN) + b"Content-Encoding: gzip\r\n", b'{"a": 1}')
    assert status == 400 and doc is not None and doc["error"] == "bad_body" and "gzip" in doc["message"], doc
    status, doc = await raw(client, "PATCH", path, bearer(ADMIN) + b"Content-Encoding: gzip\r\n",
                            gzip.compress(b'{"gain_db": -3}'))
    assert status == 200 and doc is not None and doc["desired"] == {"gain_db": -3}  # a real gzip body is taken
    status, doc = await raw(client, "PUT", "/api/v1/tempo", bearer(OPERATOR) + b"Content-Encoding: deflate\r\n",
                            b"\x00\x01 not deflate")
    assert status == 400 and doc is not None, doc


async def test_values_the_show_cannot_take_are_400_not_500(client: TestClient[Any, Any]) -> None:
    headers = bearer(OPERATOR) + b"Content-Type: application/json\r\n"
    for effect in ({"kind": "pulse", "bpm": 5e-324}, {"kind": "pulse", "duration_s": 1e308},
                   {"kind": "strobe", "period_ms": 1e308}, {"kind": "pulse", "intensity": 1e400}):
        body = json.dumps({"effect": effect}).replace("Infinity", "1e400").encode()
        for extra in ({}, {"preview": True}):
            status, doc = await raw(client, "POST", "/api/v1/effects", headers,
                                    body[:-1] + (b', "preview": true}' if extra else b"}"))
            assert status == 400 and doc is not None and doc["error"] in ("bad_effect", "bad_json"), (effect, doc)


async def test_a_desired_patch_too_deep_to_encode_is_refused_and_the_twin_still_answers(
        client: TestClient[Any, Any]) -> None:
    n = 254
    body = ('{"a":' * n + "1" + "}" * n).encode()
    status, doc = await raw(client, "PATCH", "/api/v1/twin/assets/amp:1/desired", bearer(ADMIN), body)
    assert 400 <= status < 500 and doc is not None, doc
    assert (await raw(client, "GET", "/api/v1/twin", bearer(VIEWER)))[0] == 200
    assert (await raw(client, "GET", "/api/v1/twin/assets/amp:1", bearer(VIEWER)))[0] == 200


async def test_health_without_a_token_says_only_the_status(client: TestClient[Any, Any]) -> None:
    assert await raw(client, "GET", "/api/v1/health") == (200, {"status": "starting"})
    assert await raw(client, "GET", "/api/v1/health", bearer("not-a-token")) == (200, {"status": "starting"})
    status, doc = await raw(client, "GET", "/api/v1/health", bearer(VIEWER))
    assert status == 200 and doc is not None and {"store", "drivers", "services", "problems"} <= set(doc)


async def test_bad_query_parameters_are_400(client: TestClient[Any, Any]) -> None:
    auth = bearer(VIEWER)
    for query in ("from=-1e20", "from=nan&to=inf", "from=-inf", "to=1e400", "from=%C2%B2", "from=0&to=nan"):
        status, doc = await raw(client, "GET", f"/api/v1/compliance/history.csv?{query}", auth)
        assert status == 400 and doc is not None and doc["error"] == "bad_request", (query, doc)
    for path in ("/api/v1/twin/changes?since=%C2%B2", "/api/v1/twin/changes?since=99999999999999999999999",
                 "/api/v1/telemetry?since=%C2%B2", "/api/v1/telemetry?since=9223372036854775808",
                 "/api/v1/telemetry?since=-1", "/api/v1/telemetry?limit=1e3", "/api/v1/twin/stream?since=%C2%B2"):
        status, doc = await raw(client, "GET", path, auth)
        assert status == 400 and doc is not None and doc["error"] == "bad_request", (path, doc)


async def test_the_csv_of_a_long_span_is_read_a_page_at_a_time(client: TestClient[Any, Any], gateway: Gateway,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compliance, "PAGE_ROWS", 7)  # three rows a minute: pages end mid-minute and between
    gateway.twin.declare("spl:floor", "spl_meter", "floor", "meter")
    gateway.twin.declare("spl:bar", "spl_meter", "bar", "meter")
    gateway.twin.declare("spl:door", "spl_meter", "door", "meter")
    t0 = (time.time() // 60 - 30) * 60
    for i in range(1, 10 * 60 + 1):
        gateway.ingest.publish([Reading(t0 + i, f"spl:{zone}", "laeq_db", 90.0)
                                for zone in ("floor", "bar", "door")], "meter")
    await gateway.store.flush(gateway.twin)
    reads: list[int] = []
    real = history.read_compliance

    def counted(*args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = real(*args, **kwargs)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(history, "read_compliance", counted)
    resp = await client.get("/api/v1/compliance/history.csv?from=0", headers={"Authorization": f"Bearer {VIEWER}"})
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 3 * 9 and max(reads) == 7 and len(reads) == 4  # 27 rows: 7 + 7 + 7 + 6
    keys = [(r["time_utc"], r["zone"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


async def test_a_websocket_handshake_with_bytes_it_cannot_read_is_a_400(client: TestClient[Any, Any]) -> None:
    """A key that is not ASCII (base64 refuses it) and an Origin that is not UTF-8 (echoed in the refusal) come from
    anyone, before any token: each is a 400 or 403 in JSON, never a 500."""
    upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    status, doc = await raw(client, "GET", "/api/v1/twin/stream", upgrade + b"Sec-WebSocket-Key: \xff\xfe\r\n")
    assert status == 400 and doc is not None and "Sec-WebSocket-Key" in doc["message"], doc
    status, doc = await raw(client, "GET", "/api/v1/twin/stream", upgrade + key + b"Origin: http://\xff\r\n")
    assert status == 403 and doc is not None and doc["error"] == "origin_refused", doc


async def test_requests_aiohttp_cannot_parse_are_logged_in_one_line_at_a_bounded_rate(
        client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp logs each request it cannot parse with its traceback: anyone on the network could fill the disk.
    Here a burst of them is one line, without a traceback, that counts them."""
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    for _ in range(5):
        assert (await raw(client, "GET", "/api/v1/twin/assets/\xff", bearer(VIEWER)))[0] == 400
    records = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno >= logging.INFO]
    assert len(records) <= 1 and all(r.exc_info is None and "cannot be parsed" in r.getMessage() for r in records), \
        records



async def test_a_body_not_in_its_content_encoding_left_unread_logs_no_traceback(
        client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Refused before its body is read (no token), the request's body is drained by aiohttp, which fails to decode
    it: anyone could write a traceback into the log with each such request."""
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    for _ in range(3):
        status, _ = await raw(client, "PATCH", "/api/v1/twin/assets/amp:1/desired", b"Content-Encoding: gzip\r\n",
                              b"{}")
        assert status == 401
    records = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno >= logging.INFO]
    assert len(records) <= 1 and all(r.exc_info is None for r in records), records

async def test_a_preview_over_the_flash_cap_is_refused_as_a_fire_would_be(client: TestClient[Any, Any]) -> None:
    status, doc = await raw(client, "POST", "/api/v1/effects", bearer(OPERATOR),
                            b'{"effect": {"kind": "strobe", "period_ms": 20}, "preview": true}')
    assert status == 400 and doc is not None and "max_flash_hz" in doc["message"], doc
