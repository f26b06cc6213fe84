"""The timecode cue list: `GET /api/v1/cues` (viewer) the list with each cue's state, the timecode now and its
rate; `POST /api/v1/cues/{id}/arm|fire|skip` (operator) what OSC `/vg/cue/...` and the dashboard do too
(`gateway/show/cues.py` says what each means). Answered as the show's routes are: a fire is 202 with the effect."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from gateway.api import GATEWAY
from gateway.api.auth import json_error, requires
from gateway.api.operations import error, json_answer, operation
from gateway.api.schemas import ref
from gateway.show.cues import CueConflict, CueList, UnknownCue
from gateway.show.effects import EffectError, TooSoon
from gateway.show.timecode import RATE_NAMES
from gateway.twin import rfc3339

STATES = ("next", "armed", "fired", "skipped", "disarmed", "refused")


def _cues(request: web.Request) -> CueList:
    cues = request.app[GATEWAY].show.cues
    if cues.section.file is None:
        raise json_error(web.HTTPNotFound, "not_configured", "no cue list is configured (show.cues.file)")
    return cues


def _list(cues: CueList, status: int = 200) -> web.Response:
    return web.Response(status=status, content_type="application/json", body=orjson.dumps(cues.document()))


@requires("viewer")
async def get_cues(request: web.Request) -> web.Response:
    return _list(_cues(request))


def _command(name: str) -> Any:
    @requires("operator")
    async def handler(request: web.Request) -> web.Response:
        cues = _cues(request)
        cue_id = request.match_info["id"]
        try:
            if name == "fire":
                fired = cues.fire(cue_id)
                return web.Response(status=202, content_type="application/json", body=orjson.dumps(
                    {"cue": cue_id, "effect_id": fired.effect_id, "starts_at": rfc3339(fired.starts_at),
                     "zones": list(fired.zones), "delivery": fired.delivery}))
            getattr(cues, name)(cue_id)
        except UnknownCue as exc:
            raise json_error(web.HTTPNotFound, "unknown_cue", str(exc)) from None
        except CueConflict as exc:
            raise json_error(web.HTTPConflict, "cue_conflict", str(exc)) from None
        except TooSoon as exc:  # the flash cap between effects: the same request is taken a moment later
            raise json_error(web.HTTPTooManyRequests, "too_soon", str(exc),
                             {"Retry-After": str(math.ceil(exc.retry_after_s))}) from None
        except EffectError as exc:
            raise json_error(web.HTTPBadRequest, "bad_effect", str(exc)) from None
        except LookupError as exc:  # a preset the cue names is not the show's
            raise json_error(web.HTTPBadRequest, "bad_effect", str(exc)) from None
        return _list(cues)
    return handler


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/cues", get_cues)
    for name in ("arm", "fire", "skip"):
        app.router.add_post(f"{base}/cues/{{id}}/{name}", _command(name))


_CUE = {
    "type": "object",
    "required": ["id", "timecode", "preset", "effect", "zones", "armed", "state", "why", "effect_id", "starts_at"],
    "properties": {
        "id": {"type": "string"},
        "timecode": {"type": "string", "description": "its label, HH:MM:SS:FF"},
        "preset": {"type": ["string", "null"]},
        "effect": {"type": ["object", "null"], "description": "an inline effect (a look), as fireEffect takes it"},
        "zones": {"type": "array", "items": {"type": "string"}, "description": "none: the preset's, else all"},
        "armed": {"type": "boolean", "description": "fires at its timecode"},
        "state": {"enum": list(STATES), "description": "in this pass of the timecode: next (the first armed one "
                  "ahead), armed, fired, skipped, disarmed or refused (the show refused its effect)"},
        "why": {"type": "string", "description": "how it came to its state (by hand, at its timecode, passed by "
                                                 "a jump, the show's refusal)"},
        "effect_id": {"type": ["string", "null"], "description": "the effect it fired in this pass"},
        "starts_at": {"type": ["string", "null"], "format": "date-time", "description": "that effect's start"},
    },
}
_COUNT = {"type": "integer", "minimum": 0}
CUE_LIST = {
    "type": "object",
    "required": ["file", "state", "rate", "timecode_rate", "timecode", "next", "lead_ms", "problem", "frames",
                 "dropped", "outliers", "jumps", "starts", "cues"],
    "properties": {
        "file": {"type": "string"},
        "state": {"enum": ["waiting", "running", "stopped"], "description": "waiting: no timecode yet; stopped: "
                  "no frame for show.cues.stop_frames frame periods (the list is frozen)"},
        "rate": {"oneOf": [{"enum": list(RATE_NAMES)}, {"type": "null"}],
                 "description": "the list's frame rate (show.cues.rate, else the timecode's)"},
        "timecode_rate": {"oneOf": [{"enum": list(RATE_NAMES)}, {"type": "null"}],
                          "description": "the rate of the timecode received"},
        "timecode": {"type": ["string", "null"], "description": "the last frame's label"},
        "next": {"type": ["string", "null"], "description": "the next cue to fire"},
        "lead_ms": {"type": "integer", "minimum": 0, "description": "how far ahead of its timecode a cue is fired"},
        "problem": {"type": ["string", "null"], "description": "why the list is not loaded, or the timecode's "
                                                               "rate is not the list's"},
        "frames": _COUNT, "dropped": _COUNT, "outliers": _COUNT, "jumps": _COUNT, "starts": _COUNT,
        "cues": {"type": "array", "items": _CUE},
    },
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
       "description": "the cue's id"}
_NONE = error("No cue list is configured (`not_configured`), or no such cue (`unknown_cue`)", "not_configured",
              "unknown_cue")


def _post(operation_id: str, summary: str, extra: dict[str, Any], description: str) -> dict[str, Any]:
    return {"post": operation(operation_id, summary, "operator", {"404": _NONE, **extra}, description=description,
                              parameters=[_ID])}


PATHS: dict[str, Any] = {
    "/api/v1/cues": {"get": operation(
        "getCues", "The timecode cue list: each cue's state, the timecode now and its rate", "viewer",
        {"200": json_answer("The cue list", CUE_LIST),
         "404": error("No cue list is configured (show.cues.file)", "not_configured")})},
    "/api/v1/cues/{id}/arm": _post(
        "armCue", "Arm a cue: it fires at its timecode", {"200": json_answer("The cue list", CUE_LIST)},
        "A cue skipped or refused in this pass is pending again."),
    "/api/v1/cues/{id}/fire": _post(
        "fireCue", "Fire a cue by hand now, with the show's lead",
        {"202": json_answer("Fired", {"allOf": [ref("Fired"), {"type": "object", "required": ["cue"],
                                                               "properties": {"cue": {"type": "string"}}}]}),
         "400": error("The show refuses its effect; the message says why", "bad_effect"),
         "429": error("It would light a zone sooner after the last effect there than show.max_flash_hz allows; "
                      "Retry-After says when it is taken", "too_soon")},
        "It counts as fired in this pass: it does not fire again at its timecode."),
    "/api/v1/cues/{id}/skip": _post(
        "skipCue", "Skip a cue in this pass: it does not fire when the timecode reaches it",
        {"200": json_answer("The cue list", CUE_LIST),
         "409": error("The cue has already been fired in this pass", "cue_conflict")},
        "A jump back before it, or arm, makes it pending again."),
}
