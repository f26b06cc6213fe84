"""`/api/v1/effects`: fire a preset or an inline effect (operator), preview it, stop everything."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.api import GATEWAY
from gateway.api.auth import json_error, read_object, requires
from gateway.show.effects import Effect, EffectError
from gateway.show.engine import Fired, UnknownPreset
from gateway.twin import rfc3339

PREVIEW_STEP_MS = 40


def _accepted(fired: Fired) -> web.Response:
    return web.Response(status=202, content_type="application/json", body=orjson.dumps(
        {"effect_id": fired.effect_id, "starts_at": rfc3339(fired.starts_at), "zones": list(fired.zones),
         "delivery": fired.delivery}))


@requires("operator")
async def fire(request: web.Request) -> web.Response:
    show = request.app[GATEWAY].show
    doc = await read_object(request)
    try:
        if doc.get("preview"):
            zones = doc.get("zones")
            if zones is not None and not (isinstance(zones, list) and all(isinstance(z, str) for z in zones)):
                raise EffectError("zones must be a list of zone names")
            effect: Effect = show.resolve(doc.get("preset"), doc.get("effect"), zones)[0]  # as it would go out now
            duration = int(doc.get("duration_ms", 4000))
            frames = show.preview(effect, PREVIEW_STEP_MS, max(PREVIEW_STEP_MS, min(duration, 60_000)))
            return web.Response(content_type="application/json", body=orjson.dumps(
                {"effect": effect.document(), "step_ms": PREVIEW_STEP_MS, "zones": frames}))
        fired = show.fire_request(doc, extra=("preview", "duration_ms"))
    except UnknownPreset as exc:
        raise json_error(web.HTTPNotFound, "unknown_preset", str(exc)) from None
    except (EffectError, TypeError, ValueError) as exc:
        raise json_error(web.HTTPBadRequest, "bad_effect", str(exc)) from None
    return _accepted(fired)


@requires("operator")
async def stop(request: web.Request) -> web.Response:
    return _accepted(request.app[GATEWAY].show.stop())


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_post(f"{base}/effects", fire)
    app.router.add_delete(f"{base}/effects", stop)
