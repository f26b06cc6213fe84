"""The dashboard's side of the API: the page itself (gateway/ui/static), served by the daemon on the API's port."""

from __future__ import annotations

from typing import Any

from aiohttp import web

PATHS: dict[str, Any] = {}  # this module's operations in the OpenAPI document


def add_routes(app: web.Application, base: str) -> None:
    """Add this module's routes under `base` (/api/v1) and beside it."""
