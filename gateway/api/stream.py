"""The change stream: a WebSocket that sends a snapshot (unless the client gives the version it has, or when it fell
too far behind) and then every change as it happens, batched per wake-up, each a JSON text frame. It waits on the
twin; it never polls. `docs/twin-stream.md` has the frames and the close codes.

Who may open it. A browser cannot set `Authorization` on a WebSocket, so besides that header (for every other
client) the token comes as a subprotocol (`venue-gateway` offered with `bearer.TOKEN`; the answer names
`venue-gateway` alone, never the token) or as the first message, `{"token": TOKEN}`, within AUTH_TIMEOUT_S. Never in
the URL, which ends up in logs and browser history. Any web page may try to open a WebSocket to the box, and a
browser says which page it is (`Origin`): one with an Origin must be the gateway's own or in `api.stream_origins`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from gateway.addresses import parse_origin
from gateway.api import GATEWAY
from gateway.api.auth import INVALID_KEY, ROLE_KEY, TOKENS, json_error, query_int, unauthorized
from gateway.twin import ChangesGone, change_document

if TYPE_CHECKING:
    from gateway.twin import Change, Twin

log = logging.getLogger(__name__)

BATCH = 5_000
PROTOCOL = "venue-gateway"
BEARER = "bearer."
AUTH_TIMEOUT_S = 5.0
MAX_MESSAGE = 4096  # a client sends a token at most
CLOSE_TIMEOUT_S = 1.0  # how long a close waits for the client's own close frame
UNAUTHORIZED = 4401  # the close code when the first message brings no valid token
HOW = ("use Authorization: Bearer TOKEN, or from a browser the subprotocols venue-gateway and bearer.TOKEN, "
       'or send {"token": TOKEN} as the first message')
STREAMS = web.AppKey[set[web.WebSocketResponse]]("vg_streams")
# Streams opened without a token, waiting for it as their first message: anyone can open those, so they may hold at
# most a quarter of api.max_streams, and a client that opens them over and over keeps no one else out.
WAITING = web.AppKey[set[web.WebSocketResponse]]("vg_streams_waiting")
FRAMES = web.AppKey["_Frames"]("vg_stream_frames")


def _check_origin(request: web.Request) -> None:
    """A request with `Origin` (a browser) is refused unless it comes from the gateway's own origin (the scheme,
    host and port the request was made to) or one of `api.stream_origins`."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = {parse_origin(o) for o in request.app[GATEWAY].config.api.stream_origins}
    with contextlib.suppress(ValueError):
        allowed.add(parse_origin(f"{request.scheme}://{request.host}"))
    try:
        if parse_origin(origin) in allowed:
            return
    except ValueError:
        pass
    raise json_error(web.HTTPForbidden, "origin_refused",
                     f"pages from {origin} may not open the stream (allowed: the gateway's own origin, and those "
                     "in api.stream_origins)")


def _since(request: web.Request) -> int | None:
    for name in ("token", "access_token"):
        if name in request.query:
            raise json_error(web.HTTPBadRequest, "token_in_url",
                             f"a token is never taken from the URL, which ends up in logs and history: {HOW}")
    return query_int(request, "since") if "since" in request.query else None


def _credentials(request: web.Request) -> bool:
    """Check the token of the Authorization header or of the `bearer.` subprotocol: True when one is valid, False
    when none was given (it may come as the first message); a 401 when one given is not valid."""
    if request.get(INVALID_KEY):
        raise unauthorized(True)
    offered = [p.strip() for header in request.headers.getall("Sec-WebSocket-Protocol", ())
               for p in header.split(",")]
    bearer = [p.removeprefix(BEARER) for p in offered if p.startswith(BEARER)]
    if bearer:
        if len(bearer) > 1 or PROTOCOL not in offered:
            raise json_error(web.HTTPBadRequest, "bad_subprotocol",
                             f"offer one {BEARER}TOKEN together with {PROTOCOL}, the protocol the gateway answers")
        if request.app[TOKENS].role(bearer[0]) is None:
            raise unauthorized(True)
        return True
    return request.get(ROLE_KEY) is not None


async def _first_message(ws: web.WebSocketResponse, request: web.Request) -> bool:
    """The token as the first message, {"token": TOKEN}; without one that is valid, close with 4401."""
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT_S)
    except TimeoutError:
        # (a close frame's reason is at most 123 bytes)
        await ws.close(code=UNAUTHORIZED, message=f'no token within {AUTH_TIMEOUT_S:g} s: send {{"token": TOKEN}} first'
                       .encode())
        return False
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return False  # the client left (or broke the protocol: aiohttp closed with the code for it)
    try:
        doc = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        doc = None
    token = doc.get("token") if isinstance(doc, dict) and set(doc) == {"token"} else None
    if not isinstance(token, str):
        await ws.close(code=UNAUTHORIZED, message=b'the first message must be {"token": TOKEN}')
        return False
    if request.app[TOKENS].role(token) is None:
        await ws.close(code=UNAUTHORIZED, message=b"the token is not valid")
        return False
    return True


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so that a close from it is noticed at once."""
    async for msg in ws:
        if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


async def _send_snapshot(ws: web.WebSocketResponse, twin: Twin) -> int:
    version = twin.version
    await ws.send_frame(b'{"type":"snapshot","twin":' + twin.snapshot_json() + b"}", WSMsgType.TEXT)
    return version


class _Frames:
    """The last change frames encoded, by the versions they span: the streams that a change wakes are mostly at the
    same version, and each would otherwise encode the same frame again (20 dashboards: 20 times per change)."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._frames: dict[tuple[int, int], bytes] = {}

    def changes(self, last: int, changes: Sequence[Change]) -> bytes:
        key = (last, changes[-1][0])
        frame = self._frames.get(key)
        if frame is None:
            frame = orjson.dumps({"type": "changes", "from": last, "to": key[1],
                                  "changes": [change_document(c) for c in changes]})
            if len(self._frames) >= self._size:
                del self._frames[next(iter(self._frames))]  # the oldest
            self._frames[key] = frame
        return frame

    def clear(self) -> None:
        self._frames.clear()


async def _serve(ws: web.WebSocketResponse, twin: Twin, since: int | None, frames: _Frames) -> None:
    reader = asyncio.get_running_loop().create_task(_drain_incoming(ws))
    try:
        last = since if since is not None else await _send_snapshot(ws, twin)
        while not ws.closed:
            try:
                changes = twin.changes_since(last, BATCH)
            except ChangesGone:  # the client's version is no longer in the log, or is from another history
                last = await _send_snapshot(ws, twin)
                continue
            if changes:
                await ws.send_frame(frames.changes(last, changes), WSMsgType.TEXT)
                last = changes[-1][0]
                continue
            waiter = asyncio.ensure_future(twin.wait_for_change(last))
            await asyncio.wait([waiter, reader], return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                waiter.cancel()
                break
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def handler(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    _check_origin(request)
    since = _since(request)
    authenticated = _credentials(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        if not authenticated:
            raise unauthorized(False)
        raise json_error(web.HTTPUpgradeRequired, "upgrade_required",
                         "this is a WebSocket: connect with Upgrade: websocket (docs/twin-stream.md)",
                         headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    streams, waiting = request.app[STREAMS], request.app[WAITING]
    if len(streams) >= gw.config.api.max_streams:
        raise json_error(web.HTTPServiceUnavailable, "too_many_streams",
                         f"{len(streams)} streams are open, the most api.max_streams allows: try again later")
    if not authenticated and len(waiting) >= max(1, gw.config.api.max_streams // 4):
        raise json_error(web.HTTPServiceUnavailable, "too_many_streams",
                         f"{len(waiting)} streams wait for their token, the most a quarter of api.max_streams "
                         f"allows: try again later, or give the token with the request ({HOW})")
    # Frames go uncompressed even to a browser that offers permessage-deflate: each stream would deflate the same
    # frame again on the loop (a context per connection), the cost that grows with the dashboards open; a venue's
    # network carries the JSON as it is (tens of KB/s a stream at 10x show speed).
    ws = web.WebSocketResponse(protocols=(PROTOCOL,), heartbeat=gw.config.api.heartbeat_s, max_msg_size=MAX_MESSAGE,
                               timeout=CLOSE_TIMEOUT_S, compress=False)
    try:
        await ws.prepare(request)  # a broken handshake is aiohttp's 400, saying what is wrong
    except ValueError:  # but a key that is not ASCII is base64's ValueError
        raise json_error(web.HTTPBadRequest, "bad_request", "the WebSocket handshake's Sec-WebSocket-Key is not "
                         "base64 (allowed: 16 bytes in base64, RFC 6455)") from None
    streams.add(ws)
    try:
        if not authenticated:
            waiting.add(ws)
            try:
                authenticated = await _first_message(ws, request)
            finally:
                waiting.discard(ws)
        if authenticated:
            await _serve(ws, gw.twin, since, request.app[FRAMES])
    except ConnectionResetError:
        pass  # the client went away while a frame was on its way
    except Exception:
        log.exception("the change stream failed")
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"the gateway failed; see its log")
    finally:
        streams.discard(ws)
        if not streams:
            request.app[FRAMES].clear()  # no one left to share them with: up to 8 frames of 5,000 changes each
        await ws.close()
    return ws


async def close_all(app: web.Application) -> None:
    """On the way out, every stream is closed with 1001 (going away), so its clients know to reconnect."""
    streams: set[web.WebSocketResponse] = app[STREAMS]
    await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"the gateway is stopping")
                           for ws in list(streams)), return_exceptions=True)


def add_routes(app: web.Application, base: str) -> None:
    app[STREAMS] = set()
    app[WAITING] = set()
    app[FRAMES] = _Frames()
    app.router.add_get(f"{base}/twin/stream", handler)
    app.on_shutdown.append(close_all)
