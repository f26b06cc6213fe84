"""The OpenAPI document's component schemas: every body the HTTP API takes or answers, with the bounds the handlers
check with (the same constants) and this gateway's presets and zones as enums. `gateway.api.openapi` puts them
beside the paths."""

from __future__ import annotations

from typing import Any

from gateway.alerts import RECENT_ALERTS
from gateway.api import MAX_CHANGES, MAX_PREVIEW_MS, MAX_READINGS, PREVIEW_STEP_MS
from gateway.logring import LOG_RECORDS, MAX_MESSAGE_CHARS
from gateway.show.effects import COLOUR, FIELDS, KINDS
from gateway.show.engine import MAX_LEAD_MS, RECENT
from gateway.show.settings import ShowSection


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def integer(minimum: int, maximum: int, default: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        out["default"] = default
    return out


def components(show: ShowSection) -> dict[str, Any]:
    """The document's component schemas for a gateway whose [show] section is `show` (its presets and zones as
    enums)."""
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
                           "assets": {"type": "object", "additionalProperties": ref("Asset")}},
        },
        "Changes": {
            "type": "object", "required": ["from", "to", "more", "changes"],
            "properties": {"from": {"type": "integer", "minimum": 0}, "to": {"type": "integer", "minimum": 0},
                           "more": {"type": "boolean", "description": "`limit` cut the answer: ask from `to`"},
                           "changes": {"type": "array", "items": ref("Change"), "maxItems": MAX_CHANGES}},
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
        "HealthStatus": {
            "type": "object", "required": ["status"], "additionalProperties": False,
            "description": "The health without a valid token: the status alone",
            "properties": {"status": {"enum": ["ok", "degraded", "starting"]}},
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
                "drivers": {"type": "object", "additionalProperties": ref("UnitHealth")},
                "services": {"type": "object", "additionalProperties": ref("UnitHealth")},
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
                "loop_lag": ref("Lateness"),
                "scheduling": {"type": "string", "description": "how the event loop's thread is scheduled: `fifo N` "
                               "(gateway.realtime_priority), `normal`, or `normal: why` when the system refused"},
                "dmx": {"type": "object", "required": ["universes", "frame_rate_hz", "frames", "skipped_frames",
                                                       "frame_lateness"],
                        "properties": {"universes": {"type": "array", "items": {"type": "integer"}},
                                       "frame_rate_hz": {"type": "number"}, "frames": {"type": "integer"},
                                       "skipped_frames": {"type": "integer"}, "frame_lateness": ref("Lateness")}},
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
                "effect": ref("Effect"),
                "zones": {**zone_list, "description": "default: the preset's, else every zone"},
                "lead_ms": {**integer(0, MAX_LEAD_MS), "description": f"default: show.lead_ms ({show.lead_ms})"},
                "preview": {"type": "boolean", "default": False,
                            "description": "render it without sending anything: 200 with each zone's colours"},
                "duration_ms": {**integer(1, MAX_PREVIEW_MS, 4000), "description": "how much to preview"},
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
                "effect": ref("RenderedEffect"),
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
                            "required": ["limit", "limit_db", "level_db", "partial", "state", "projected_db",
                                         "allowed_db"],
                            "properties": {
                                "limit": {"type": "string", "examples": ["LAeq,15min"]},
                                "limit_db": {"type": "number"}, "level_db": number,
                                "partial": {"type": "boolean", "description": "level_db is only the energy already "
                                            "certain: the window is not yet covered enough (compliance.min_coverage) "
                                            "to be judged whole"},
                                "state": {"enum": ["ok", "warning", "over"]},
                                "projected_db": {**number, "description": "at the show's end, at the last minute's "
                                                                          "level"},
                                "allowed_db": {**number, "description": "the level that can be kept from now to the "
                                                                        "end without going over"}}}}}}},
                "ignored_meters": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Show": {
            "type": "object", "required": ["tempo_bpm", "max_flash_hz", "lead_ms", "zones", "presets", "recent"],
            "properties": {
                "tempo_bpm": {"type": "number", "minimum": 1, "maximum": 999},
                "max_flash_hz": {"type": "number", "description": "the photosensitivity cap (show.max_flash_hz)"},
                "lead_ms": {"type": "integer", "minimum": 0, "description": "how far ahead an effect is fired"},
                "zones": {"type": "array", "items": {
                    "type": "object", "required": ["name", "index", "distance_m", "delay_ms"],
                    "properties": {"name": {"type": "string"},
                                   "index": {"type": "integer", "minimum": 0, "maximum": 15},
                                   "distance_m": {"type": "number", "minimum": 0},
                                   "delay_ms": {"type": "integer", "minimum": 0,
                                                "description": "its start after the stage's: the sound's travel"}}}},
                "presets": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "kind", "colour", "zones", "flashing", "flash_hz", "intensity_from"],
                    "properties": {
                        "name": {"type": "string"}, "kind": {"enum": list(KINDS)},
                        "colour": {"type": "string"},
                        "zones": {"type": "array", "items": {"type": "string"},
                                  "description": "its default zones (empty: every zone)"},
                        "flashing": {"type": "boolean", "description": "a kind that flashes (strobe, pulse, ...)"},
                        "flash_hz": {"type": "number", "minimum": 0,
                                     "description": "flashes a second at the tempo now (0: it does not flash)"},
                        "intensity_from": {"enum": ["fixed", "energy"]}}}},
                "recent": {"type": "array", "maxItems": RECENT, "description": "the effects fired, newest first",
                           "items": {
                               "type": "object",
                               "required": ["effect_id", "preset", "kind", "colour", "zones", "starts_at", "show_ms",
                                            "lead_ms", "groups", "delivery"],
                               "properties": {
                                   "effect_id": {"type": "string"}, "preset": {"type": ["string", "null"]},
                                   "kind": {"enum": list(KINDS)},
                                   "colour": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
                                   "zones": {"type": "array", "items": {"type": "string"}},
                                   "starts_at": {"type": "string", "format": "date-time"},
                                   "show_ms": {"type": "integer", "description": "its start on the show clock"},
                                   "lead_ms": {"type": "integer", "minimum": 0},
                                   "groups": {"type": "array", "items": {
                                       "type": "object", "required": ["zones", "delay_ms", "show_ms"],
                                       "properties": {"zones": {"type": "array", "items": {"type": "string"}},
                                                      "delay_ms": {"type": "integer", "minimum": 0},
                                                      "show_ms": {"type": "integer"}}}},
                                   "delivery": {"type": "object", "additionalProperties": {"type": "string"},
                                                "description": "per transmitter: `sending`, `not sent: why`, or "
                                                               "what it said later"}}}},
            },
        },
        "Alerts": {
            "type": "object", "required": ["standing", "recent"],
            "properties": {
                "standing": {"type": "array", "items": {
                    "type": "object", "required": ["key", "kind", "text", "doc", "since"],
                    "properties": {"key": {"type": "string"}, "kind": {"type": "string"},
                                   "text": {"type": "string"},
                                   "doc": {"type": "object", "description": "the alert as the cloud gets it"},
                                   "since": {"type": "string", "format": "date-time"}}}},
                "recent": {"type": "array", "maxItems": RECENT_ALERTS, "items": {
                    "type": "object", "required": ["time", "kind", "text", "key", "state"],
                    "properties": {"time": {"type": "string", "format": "date-time"}, "kind": {"type": "string"},
                                   "text": {"type": "string"}, "key": {"type": ["string", "null"]},
                                   "state": {"enum": ["raised", "cleared", "event"]}}}},
            },
        },
        "RunningConfig": {
            "type": "object", "required": ["file", "gateway", "api", "drivers"],
            "description": "The configuration's tables as loaded, every default filled in; secrets `[redacted]`",
            "properties": {"file": {"type": "string"}, "gateway": {"type": "object"}, "api": {"type": "object"},
                           "drivers": {"type": "object", "additionalProperties": {
                               "type": "object", "required": ["type", "enabled", "after"]}}},
        },
        "ConfigCheck": {
            "type": "object", "required": ["ok", "problems"],
            "properties": {"ok": {"type": "boolean"},
                           "problems": {"type": "array", "items": {"type": "string"},
                                        "description": "`FILE: key.path: what is wrong (what is allowed)`"}},
        },
        "Log": {
            "type": "object", "required": ["last", "oldest", "records"],
            "properties": {
                "last": {"type": "integer", "minimum": 0, "description": "the newest record's sequence number"},
                "oldest": {"type": ["integer", "null"], "description": "the oldest record's still kept"},
                "records": {"type": "array", "maxItems": LOG_RECORDS, "items": {
                    "type": "object", "required": ["seq", "time", "level", "logger", "message"],
                    "properties": {"seq": {"type": "integer", "minimum": 1},
                                   "time": {"type": "string", "format": "date-time"},
                                   "level": {"type": "string", "examples": ["INFO", "WARNING"]},
                                   "logger": {"type": "string"},
                                   "message": {"type": "string", "maxLength": MAX_MESSAGE_CHARS}}}},
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
