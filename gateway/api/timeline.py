"""The store's history for the dashboard: a series reduced for plotting, and the venue as it was at a moment."""

from __future__ import annotations

from typing import Any

from aiohttp import web

PATHS: dict[str, Any] = {}  # this module's operations in the OpenAPI document


def add_routes(app: web.Application, base: str) -> None:
    """Add this module's routes under `base` (/api/v1) and beside it."""
