"""The store's history for the dashboard: a series reduced for plotting, and the venue as it was at a moment.

GET /api/v1/series (viewer): one or more series over a span, reduced on the server to the plot's pixel columns.
  Query: `series=ASSET/METRIC`, repeated, 1 to 16 (the metric is what follows the last `/`); or `asset=A&metric=M`
  for one more. `from`, `to`: RFC 3339 or seconds since the epoch (`to` defaults to now, `from` to an hour before
  `to`; `from` < `to`, at most 7 days apart). `points`: the plot's pixel columns, 10 to 4000, default 800.
  Answer:
    {"from": T0, "to": T1, "points": N, "step": (T1 - T0) / N,
     "series": [{"asset": "amp:1", "metric": "temp_c", "count": readings in the span, "reduced": true,
                 "data": [[t...], [min...], [max...], [last...]]}, ...]}
  in the order asked. Times are seconds since the epoch (floats); arrays are columnar, as uPlot takes them. Reduced
  (the span holds at least 2 * N readings of the series): the span is cut into N buckets of `step` seconds; each
  bucket that holds readings gives its start time (T0 + i * step), its least, greatest and last value; empty buckets
  are left out (a gap wider than `step` is a gap in the data). Not reduced: the readings themselves,
  `"data": [[t...], [value...]]`. A series the store has never seen answers `count` 0 and empty arrays.
  400 `bad_request` (with what is allowed): no series, more than 16, a series without `/`, a time that is not one
  (nan, inf), `from` not before `to`, a span over 7 days, `points` out of bounds.

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
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

PATHS: dict[str, Any] = {}  # this module's operations in the OpenAPI document


def add_routes(app: web.Application, base: str) -> None:
    """Add this module's routes under `base` (/api/v1) and beside it."""
