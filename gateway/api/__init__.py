"""The HTTP API (aiohttp): twin snapshot and changes, desired state, a change stream, health and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.daemon import Gateway

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
