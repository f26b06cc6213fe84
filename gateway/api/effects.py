"""The show's controls (operator): `/api/v1/effects` fires a preset or an inline effect, previews it, stops
everything; `/api/v1/blackout` stops every effect and blacks out DMX; `/api/v1/tempo` reads, sets or taps the tempo.
`/api/v1/show` (viewer) is the show as the engine holds it: zones, presets, tempo and the recent effects."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from gateway.api import GATEWAY, MAX_PREVIEW_MS, PREVIEW_STEP_MS
from gateway.api.auth import json_error, read_object, requires
from gateway.show.effects import FLASHING, Effect, EffectError, TooSoon
from gateway.show.engine import Fired, UnknownPreset
from gateway.twin import rfc3339


def _recent(fired: Fired, show_ms: int) -> dict[str, Any]:
    return {"effect_id": fired.effect_id, "preset": fired.preset, "kind": fired.effect.kind,
            "colour": fired.effect.document()["colour"], "zones": list(fired.zones),
            "starts_at": rfc3339(fired.starts_at), "show_ms": show_ms, "lead_ms": fired.lead_ms,
            "groups": [{"zones": list(group.zones), "delay_ms": group.delay_ms, "show_ms": group.show_ms}
                       for group in fired.groups],
            "delivery": dict(fired.delivery)}


@requires("viewer")
async def show_state(request: web.Request) -> web.Response:
    """The show for a page: its zones (with the delay the sound's travel gives each), its presets (whether each
    flashes, and how often at the tempo now), the tempo, the flash cap and the recent effects, newest first, each
    with its delivery per transmitter."""
    show = request.app[GATEWAY].show
    settings = show.settings
    presets = []
    for preset in settings.presets:
        effect = show.effect_of(preset.name, None)[0]
        presets.append({"name": preset.name, "kind": preset.kind, "colour": preset.colour,
                        "zones": list(preset.zones), "flashing": preset.kind in FLASHING,
                        "flash_hz": round(effect.flash_hz, 3), "intensity_from": preset.intensity_from})
    return web.Response(content_type="application/json", body=orjson.dumps({
        "tempo_bpm": show.tempo_bpm, "max_flash_hz": settings.max_flash_hz, "lead_ms": settings.lead_ms,
        "zones": [{"name": z.name, "index": z.index, "distance_m": z.distance_m, "delay_ms": show.delay_ms(z.name)}
                  for z in settings.zones],
        "presets": presets,
        "recent": [_recent(fired, show.show_ms(fired.start_mono)) for fired in reversed(show.recent)]}))


def _accepted(fired: Fired, **extra: Any) -> web.Response:
    return web.Response(status=202, content_type="application/json", body=orjson.dumps(
        {"effect_id": fired.effect_id, "starts_at": rfc3339(fired.starts_at), "zones": list(fired.zones),
         "delivery": fired.delivery, **extra}))


@requires("operator")
async def fire(request: web.Request) -> web.Response:
    show = request.app[GATEWAY].show
    doc = await read_object(request)
    try:
        preview, duration = doc.get("preview", False), doc.get("duration_ms", 4000)
        if not isinstance(preview, bool):
            raise EffectError("preview must be true or false")
        if (isinstance(duration, bool) or not isinstance(duration, int | float) or not float(duration).is_integer()
                or not 1 <= duration <= MAX_PREVIEW_MS):
            raise EffectError(f"duration_ms must be a whole number of milliseconds (allowed: 1 to {MAX_PREVIEW_MS})")
        preset, inline, zones, lead_ms = show.check_request(doc, extra=("preview", "duration_ms"))
        if preview:
            effect: Effect = show.resolve(preset, inline, zones)[0]  # as it would go out now
            effect.check_flash(show.settings.max_flash_hz)  # refused as a fire would be
            frames = show.preview(effect, PREVIEW_STEP_MS, int(duration))
            return web.Response(content_type="application/json", body=orjson.dumps(
                {"effect": effect.document(), "step_ms": PREVIEW_STEP_MS, "zones": frames}))
        fired = show.fire(preset, inline, zones, lead_ms)
    except UnknownPreset as exc:
        raise json_error(web.HTTPNotFound, "unknown_preset", str(exc)) from None
    except TooSoon as exc:  # the flash cap between effects: the same request is taken a moment later
        raise json_error(web.HTTPTooManyRequests, "too_soon", str(exc),
                         {"Retry-After": str(math.ceil(exc.retry_after_s))}) from None
    except EffectError as exc:
        raise json_error(web.HTTPBadRequest, "bad_effect", str(exc)) from None
    return _accepted(fired)


@requires("operator")
async def stop(request: web.Request) -> web.Response:
    return _accepted(request.app[GATEWAY].show.stop())


@requires("operator")
async def blackout(request: web.Request) -> web.Response:
    """What OSC `/vg/blackout` does: every effect stopped and every DMX level to 0, the universes' desired levels
    cleared with it, so the light stays dark (across a restart too) until someone raises a level."""
    gw = request.app[GATEWAY]
    fired = gw.show.stop()
    gw.dmx.blackout()
    return _accepted(fired, universes=list(gw.dmx.universes))


@requires("viewer")
async def get_tempo(request: web.Request) -> web.Response:
    return web.Response(content_type="application/json",
                        body=orjson.dumps({"tempo_bpm": request.app[GATEWAY].show.tempo_bpm}))


@requires("operator")
async def tempo(request: web.Request) -> web.Response:
    """`{"bpm": N}` sets the show's tempo (what presets without their own bpm or period follow)."""
    show = request.app[GATEWAY].show
    doc = await read_object(request)
    bpm = doc.get("bpm")
    unknown = sorted(set(doc) - {"bpm"})
    if unknown:
        raise json_error(web.HTTPBadRequest, "bad_tempo", f"unknown key {unknown[0]!r} (allowed: bpm)")
    if isinstance(bpm, bool) or not isinstance(bpm, int | float):
        raise json_error(web.HTTPBadRequest, "bad_tempo", "bpm must be a number (allowed: 1 to 999)")
    try:
        show.set_tempo(bpm)
    except EffectError as exc:
        raise json_error(web.HTTPBadRequest, "bad_tempo", str(exc)) from None
    return web.Response(content_type="application/json", body=orjson.dumps({"tempo_bpm": show.tempo_bpm}))


@requires("operator")
async def tap(request: web.Request) -> web.Response:
    """One tap of tap tempo, timed as it arrives: from the second tap on, the taps' mean interval is the tempo."""
    show = request.app[GATEWAY].show
    return web.Response(content_type="application/json", body=orjson.dumps({"tempo_bpm": show.tap()}))


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/show", show_state)
    app.router.add_post(f"{base}/effects", fire)
    app.router.add_delete(f"{base}/effects", stop)
    app.router.add_post(f"{base}/blackout", blackout)
    app.router.add_get(f"{base}/tempo", get_tempo)
    app.router.add_put(f"{base}/tempo", tempo)
    app.router.add_post(f"{base}/tempo/tap", tap)
