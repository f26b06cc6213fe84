"""The store's history over HTTP (GET /series, GET /replay): the real app on a port of its own, over a real store;
reductions and moments compared with what was written, worked out the plain way."""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import config, history
from gateway.api.app import build_app
from gateway.api.auth import Tokens
from gateway.api.timeline import MAX_SERIES
from gateway.daemon import Gateway
from gateway.database import open_database
from gateway.readings import Reading

VIEWER = "v-token-123"
AUTH = {"Authorization": f"Bearer {VIEWER}"}
NOW = float(int(time.time()))
HOUR = NOW - 3600  # the span the tests plot: the last hour


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = config.parse(tmp_path / "gw.toml", '[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n')
    gw = Gateway(cfg, Tokens([(VIEWER, "viewer")]))
    await gw.store.open(gw.twin)
    for asset in ("amp:1", "amp:2", "meter/a"):
        gw.twin.declare(asset, "amplifier", "stage", "sim")
    yield gw
    await gw.store.close(gw.twin)


@pytest.fixture
async def client(gateway: Gateway, aiohttp_client: Any) -> TestClient[Any, Any]:
    c: TestClient[Any, Any] = await aiohttp_client(build_app(gateway, Tokens([(VIEWER, "viewer")])))
    return c


async def write(gw: Gateway, readings: list[Reading]) -> None:
    """Hand readings over in time order, a second at a time as drivers do, and commit them."""
    readings.sort(key=lambda r: r.ts)
    for start in range(0, len(readings), 500):
        gw.ingest.publish(readings[start:start + 500], owner="sim")
    await gw.store.flush(gw.twin)


def brute(points: list[tuple[float, float]], since: float, until: float, n: int) -> list[list[float]]:
    """[t, min, max, last] of each bucket holding readings: the reduction, one reading at a time."""
    step = (until - since) / n
    buckets: dict[int, list[float]] = {}
    for ts, value in points:
        if since <= ts < until:
            b = min(int((ts - since) / step), n - 1)
            low, high, _ = buckets.get(b, [math.inf, -math.inf, 0.0])
            buckets[b] = [min(low, value), max(high, value), value]
    order = sorted(buckets)
    return [[round(since + b * step, 3) for b in order], *([buckets[b][i] for b in order] for i in range(3))]


async def test_series_are_reduced_per_bucket_as_a_plain_count_says_and_answered_in_one_trip(
        client: TestClient[Any, Any], gateway: Gateway) -> None:
    rng = random.Random(20)
    # amp:1 at 1 Hz, and amp:2 at 1 Hz with a ten-minute gap; meter/a (an asset with a slash) every 40 s: few enough
    # to be sent as they are; readings before and after the span too, and a series no one asks for between them.
    dense = [(HOUR - 30 + i + rng.random() / 2, rng.gauss(40, 5)) for i in range(3700)]
    gappy = [(HOUR + i + 0.25, rng.uniform(-1, 1)) for i in range(3600) if not 1200 <= i < 1800]
    sparse = [(HOUR + 40 * i + 0.5, float(i)) for i in range(90)]
    await write(gateway, [Reading(t, "amp:1", "temperature_c", v) for t, v in dense]
                + [Reading(t, "amp:2", "current_a", v) for t, v in gappy]
                + [Reading(t, "meter/a", "level_db", v) for t, v in sparse]
                + [Reading(HOUR + i, "amp:1", "fan_rpm", 1000.0 + i) for i in range(3600)])
    query = (f"series=amp:1/temperature_c&series=amp:2/current_a&series=meter/a/level_db&series=amp:9/nothing"
             f"&asset=amp:1&metric=fan_rpm&from={HOUR}&to={NOW}&points=300")
    resp = await client.get(f"/api/v1/series?{query}", headers={**AUTH, "Accept-Encoding": "gzip"})
    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
    doc = await resp.json()
    assert (doc["from"], doc["to"], doc["points"], doc["step"]) == (HOUR, NOW, 300, 12.0)
    got = {(s["asset"], s["metric"]): s for s in doc["series"]}
    assert [s["asset"] for s in doc["series"]] == ["amp:1", "amp:2", "meter/a", "amp:9", "amp:1"]  # as asked
    for key, points in ((("amp:1", "temperature_c"), dense), (("amp:2", "current_a"), gappy)):
        inside = [p for p in points if HOUR <= p[0] < NOW]
        assert got[key]["reduced"] and got[key]["count"] == len(inside)
        assert got[key]["data"] == brute(points, HOUR, NOW, 300)
    assert len(got["amp:2", "current_a"]["data"][0]) == 250  # the gap's 50 buckets are left out
    assert got["meter/a", "level_db"] == {"asset": "meter/a", "metric": "level_db", "count": 90, "reduced": False,
                                          "data": [[round(t, 3) for t, _ in sparse], [v for _, v in sparse]]}
    assert got["amp:9", "nothing"] == {"asset": "amp:9", "metric": "nothing", "count": 0, "reduced": False,
                                       "data": [[], []]}
    fan = got["amp:1", "fan_rpm"]["data"]  # 12 readings a bucket: the last is the greatest, the first the least
    assert fan[1][:2] == [1000.0, 1012.0] and fan[2][:2] == fan[3][:2] == [1011.0, 1023.0]

    # A span holding fewer than 2 x points readings of a series: the readings themselves, in time order
    short = await (await client.get(f"/api/v1/series?series=amp:1/temperature_c&from={HOUR}&to={HOUR + 15}"
                                    "&points=10", headers=AUTH)).json()
    inside = [p for p in dense if HOUR <= p[0] < HOUR + 15]
    assert short["series"][0]["reduced"] is False
    assert short["series"][0]["data"] == [[round(t, 3) for t, _ in inside], [v for _, v in inside]]  # to the ms


async def test_replay_answers_each_metrics_last_reading_at_the_moment_and_the_minutes_compliance(
        client: TestClient[Any, Any], gateway: Gateway) -> None:
    at = NOW - 1000.5
    await write(gateway, [Reading(HOUR + i, "amp:1", "temperature_c", float(i)) for i in range(3600)]
                + [Reading(at - 100, "amp:2", "current_a", 3.5),  # past the first look, within the look-back
                   Reading(at - 700, "amp:2", "voltage_v", 230.0),  # beyond the default look-back of 600 s
                   Reading(at + 0.25, "amp:2", "current_a", 9.0),  # after the moment: not yet
                   Reading(at - 5, "meter/a", "level_db", math.inf)])
    minute = math.ceil(at / 60) * 60.0
    rows = [(minute - 60, "floor", 90.0, 91.0, 92.0, 99.0, "15 min", 100.0, "ok", 95.0),
            (minute, "floor", 96.5, 97.0, 94.0, 105.0, "15 min", 100.0, "warning", 101.5),
            (minute, "bar", None, None, None, None, "60 min", 102.0, "ok", None),
            (minute + 60, "floor", 99.0, 99.0, 99.0, 99.0, "15 min", 100.0, "alarm", 103.0)]
    gateway.store.add_compliance(rows)
    await gateway.store.flush(gateway.twin)

    doc = await (await client.get(f"/api/v1/replay?at={at}", headers=AUTH)).json()
    assert (doc["at"], doc["lookback"], doc["oldest"], doc["newest"]) == (at, 600, HOUR, HOUR + 3599)
    last = math.floor(at - HOUR)  # amp:1 wrote i at HOUR + i
    assert doc["assets"] == {"amp:1": {"temperature_c": {"value": float(last), "ts": HOUR + last}},
                             "amp:2": {"current_a": {"value": 3.5, "ts": at - 100}},
                             "meter/a": {"level_db": {"value": None, "ts": at - 5}}}  # infinity is not JSON
    assert doc["compliance"] == {
        "floor": {"ts": minute, "laeq_1min_db": 96.5, "laeq_15min_db": 97.0, "laeq_60min_db": 94.0, "lmax_db": 105.0,
                  "limit": "15 min", "limit_db": 100.0, "state": "warning", "projected_db": 101.5},
        "bar": {"ts": minute, "laeq_1min_db": None, "laeq_15min_db": None, "laeq_60min_db": None, "lmax_db": None,
                "limit": "60 min", "limit_db": 102.0, "state": "ok", "projected_db": None}}
    longer = await (await client.get(f"/api/v1/replay?at={at}&lookback=800", headers=AUTH)).json()
    assert longer["assets"]["amp:2"] == {"current_a": {"value": 3.5, "ts": at - 100},
                                         "voltage_v": {"value": 230.0, "ts": at - 700}}
    before = await (await client.get(f"/api/v1/replay?at={HOUR - 3600}", headers=AUTH)).json()
    assert before["assets"] == before["compliance"] == {} and before["oldest"] == HOUR


BAD = [
    ("series", "name 1 to 16 series"),
    ("series?" + "&".join(f"series=a/m{i}" for i in range(MAX_SERIES + 1)), "name 1 to 16 series (series="),
    ("series?series=amp:1", "is not ASSET/METRIC"),
    ("series?series=/m", "is not ASSET/METRIC"),
    ("series?asset=amp:1", "asset and metric name one series together"),
    ("series?series=a/m&from=nan", "from='nan' is not a time (allowed: RFC 3339"),
    ("series?series=a/m&to=inf", "to='inf' is not a time"),
    ("series?series=a/m&from=1000&to=1000", "`from` must be before `to`"),
    ("series?series=a/m&from=2000&to=1000", "`from` must be before `to`"),
    ("series?series=a/m&from=0&to=86401", "at most 86400 s (24 hours)"),
    ("series?series=a/m&points=9", "points must be a whole number from 10 to 4000"),
    ("series?series=a/m&points=4001", "points must be a whole number from 10 to 4000"),
    ("replay", "`at` is required"),
    ("replay?at=", "`at` is required"),
    ("replay?at=-1", "at='-1' is not a time"),
    ("replay?at=1e9", "at='1e9' is not a time"),
    ("replay?at=1000&lookback=0", "lookback must be a whole number from 1 to 3600"),
    ("replay?at=1000&lookback=3601", "lookback must be a whole number from 1 to 3600"),
]


async def test_bad_parameters_are_a_400_saying_what_is_allowed(client: TestClient[Any, Any]) -> None:
    for query, said in BAD:
        resp = await client.get(f"/api/v1/{query}", headers=AUTH)
        body = await resp.json()
        assert resp.status == 400 and body["error"] == "bad_request" and said in body["message"], (query, body)


async def test_history_needs_a_token(client: TestClient[Any, Any]) -> None:
    for path in ("series?series=amp:1/temperature_c", "replay?at=1000"):
        assert (await client.get(f"/api/v1/{path}")).status == 401
        assert (await client.get(f"/api/v1/{path}", headers={"Authorization": "Bearer nope"})).status == 401
        assert (await client.get(f"/api/v1/{path}", headers=AUTH)).status == 200


def test_a_time_is_found_in_the_store_without_reading_it_all(tmp_path: Path) -> None:
    """The binary search's bounds come from the key's ends at once: SQLite scans the whole table for a min() and a
    max() asked in one query."""
    conn = open_database(tmp_path / "gateway.db", "off")
    conn.executemany("INSERT INTO telemetry(ts, series, value) VALUES (?, 1, 0)", ((float(i),) for i in range(50_000)))
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)  # called every 100 instructions of SQLite's machine
    assert history._first_at(conn, 31_415.5) == 31_417  # (rowids count from 1)
    assert steps[0] < 100, steps[0]


async def test_a_store_that_cannot_be_read_is_a_503_saying_why(tmp_path: Path, aiohttp_client: Any) -> None:
    cfg = config.parse(tmp_path / "gw.toml", '[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n')
    gw = Gateway(cfg, Tokens([(VIEWER, "viewer")]))  # its store never opened: no file to read
    client = await aiohttp_client(build_app(gw, Tokens([(VIEWER, "viewer")])))
    for path in ("series?series=amp:1/temperature_c", "replay?at=1000"):
        resp = await client.get(f"/api/v1/{path}", headers=AUTH)
        body = await resp.json()
        assert resp.status == 503 and body["error"] == "store_unavailable", body
        assert "the store's history cannot be read: unable to open database file" in body["message"]
