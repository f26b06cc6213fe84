"""The HTTP API (aiohttp): twin snapshot and changes, desired state, a change stream, health and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.daemon import Gateway

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")

# Limits the handlers check and the OpenAPI document states (gateway/api/openapi.py), from one place.
MAX_CHANGES = 10_000  # GET /twin/changes: `limit`, and its default
MAX_READINGS = 10_000  # GET /telemetry: `limit`
DEFAULT_READINGS = 1000
PREVIEW_STEP_MS = 40  # POST /effects with preview: a frame every step
MAX_PREVIEW_MS = 60_000  # and the longest preview (`duration_ms`)
