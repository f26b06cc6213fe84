"""The API's connections, capped: every one holds a file descriptor, and the process shares its limit with the
serial ports, SQLite and OSC. At `api.max_connections`, a new connection closes the oldest one that is idle (between
requests, or still sending its first); with none idle it is answered 503 and closed. Idle connections and slow
headers are closed after `api.idle_timeout_s` by aiohttp's keep-alive timer, which runs from the moment a
connection opens."""

from __future__ import annotations

import asyncio
import logging
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
    """The answer to a connection over the cap when none can be closed for it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(FULL)
        transport.close()


class Capped:
    """The protocol factory for `loop.create_server`: aiohttp's own, within the cap.

    asyncio takes up to its backlog of connections in one turn of the loop and tells each protocol it is connected
    only in the next: the ones made in this turn are counted here until then."""

    def __init__(self, server: web.Server, app: web.Application, cap: int) -> None:
        self._server, self._busy, self._cap = server, app[BUSY], cap
        self._new = 0  # connections made in this turn of the loop, not yet among the server's
        self.closed_idle = 0  # idle connections closed to make room
        self.refused = 0  # connections answered 503

    def _turned(self) -> None:
        self._new = 0

    def __call__(self) -> asyncio.BaseProtocol:
        if self._new == 0:
            asyncio.get_running_loop().call_soon(self._turned)  # after this turn's connection_made calls
        open_ = [h for h in self._server.connections if h.transport is not None]
        if len(open_) + self._new >= self._cap:
            idle = next((h for h in open_ if h not in self._busy), None)  # the oldest: in the order they opened
            if idle is None:
                self.refused += 1
                if self.refused in (1, 10, 100) or self.refused % 1000 == 0:  # a flood is logged, not each one
                    log.warning("API: %d connections, every one busy: %d new ones refused so far "
                                "(api.max_connections)", len(open_) + self._new, self.refused)
                return _Full()
            idle.force_close()
            self.closed_idle += 1
        self._new += 1
        return self._server()


def add(app: web.Application) -> None:
    app[BUSY] = set()
    app.middlewares.insert(0, track)
