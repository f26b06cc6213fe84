"""The API's connections, capped: every one holds a file descriptor, and the process shares its limit with the
serial ports, SQLite and OSC. At `api.max_connections`, a new connection closes the oldest one that is idle (between
requests, or still sending its first; over HTTPS, one still in its TLS handshake counts as idle); with none idle it
is answered 503 and closed (over HTTPS, closed). Idle connections and slow
headers are closed after `api.idle_timeout_s` by aiohttp's keep-alive timer, which runs from the moment a
connection opens."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

BUSY = web.AppKey[set[RequestHandler]]("vg_busy")
_FULL_BODY = (b'{"error":"too_many_connections","message":"every connection the gateway allows is busy '
              b'(api.max_connections): try again later"}')
FULL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_FULL_BODY), _FULL_BODY))


@web.middleware
async def track(request: web.Request, handler: Any) -> web.StreamResponse:
    """Mark the connection busy while one of its requests (a WebSocket stream too) is being answered."""
    busy = request.app[BUSY]
    busy.add(request.protocol)
    try:
        response: web.StreamResponse = await handler(request)
        return response
    finally:
        busy.discard(request.protocol)


class _Full(asyncio.Protocol):
    """The answer to a connection over the cap when none can be closed for it: 503 in plain HTTP; over TLS, which
    it cannot speak before a handshake, the connection is closed at once."""

    def __init__(self, answer: bool) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        if self._answer:
            transport.write(FULL)
        transport.close()


class _Handshake(asyncio.Protocol):
    """A connection while its TLS handshake runs: counted against the cap, and closed to make room like an idle one
    (a client that never says hello holds a descriptor no longer than that). Once the handshake is done, aiohttp's
    handler takes the connection over."""

    def __init__(self, capped: Capped, handler: RequestHandler, context: ssl.SSLContext, timeout: float) -> None:
        self._capped, self._handler, self._context, self._timeout = capped, handler, context, timeout
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.pause_reading()  # its hello waits in the kernel for start_tls
        self._capped.handshaking[self] = None
        self._task = asyncio.get_running_loop().create_task(self._upgrade(transport))

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport, self._handler, self._context, server_side=True, ssl_handshake_timeout=self._timeout)
        except Exception as exc:  # a failed or abandoned handshake: start_tls has closed the connection
            log.debug("API: a TLS handshake failed: %r", exc)
            return
        finally:
            self._capped.handshaking.pop(self, None)
        if secured is not None:
            self._handler.connection_made(secured)

    def close(self) -> None:
        self._capped.handshaking.pop(self, None)  # counted no more: its descriptor goes in this turn of the loop
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:  # closed before start_tls took it over
        self._capped.handshaking.pop(self, None)
        if self._task is not None:
            self._task.cancel()


class Capped:
    """The protocol factory for `loop.create_server`: aiohttp's own, within the cap; with `context`, each
    connection goes through its TLS handshake first (counted, and closed at the cap like an idle one).

    asyncio takes up to its backlog of connections in one turn of the loop and tells each protocol it is connected
    only in the next: the ones made in this turn are counted here until then."""

    def __init__(self, server: web.Server, app: web.Application, cap: int, context: ssl.SSLContext | None = None,
                 handshake_timeout: float = 10.0) -> None:
        self._server, self._busy, self._cap = server, app[BUSY], cap
        self._context, self._handshake_timeout = context, handshake_timeout
        self.handshaking: dict[_Handshake, None] = {}  # in the order they opened
        self._new = 0  # connections made in this turn of the loop, not yet counted elsewhere
        self.refused = 0  # connections refused (logged now and then)

    def _turned(self) -> None:
        self._new = 0

    def _make_room(self, open_: list[RequestHandler]) -> bool:
        idle = next((h for h in open_ if h not in self._busy), None)  # the oldest: in the order they opened
        if idle is not None:
            idle.force_close()
        elif self.handshaking:
            next(iter(self.handshaking)).close()
        else:
            return False
        return True

    def __call__(self) -> asyncio.BaseProtocol:
        if self._new == 0:
            asyncio.get_running_loop().call_soon(self._turned)  # after this turn's connection_made calls
        open_ = [h for h in self._server.connections if h.transport is not None]
        count = len(open_) + len(self.handshaking) + self._new
        if count >= self._cap and not self._make_room(open_):
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:  # a flood is logged, not each one
                log.warning("API: %d connections, every one busy: %d new ones refused so far "
                            "(api.max_connections)", count, self.refused)
            return _Full(answer=self._context is None)
        self._new += 1
        if self._context is None:
            return self._server()
        return _Handshake(self, self._server(), self._context, self._handshake_timeout)


def add(app: web.Application) -> None:
    app[BUSY] = set()
    app.middlewares.insert(0, track)
