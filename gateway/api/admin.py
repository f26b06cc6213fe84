"""What the box says of itself, for the dashboard's overview and admin views: its alerts (viewer), and for the admin
its running configuration with every secret redacted, a configuration file checked exactly as `venue-gateway
check-config` checks it (nothing applied), and its recent log."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway import config as configuration
from gateway.alerts import RECENT_ALERTS
from gateway.api import GATEWAY
from gateway.api.auth import MAX_INT64, TOKENS, json_error, query_int, requires
from gateway.api.operations import error, json_answer, operation
from gateway.api.schemas import ref
from gateway.logring import LOG_RECORDS, MAX_MESSAGE_CHARS
from gateway.schema import Problem
from gateway.twin import rfc3339

REDACTED = "[redacted]"
# A key naming a secret, by a word of its name (demo_token, demo_key, api-key, showKey, password, client_secret, psk,
# ...): its value is never answered. One whose last word is file, env or path names where a secret is kept (a path,
# a variable), not the secret, and is shown.
_SECRET_WORDS = frozenset({"token", "tokens", "key", "keys", "apikey", "secret", "secrets", "password", "passwords",
                           "passwd", "passphrase", "psk", "credential", "credentials", "private", "auth",
                           "authorization", "bearer", "pass", "pin", "pwd"})
# A word that ends in one of these is a secret's name too, run together with another (showkey, bindkey, authtoken,
# secretkey, adminpassword); a word that merely begins with one is not (keyboard). A name like monkey is redacted
# with them: answering less than asked is the safe mistake.
_SECRET_ENDINGS = ("key", "keys", "token", "tokens", "secret", "secrets", "password", "passwd")
_LOCATION_WORDS = frozenset({"file", "env", "path"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")  # snake_case, kebab-case, camelCase, ALLCAPS; digits part words
CONFIG_TYPES = ("text/plain", "application/toml")  # what POST /config/check takes


def _names_secret(key: str) -> bool:
    words = [w.lower() for w in _WORD.findall(key)]
    if not words or words[-1] in _LOCATION_WORDS:
        return False
    return not _SECRET_WORDS.isdisjoint(words) or any(word.endswith(_SECRET_ENDINGS) for word in words)


def redacted(value: Any, is_secret: Callable[[str], bool], secret: bool = False) -> Any:
    """`value` (the configuration's sections: dataclasses, lists, tables, scalars) as JSON, with the value of every
    key that names a secret redacted, and any string that `is_secret` knows (a token's value, wherever it is). Below
    a key naming a secret, everything is redacted but the fields of a configuration table (a dataclass, whose own
    keys say which are secret: `tokens` holds each token's role and name beside its `demo_token`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: redacted(getattr(value, f.name), is_secret, _names_secret(f.name))
                for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): redacted(v, is_secret, secret or _names_secret(str(k))) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v, is_secret, secret) for v in value]
    if value is None:
        return None
    if secret:
        return REDACTED
    if isinstance(value, bool | int | float):
        return value
    text = str(value)  # a string, a path
    return REDACTED if is_secret(text) else text


def running_config(cfg: configuration.Config, is_secret: Callable[[str], bool]) -> dict[str, Any]:
    """The running configuration as the file's tables (with every default filled in), secrets redacted."""
    doc: dict[str, Any] = {"file": str(cfg.path)}
    for f in dataclasses.fields(cfg):
        if f.name not in ("path", "drivers"):
            doc[f.name] = redacted(getattr(cfg, f.name), is_secret, _names_secret(f.name))
    doc["drivers"] = {d.name: {"type": d.type, "enabled": d.enabled, "after": list(d.after),
                               **redacted(d.options, is_secret)} for d in cfg.drivers}
    return doc


def _json(doc: Any) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


@requires("viewer")
async def alerts(request: web.Request) -> web.Response:
    """The standing alerts (oldest first), and the recent ones raised and cleared (newest first)."""
    box = request.app[GATEWAY].alerts
    return _json({
        "standing": [{"key": key, "kind": a.kind, "text": a.text, "doc": a.doc, "since": rfc3339(a.at)}
                     for key, a in box.standing.items()],
        "recent": [{"time": rfc3339(a.at), "kind": a.kind, "text": a.text, "key": a.key, "state": a.state}
                   for a in reversed(box.recent)]})


@requires("admin")
async def get_config(request: web.Request) -> web.Response:
    tokens = request.app[TOKENS]
    return _json(running_config(request.app[GATEWAY].config, lambda text: tokens.role(text) is not None))


def _unloaded_modules(path: Path, text: str) -> list[str]:
    """The lines for drivers named `module:Class` whose module this gateway has not imported, or whose module does not
    already hold the name: checking them would import code (chosen by a request), which the API does not do."""
    try:
        drivers = tomllib.loads(text).get("drivers")
    except (tomllib.TOMLDecodeError, RecursionError):
        return []  # the check says what is wrong with the file
    lines = []
    for name, table in drivers.items() if isinstance(drivers, dict) else ():
        kind = table.get("type") if isinstance(table, dict) else None
        module, _, attr = kind.partition(":") if isinstance(kind, str) else ("", "", "")
        # loaded, and the name already in it: a package's module __getattr__ may import on first access
        if attr and (module not in sys.modules or attr not in vars(sys.modules[module])):
            lines.append(f"{path}: " + str(Problem(
                f"drivers.{name}.type", f"{kind!r} is a module this gateway has not loaded, and the HTTP API "
                "imports none (allowed: an installed driver's name here; check the file on the box with "
                "venue-gateway check-config)")))
    return lines


def _check(path: Path, text: str, box: bool) -> list[str]:
    """What `venue-gateway check-config` prints for `text` as the file `path` (its relative paths from there)."""
    try:
        configuration.parse(path, text, box=box)
    except configuration.ConfigError as exc:
        return exc.lines()
    return []


@requires("admin")
async def check_config(request: web.Request) -> web.Response:
    """A configuration file (TOML) checked as `venue-gateway check-config` checks it, as if it were the running
    configuration's file; nothing is applied."""
    if request.content_type not in CONFIG_TYPES:
        raise json_error(web.HTTPUnsupportedMediaType, "unsupported_media_type",
                         f"the body is {request.content_type} (allowed: {', '.join(CONFIG_TYPES)})")
    offline = request.query.get("offline", "false")
    if offline not in ("true", "false"):
        raise json_error(web.HTTPBadRequest, "bad_request", "query parameter offline must be true or false")
    body = await request.read()  # past api.max_body_kb: aiohttp's 413
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json_error(web.HTTPBadRequest, "bad_body", f"the body is not UTF-8 text: byte 0x{body[exc.start]:02x} "
                         f"at offset {exc.start} (allowed: TOML in UTF-8)") from None
    path = request.app[GATEWAY].config.path
    problems = _unloaded_modules(path, text) or await asyncio.to_thread(_check, path, text, offline == "false")
    return _json({"ok": not problems, "problems": problems})


@requires("admin")
async def log(request: web.Request) -> web.Response:
    """The recent log records after sequence number `after`, oldest first."""
    return _json(request.app[GATEWAY].log_ring.after(query_int(request, "after", 0)))


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/alerts", alerts)
    app.router.add_get(f"{base}/config", get_config)
    app.router.add_post(f"{base}/config/check", check_config)
    app.router.add_get(f"{base}/log", log)


PATHS: dict[str, Any] = {  # this module's operations in the OpenAPI document
    "/api/v1/alerts": {"get": operation(
        "getAlerts", "The alerts that stand now, and the recent ones raised and cleared", "viewer",
        {"200": json_answer("The alerts", ref("Alerts"))},
        description="An alert with a key stands until it is cleared (a zone back under its limit); one without a "
                    "key is an event (`state` `event`). These reach the cloud as `alert` events and front of house "
                    f"as OSC /vg/out/alert. `recent` keeps the last {RECENT_ALERTS}, newest first, with the alerts "
                    "the gateway sends the cloud alone (`unit_failed`, `not_sent`, each an `event`).")},
    "/api/v1/config": {"get": operation(
        "getConfig", "The running configuration, every secret redacted", "admin",
        {"200": json_answer("The configuration's tables, with every default filled in", ref("RunningConfig"))},
        description="The value of every key with a word naming a secret (token, key, password, secret, ...: "
                    f"`demo_token`, `demo_key`, `api-key`) is `{REDACTED}`, as is any value that is an API token; a "
                    "key whose last word is file, env or path (where a secret is kept) is shown.")},
    "/api/v1/config/check": {"post": {
        **operation(
            "checkConfig", "Check a configuration file as `venue-gateway check-config` does, applying nothing",
            "admin",
            {"200": json_answer("The problems, each line exactly as check-config prints it", ref("ConfigCheck")),
             "400": error("The body is not UTF-8 (`bad_body`), or `offline` is neither true nor false "
                          "(`bad_request`)", "bad_body", "bad_request"),
             "413": error("The body is larger than api.max_body_kb"),
             "415": error("The body is not text/plain or application/toml", "unsupported_media_type")},
            description="The file is judged as if it were the running configuration's (relative paths from its "
                        "directory), with what it needs from this box unless `offline` (as `check-config "
                        "--offline`). A driver named `module:Class` whose module the gateway has not loaded is "
                        "reported, not imported.",
            parameters=[{"name": "offline", "in": "query", "required": False,
                         "schema": {"enum": ["true", "false"], "default": "false"},
                         "description": "check the file alone, not what it needs from this box"}]),
        "requestBody": {"required": True, "content": {
            media: {"schema": {"type": "string", "description": "TOML"}} for media in CONFIG_TYPES}}}},
    "/api/v1/log": {"get": operation(
        "getLog", "The recent log, after a sequence number", "admin",
        {"200": json_answer("Log records, oldest first", ref("Log")),
         "400": error("`after` is not a whole number", "bad_request")},
        description=f"The gateway keeps its last {LOG_RECORDS} log records, each message (with its traceback) cut "
                    f"at {MAX_MESSAGE_CHARS} characters. Ask again with `after` = the answer's `last` for the records "
                    "since; an `after` above `last` (from before a restart) answers every record kept.",
        parameters=[{"name": "after", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT64, "default": 0},
                     "description": "the last sequence number the client has"}])},
}
