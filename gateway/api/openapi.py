"""The OpenAPI 3.1 document of the HTTP API, kept beside the routes it describes. Every operation has an id and
every body a schema; the bounds of parameters and bodies come from the same constants and tables the handlers
check with, and the enums of presets and zones from the running configuration. Tests hold it to the server: the
routes are exactly its paths, live responses of every operation validate against it, and Schemathesis (requests
generated from it) finds no disagreement."""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.api import DEFAULT_READINGS, MAX_CHANGES, MAX_READINGS, admin, cues, dmx, timeline, ui
from gateway.api.auth import MAX_INT64
from gateway.api.operations import error, json_answer, operation
from gateway.api.schemas import components, integer, ref
from gateway.show.engine import RECENT
from gateway.show.settings import ShowSection

ETAG = ("The version, quoted", {"type": "string", "pattern": '^"[0-9]+"$'})


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


_ASSET_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
             "description": "The asset's id, e.g. amp:r01.1"}



def document(show: ShowSection | None = None, universes: list[int] | None = None) -> dict[str, Any]:
    """The document for a gateway whose [show] section is `show` (its presets and zones are enums) and whose DMX
    universes are `universes` (an enum too)."""
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
            "/api/v1/health": {"get": operation(
                "getHealth", "Health of the gateway and each driver and service", None,
                {"200": json_answer("Health: without a valid token, the status alone", {"oneOf": [
                    ref("Health"), ref("HealthStatus")]})},
                description="Anyone gets the status; the details (errors, device paths, node addresses, the "
                            "broker, free disk) need a valid token of any role.")},
            "/api/v1/twin": {"get": operation(
                "getTwin", "The whole twin", "viewer",
                {"200": json_answer("Snapshot", ref("Twin"), {"ETag": ETAG}),
                 "304": json_answer("Unchanged since the ETag given", None, {"ETag": ETAG})},
                parameters=[{"name": "If-None-Match", "in": "header", "schema": {"type": "string"},
                             "description": "ETags (or *) the client holds: 304 when the twin is at one"}])},
            "/api/v1/twin/changes": {"get": operation(
                "getTwinChanges", "Changes after version `since`, in version order", "viewer",
                {"200": json_answer("Changes", ref("Changes")),
                 "400": error("A bad parameter (`bad_request`), or `since` ahead of the twin's version (`ahead`: the "
                               "version came from another history of the twin; take a snapshot)",
                               "bad_request", "ahead"),
                 "410": error("`since` is older than the retained log: take a snapshot", "gone")},
                parameters=[_query("since", integer(0, MAX_INT64), "the version the client has", True),
                            _query("limit", integer(1, MAX_CHANGES, MAX_CHANGES), "the most changes to answer")])},
            "/api/v1/twin/stream": {"get": operation(
                "streamTwin", "WebSocket: a snapshot (unless `since` is given) then every change as it happens",
                "viewer",
                {"101": json_answer("Switching to WebSocket"),
                 "400": error("`since` is not a whole number, a token is in the URL (`token_in_url`), "
                               "`bearer.TOKEN` is offered without `venue-gateway` (`bad_subprotocol`), or the "
                               "handshake is broken", "bad_request", "token_in_url", "bad_subprotocol"),
                 "403": error("`Origin` is neither the gateway's own nor listed (`origin_refused`)",
                               "origin_refused"),
                 "503": error("As many streams are open as api.max_streams allows, or (without a token in the "
                               "request) a quarter of it wait for their token (`too_many_streams`)",
                               "too_many_streams"),
                 "426": {**error("Not a WebSocket handshake (`upgrade_required`)", "upgrade_required"),
                         "headers": {"Upgrade": {"required": True, "schema": {"const": "websocket"}}}}},
                description="Frames are JSON text: {type: snapshot, twin} or {type: changes, from, to, changes}. "
                            "The token: `Authorization: Bearer`, or from a browser the subprotocols "
                            "`venue-gateway` and `bearer.TOKEN` (answered `venue-gateway`), or the first message "
                            "{\"token\": TOKEN}; never in the URL. A request with `Origin` must come from the "
                            "gateway's own origin or one of `api.stream_origins`. The frames and close codes: "
                            "docs/twin-stream.md.",
                parameters=[_query("since", integer(0, MAX_INT64), "the version the client has: no snapshot, the "
                                                                    "changes after it")])},
            "/api/v1/twin/assets/{id}": {"get": operation(
                "getAsset", "One asset", "viewer",
                {"200": json_answer("Asset", ref("Asset"), {"ETag": ETAG}), "404": error("No such asset", "not_found")},
                parameters=[_ASSET_ID])},
            "/api/v1/twin/assets/{id}/desired": {"patch": operation(
                "patchDesired", "Merge into the asset's desired state (RFC 7396); answered once it is on disk",
                "admin",
                {"200": json_answer("The asset after the change", ref("Asset"), {"ETag": ETAG}),
                 "404": error("No such asset", "not_found"),
                 "412": error("If-Match does not match the asset's version", "version_mismatch"),
                 "422": error("The asset's owner cannot take this desired state (keys it has not, values out of "
                               "range: `desired_refused`), or the twin cannot hold it (nested too deep, too large: "
                               "`invalid_state`): nothing was changed", "desired_refused", "invalid_state"),
                 "503": error("The twin is held, or the change is in effect but the store cannot write it yet "
                               "(retried)", "store_unavailable")},
                parameters=[_ASSET_ID, {"name": "If-Match", "in": "header", "schema": {"type": "string"},
                                        "description": "The asset version the change is based on (\"7\"; * for "
                                                       "any)"}],
                body={"type": "object", "description": "A JSON merge patch (RFC 7396): null removes a key"})},
            "/api/v1/telemetry": {"get": operation(
                "getTelemetry", "Telemetry history for backfill, in sequence order, paged by `since`", "viewer",
                {"200": json_answer("Readings", ref("Readings")), "400": error("A bad parameter", "bad_request")},
                description="Each reading has a sequence number; ask again with `since` = the answer's `to` while "
                            "`more`. `oldest` is the first sequence number still kept: above `since` + 1, "
                            "retention has removed the readings between.",
                parameters=[_query("since", integer(0, MAX_INT64, 0), "readings after this sequence number"),
                            _query("asset", {"type": "string"}, "only this asset's"),
                            _query("metric", {"type": "string"}, "only this metric"),
                            _query("limit", integer(1, MAX_READINGS, DEFAULT_READINGS), "the most readings")])},
            "/api/v1/compliance": {"get": operation(
                "getCompliance", "Sound-level compliance now: each zone's rolling LAeq (1, 15, 60 min), maximum, "
                "and every limit's state, projection to the show's end and the level that can be kept", "viewer",
                {"200": json_answer("Compliance", ref("Compliance")),
                 "404": error("No [compliance] section in the configuration", "not_configured")})},
            "/api/v1/compliance/history.csv": {"get": operation(
                "getComplianceHistory", "The per-minute sound-level history as CSV (RFC 4180), for the authorities",
                "viewer",
                {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}},
                         "headers": {"Content-Disposition": {"required": True, "schema": {"type": "string"},
                                                             "description": "attachment; its file name"}}},
                 "400": error("`from` or `to` is not a time, or `from` is not before `to`", "bad_request"),
                 "404": error("No [compliance] section in the configuration", "not_configured")},
                description="One row per zone and minute: time_utc, time_local, zone, laeq_1min_db, laeq_15min_db, "
                            "laeq_60min_db, lmax_db, limit, limit_db, state, projected_db. `from` defaults to 24 "
                            "hours before `to`, `to` to now.",
                parameters=[_query("from", ref("Time"), "the first minute's start"),
                            _query("to", ref("Time"), "the end"),
                            _query("zone", {"type": "string"}, "only this zone's rows")])},
            "/api/v1/effects": {
                "post": operation(
                    "fireEffect", "Fire a preset or an inline effect (or, with preview, render it without sending)",
                    "operator",
                    {"202": json_answer("Fired", ref("Fired")),
                     "200": json_answer("The preview: each zone's colour every step_ms", ref("Preview")),
                     "400": error("Not an effect this gateway can fire; the message says why", "bad_json",
                                   "bad_body", "bad_request", "bad_effect"),
                     "404": error("No such preset", "unknown_preset"),
                     "429": error("It would light a zone sooner after the last effect there than show.max_flash_hz "
                                   "allows; Retry-After says when it is taken", "too_soon")},
                    body=ref("EffectRequest")),
                "delete": operation(
                    "stopEffects", "Stop every effect: a blackout of the wristbands", "operator",
                    {"202": json_answer("Blackout fired", ref("Fired"))}),
            },
            "/api/v1/blackout": {"post": operation(
                "blackout", "Stop every effect and black out DMX (as OSC /vg/blackout)", "operator",
                {"202": json_answer("The stop fired, and the universes blacked out", {"allOf": [ref("Fired"), {
                    "type": "object", "required": ["universes"],
                    "properties": {"universes": {"type": "array", "items": {"type": "integer"}}}}]})},
                description="The universes' desired levels are cleared, so the light stays dark, across a restart "
                            "too, until a level is raised.")},
            "/api/v1/show": {"get": operation(
                "getShow", "The show: zones, presets (whether each flashes), tempo, flash cap, recent effects",
                "viewer",
                {"200": json_answer("The show as the engine holds it", ref("Show"))},
                description=f"The recent effects are the last {RECENT} fired (stops too), newest first, each with its "
                            "start (wall clock and show clock), lead time, zone groups and delivery per transmitter.")},
            "/api/v1/tempo": {
                "get": operation("getTempo", "The show's tempo", "viewer",
                                  {"200": json_answer("The tempo now", ref("Tempo"))}),
                "put": operation(
                    "setTempo", "Set the show's tempo (presets without their own bpm or period follow it)",
                    "operator",
                    {"200": json_answer("The tempo now", ref("Tempo")),
                     "400": error("Not a tempo; the message says why", "bad_json", "bad_body", "bad_request",
                                   "bad_tempo")},
                    body={"type": "object", "required": ["bpm"], "additionalProperties": False,
                          "properties": {"bpm": {"type": "number", "minimum": 1, "maximum": 999}}}),
            },
            "/api/v1/tempo/tap": {"post": operation(
                "tapTempo", "One tap of tap tempo, timed as it arrives; from the second tap within 2.5 s, the taps' "
                "mean interval sets the tempo", "operator", {"200": json_answer("The tempo now", ref("Tempo"))})},
            "/api/v1/openapi.json": {"get": operation(
                "getOpenApi", "This document", None, {"200": json_answer("OpenAPI 3.1", ref("OpenApi"))})},
            "/metrics": {"get": operation(
                "getMetrics", "Prometheus metrics (text format)", "viewer",
                {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
            **cues.PATHS,
            **admin.PATHS,
            **dmx.paths(universes or []),
            **ui.PATHS,
            **timeline.PATHS,
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": components(show),
            "responses": {
                "Unauthorized": {**error("No token, or one that is not valid", "unauthorized"),
                                 "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                                                                  "description": "Bearer"}}},
            },
        },
    }
