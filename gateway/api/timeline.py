"""The store's history for the dashboard: a series reduced for plotting, and the venue as it was at a moment.

GET /api/v1/series (viewer): one or more series over a span, reduced on the server to the plot's pixel columns.
  Query: `series=ASSET/METRIC`, repeated, 1 to 16 (the metric is what follows the last `/`); or `asset=A&metric=M`
  for one more. `from`, `to`: RFC 3339 or seconds since the epoch (`to` defaults to now, `from` to an hour before
  `to`; `from` < `to`, at most 24 hours apart). `points`: the plot's pixel columns, 10 to 4000, default 800.
  Answer:
    {"from": T0, "to": T1, "points": N, "step": (T1 - T0) / N,
     "series": [{"asset": "amp:1", "metric": "temp_c", "count": readings in the span, "reduced": true,
                 "data": [[t...], [min...], [max...], [last...]]}, ...]}
  in the order asked. Times are seconds since the epoch (floats); arrays are columnar, as uPlot takes them. Reduced
  (the span holds at least 2 * N readings of the series): the span is cut into N buckets of `step` seconds; each
  bucket that holds readings gives its start time (T0 + i * step), its least, greatest and last value; empty buckets
  are left out (a gap wider than `step` is a gap in the data). Not reduced: the readings themselves,
  `"data": [[t...], [value...]]`. Times to the millisecond. A series the store has never seen answers `count` 0
  and empty arrays.
  400 `bad_request` (with what is allowed): no series, more than 16, a series without `/`, a time that is not one
  (nan, inf), `from` not before `to`, a span over 24 hours, `points` out of bounds.

GET /api/v1/replay (viewer): the venue as it was at a moment.
  Query: `at` (required; RFC 3339 or seconds since the epoch), `lookback` (seconds, 1 to 3600, default 600).
  Answer:
    {"at": T, "lookback": 600, "oldest": ts or null, "newest": ts or null,
     "assets": {"amp:1": {"temp_c": {"value": 41.5, "ts": 1796660182.15}, ...}, ...},
     "compliance": {"floor": {"ts": minute's end, "laeq_1min_db": ..., "laeq_15min_db": ..., "laeq_60min_db": ...,
                              "lmax_db": ..., "limit": "label", "limit_db": ..., "state": "ok",
                              "projected_db": ...}, ...}}
  `assets`: for every asset with telemetry, each metric's last reading at or before `at`, no older than `lookback`
  seconds (older: absent). `compliance`: each zone's compliance log row for the minute holding `at` (a minute
  (m - 1, m] * 60 s is logged at its end, m * 60); absent until that minute is logged. `oldest`, `newest`: the span
  of telemetry the store still holds (null when it holds none), for the page's timeline.
  400 `bad_request`: `at` missing or not a time, `lookback` out of bounds.

Both: 401 without a valid token; 503 `store_unavailable` when the store cannot be read.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from gateway import history
from gateway.api import GATEWAY
from gateway.api.auth import json_error, query_int, requires
from gateway.api.compliance import query_time
from gateway.api.operations import error, json_answer, operation
from gateway.api.schemas import integer, ref

MAX_SERIES = 16  # series in one request
MIN_POINTS, MAX_POINTS, DEFAULT_POINTS = 10, 4000, 800  # a plot's pixel columns
DEFAULT_SPAN_S = 3600.0
# The longest span: telemetry has no index on time or series, so a span costs every reading in it, of every series
# (a day of the demo venue is about 19 million readings, some seconds of a thread).
MAX_SPAN_S = 86400.0
MAX_LOOKBACK_S, DEFAULT_LOOKBACK_S = 3600, 600
READERS = 2  # history reads at a time: more wait their turn, the box's cores are the show's first

_READERS: web.AppKey[asyncio.Semaphore] = web.AppKey("timeline_readers", asyncio.Semaphore)


def _bad(message: str) -> web.HTTPException:
    return json_error(web.HTTPBadRequest, "bad_request", message)


def _keys(request: web.Request) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    for raw in request.query.getall("series", []):
        named, slash, measured = raw.rpartition("/")
        if not slash or not named or not measured:
            raise _bad(f"series={raw!r} is not ASSET/METRIC (e.g. amp:1/temperature_c)")
        keys.append((named, measured))
    asset, metric = request.query.get("asset"), request.query.get("metric")
    if (asset is None) != (metric is None) or asset == "" or metric == "":
        raise _bad("asset and metric name one series together, both non-empty")
    if asset is not None and metric is not None:
        keys.append((asset, metric))
    if not 1 <= len(keys) <= MAX_SERIES:
        raise _bad(f"name 1 to {MAX_SERIES} series (series=ASSET/METRIC, repeated, or asset=A&metric=M); "
                   f"{len(keys)} named")
    return keys


T = TypeVar("T")


async def _read(request: web.Request, read: Callable[..., T], *args: Any) -> T:
    """`read(store path, *args)` in a worker thread, at most READERS at a time; a store that cannot be read (not yet
    made, a disk failing) is a 503 saying why."""
    async with request.app[_READERS]:
        try:
            return await asyncio.to_thread(read, request.app[GATEWAY].store.path, *args)
        except sqlite3.Error as exc:
            raise json_error(web.HTTPServiceUnavailable, "store_unavailable",
                             f"the store's history cannot be read: {exc}") from None


def _json(doc: Any) -> web.Response:
    response = web.Response(body=orjson.dumps(doc), content_type="application/json")
    response.enable_compression()  # when the client takes it; a large body is compressed off the loop
    return response


@requires("viewer")
async def series(request: web.Request) -> web.Response:
    keys = _keys(request)
    until = query_time(request, "to", time.time())
    since = query_time(request, "from", until - DEFAULT_SPAN_S)
    if not since < until:
        raise _bad("`from` must be before `to`")
    if until - since > MAX_SPAN_S:
        raise _bad(f"the span is {until - since:.0f} s; at most {MAX_SPAN_S:.0f} s (24 hours)")
    points = query_int(request, "points", DEFAULT_POINTS, MIN_POINTS, MAX_POINTS)
    traces = await _read(request, history.read_series, keys, since, until, points)
    return _json({"from": since, "to": until, "points": points, "step": (until - since) / points,
                  "series": [{"asset": asset, "metric": metric, "count": trace.readings, "reduced": trace.reduced,
                              "data": trace.columns} for (asset, metric), trace in zip(keys, traces, strict=True)]})


@requires("viewer")
async def replay(request: web.Request) -> web.Response:
    if not request.query.get("at"):
        raise _bad("`at` is required: RFC 3339 (e.g. 2026-11-21T22:00:00Z) or seconds since the epoch")
    at = query_time(request, "at", math.nan)
    lookback = query_int(request, "lookback", DEFAULT_LOOKBACK_S, 1, MAX_LOOKBACK_S)
    moment = await _read(request, history.read_moment, at, lookback)
    return _json({
        "at": at, "lookback": lookback, "oldest": moment.oldest, "newest": moment.newest,
        "assets": {asset: {metric: {"value": value, "ts": ts} for metric, (ts, value) in metrics.items()}
                   for asset, metrics in moment.values.items()},
        "compliance": {zone: {"ts": ts, "laeq_1min_db": l1, "laeq_15min_db": l15, "laeq_60min_db": l60,
                              "lmax_db": lmax, "limit": label, "limit_db": limit_db, "state": state,
                              "projected_db": projected}
                       for ts, zone, l1, l15, l60, lmax, label, limit_db, state, projected in moment.compliance},
    })


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


_NUMBERS = {"type": "array", "items": {"type": ["number", "null"]}}
_SERIES = {
    "type": "object", "required": ["asset", "metric", "count", "reduced", "data"],
    "properties": {
        "asset": {"type": "string"}, "metric": {"type": "string"},
        "count": {"type": "integer", "minimum": 0, "description": "readings of the series in the span"},
        "reduced": {"type": "boolean", "description": "true: data is [t, min, max, last] per bucket holding "
                                                      "readings; false: [t, value] per reading"},
        "data": {"type": "array", "minItems": 2, "maxItems": 4, "items": _NUMBERS,
                 "description": "columns, as uPlot takes them; t in seconds since the epoch"},
    },
}
_UNREADABLE = error("The store cannot be read (not yet made, a disk failing); the message says why",
                    "store_unavailable")
_LEVEL = {"type": ["number", "null"], "description": "dB"}
_SERIES_DESCRIPTION = (
    "Each series named (`series=ASSET/METRIC`, repeated, the metric after the last `/`, or `asset` and `metric` "
    "for one more; at most 16) over [`from`, `to`), in the order named. A series with at least 2 x `points` "
    "readings in the span is reduced: the span is cut into `points` buckets of `step` seconds, and each bucket "
    "holding readings gives its start, least, greatest and last value (buckets without readings left out). "
    "Otherwise the readings themselves. A series the store has never seen answers count 0 and empty columns. "
    "Read from the committed store, which is at most the store's flush interval behind the twin.")
PATHS: dict[str, Any] = {  # this module's operations in the OpenAPI document
    "/api/v1/series": {"get": operation(
        "getSeries", "Series over a span from the store, reduced to a plot's pixel columns", "viewer",
        {"200": json_answer("The series", {
            "type": "object", "required": ["from", "to", "points", "step", "series"],
            "properties": {"from": {"type": "number"}, "to": {"type": "number"},
                           "points": integer(MIN_POINTS, MAX_POINTS), "step": {"type": "number"},
                           "series": {"type": "array", "items": _SERIES}}}),
         "400": error("No series or too many, a series that is not ASSET/METRIC, a time that is not one, `from` not "
                      "before `to`, a span over 24 hours, `points` out of bounds; the message says what is allowed",
                      "bad_request"),
         "503": _UNREADABLE},
        description=_SERIES_DESCRIPTION,
        parameters=[_query("series", {"type": "array", "items": {"type": "string", "pattern": "^.+/[^/]+$"},
                                      "maxItems": MAX_SERIES}, "ASSET/METRIC, repeated"),
                    _query("asset", {"type": "string", "minLength": 1}, "one more series' asset (with metric)"),
                    _query("metric", {"type": "string", "minLength": 1}, "its metric (with asset)"),
                    _query("from", ref("Time"), "the span's start; default an hour before `to`"),
                    _query("to", ref("Time"), "the span's end (excluded); default now"),
                    _query("points", integer(MIN_POINTS, MAX_POINTS, DEFAULT_POINTS), "the plot's pixel columns")])},
    "/api/v1/replay": {"get": operation(
        "getReplay", "The venue as it was at a moment, from the store", "viewer",
        {"200": json_answer("The moment", {
            "type": "object", "required": ["at", "lookback", "oldest", "newest", "assets", "compliance"],
            "properties": {
                "at": {"type": "number"}, "lookback": integer(1, MAX_LOOKBACK_S),
                "oldest": {"type": ["number", "null"], "description": "the first reading the store holds"},
                "newest": {"type": ["number", "null"], "description": "the last reading the store holds"},
                "assets": {"type": "object", "description": "asset -> metric -> its last reading",
                           "additionalProperties": {"type": "object", "additionalProperties": {
                               "type": "object", "required": ["value", "ts"],
                               "properties": {"value": {"type": ["number", "null"]}, "ts": {"type": "number"}}}}},
                "compliance": {"type": "object", "description": "zone -> its compliance log row for the minute "
                                                                "holding `at`",
                               "additionalProperties": {
                                   "type": "object",
                                   "required": ["ts", "laeq_1min_db", "laeq_15min_db", "laeq_60min_db", "lmax_db",
                                                "limit", "limit_db", "state", "projected_db"],
                                   "properties": {"ts": {"type": "number", "description": "the minute's end"},
                                                  "laeq_1min_db": _LEVEL, "laeq_15min_db": _LEVEL,
                                                  "laeq_60min_db": _LEVEL, "lmax_db": _LEVEL,
                                                  "limit": {"type": "string"}, "limit_db": {"type": "number"},
                                                  "state": {"type": "string"}, "projected_db": _LEVEL}}},
            }}),
         "400": error("`at` missing or not a time, `lookback` out of bounds", "bad_request"),
         "503": _UNREADABLE},
        description="For every asset with telemetry, each metric's last reading stamped at or before `at` and no "
                    "more than `lookback` seconds before it (older: absent); each zone's compliance log row for the "
                    "minute holding `at` (a minute is logged at its end); and the span of telemetry the store "
                    "holds, for a timeline.",
        parameters=[_query("at", {"description": "RFC 3339 (2026-11-21T22:00:00Z, or with an offset) or seconds "
                                                 "since the epoch",
                                  "anyOf": [{"type": "string", "format": "date-time"},
                                            {"type": "string", "pattern": "^[0-9]{1,11}([.][0-9]{1,9})?$"}]},
                           "the moment", True),
                    _query("lookback", integer(1, MAX_LOOKBACK_S, DEFAULT_LOOKBACK_S),
                           "how far before `at` a reading still counts, in seconds")])},
}


def add_routes(app: web.Application, base: str) -> None:
    """Add this module's routes under `base` (/api/v1) and beside it."""
    app[_READERS] = asyncio.Semaphore(READERS)
    app.router.add_get(f"{base}/series", series)
    app.router.add_get(f"{base}/replay", replay)
