"""`venue-gateway mirror --serve`: what the mirror holds over HTTP, read-only, as JSON (docs/fleet.md lists the
answers). The routes read through a `View`: the in-memory mirror's here, the database's in mirror_fleet. Without a
token the answers are for this machine alone: an address off loopback needs `--token-env`, and every request then
carries `Authorization: Bearer TOKEN`, over HTTPS (`--tls-cert`, `--tls-key`: mirror_cli)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from gateway.cloud.mirror import GatewayMirror, Mirror

PAGE_DEFAULT = 1000
PAGE_MAX = 10_000


class NotFound(Exception):
    """No such gateway (or twin): a 404 with this message."""


class Unavailable(Exception):
    """The answer cannot be had now (no snapshot yet, the database away): a 503 with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class View(Protocol):
    async def gateways(self, venue: str | None) -> list[dict[str, Any]]: ...
    async def gateway(self, venue: str, gateway_id: str) -> dict[str, Any]: ...
    async def twin(self, venue: str, gateway_id: str) -> dict[str, Any]: ...
    async def venue_twins(self, venue: str) -> list[dict[str, Any]]: ...
    async def events(self, venue: str, gateway_id: str, limit: int) -> list[dict[str, Any]]: ...
    async def event_history(self, venue: str, gateway_id: str, after: int, limit: int) -> dict[str, Any]: ...
    async def telemetry(self, venue: str, gateway_id: str, query: TelemetryQuery) -> dict[str, Any]: ...
    def service(self) -> dict[str, Any]: ...


class TelemetryQuery:
    """`?asset=&metric=&since=&until=&after=TS:SEQ&limit=` of the telemetry history, checked."""

    def __init__(self, request: web.Request) -> None:
        q = request.query
        self.asset, self.metric = q.get("asset"), q.get("metric")
        self.since, self.until = _number(q, "since"), _number(q, "until")
        self.limit = _limit(request)
        if (self.asset is None or self.metric is None) and self.since is None:
            raise _bad("since", "is needed unless asset and metric are given (a series is indexed; a box's readings "
                                "of every series are read by time window)")
        self.after: tuple[float, int] | None = None
        if "after" in q:
            ts, _sep, seq = q["after"].partition(":")
            try:
                self.after = (float(ts), int(seq))
            except ValueError:
                raise _bad("after", "is the `next` of the page before (TS:SEQ)") from None


def _bad(key: str, message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=orjson.dumps({"error": "bad_request", "message": f"{key} {message}"}).decode(),
                              content_type="application/json")


def _number(query: Any, key: str) -> float | None:
    if key not in query:
        return None
    try:
        value = float(query[key])
    except ValueError:
        raise _bad(key, "is seconds since the epoch") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _bad(key, "is seconds since the epoch")
    return value


def _limit(request: web.Request, default: int = PAGE_DEFAULT) -> int:
    text = request.query.get("limit", str(default))
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= PAGE_MAX:
        raise _bad("limit", f"is a whole number from 1 to {PAGE_MAX}")
    return int(text)


def _json(doc: Any) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


class MemoryView:
    """The in-memory mirror's answers: what it rebuilt; no history beyond the latest events."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def _found(self, venue: str, gateway_id: str) -> GatewayMirror:
        gw = self.mirror.gateways.get((venue, gateway_id))
        if gw is None:
            raise NotFound(f"no gateway {venue}/{gateway_id} seen")
        return gw

    async def gateways(self, venue: str | None) -> list[dict[str, Any]]:
        return [gw.summary() for gw in self.mirror.gateways.values() if venue in (None, gw.venue)]

    async def gateway(self, venue: str, gateway_id: str) -> dict[str, Any]:
        return self._found(venue, gateway_id).summary()

    async def twin(self, venue: str, gateway_id: str) -> dict[str, Any]:
        gw = self._found(venue, gateway_id)
        if not gw.complete:
            raise Unavailable("no_snapshot", "no snapshot received yet")
        return gw.twin()

    async def venue_twins(self, venue: str) -> list[dict[str, Any]]:
        return [gw.twin() for key, gw in sorted(self.mirror.gateways.items()) if key[0] == venue and gw.complete]

    async def events(self, venue: str, gateway_id: str, limit: int) -> list[dict[str, Any]]:
        return list(self._found(venue, gateway_id).events)[-limit:]

    async def event_history(self, venue: str, gateway_id: str, after: int, limit: int) -> dict[str, Any]:
        raise NotFound("history is kept in the database: run the mirror with --database")

    async def telemetry(self, venue: str, gateway_id: str, query: TelemetryQuery) -> dict[str, Any]:
        raise NotFound("history is kept in the database: run the mirror with --database")

    def service(self) -> dict[str, Any]:
        m = self.mirror
        return {"broker": str(m.broker), "connected": m.connected.is_set(), "database": None,
                "gateways": len(m.gateways), "malformed": m.malformed}


def app(view: View, *, token: str | None = None) -> web.Application:
    """The routes over `view`; with `token`, each request needs it as a bearer token."""

    @web.middleware
    async def guard(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=401, body=orjson.dumps({"error": "unauthorized", "message": "give the "
                                    "mirror's token: Authorization: Bearer TOKEN"}), content_type="application/json")
        try:
            return await handler(request)
        except NotFound as exc:
            return web.Response(status=404, body=orjson.dumps({"error": "not_found", "message": str(exc)}),
                                content_type="application/json")
        except Unavailable as exc:
            return web.Response(status=503, body=orjson.dumps({"error": exc.code, "message": str(exc)}),
                                content_type="application/json")

    def ids(request: web.Request) -> tuple[str, str]:
        return request.match_info["venue"], request.match_info["id"]

    async def gateways(request: web.Request) -> web.Response:
        return _json(await view.gateways(request.query.get("venue")))

    async def summary(request: web.Request) -> web.Response:
        return _json(await view.gateway(*ids(request)))

    async def twin(request: web.Request) -> web.Response:
        return _json(await view.twin(*ids(request)))

    async def twins(request: web.Request) -> web.Response:
        venue = request.match_info["venue"]
        return _json({"venue": venue, "twins": await view.venue_twins(venue)})

    async def events(request: web.Request) -> web.Response:
        return _json(await view.events(*ids(request), _limit(request, 1000)))

    async def event_history(request: web.Request) -> web.Response:
        after = request.query.get("after", "0")
        if not (after.isascii() and after.isdigit()):
            raise _bad("after", "is the `next` of the page before (a whole number)")
        return _json(await view.event_history(*ids(request), int(after), _limit(request)))

    async def telemetry(request: web.Request) -> web.Response:
        return _json(await view.telemetry(*ids(request), TelemetryQuery(request)))

    async def service(request: web.Request) -> web.Response:
        return _json(view.service())

    application = web.Application(middlewares=[guard])
    application.router.add_get("/gateways", gateways)
    application.router.add_get("/gateways/{venue}/{id}", summary)
    application.router.add_get("/gateways/{venue}/{id}/twin", twin)
    application.router.add_get("/gateways/{venue}/{id}/events", events)
    application.router.add_get("/gateways/{venue}/{id}/history/events", event_history)
    application.router.add_get("/gateways/{venue}/{id}/history/telemetry", telemetry)
    application.router.add_get("/venues/{venue}/twins", twins)
    application.router.add_get("/mirror", service)
    return application
