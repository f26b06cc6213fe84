"""Sound-level compliance over HTTP: the zones' state now, and the per-minute history as CSV for the authorities."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from gateway import history
from gateway.api import GATEWAY
from gateway.api.auth import json_error, requires

if TYPE_CHECKING:
    from gateway.compliance.monitor import ComplianceMonitor

COLUMNS = ("time_utc", "time_local", "zone", "laeq_1min_db", "laeq_15min_db", "laeq_60min_db", "lmax_db", "limit",
           "limit_db", "state", "projected_db")


def _time(request: web.Request, name: str, default: float) -> float:
    """An RFC 3339 time (2026-11-21T22:00:00Z, or with an offset) or seconds since the epoch."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise json_error(web.HTTPBadRequest, "bad_request", f"{name}={raw!r} is not a time (allowed: RFC 3339, "
                                                            "e.g. 2026-11-21T22:00:00Z, or seconds since the epoch)"
                         ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # a time without offset is the box's local time
    return parsed.timestamp()


def _monitor(request: web.Request) -> ComplianceMonitor:
    monitor = request.app[GATEWAY].compliance
    if monitor is None:
        raise json_error(web.HTTPNotFound, "not_configured",
                         "sound-level compliance is not configured (add a [compliance] section)")
    return monitor


@requires("viewer")
async def state(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(_monitor(request).document()), content_type="application/json")


@requires("viewer")
async def history_csv(request: web.Request) -> web.Response:
    """`from` and `to` (default: the last 24 hours), optional `zone`: one row per zone and minute."""
    _monitor(request)
    gw = request.app[GATEWAY]
    until = _time(request, "to", time.time())
    since = _time(request, "from", until - 86400)
    if since >= until:
        raise json_error(web.HTTPBadRequest, "bad_request", "`from` must be before `to`")
    rows = await asyncio.to_thread(history.read_compliance, gw.store.path, since, until, request.query.get("zone"))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(COLUMNS)
    for ts, zone, l1, l15, l60, lmax, label, limit_db, st, projected in rows:
        at = dt.datetime.fromtimestamp(ts, dt.UTC)
        writer.writerow([at.isoformat().replace("+00:00", "Z"), at.astimezone().isoformat(), zone,
                         *("" if v is None else f"{v:.1f}" for v in (l1, l15, l60, lmax)), label, f"{limit_db:g}", st,
                         "" if projected is None else f"{projected:.1f}"])
    day = dt.datetime.fromtimestamp(since).strftime("%Y%m%d")
    name = f"{gw.config.gateway.venue}-sound-levels-{day}.csv"
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/compliance", state)
    app.router.add_get(f"{base}/compliance/history.csv", history_csv)
