"""The DMX universes for the dashboard (viewer): which there are and which outputs carry each, and one universe's
512 levels as the outputs send them in the next frame. Cheap enough to be asked a few times a second by a few
pages at once: the levels are read from the universe's buffer, nothing is computed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway.api import GATEWAY
from gateway.api.auth import json_error, requires
from gateway.api.operations import error, json_answer, operation
from gateway.dmx import CHANNELS

if TYPE_CHECKING:
    from gateway.config import Config

MAX_UNIVERSE = 32767  # dmx.universes' bound


def _outputs(cfg: Config, number: int) -> list[str]:
    """The enabled drivers whose `universes` (none: every universe) or `universe` option carries `number`."""
    out = []
    for d in cfg.drivers:
        fields = getattr(d.options, "__dataclass_fields__", {})
        given = getattr(d.options, "universes", None) if "universes" in fields else None
        one = getattr(d.options, "universe", None) if "universe" in fields else None
        if d.enabled and ((isinstance(given, list) and (not given or number in given)) or one == number):
            out.append(d.name)
    return out


@requires("viewer")
async def universes(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    doc: dict[str, Any] = {"frame_rate_hz": gw.config.dmx.frame_rate_hz,
                           "universes": [{"universe": n, "outputs": _outputs(gw.config, n)} for n in gw.dmx.universes]}
    raw = request.query.get("universe")
    if raw is not None:
        number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 5 else None
        if number is None or number not in gw.dmx:
            allowed = ", ".join(map(str, gw.dmx.universes)) or "none configured"
            raise json_error(web.HTTPBadRequest, "bad_request", f"query parameter universe must be a universe of "
                                                                f"dmx.universes (allowed: {allowed})")
        universe = gw.dmx.get(number)
        doc.update(universe=number, changes=universe.changes, levels=list(universe.levels))
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/dmx", universes)


def paths(numbers: list[int]) -> dict[str, Any]:
    """This module's operations in the OpenAPI document, for a gateway with the universes `numbers`."""
    level = {"type": "integer", "minimum": 0, "maximum": 255}
    return {"/api/v1/dmx": {"get": operation(
        "getDmx", "The DMX universes, and one universe's levels now", "viewer",
        {"200": json_answer("The universes; with `universe`, its levels", {
            "type": "object", "required": ["frame_rate_hz", "universes"],
            "properties": {
                "frame_rate_hz": {"type": "number"},
                "universes": {"type": "array", "items": {
                    "type": "object", "required": ["universe", "outputs"],
                    "properties": {"universe": {"type": "integer", "minimum": 0, "maximum": MAX_UNIVERSE},
                                   "outputs": {"type": "array", "items": {"type": "string"},
                                               "description": "the DMX output drivers that send it"}}}},
                "universe": {"type": "integer", "minimum": 0, "maximum": MAX_UNIVERSE},
                "changes": {"type": "integer", "minimum": 0,
                            "description": "grows with every change of a level (since the gateway started)"},
                "levels": {"type": "array", "items": level, "minItems": CHANNELS, "maxItems": CHANNELS,
                           "description": "channel 1 first, as the outputs send them in the next frame"}},
            "dependentRequired": {"universe": ["changes", "levels"]}}),
         "400": error("`universe` is not a whole number or not a universe of dmx.universes (the message says "
                      "which are)", "bad_request")},
        description="Without `universe`, the universes alone. Asked at most a few times a second while a page "
                    "shows them.",
        parameters=[{"name": "universe", "in": "query", "required": False,
                     "schema": {"type": "integer", "enum": numbers} if numbers else {"not": {}},
                     "description": "a universe of dmx.universes: answer its 512 levels"}])}}
