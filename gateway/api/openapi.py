"""The OpenAPI 3.1 document of the HTTP API, kept beside the routes it describes (a test checks both agree)."""

from __future__ import annotations

from typing import Any

from gateway import __version__

_ERROR = {"$ref": "#/components/responses/Error"}


def _response(description: str, schema: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    if headers:
        out["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ASSET = {
    "type": "object",
    "required": ["kind", "zone", "reported", "desired", "version", "updated_at"],
    "properties": {
        "id": {"type": "string", "description": "Present when one asset is answered on its own."},
        "kind": {"type": "string", "examples": ["amplifier", "zone", "spl_meter"]},
        "zone": {"type": ["string", "null"]},
        "owner": {"type": ["string", "null"], "description": "The driver that owns the asset."},
        "reported": {"type": "object", "description": "What the device last said."},
        "desired": {"type": "object", "description": "What it should be; applied by the owning driver."},
        "version": {"type": "integer", "description": "Global twin version of the asset's last change."},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

_CHANGE = {
    "type": "object",
    "required": ["version", "asset", "at", "reported", "desired", "removed"],
    "properties": {
        "version": {"type": "integer"},
        "asset": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "kind": {"type": "string"},
        "zone": {"type": ["string", "null"]},
        "owner": {"type": ["string", "null"], "description": "the driver or service that reports the asset"},
        "reported": {"type": ["object", "null"], "description": "JSON merge patch applied to reported state."},
        "desired": {"type": ["object", "null"], "description": "JSON merge patch applied to desired state."},
        "removed": {"type": "boolean"},
    },
}

_TEMPO = {"type": "object", "required": ["tempo_bpm"], "properties": {"tempo_bpm": {"type": "number"}}}

_TWIN = {
    "type": "object",
    "required": ["gateway_id", "venue", "version", "taken_at", "assets"],
    "properties": {
        "gateway_id": {"type": "string"},
        "venue": {"type": "string"},
        "version": {"type": "integer"},
        "taken_at": {"type": "string", "format": "date-time"},
        "assets": {"type": "object", "additionalProperties": _ref("Asset")},
    },
}

_HEALTH = {
    "type": "object",
    "required": ["status", "drivers"],
    "properties": {
        "status": {"enum": ["ok", "degraded", "starting"]},
        "problems": {"type": "array", "items": {"type": "string"},
                     "description": "what degrades the box beyond a failing unit, the store or the held twin: the "
                     "cloud link refused, or down with readings and events waiting (how many, how old)"},
        "drivers": {"type": "object", "additionalProperties": _ref("UnitHealth")},
        "services": {"type": "object", "additionalProperties": _ref("UnitHealth")},
        "twin": {"type": "object"},
        "store": {"type": "object"},
        "loop_lag": {"type": "object"},
        "scheduling": {"type": "string", "description": "how the event loop's thread is scheduled: `fifo N` "
                       "(gateway.realtime_priority), `normal`, or `normal: why` when the system refused"},
    },
}

_UNIT = {
    "type": "object",
    "required": ["state"],
    "properties": {
        "state": {"enum": ["starting", "running", "backoff", "stopped"]},
        "restarts": {"type": "integer"},
        "last_error": {"type": "string"},
        "retry_in_s": {"type": "number"},
    },
}


def document() -> dict[str, Any]:
    viewer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "venue-gateway",
            "version": __version__,
            "description": "The venue twin and the gateway's health. Roles: viewer (read), operator (effects), "
                           "admin (desired state). Errors are JSON {error, message}.",
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/api/v1/health": {"get": {
                "summary": "Health of the gateway and each driver and service", "security": [],
                "responses": {"200": _response("Health", _ref("Health"))},
            }},
            "/api/v1/twin": {"get": {
                "summary": "The whole twin", "security": viewer,
                "parameters": [{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}],
                "responses": {"200": _response("Snapshot", _ref("Twin"), ETag="The twin version, quoted"),
                              "304": _response("Unchanged since the ETag given", ETag="The twin version, quoted"),
                              "401": _ERROR, "403": _ERROR},
            }},
            "/api/v1/twin/changes": {"get": {
                "summary": "Changes after version `since`, in version order", "security": viewer,
                "parameters": [
                    {"name": "since", "in": "query", "required": True, "schema": {"type": "integer"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 10000}},
                ],
                "responses": {
                    "200": _response("Changes", {
                        "type": "object", "required": ["from", "to", "changes"],
                        "properties": {"from": {"type": "integer"}, "to": {"type": "integer"},
                                       "more": {"type": "boolean"},
                                       "changes": {"type": "array", "items": _ref("Change")}}}),
                    "400": _response("A bad parameter, or `since` ahead of the twin's version (`ahead`: the "
                                     "version came from another history of the twin; take a snapshot)",
                                     _ref("Error")),
                    "401": _ERROR, "403": _ERROR,
                    "410": _response("`since` is older than the retained log: take a snapshot", _ref("Error")),
                },
            }},
            "/api/v1/telemetry": {"get": {
                "summary": "Telemetry history for backfill, in sequence order, paged by `since`",
                "description": "Each reading has a sequence number; ask again with `since` = the answer's `to` "
                               "while `more`. `oldest` is the first sequence number still kept: above `since` + 1, "
                               "retention has removed the readings between.",
                "security": viewer,
                "parameters": [
                    {"name": "since", "in": "query", "schema": {"type": "integer", "default": 0}},
                    {"name": "asset", "in": "query", "schema": {"type": "string"}},
                    {"name": "metric", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 1000,
                                                                 "maximum": 10000}},
                ],
                "responses": {
                    "200": _response("Readings", {
                        "type": "object", "required": ["from", "to", "more", "readings"],
                        "properties": {
                            "from": {"type": "integer"}, "to": {"type": "integer"}, "more": {"type": "boolean"},
                            "oldest": {"type": ["integer", "null"]},
                            "readings": {"type": "array", "items": {
                                "type": "object", "required": ["seq", "ts", "asset", "metric", "value"],
                                "properties": {"seq": {"type": "integer"},
                                               "ts": {"type": "string", "format": "date-time"},
                                               "asset": {"type": "string"}, "metric": {"type": "string"},
                                               "value": {"type": ["number", "null"]}}}}}}),
                    "400": _ERROR, "401": _ERROR, "403": _ERROR,
                },
            }},
            "/api/v1/compliance": {"get": {
                "summary": "Sound-level compliance now: each zone's rolling LAeq (1, 15, 60 min), maximum, and "
                           "every limit's state, projection to the show's end and the level that can be kept",
                "security": viewer,
                "responses": {"200": _response("Compliance", {"type": "object", "required": ["profile", "zones"],
                                                              "properties": {"profile": {"type": "string"},
                                                                             "zones": {"type": "object"}}}),
                              "401": _ERROR, "403": _ERROR,
                              "404": _response("No [compliance] section in the configuration", _ref("Error"))},
            }},
            "/api/v1/compliance/history.csv": {"get": {
                "summary": "The per-minute sound-level history as CSV (RFC 4180), for the authorities",
                "description": "One row per zone and minute: time_utc, time_local, zone, laeq_1min_db, "
                               "laeq_15min_db, laeq_60min_db, lmax_db, limit, limit_db, state, projected_db. "
                               "`from`/`to`: RFC 3339 or seconds since the epoch; default the last 24 hours.",
                "security": viewer,
                "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                               for n in ("from", "to", "zone")],
                "responses": {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                              "400": _ERROR, "401": _ERROR, "403": _ERROR,
                              "404": _response("No [compliance] section in the configuration", _ref("Error"))},
            }},
            "/api/v1/twin/stream": {"get": {
                "summary": "WebSocket: a snapshot (unless `since` is given) then every change as it happens",
                "description": "Frames are JSON text: {type: snapshot, twin} or {type: changes, from, to, changes}. "
                               "The token: `Authorization: Bearer`, or from a browser the subprotocols "
                               "`venue-gateway` and `bearer.TOKEN` (answered `venue-gateway`), or the first "
                               "message {\"token\": TOKEN}; never in the URL. A request with `Origin` must come "
                               "from the gateway's own origin or one of `api.stream_origins`. The frames and close "
                               "codes: docs/twin-stream.md.",
                "security": viewer,
                "parameters": [{"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"101": _response("Switching to WebSocket"),
                              "400": _response("`since` is not a whole number, a token is in the URL "
                                               "(`token_in_url`), `bearer.TOKEN` is offered without `venue-gateway` "
                                               "(`bad_subprotocol`), or the handshake is broken", _ref("Error")),
                              "401": _ERROR,
                              "403": _response("`Origin` is neither the gateway's own nor listed (`origin_refused`)",
                                               _ref("Error")),
                              "426": _response("Not a WebSocket handshake (`upgrade_required`)", _ref("Error"),
                                               Upgrade="websocket")},
            }},
            "/api/v1/twin/assets/{id}": {"get": {
                "summary": "One asset", "security": viewer,
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _response("Asset", _ref("Asset"), ETag="The asset version, quoted"),
                              "401": _ERROR, "403": _ERROR, "404": _ERROR},
            }},
            "/api/v1/twin/assets/{id}/desired": {"patch": {
                "summary": "Merge into the asset's desired state (RFC 7396); answered once it is on disk",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "If-Match", "in": "header", "schema": {"type": "string"},
                     "description": "The asset version the change is based on"},
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": _response("The asset after the change", _ref("Asset"),
                                               ETag="The asset's new version, quoted"),
                              "400": _ERROR, "401": _ERROR, "403": _ERROR, "404": _ERROR,
                              "413": _response("The body is larger than api.max_body_kb", _ref("Error")),
                              "412": _response("If-Match does not match the asset's version", _ref("Error")),
                              "422": _response("The asset's owner cannot take this desired state (keys it has not, "
                                               "values out of range): nothing was changed", _ref("Error")),
                              "503": _response("In effect, but the store cannot write it yet (retried)",
                                               _ref("Error"))},
            }},
            "/api/v1/effects": {
                "post": {
                    "summary": "Fire a preset or an inline effect (or, with preview, render it without sending)",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object",
                        "properties": {
                            "preset": {"type": "string"},
                            "effect": {"type": "object", "description": "kind, colour (#RRGGBB), intensity (0-1), "
                                       "bpm or period_ms, duration_s, chance, width, step_ms"},
                            "zones": {"type": "array", "items": {"type": "string"}},
                            "lead_ms": {"type": "integer", "minimum": 0, "maximum": 60000},
                            "preview": {"type": "boolean"},
                            "duration_ms": {"type": "integer", "description": "how much to preview"},
                        }}}}},
                    "responses": {
                        "202": _response("Fired", {"type": "object", "required": ["effect_id", "starts_at"],
                                                   "properties": {"effect_id": {"type": "string"},
                                                                  "starts_at": {"type": "string",
                                                                                "format": "date-time"},
                                                                  "zones": {"type": "array"},
                                                                  "delivery": {
                                                                      "type": "object",
                                                                      "description": "per transmitter: 'sending' "
                                                                                     "or 'not sent: why'",
                                                                      "additionalProperties": {"type": "string"}}}}),
                        "200": _response("The preview: each zone's colour every step_ms", {"type": "object"}),
                        "400": _ERROR, "401": _ERROR, "403": _ERROR,
                        "404": _response("No such preset", _ref("Error")),
                    },
                },
                "delete": {
                    "summary": "Stop every effect: a blackout of the wristbands", "security": [{"bearer": []}],
                    "responses": {"202": _response("Blackout fired", {"type": "object"}), "401": _ERROR,
                                  "403": _ERROR},
                },
            },
            "/api/v1/blackout": {"post": {
                "summary": "Stop every effect and black out DMX (as OSC /vg/blackout): the universes' desired levels "
                           "are cleared, so the light stays dark, across a restart too, until a level is raised",
                "security": [{"bearer": []}],
                "responses": {"202": _response("The stop fired, and the universes blacked out", {
                    "type": "object", "required": ["effect_id", "starts_at", "universes"],
                    "properties": {"effect_id": {"type": "string"},
                                   "starts_at": {"type": "string", "format": "date-time"},
                                   "zones": {"type": "array", "items": {"type": "string"}},
                                   "delivery": {"type": "object", "additionalProperties": {"type": "string"}},
                                   "universes": {"type": "array", "items": {"type": "integer"}}}}),
                              "401": _ERROR, "403": _ERROR},
            }},
            "/api/v1/tempo": {"get": {
                "summary": "The show's tempo", "security": [{"bearer": []}],
                "responses": {"200": _response("The tempo now", _TEMPO), "401": _ERROR, "403": _ERROR},
            }, "put": {
                "summary": "Set the show's tempo (presets without their own bpm or period follow it)",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["bpm"], "additionalProperties": False,
                    "properties": {"bpm": {"type": "number", "minimum": 1, "maximum": 999}}}}}},
                "responses": {"200": _response("The tempo now", _TEMPO), "400": _ERROR, "401": _ERROR,
                              "403": _ERROR},
            }},
            "/api/v1/tempo/tap": {"post": {
                "summary": "One tap of tap tempo, timed as it arrives; from the second tap within 2.5 s, the taps' "
                           "mean interval sets the tempo",
                "security": [{"bearer": []}],
                "responses": {"200": _response("The tempo now", _TEMPO), "401": _ERROR, "403": _ERROR},
            }},
            "/api/v1/openapi.json": {"get": {
                "summary": "This document", "security": [],
                "responses": {"200": _response("OpenAPI 3.1", {"type": "object"})},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (text format)", "security": viewer,
                "responses": {"200": {"description": "Metrics",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              "401": _ERROR, "403": _ERROR},
            }},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Asset": _ASSET, "Change": _CHANGE, "Twin": _TWIN, "Health": _HEALTH, "UnitHealth": _UNIT,
                        "Error": {"type": "object", "required": ["error", "message"],
                                  "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}},
            "responses": {"Error": _response("An error; a 401 carries WWW-Authenticate: Bearer", _ref("Error"))},
        },
    }
