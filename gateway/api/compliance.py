"""Sound-level compliance over HTTP: the zones' state now, and the per-minute history as CSV for the authorities."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import re
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway import history
from gateway.api import GATEWAY
from gateway.api.auth import json_error, requires

if TYPE_CHECKING:
    from gateway.compliance.monitor import ComplianceMonitor

COLUMNS = ("time_utc", "time_local", "zone", "laeq_1min_db", "laeq_15min_db", "laeq_60min_db", "lmax_db", "limit",
           "limit_db", "state", "projected_db")


# What `from` and `to` take (the document states the same): RFC 3339 (2026-11-21T22:00:00Z, or with an offset), or
# seconds since the epoch; empty is the same as absent.
RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
EPOCH_S = re.compile(r"\d{1,11}(\.\d{1,9})?", re.ASCII)


def query_time(request: web.Request, name: str, default: float) -> float:
    """A time query parameter, RFC 3339 or seconds since the epoch, as seconds since the epoch: `default` when it is
    absent or empty, a 400 saying what is allowed when it is not a time."""
    raw = request.query.get(name, "")
    if raw == "":
        return default
    if EPOCH_S.fullmatch(raw):
        return float(raw)
    found = RFC3339.fullmatch(raw)
    try:
        if found is None:
            raise ValueError(raw)
        date, hours_minutes, seconds, fraction, offset = found.groups()
        leap = seconds == "60"  # a leap second: the one after :59
        parsed = dt.datetime.fromisoformat(f"{date}T{hours_minutes}:{'59' if leap else seconds}{fraction or ''}"
                                           f"{'+00:00' if offset in 'Zz' else offset}")
        return parsed.timestamp() + leap
    except (ValueError, OverflowError):
        raise json_error(web.HTTPBadRequest, "bad_request", f"{name}={raw!r} is not a time (allowed: RFC 3339, "
                                                            "e.g. 2026-11-21T22:00:00Z, or seconds since the epoch)"
                         ) from None


def _day(ts: float) -> str:
    """The local date of `ts` for the file's name; at the ends of the calendar, what can be said."""
    for tz in (None, dt.UTC):
        with contextlib.suppress(OverflowError, ValueError, OSError):
            return dt.datetime.fromtimestamp(ts, tz).strftime("%Y%m%d")
    return "00010101" if ts < 0 else "99991231"


def _monitor(request: web.Request) -> ComplianceMonitor:
    monitor = request.app[GATEWAY].compliance
    if monitor is None:
        raise json_error(web.HTTPNotFound, "not_configured",
                         "sound-level compliance is not configured (add a [compliance] section)")
    return monitor


@requires("viewer")
async def state(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(_monitor(request).document()), content_type="application/json")


PAGE_ROWS = 5000  # rows read from the store and sent at a time: a year's log never sits in memory whole


def _csv_rows(rows: list[tuple[Any, ...]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    for ts, zone, l1, l15, l60, lmax, label, limit_db, st, projected in rows:
        at = dt.datetime.fromtimestamp(ts, dt.UTC)
        writer.writerow([at.isoformat().replace("+00:00", "Z"), at.astimezone().isoformat(), zone,
                         *("" if v is None else f"{v:.1f}" for v in (l1, l15, l60, lmax)), label, f"{limit_db:g}", st,
                         "" if projected is None else f"{projected:.1f}"])
    return out.getvalue().encode()


@requires("viewer")
async def history_csv(request: web.Request) -> web.StreamResponse:
    """`from` and `to` (default, or empty: the last 24 hours up to `to`), optional `zone`: one row per zone and
    minute, sent as it is read, a page at a time."""
    _monitor(request)
    gw = request.app[GATEWAY]
    until = query_time(request, "to", time.time())
    since = query_time(request, "from", until - 86400)
    if since >= until:
        raise json_error(web.HTTPBadRequest, "bad_request", "`from` must be before `to`")
    zone = request.query.get("zone")
    page = await asyncio.to_thread(history.read_compliance, gw.store.path, since, until, zone, limit=PAGE_ROWS)
    name = f"{gw.config.gateway.venue}-sound-levels-{_day(since)}.csv"
    response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                           "Content-Disposition": f'attachment; filename="{name}"'})
    await response.prepare(request)
    await response.write(",".join(COLUMNS).encode() + b"\r\n")
    while page:
        await response.write(_csv_rows(page))
        if len(page) < PAGE_ROWS:
            break
        last = page[-1][0], page[-1][1]
        page = await asyncio.to_thread(history.read_compliance, gw.store.path, since, until, zone, after=last,
                                       limit=PAGE_ROWS)
    await response.write_eof()
    return response


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/compliance", state)
    app.router.add_get(f"{base}/compliance/history.csv", history_csv)
