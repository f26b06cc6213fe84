"""The OpenAPI 3.1 document of the HTTP API, kept beside the routes it describes. Every operation has an id and
every body a schema; the bounds of parameters and bodies come from the same constants and tables the handlers
check with, and the enums of presets and zones from the running configuration. Tests hold it to the server: the
routes are exactly its paths, live responses of every operation validate against it, and Schemathesis (requests
generated from it) finds no disagreement."""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.api import DEFAULT_READINGS, MAX_CHANGES, MAX_READINGS
from gateway.api.auth import MAX_INT64
from gateway.api.schemas import components, integer, ref
from gateway.show.settings import ShowSection

JSON = "application/json"


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
    schema: dict[str, Any] = ref("Error")
    if codes:
        schema = {"allOf": [ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    return _json(description, schema)


ETAG = ("The version, quoted", {"type": "string", "pattern": '^"[0-9]+"$'})


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
        all_responses.setdefault("400", _error("The body is not JSON (`bad_json`), cannot be decoded as its "
                                               "Content-Encoding says (`bad_body`), or is not what is allowed; the "
                                               "message says what is wrong"))
        all_responses["413"] = _error("The body is larger than api.max_body_kb")
    if role:
        all_responses.setdefault("401", _answer("Unauthorized"))
        if _ROLE_RANK[role] > 0:
            all_responses.setdefault("403", _error(f"The token's role is below {role}", "forbidden"))
    op["responses"] = dict(sorted(all_responses.items()))
    return op


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
                {"200": _json("Health: without a valid token, the status alone", {"oneOf": [
                    ref("Health"), ref("HealthStatus")]})},
                description="Anyone gets the status; the details (errors, device paths, node addresses, the "
                            "broker, free disk) need a valid token of any role.")},
            "/api/v1/twin": {"get": _operation(
                "getTwin", "The whole twin", "viewer",
                {"200": _json("Snapshot", ref("Twin"), {"ETag": ETAG}),
                 "304": _json("Unchanged since the ETag given", None, {"ETag": ETAG})},
                parameters=[{"name": "If-None-Match", "in": "header", "schema": {"type": "string"},
                             "description": "ETags (or *) the client holds: 304 when the twin is at one"}])},
            "/api/v1/twin/changes": {"get": _operation(
                "getTwinChanges", "Changes after version `since`, in version order", "viewer",
                {"200": _json("Changes", ref("Changes")),
                 "400": _error("A bad parameter (`bad_request`), or `since` ahead of the twin's version (`ahead`: the "
                               "version came from another history of the twin; take a snapshot)",
                               "bad_request", "ahead"),
                 "410": _error("`since` is older than the retained log: take a snapshot", "gone")},
                parameters=[_query("since", integer(0, MAX_INT64), "the version the client has", True),
                            _query("limit", integer(1, MAX_CHANGES, MAX_CHANGES), "the most changes to answer")])},
            "/api/v1/twin/stream": {"get": _operation(
                "streamTwin", "WebSocket: a snapshot (unless `since` is given) then every change as it happens",
                "viewer",
                {"101": _json("Switching to WebSocket"),
                 "400": _error("`since` is not a whole number, a token is in the URL (`token_in_url`), "
                               "`bearer.TOKEN` is offered without `venue-gateway` (`bad_subprotocol`), or the "
                               "handshake is broken", "bad_request", "token_in_url", "bad_subprotocol"),
                 "403": _error("`Origin` is neither the gateway's own nor listed (`origin_refused`)",
                               "origin_refused"),
                 "503": _error("As many streams are open as api.max_streams allows, or (without a token in the "
                               "request) a quarter of it wait for their token (`too_many_streams`)",
                               "too_many_streams"),
                 "426": {**_error("Not a WebSocket handshake (`upgrade_required`)", "upgrade_required"),
                         "headers": {"Upgrade": {"required": True, "schema": {"const": "websocket"}}}}},
                description="Frames are JSON text: {type: snapshot, twin} or {type: changes, from, to, changes}. "
                            "The token: `Authorization: Bearer`, or from a browser the subprotocols "
                            "`venue-gateway` and `bearer.TOKEN` (answered `venue-gateway`), or the first message "
                            "{\"token\": TOKEN}; never in the URL. A request with `Origin` must come from the "
                            "gateway's own origin or one of `api.stream_origins`. The frames and close codes: "
                            "docs/twin-stream.md.",
                parameters=[_query("since", integer(0, MAX_INT64), "the version the client has: no snapshot, the "
                                                                    "changes after it")])},
            "/api/v1/twin/assets/{id}": {"get": _operation(
                "getAsset", "One asset", "viewer",
                {"200": _json("Asset", ref("Asset"), {"ETag": ETAG}), "404": _error("No such asset", "not_found")},
                parameters=[_ASSET_ID])},
            "/api/v1/twin/assets/{id}/desired": {"patch": _operation(
                "patchDesired", "Merge into the asset's desired state (RFC 7396); answered once it is on disk",
                "admin",
                {"200": _json("The asset after the change", ref("Asset"), {"ETag": ETAG}),
                 "404": _error("No such asset", "not_found"),
                 "412": _error("If-Match does not match the asset's version", "version_mismatch"),
                 "422": _error("The asset's owner cannot take this desired state (keys it has not, values out of "
                               "range: `desired_refused`), or the twin cannot hold it (nested too deep, too large: "
                               "`invalid_state`): nothing was changed", "desired_refused", "invalid_state"),
                 "503": _error("The twin is held, or the change is in effect but the store cannot write it yet "
                               "(retried)", "store_unavailable")},
                parameters=[_ASSET_ID, {"name": "If-Match", "in": "header", "schema": {"type": "string"},
                                        "description": "The asset version the change is based on (\"7\"; * for "
                                                       "any)"}],
                body={"type": "object", "description": "A JSON merge patch (RFC 7396): null removes a key"})},
            "/api/v1/telemetry": {"get": _operation(
                "getTelemetry", "Telemetry history for backfill, in sequence order, paged by `since`", "viewer",
                {"200": _json("Readings", ref("Readings")), "400": _error("A bad parameter", "bad_request")},
                description="Each reading has a sequence number; ask again with `since` = the answer's `to` while "
                            "`more`. `oldest` is the first sequence number still kept: above `since` + 1, "
                            "retention has removed the readings between.",
                parameters=[_query("since", integer(0, MAX_INT64, 0), "readings after this sequence number"),
                            _query("asset", {"type": "string"}, "only this asset's"),
                            _query("metric", {"type": "string"}, "only this metric"),
                            _query("limit", integer(1, MAX_READINGS, DEFAULT_READINGS), "the most readings")])},
            "/api/v1/compliance": {"get": _operation(
                "getCompliance", "Sound-level compliance now: each zone's rolling LAeq (1, 15, 60 min), maximum, "
                "and every limit's state, projection to the show's end and the level that can be kept", "viewer",
                {"200": _json("Compliance", ref("Compliance")),
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
                parameters=[_query("from", ref("Time"), "the first minute's start"),
                            _query("to", ref("Time"), "the end"),
                            _query("zone", {"type": "string"}, "only this zone's rows")])},
            "/api/v1/effects": {
                "post": _operation(
                    "fireEffect", "Fire a preset or an inline effect (or, with preview, render it without sending)",
                    "operator",
                    {"202": _json("Fired", ref("Fired")),
                     "200": _json("The preview: each zone's colour every step_ms", ref("Preview")),
                     "400": _error("Not an effect this gateway can fire; the message says why", "bad_json",
                                   "bad_body", "bad_request", "bad_effect"),
                     "404": _error("No such preset", "unknown_preset"),
                     "429": _error("It would light a zone sooner after the last effect there than show.max_flash_hz "
                                   "allows; Retry-After says when it is taken", "too_soon")},
                    body=ref("EffectRequest")),
                "delete": _operation(
                    "stopEffects", "Stop every effect: a blackout of the wristbands", "operator",
                    {"202": _json("Blackout fired", ref("Fired"))}),
            },
            "/api/v1/blackout": {"post": _operation(
                "blackout", "Stop every effect and black out DMX (as OSC /vg/blackout)", "operator",
                {"202": _json("The stop fired, and the universes blacked out", {"allOf": [ref("Fired"), {
                    "type": "object", "required": ["universes"],
                    "properties": {"universes": {"type": "array", "items": {"type": "integer"}}}}]})},
                description="The universes' desired levels are cleared, so the light stays dark, across a restart "
                            "too, until a level is raised.")},
            "/api/v1/tempo": {
                "get": _operation("getTempo", "The show's tempo", "viewer",
                                  {"200": _json("The tempo now", ref("Tempo"))}),
                "put": _operation(
                    "setTempo", "Set the show's tempo (presets without their own bpm or period follow it)",
                    "operator",
                    {"200": _json("The tempo now", ref("Tempo")),
                     "400": _error("Not a tempo; the message says why", "bad_json", "bad_body", "bad_request",
                                   "bad_tempo")},
                    body={"type": "object", "required": ["bpm"], "additionalProperties": False,
                          "properties": {"bpm": {"type": "number", "minimum": 1, "maximum": 999}}}),
            },
            "/api/v1/tempo/tap": {"post": _operation(
                "tapTempo", "One tap of tap tempo, timed as it arrives; from the second tap within 2.5 s, the taps' "
                "mean interval sets the tempo", "operator", {"200": _json("The tempo now", ref("Tempo"))})},
            "/api/v1/openapi.json": {"get": _operation(
                "getOpenApi", "This document", None, {"200": _json("OpenAPI 3.1", ref("OpenApi"))})},
            "/metrics": {"get": _operation(
                "getMetrics", "Prometheus metrics (text format)", "viewer",
                {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": components(show),
            "responses": {
                "Unauthorized": {**_error("No token, or one that is not valid", "unauthorized"),
                                 "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                                                                  "description": "Bearer"}}},
            },
        },
    }
