"""The show's controls over HTTP beside the effects: blackout (wristbands and DMX) and the tempo, set or tapped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import config
from gateway.api.app import build_app
from gateway.api.auth import Tokens
from gateway.daemon import Gateway

VIEWER, OPERATOR, ADMIN = "v-token-123", "o-token-123", "a-token-123"
AUTH = {t: {"Authorization": f"Bearer {t}"} for t in (VIEWER, OPERATOR, ADMIN)}
CONFIG = """
[gateway]
id = "gw"
venue = "hall"
data_dir = "data"

[dmx]
universes = [1, 2]

[show]
tempo_bpm = 120

[[show.zones]]
name = "floor"
index = 0

[[show.presets]]
name = "intro"
kind = "pulse"
"""


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(config.parse(tmp_path / "gw.toml", CONFIG), Tokens([]))
    await gw.store.open(gw.twin)
    gw.dmx.declare()
    yield gw
    await gw.store.close(gw.twin)


@pytest.fixture
async def client(gateway: Gateway, aiohttp_client: Any) -> TestClient[Any, Any]:
    tokens = Tokens([(VIEWER, "viewer"), (OPERATOR, "operator"), (ADMIN, "admin")])
    c: TestClient[Any, Any] = await aiohttp_client(build_app(gateway, tokens))
    return c


async def test_blackout_stops_the_effects_and_darkens_every_universe(client: TestClient[Any, Any],
                                                                     gateway: Gateway) -> None:
    resp = await client.patch("/api/v1/twin/assets/universe:1/desired", json={"levels": {"1": 255, "10": 128}},
                              headers=AUTH[ADMIN])
    assert resp.status == 200
    gateway.dmx.set_channel(2, 5, 77)  # as OSC would
    assert (await client.post("/api/v1/effects", json={"preset": "intro"}, headers=AUTH[OPERATOR])).status == 202

    assert (await client.post("/api/v1/blackout", headers=AUTH[VIEWER])).status == 403
    resp = await client.post("/api/v1/blackout", headers=AUTH[OPERATOR])
    assert resp.status == 202
    doc = await resp.json()
    assert doc["universes"] == [1, 2] and doc["zones"] == ["floor"] and doc["effect_id"]
    assert gateway.show.last is not None and gateway.show.last.effect.kind == "blackout"
    assert not any(gateway.dmx.get(1).levels) and not any(gateway.dmx.get(2).levels)
    assert gateway.twin.get("universe:1").desired == {}  # type: ignore[union-attr]


async def test_tempo_is_read_set_and_tapped(client: TestClient[Any, Any], gateway: Gateway) -> None:
    resp = await client.get("/api/v1/tempo", headers=AUTH[VIEWER])
    assert resp.status == 200 and await resp.json() == {"tempo_bpm": 120.0}
    assert (await client.put("/api/v1/tempo", json={"bpm": 140}, headers=AUTH[VIEWER])).status == 403
    resp = await client.put("/api/v1/tempo", json={"bpm": 140}, headers=AUTH[OPERATOR])
    assert resp.status == 200 and await resp.json() == {"tempo_bpm": 140.0}
    assert gateway.twin.get("show_control").reported["tempo_bpm"] == 140.0  # type: ignore[union-attr]
    for body, said in (({"bpm": 0}, "out of range"), ({"bpm": "fast"}, "must be a number"),
                       ({"bpm": True}, "must be a number"), ({"bpm": 90, "swing": 1}, "unknown key 'swing'")):
        resp = await client.put("/api/v1/tempo", json=body, headers=AUTH[OPERATOR])
        doc = await resp.json()
        assert resp.status == 400 and doc["error"] == "bad_tempo" and said in doc["message"], (body, doc)
    assert gateway.show.tempo_bpm == 140.0

    first = await client.post("/api/v1/tempo/tap", headers=AUTH[OPERATOR])
    assert first.status == 200 and (await first.json())["tempo_bpm"] == 140.0  # one tap sets nothing
    await asyncio.sleep(0.5)
    second = await (await client.post("/api/v1/tempo/tap", headers=AUTH[OPERATOR])).json()
    assert 100 <= second["tempo_bpm"] <= 120  # 0.5 s apart, plus the request's own time
