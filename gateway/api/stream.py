"""The change stream: a WebSocket that sends a snapshot (when asked, or when the client fell too far behind)
and then every change as it happens, batched per wake-up. It waits on the twin; it never polls."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import orjson
from aiohttp import WSMsgType, web

from gateway.api import GATEWAY
from gateway.twin import ChangesGone, change_document

if TYPE_CHECKING:
    from gateway.twin import Twin

BATCH = 5_000


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so that a close from it is noticed at once."""
    async for msg in ws:
        if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


async def _send_snapshot(ws: web.WebSocketResponse, twin: Twin) -> int:
    version = twin.version
    await ws.send_bytes(b'{"type":"snapshot","twin":' + twin.snapshot_json() + b"}")
    return version


async def handler(request: web.Request) -> web.WebSocketResponse:
    gw = request.app[GATEWAY]
    twin = gw.twin
    since_raw = request.query.get("since")
    ws = web.WebSocketResponse(heartbeat=gw.config.api.heartbeat_s)
    await ws.prepare(request)
    reader = asyncio.get_running_loop().create_task(_drain_incoming(ws))
    try:
        last = int(since_raw) if since_raw and since_raw.isdigit() else await _send_snapshot(ws, twin)
        while not ws.closed:
            try:
                changes = twin.changes_since(last, BATCH)
            except ChangesGone:
                last = await _send_snapshot(ws, twin)
                continue
            if changes:
                await ws.send_bytes(orjson.dumps({"type": "changes", "from": last, "to": changes[-1][0],
                                                  "changes": [change_document(c) for c in changes]}))
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
        await ws.close()
    return ws
