"""Routes of the HTTP API, under /api/v1, and the unit that serves them inside the daemon (AppRunner)."""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import history, preflight
from gateway.addresses import parse_listen
from gateway.api import (
    DEFAULT_READINGS,
    GATEWAY,
    MAX_CHANGES,
    MAX_READINGS,
    admin,
    compliance,
    connections,
    cues,
    dmx,
    effects,
    stream,
    timeline,
    tls,
    ui,
)
from gateway.api.auth import ROLE_KEY, TOKENS, Tokens, json_error, middleware, query_int, read_object, requires
from gateway.api.openapi import document as openapi_document
from gateway.store import StoreError
from gateway.supervisor import NotReady, Unit
from gateway.twin import ChangesAhead, ChangesGone, DesiredRefused, TwinFrozen, change_document, rfc3339

if TYPE_CHECKING:
    from gateway.daemon import Gateway

log = logging.getLogger(__name__)

BASE = "/api/v1"
# Connections the kernel holds for the API before the process takes them, and the most asyncio takes in one turn
# of the loop: beyond api.max_connections, for a moment, at most this many more descriptors are open.
BACKLOG = 128


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json", headers=headers)


def _etag(version: int) -> str:
    return f'"{version}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: a list of tags or `*`, compared weakly (W/"5" matches "5")."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _if_match(value: str, version: int) -> bool:
    """RFC 9110 If-Match with strong comparison: `*`, or a list of tags one of which is the version
    (quoted, or bare, as some clients send it). A weak tag never matches."""
    tags = [t.strip() for t in value.split(",")]
    return "*" in tags or any(t.strip('"') == str(version) for t in tags if not t.startswith("W/"))


# Exceptions that decoding what a client sent raises (a body that is not its Content-Encoding, text that is not
# UTF-8, a number too large to convert, nesting too deep to walk).
CLIENT_FAULTS = (HttpProcessingError, UnicodeError, OverflowError, RecursionError)


MALFORMED_LOG_S = 10.0  # requests aiohttp cannot parse are logged at most this often, with a count


class _Malformed(logging.Filter):
    """aiohttp logs each request it cannot parse (bytes not allowed in the URL or a header, a broken chunk; a body
    not in its Content-Encoding, drained after a handler that did not read it) at ERROR with its traceback. The
    client's fault, and anyone on the network can send them: here one line, no traceback, at most every
    MALFORMED_LOG_S, with how many there were."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._logged = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | RequestPayloadError) or record.levelno < logging.ERROR:
            return True  # (a first request that is not HTTP at all aiohttp logs at DEBUG itself)
        self.count += 1
        now = time.monotonic()
        if now - self._logged < MALFORMED_LOG_S:
            return False
        self._logged = now
        what = " ".join(str(getattr(exc, "message", exc)).split())[:200]
        record.msg, record.args = "API: a request that cannot be parsed (%s): %s (%d so far)", (
            record.getMessage(), what, self.count)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


MALFORMED = _Malformed()


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error is JSON {"error", "message"}; nothing leaks a traceback to a client."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        doc: dict[str, Any] = {"error": exc.reason.lower().replace(" ", "_"), "message": exc.text or exc.reason}
        if isinstance(exc, web.HTTPMethodNotAllowed):
            doc["allowed"] = sorted(exc.allowed_methods)
        headers = {k: v for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length")}
        return _json(doc, exc.status, headers)
    except CLIENT_FAULTS as exc:
        # What a request's own bytes made a decoder raise past the handlers' checks: the client's fault, a 400
        log.debug("%s %s: the request cannot be read: %r", request.method, request.path, exc)
        return _json({"error": "bad_request", "message": f"the request cannot be read: {exc}"}, 400)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _json({"error": "internal", "message": "the gateway failed to answer; see its log"}, 500)


async def health(request: web.Request) -> web.Response:
    """The status for anyone (a load balancer, a monitor without a token); the details (errors, paths, addresses,
    the broker, free disk) only with a valid token."""
    doc = request.app[GATEWAY].health()
    return _json(doc if request.get(ROLE_KEY) is not None else {"status": doc["status"]})


@requires("viewer")
async def twin_snapshot(request: web.Request) -> web.Response:
    twin = request.app[GATEWAY].twin
    etag = _etag(twin.version)
    if _matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=twin.snapshot_json(), content_type="application/json", headers={"ETag": etag})


@requires("viewer")
async def twin_changes(request: web.Request) -> web.Response:
    twin = request.app[GATEWAY].twin
    since = query_int(request, "since")
    limit = query_int(request, "limit", MAX_CHANGES, 1, MAX_CHANGES)
    try:
        changes = twin.changes_since(since, limit)
    except ChangesAhead as exc:
        raise json_error(web.HTTPBadRequest, "ahead", str(exc), version=exc.version) from None
    except ChangesGone as exc:
        raise json_error(web.HTTPGone, "gone", str(exc), floor=exc.floor) from None
    to = changes[-1][0] if changes else since
    return _json({"from": since, "to": to, "more": to < twin.version,
                  "changes": [change_document(c) for c in changes]})


@requires("viewer")
async def telemetry(request: web.Request) -> web.Response:
    """History for backfill, paged by the readings' sequence numbers: `since` (exclusive), `asset`, `metric`,
    `limit`. `oldest` is the first sequence number still kept: above `since + 1`, retention took the gap."""
    store = request.app[GATEWAY].store
    since = query_int(request, "since", 0)
    limit = query_int(request, "limit", DEFAULT_READINGS, 1, MAX_READINGS)
    asset, metric = request.query.get("asset"), request.query.get("metric")
    rows, oldest = await asyncio.to_thread(history.read_telemetry, store.path, since, limit + 1, asset, metric)
    more = len(rows) > limit
    rows = rows[:limit]
    return _json({"from": since, "to": rows[-1][0] if rows else since, "more": more, "oldest": oldest,
                  "readings": [{"seq": seq, "ts": rfc3339(ts), "asset": a, "metric": m, "value": v}
                               for seq, ts, a, m, v in rows]})


@requires("viewer")
async def asset(request: web.Request) -> web.Response:
    found = request.app[GATEWAY].twin.get(request.match_info["id"])
    if found is None:
        raise json_error(web.HTTPNotFound, "not_found", f"no asset {request.match_info['id']!r}")
    return _json({"id": found.id, **found.document()}, headers={"ETag": _etag(found.version)})


@requires("admin")
async def patch_desired(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    asset_id = request.match_info["id"]
    patch = await read_object(request, "a JSON object (a merge patch)")
    found = gw.twin.get(asset_id)
    if found is None:
        raise json_error(web.HTTPNotFound, "not_found", f"no asset {asset_id!r}")
    if_match = request.headers.get("If-Match")
    if if_match is not None and not _if_match(if_match, found.version):
        raise json_error(web.HTTPPreconditionFailed, "version_mismatch", f"the asset is at version {found.version}",
                         version=found.version)
    try:  # no await since the checks above: nothing can have changed the asset in between
        changed = gw.twin.patch_desired(asset_id, patch)
    except DesiredRefused as exc:
        raise json_error(web.HTTPUnprocessableEntity, "desired_refused", f"{asset_id}: {exc}") from None
    except ValueError as exc:  # a value the twin cannot hold (one it could never encode again): nothing changed
        raise json_error(web.HTTPUnprocessableEntity, "invalid_state", f"{asset_id}: {exc}") from None
    except TwinFrozen as exc:
        raise json_error(web.HTTPServiceUnavailable, "store_unavailable", str(exc)) from None
    # Answer once the change is on disk: a 200 means it survives a power cut.
    try:
        await gw.store.flush(gw.twin)
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, "store_unavailable",
                         f"the change is in effect but not yet on disk ({exc}); it is written when the store recovers",
                         version=changed.version) from None
    log.info("desired state of %s changed to version %d", asset_id, changed.version)
    return _json({"id": changed.id, **changed.document()}, headers={"ETag": _etag(changed.version)})


async def openapi(request: web.Request) -> web.Response:
    cfg = request.app[GATEWAY].config
    return _json(openapi_document(cfg.show, cfg.dmx.universes))


@requires("viewer")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[GATEWAY].metrics)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(gw: Gateway, tokens: Tokens) -> web.Application:
    app = web.Application(middlewares=[errors, middleware(tokens)],
                          client_max_size=gw.config.api.max_body_kb * 1024)
    connections.add(app)
    logging.getLogger("aiohttp.server").addFilter(MALFORMED)  # once: the same filter is not added twice
    app[GATEWAY] = gw
    app[TOKENS] = tokens
    app.router.add_get(f"{BASE}/health", health)
    app.router.add_get(f"{BASE}/twin", twin_snapshot)
    app.router.add_get(f"{BASE}/twin/changes", twin_changes)
    stream.add_routes(app, BASE)  # its own authentication: browsers cannot send the header
    app.router.add_get(f"{BASE}/twin/assets/{{id}}", asset)
    app.router.add_get(f"{BASE}/telemetry", telemetry)
    app.router.add_patch(f"{BASE}/twin/assets/{{id}}/desired", patch_desired)
    effects.add_routes(app, BASE)
    cues.add_routes(app, BASE)
    compliance.add_routes(app, BASE)
    dmx.add_routes(app, BASE)
    admin.add_routes(app, BASE)
    timeline.add_routes(app, BASE)
    ui.add_routes(app, BASE)
    app.router.add_get(f"{BASE}/openapi.json", openapi)
    app.router.add_get("/metrics", metrics)
    return app


class ApiService(Unit):
    """The API as a supervised unit: a port in use is retried with backoff like any other failure. Over HTTPS with
    the configured certificate, or with one of its own made once in the data directory (gateway.api.tls)."""

    def __init__(self, gw: Gateway, tokens: Tokens) -> None:
        self._gw = gw
        self._tokens = tokens
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.fingerprint: str | None = None  # the certificate's, when over HTTPS

    def _tls(self) -> ssl.SSLContext | None:
        api, gw = self._gw.config.api, self._gw
        if not api.https():
            return None
        try:
            if api.cert_file is not None and api.key_file is not None:
                base = gw.config.path.parent
                cert, key = base / api.cert_file, base / api.key_file
                preflight.read_secret(key, "api.key_file")  # the private key: not open to other users
            else:
                cert, key = tls.self_signed(gw.store.path.parent, f"venue-gateway {gw.config.gateway.id}")
            context = tls.server_context(cert, key)
            self.fingerprint = tls.file_fingerprint(cert)
        except (OSError, ssl.SSLError, ValueError) as exc:  # a missing file, a key not the certificate's
            raise NotReady(f"cannot serve HTTPS with {api.cert_file or 'a self-signed certificate'}: {exc}") from None
        return context

    async def start(self) -> None:
        api = self._gw.config.api
        host, port = parse_listen(api.listen)
        context = self._tls()
        app = build_app(self._gw, self._tokens)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, keepalive_timeout=api.idle_timeout_s)
        await self._runner.setup()
        assert self._runner.server is not None
        try:
            # TLS is started by the factory, so that a connection over the cap is closed before its handshake
            self._server = await asyncio.get_running_loop().create_server(
                connections.Capped(self._runner.server, app, api.max_connections, context,
                                   min(api.idle_timeout_s, 10.0)), host, port, reuse_address=True, backlog=BACKLOG)
        except OSError as exc:  # the port is taken or the address is not this box's: retried with backoff
            await self._runner.cleanup()
            self._runner = None
            raise NotReady(f"cannot listen on {api.listen}: {exc.strerror or exc}") from None
        scheme = "https" if context else "http"
        log.info("HTTP API listening on %s://%s:%d%s%s", scheme, host if ":" not in host else f"[{host}]", port, BASE,
                 f", certificate SHA-256 fingerprint {self.fingerprint}" if self.fingerprint else "")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
