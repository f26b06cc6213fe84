"""The OpenAPI 3.1 document of the HTTP API, kept beside the routes it describes. Every operation has an id and
every body a schema; the bounds of parameters and bodies come from the same constants and tables the handlers
check with, and the enums of presets and zones from the running configuration. Tests hold it to the server: the
routes are exactly its paths, live responses of every operation validate against it, and Schemathesis (requests
generated from it) finds no disagreement."""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.api import DEFAULT_READINGS, MAX_CHANGES, MAX_PREVIEW_MS, MAX_READINGS, PREVIEW_STEP_MS
from gateway.api.auth import MAX_INT64
from gateway.show.effects import COLOUR, FIELDS, KINDS
from gateway.show.engine import MAX_LEAD_MS
from gateway.show.settings import ShowSection

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _json(description: str, schema: dict[str, Any] | None = None,
          headers: dict[str, tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """A response; `headers` maps a name to its description and schema, each one always sent (required)."""
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {JSON: {"schema": schema}}
    if headers:
        out["headers"] = {name: {"description": text, "required": True, "schema": schema}
                          for name, (text, schema) in headers.items()}
    return out


def _error(description: str, *codes: str) -> dict[str, Any]:
    """An error answer; `codes` are the values its `error` field takes."""
    schema: dict[str, Any] = _ref("Error")
    if codes:
        schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    return _json(description, schema)


ETAG = ("The version, quoted", {"type": "string", "pattern": '^"[0-9]+"$'})


def _integer(minimum: int, maximum: int, default: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        out["default"] = default
    return out


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


_ASSET_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
             "description": "The asset's id, e.g. amp:r01.1"}

_ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}


def _operation(operation_id: str, summary: str, role: str | None, responses: dict[str, Any], *,
               description: str | None = None, parameters: list[dict[str, Any]] | None = None,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One operation. A role adds 401 (and, above viewer, 403); a body adds 400 and 413."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    text = f"Needs the {role} role." if role else "Needs no token."
    op["description"] = f"{description} {text}" if description else text
    op["security"] = [{"bearer": []}] if role else []
    if parameters:
        op["parameters"] = parameters
    all_responses = dict(responses)
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
        all_responses.setdefault("400", _error("The body is not JSON (`bad_json`) or not what is allowed; the "
                                               "message says what is wrong"))
        all_responses["413"] = _error("The body is larger than api.max_body_kb")
    if role:
        all_responses.setdefault("401", _answer("Unauthorized"))
        if _ROLE_RANK[role] > 0:
            all_responses.setdefault("403", _error(f"The token's role is below {role}", "forbidden"))
    op["responses"] = dict(sorted(all_responses.items()))
    return op


def _schemas(show: ShowSection) -> dict[str, Any]:
    presets = [p.name for p in show.presets]
    zones = [z.name for z in show.zones]
    zone_list: dict[str, Any] = ({"type": "array", "items": {"type": "string", "enum": zones}} if zones
                                 else {"type": "array", "maxItems": 0})
    number = {"type": ["number", "null"], "description": "dB, null while nothing is known"}
    return {
        "Error": {
            "type": "object", "required": ["error", "message"],
            "properties": {"error": {"type": "string", "description": "a code, e.g. bad_request, unauthorized"},
                           "message": {"type": "string", "description": "what is wrong and what is allowed"}},
            "description": "Some errors add fields: `version` (412, 400 ahead), `floor` (410), `allowed` (405).",
        },
        "Asset": {
            "type": "object",
            "required": ["kind", "zone", "owner", "reported", "desired", "version", "updated_at"],
            "properties": {
                "id": {"type": "string", "description": "Present when one asset is answered on its own."},
                "kind": {"type": "string", "examples": ["amplifier", "zone", "spl_meter"]},
                "zone": {"type": ["string", "null"]},
                "owner": {"type": ["string", "null"], "description": "The driver or service that reports it."},
                "reported": {"type": "object", "description": "What the device last said."},
                "desired": {"type": "object", "description": "What it should be; applied by its owner."},
                "version": {"type": "integer", "minimum": 0,
                            "description": "Global twin version of the asset's last change."},
                "updated_at": {"type": "string", "format": "date-time"},
            },
        },
        "Change": {
            "type": "object",
            "required": ["version", "asset", "at", "kind", "zone", "owner", "reported", "desired", "removed"],
            "properties": {
                "version": {"type": "integer", "minimum": 1},
                "asset": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
                "kind": {"type": "string"},
                "zone": {"type": ["string", "null"]},
                "owner": {"type": ["string", "null"], "description": "the driver or service that reports the asset"},
                "reported": {"type": ["object", "null"], "description": "JSON merge patch applied to reported state"},
                "desired": {"type": ["object", "null"], "description": "JSON merge patch applied to desired state"},
                "removed": {"type": "boolean"},
            },
        },
        "Twin": {
            "type": "object", "required": ["gateway_id", "venue", "version", "taken_at", "assets"],
            "properties": {"gateway_id": {"type": "string"}, "venue": {"type": "string"},
                           "version": {"type": "integer", "minimum": 0},
                           "taken_at": {"type": "string", "format": "date-time"},
                           "assets": {"type": "object", "additionalProperties": _ref("Asset")}},
        },
        "Changes": {
            "type": "object", "required": ["from", "to", "more", "changes"],
            "properties": {"from": {"type": "integer", "minimum": 0}, "to": {"type": "integer", "minimum": 0},
                           "more": {"type": "boolean", "description": "`limit` cut the answer: ask from `to`"},
                           "changes": {"type": "array", "items": _ref("Change"), "maxItems": MAX_CHANGES}},
        },
        "Readings": {
            "type": "object", "required": ["from", "to", "more", "oldest", "readings"],
            "properties": {
                "from": {"type": "integer", "minimum": 0}, "to": {"type": "integer", "minimum": 0},
                "more": {"type": "boolean"},
                "oldest": {"type": ["integer", "null"], "description": "the first sequence number still kept"},
                "readings": {"type": "array", "maxItems": MAX_READINGS, "items": {
                    "type": "object", "required": ["seq", "ts", "asset", "metric", "value"],
                    "properties": {"seq": {"type": "integer", "minimum": 1},
                                   "ts": {"type": "string", "format": "date-time"},
                                   "asset": {"type": "string"}, "metric": {"type": "string"},
                                   "value": {"type": ["number", "null"]}}}}},
        },
        "UnitHealth": {
            "type": "object", "required": ["kind", "state", "restarts"],
            "properties": {
                "kind": {"enum": ["driver", "service"]},
                "state": {"enum": ["starting", "running", "backoff", "stopped"]},
                "restarts": {"type": "integer", "minimum": 0},
                "last_error": {"type": "string"},
                "retry_in_s": {"type": "number"},
                "detail": {"type": "object", "description": "the unit's own figures while it runs"},
            },
        },
        "Lateness": {
            "type": "object", "required": ["p50_ms", "p99_ms", "max_ms", "samples"],
            "properties": {"p50_ms": {"type": "number"}, "p99_ms": {"type": "number"}, "max_ms": {"type": "number"},
                           "samples": {"type": "integer", "minimum": 0}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "problems", "gateway_id", "venue", "uptime_s", "drivers", "services", "twin",
                         "store", "loop_lag", "scheduling", "dmx", "readings_total"],
            "properties": {
                "status": {"enum": ["ok", "degraded", "starting"]},
                "problems": {"type": "array", "items": {"type": "string"},
                             "description": "what degrades the box beyond a failing unit, the store or the held "
                                            "twin: the cloud link refused, or down with readings and events waiting"},
                "gateway_id": {"type": "string"}, "venue": {"type": "string"}, "uptime_s": {"type": "number"},
                "drivers": {"type": "object", "additionalProperties": _ref("UnitHealth")},
                "services": {"type": "object", "additionalProperties": _ref("UnitHealth")},
                "twin": {"type": "object",
                         "required": ["version", "assets", "changes_from", "held", "refused_changes"],
                         "properties": {"version": {"type": "integer"}, "assets": {"type": "integer"},
                                        "changes_from": {"type": "integer"}, "held": {"type": "boolean"},
                                        "refused_changes": {"type": "integer"}}},
                "store": {"type": "object",
                          "required": ["state", "last_error", "committed_seq", "committed_rows", "dropped_rows",
                                       "evicted_rows", "used_bytes", "limit_bytes", "database_bytes", "wal_bytes",
                                       "disk_free_bytes"],
                          "properties": {"state": {"enum": ["ok", "degraded"]},
                                         "last_error": {"type": ["string", "null"]},
                                         **{k: {"type": "integer"} for k in (
                                             "committed_seq", "committed_rows", "dropped_rows", "evicted_rows",
                                             "used_bytes", "limit_bytes", "database_bytes", "wal_bytes",
                                             "disk_free_bytes")}}},
                "loop_lag": _ref("Lateness"),
                "scheduling": {"type": "string", "description": "how the event loop's thread is scheduled: `fifo N` "
                               "(gateway.realtime_priority), `normal`, or `normal: why` when the system refused"},
                "dmx": {"type": "object", "required": ["universes", "frame_rate_hz", "frames", "skipped_frames",
                                                       "frame_lateness"],
                        "properties": {"universes": {"type": "array", "items": {"type": "integer"}},
                                       "frame_rate_hz": {"type": "number"}, "frames": {"type": "integer"},
                                       "skipped_frames": {"type": "integer"}, "frame_lateness": _ref("Lateness")}},
                "readings_total": {"type": "integer", "minimum": 0},
            },
        },
        "Effect": {
            "type": "object", "required": ["kind"], "additionalProperties": False,
            "description": "An inline effect; bpm or period_ms, not both (neither: the show's tempo).",
            "not": {"required": ["bpm", "period_ms"]},
            "properties": {
                "kind": {"enum": list(KINDS)},
                "colour": {"type": "string", "pattern": f"^{COLOUR.pattern}$", "default": "#ffffff"},
                **{name: {"type": kind, "minimum": lo, "maximum": hi} for name, (kind, lo, hi) in FIELDS.items()},
            },
        },
        "EffectRequest": {
            "type": "object", "additionalProperties": False,
            "description": "A preset or an inline effect, one of them.",
            "oneOf": [{"required": ["preset"]}, {"required": ["effect"]}],
            "properties": {
                "preset": {"type": "string", **({"enum": presets} if presets else {}),
                           "description": "a preset of [show] (an unknown one: 404)"},
                "effect": _ref("Effect"),
                "zones": {**zone_list, "description": "default: the preset's, else every zone"},
                "lead_ms": {**_integer(0, MAX_LEAD_MS), "description": f"default: show.lead_ms ({show.lead_ms})"},
                "preview": {"type": "boolean", "default": False,
                            "description": "render it without sending anything: 200 with each zone's colours"},
                "duration_ms": {**_integer(1, MAX_PREVIEW_MS, 4000), "description": "how much to preview"},
            },
        },
        "RenderedEffect": {
            "type": "object", "required": ["kind", "colour", "intensity", "period_ms", "duration_ms", "param"],
            "properties": {"kind": {"enum": list(KINDS)},
                           "colour": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
                           "intensity": {"type": "number", "minimum": 0, "maximum": 1},
                           "period_ms": {"type": "integer", "minimum": 20, "maximum": 600_000},
                           "duration_ms": {"type": "integer", "minimum": 0},
                           "param": {"type": "integer", "minimum": 0, "maximum": 255,
                                     "description": "twinkle: chance times 255; chase: width; wave: step in 10 ms"}},
        },
        "Preview": {
            "type": "object", "required": ["effect", "step_ms", "zones"],
            "properties": {
                "effect": _ref("RenderedEffect"),
                "step_ms": {"const": PREVIEW_STEP_MS},
                "zones": {"type": "object", "description": "each zone's colour (r, g, b) every step_ms",
                          "additionalProperties": {"type": "array", "items": {
                              "type": "array", "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 255}] * 3,
                              "minItems": 3, "maxItems": 3}}},
            },
        },
        "Fired": {
            "type": "object", "required": ["effect_id", "starts_at", "zones", "delivery"],
            "properties": {
                "effect_id": {"type": "string"},
                "starts_at": {"type": "string", "format": "date-time"},
                "zones": {"type": "array", "items": {"type": "string"}},
                "delivery": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "per transmitter: `sending` or `not sent: why`"},
            },
        },
        "Tempo": {"type": "object", "required": ["tempo_bpm"],
                  "properties": {"tempo_bpm": {"type": "number", "minimum": 1, "maximum": 999}}},
        "Compliance": {
            "type": "object", "required": ["profile", "show_end", "zones", "ignored_meters"],
            "properties": {
                "profile": {"enum": ["who", "ch_vnissg", "custom"]},
                "show_end": {"type": ["string", "null"], "pattern": "^[0-9]{2}:[0-9]{2}$"},
                "zones": {"type": "object", "additionalProperties": {
                    "type": "object",
                    "required": ["meter", "laeq_1min_db", "laeq_15min_db", "laeq_60min_db", "lmax_db", "coverage",
                                 "limits"],
                    "properties": {
                        "meter": {"type": ["string", "null"], "description": "the asset whose levels count"},
                        "laeq_1min_db": number, "laeq_15min_db": number, "laeq_60min_db": number, "lmax_db": number,
                        "coverage": {"type": "object", "required": ["1min", "15min", "60min"],
                                     "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
                        "limits": {"type": "array", "items": {
                            "type": "object",
                            "required": ["limit", "limit_db", "level_db", "state", "projected_db", "allowed_db"],
                            "properties": {
                                "limit": {"type": "string", "examples": ["LAeq,15min"]},
                                "limit_db": {"type": "number"}, "level_db": number,
                                "state": {"enum": ["ok", "warning", "over"]},
                                "projected_db": {**number, "description": "at the show's end, at the last minute's "
                                                                          "level"},
                                "allowed_db": {**number, "description": "the level that can be kept from now to the "
                                                                        "end without going over"}}}}}}},
                "ignored_meters": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Time": {
            "description": "RFC 3339 (2026-11-21T22:00:00Z, or with an offset) or seconds since the epoch; empty is "
                           "the same as absent",
            "anyOf": [{"type": "string", "format": "date-time"},
                      {"type": "string", "pattern": "^[0-9]{1,11}([.][0-9]{1,9})?$"},
                      {"type": "string", "maxLength": 0}],
        },
        "OpenApi": {
            "type": "object", "required": ["openapi", "info", "paths", "components"],
            "properties": {"openapi": {"const": "3.1.0"},
                           "info": {"type": "object", "required": ["title", "version"]},
                           "paths": {"type": "object"}, "components": {"type": "object"}},
        },
    }


def document(show: ShowSection | None = None) -> dict[str, Any]:
    """The document for a gateway whose [show] section is `show` (its presets and zones are enums)."""
    show = show or ShowSection()
    tokens = "Authorization: Bearer TOKEN"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "venue-gateway",
            "version": __version__,
            "description": "The venue twin and the gateway's health. Roles: viewer (read), operator (effects), "
                           f"admin (desired state), by a bearer token ({tokens}). Errors are JSON "
                           "{error, message}.",
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/api/v1/health": {"get": _operation(
                "getHealth", "Health of the gateway and each driver and service", None,
                {"200": _json("Health", _ref("Health"))})},
            "/api/v1/twin": {"get": _operation(
                "getTwin", "The whole twin", "viewer",
                {"200": _json("Snapshot", _ref("Twin"), {"ETag": ETAG}),
                 "304": _json("Unchanged since the ETag given", None, {"ETag": ETAG})},
                parameters=[{"name": "If-None-Match", "in": "header", "schema": {"type": "string"},
                             "description": "ETags (or *) the client holds: 304 when the twin is at one"}])},
            "/api/v1/twin/changes": {"get": _operation(
                "getTwinChanges", "Changes after version `since`, in version order", "viewer",
                {"200": _json("Changes", _ref("Changes")),
                 "400": _error("A bad parameter (`bad_request`), or `since` ahead of the twin's version (`ahead`: the "
                               "version came from another history of the twin; take a snapshot)",
                               "bad_request", "ahead"),
                 "410": _error("`since` is older than the retained log: take a snapshot", "gone")},
                parameters=[_query("since", _integer(0, MAX_INT64), "the version the client has", True),
                            _query("limit", _integer(1, MAX_CHANGES, MAX_CHANGES), "the most changes to answer")])},
            "/api/v1/twin/stream": {"get": _operation(
                "streamTwin", "WebSocket: a snapshot (unless `since` is given) then every change as it happens",
                "viewer",
                {"101": _json("Switching to WebSocket"),
                 "400": _error("`since` is not a whole number, a token is in the URL (`token_in_url`), "
                               "`bearer.TOKEN` is offered without `venue-gateway` (`bad_subprotocol`), or the "
                               "handshake is broken", "bad_request", "token_in_url", "bad_subprotocol"),
                 "403": _error("`Origin` is neither the gateway's own nor listed (`origin_refused`)",
                               "origin_refused"),
                 "426": {**_error("Not a WebSocket handshake (`upgrade_required`)", "upgrade_required"),
                         "headers": {"Upgrade": {"required": True, "schema": {"const": "websocket"}}}}},
                description="Frames are JSON text: {type: snapshot, twin} or {type: changes, from, to, changes}. "
                            "The token: `Authorization: Bearer`, or from a browser the subprotocols "
                            "`venue-gateway` and `bearer.TOKEN` (answered `venue-gateway`), or the first message "
                            "{\"token\": TOKEN}; never in the URL. A request with `Origin` must come from the "
                            "gateway's own origin or one of `api.stream_origins`. The frames and close codes: "
                            "docs/twin-stream.md.",
                parameters=[_query("since", _integer(0, MAX_INT64), "the version the client has: no snapshot, the "
                                                                    "changes after it")])},
            "/api/v1/twin/assets/{id}": {"get": _operation(
                "getAsset", "One asset", "viewer",
                {"200": _json("Asset", _ref("Asset"), {"ETag": ETAG}), "404": _error("No such asset", "not_found")},
                parameters=[_ASSET_ID])},
            "/api/v1/twin/assets/{id}/desired": {"patch": _operation(
                "patchDesired", "Merge into the asset's desired state (RFC 7396); answered once it is on disk",
                "admin",
                {"200": _json("The asset after the change", _ref("Asset"), {"ETag": ETAG}),
                 "404": _error("No such asset", "not_found"),
                 "412": _error("If-Match does not match the asset's version", "version_mismatch"),
                 "422": _error("The asset's owner cannot take this desired state (keys it has not, values out of "
                               "range): nothing was changed", "desired_refused"),
                 "503": _error("The twin is held, or the change is in effect but the store cannot write it yet "
                               "(retried)", "store_unavailable")},
                parameters=[_ASSET_ID, {"name": "If-Match", "in": "header", "schema": {"type": "string"},
                                        "description": "The asset version the change is based on (\"7\"; * for "
                                                       "any)"}],
                body={"type": "object", "description": "A JSON merge patch (RFC 7396): null removes a key"})},
            "/api/v1/telemetry": {"get": _operation(
                "getTelemetry", "Telemetry history for backfill, in sequence order, paged by `since`", "viewer",
                {"200": _json("Readings", _ref("Readings")), "400": _error("A bad parameter", "bad_request")},
                description="Each reading has a sequence number; ask again with `since` = the answer's `to` while "
                            "`more`. `oldest` is the first sequence number still kept: above `since` + 1, "
                            "retention has removed the readings between.",
                parameters=[_query("since", _integer(0, MAX_INT64, 0), "readings after this sequence number"),
                            _query("asset", {"type": "string"}, "only this asset's"),
                            _query("metric", {"type": "string"}, "only this metric"),
                            _query("limit", _integer(1, MAX_READINGS, DEFAULT_READINGS), "the most readings")])},
            "/api/v1/compliance": {"get": _operation(
                "getCompliance", "Sound-level compliance now: each zone's rolling LAeq (1, 15, 60 min), maximum, "
                "and every limit's state, projection to the show's end and the level that can be kept", "viewer",
                {"200": _json("Compliance", _ref("Compliance")),
                 "404": _error("No [compliance] section in the configuration", "not_configured")})},
            "/api/v1/compliance/history.csv": {"get": _operation(
                "getComplianceHistory", "The per-minute sound-level history as CSV (RFC 4180), for the authorities",
                "viewer",
                {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}},
                         "headers": {"Content-Disposition": {"required": True, "schema": {"type": "string"},
                                                             "description": "attachment; its file name"}}},
                 "400": _error("`from` or `to` is not a time, or `from` is not before `to`", "bad_request"),
                 "404": _error("No [compliance] section in the configuration", "not_configured")},
                description="One row per zone and minute: time_utc, time_local, zone, laeq_1min_db, laeq_15min_db, "
                            "laeq_60min_db, lmax_db, limit, limit_db, state, projected_db. `from` defaults to 24 "
                            "hours before `to`, `to` to now.",
                parameters=[_query("from", _ref("Time"), "the first minute's start"),
                            _query("to", _ref("Time"), "the end"),
                            _query("zone", {"type": "string"}, "only this zone's rows")])},
            "/api/v1/effects": {
                "post": _operation(
                    "fireEffect", "Fire a preset or an inline effect (or, with preview, render it without sending)",
                    "operator",
                    {"202": _json("Fired", _ref("Fired")),
                     "200": _json("The preview: each zone's colour every step_ms", _ref("Preview")),
                     "400": _error("Not an effect this gateway can fire; the message says why", "bad_json",
                                   "bad_request", "bad_effect"),
                     "404": _error("No such preset", "unknown_preset")},
                    body=_ref("EffectRequest")),
                "delete": _operation(
                    "stopEffects", "Stop every effect: a blackout of the wristbands", "operator",
                    {"202": _json("Blackout fired", _ref("Fired"))}),
            },
            "/api/v1/blackout": {"post": _operation(
                "blackout", "Stop every effect and black out DMX (as OSC /vg/blackout)", "operator",
                {"202": _json("The stop fired, and the universes blacked out", {"allOf": [_ref("Fired"), {
                    "type": "object", "required": ["universes"],
                    "properties": {"universes": {"type": "array", "items": {"type": "integer"}}}}]})},
                description="The universes' desired levels are cleared, so the light stays dark, across a restart "
                            "too, until a level is raised.")},
            "/api/v1/tempo": {
                "get": _operation("getTempo", "The show's tempo", "viewer",
                                  {"200": _json("The tempo now", _ref("Tempo"))}),
                "put": _operation(
                    "setTempo", "Set the show's tempo (presets without their own bpm or period follow it)",
                    "operator",
                    {"200": _json("The tempo now", _ref("Tempo")),
                     "400": _error("Not a tempo; the message says why", "bad_json", "bad_request", "bad_tempo")},
                    body={"type": "object", "required": ["bpm"], "additionalProperties": False,
                          "properties": {"bpm": {"type": "number", "minimum": 1, "maximum": 999}}}),
            },
            "/api/v1/tempo/tap": {"post": _operation(
                "tapTempo", "One tap of tap tempo, timed as it arrives; from the second tap within 2.5 s, the taps' "
                "mean interval sets the tempo", "operator", {"200": _json("The tempo now", _ref("Tempo"))})},
            "/api/v1/openapi.json": {"get": _operation(
                "getOpenApi", "This document", None, {"200": _json("OpenAPI 3.1", _ref("OpenApi"))})},
            "/metrics": {"get": _operation(
                "getMetrics", "Prometheus metrics (text format)", "viewer",
                {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(show),
            "responses": {
                "Unauthorized": {**_error("No token, or one that is not valid", "unauthorized"),
                                 "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                                                                  "description": "Bearer"}}},
            },
        },
    }
