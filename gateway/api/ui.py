"""The dashboard's side of the API: the page itself (gateway/ui/static), served by the daemon on the API's port, and
what the page asks for first (`GET /api/v1/dashboard`: the token's role and the venue's layout, and the floor plan).

The page's files are read into memory once, when the app is built, each compressed once too; a request names one
of them by its path in a dict, so nothing outside the directory can be reached whatever the path holds."""

from __future__ import annotations

import gzip
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway import __version__
from gateway.api import GATEWAY
from gateway.api.auth import ROLE_KEY, json_error, requires
from gateway.api.operations import error, json_answer, operation
from gateway.twin import rfc3339
from gateway.ui.settings import FLOOR_PLAN_TYPES, read_floor_plan

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.daemon import Gateway

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"
# The page's routes, beside the API's: not API paths, so not in the OpenAPI document.
PAGE_ROUTES = ("/", "/ui", "/ui/", "/ui/{path}")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY"}
# The page itself is asked for again each time (a new version is seen at once); its modules and styles are kept a
# minute, then revalidated with their ETag (a 304 without a body).
INDEX_CACHE = "no-cache"
ASSET_CACHE = "max-age=60"

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
         ".json": "application/json", ".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
GZIP_MIN = 256  # smaller files are sent as they are: compressing them saves nothing


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None  # None when compressing saves nothing
    etag: str  # of the body; the gzipped one's is this with "-gz" before its closing quote
    content_type: str
    cache: str


def _content_type(path: Path) -> str | None:
    if path.name.startswith("LICENSE"):
        return "text/plain; charset=utf-8"
    return TYPES.get(path.suffix.lower())


def load_static(root: Path = STATIC) -> dict[str, StaticFile]:
    """Every file under `root` the page may ask for, by its path relative to it (`js/app.js`); files of a type not
    known here (and hidden ones) are not served."""
    files: dict[str, StaticFile] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        content_type = _content_type(path)
        if not path.is_file() or content_type is None or any(p.startswith((".", "__")) for p in relative.parts):
            continue
        body = path.read_bytes()
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        digest = hashlib.sha256(body).hexdigest()[:32]
        files[relative.as_posix()] = StaticFile(
            body, packed if len(body) >= GZIP_MIN and len(packed) < len(body) else None, f'"{digest}"',
            content_type, INDEX_CACHE if relative.as_posix() == "index.html" else ASSET_CACHE)
    return files


def accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (RFC 9110 12.5.3: named or `*`, with a q above 0)."""
    allowed: dict[str, bool] = {}
    for item in header.split(","):
        name, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        allowed[name.strip().lower()] = q > 0
    return allowed.get("gzip", allowed.get("x-gzip", allowed.get("*", False)))


def _none_match(header: str | None, etag: str) -> bool:
    """If-None-Match (weak comparison, RFC 9110 13.1.2): `*`, or one of its tags is this one."""
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _answer(request: web.Request, file: StaticFile) -> web.Response:
    packed = file.gzipped is not None and accepts_gzip(request.headers.get("Accept-Encoding", ""))
    etag = f'{file.etag[:-1]}-gz"' if packed else file.etag
    headers = {**SECURITY, "ETag": etag, "Cache-Control": file.cache, "Vary": "Accept-Encoding"}
    if _none_match(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = file.content_type
    if packed:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=file.gzipped if packed else file.body, headers=headers)


def _not_found() -> web.HTTPException:
    return web.HTTPNotFound(text="no such file of the dashboard", headers=SECURITY)


def _page_routes(app: web.Application) -> None:
    files = load_static()
    index = files.get("index.html")

    async def root(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/", headers=SECURITY)

    async def page(request: web.Request) -> web.Response:
        if index is None:
            raise _not_found()
        return _answer(request, index)

    async def static(request: web.Request) -> web.Response:
        found = files.get(request.match_info["path"])
        if found is None:
            raise _not_found()
        return _answer(request, found)

    app.router.add_get("/", root)
    app.router.add_get("/ui", root)
    app.router.add_get("/ui/", page)
    app.router.add_get("/ui/{path:.+}", static)


# -- the layout --------------------------------------------------------------------------------------------------

FLOOR_PLAN = web.AppKey("vg_floor_plan", tuple)  # (bytes, media type, ETag), or () when there is none
BASE = web.AppKey("vg_ui_base", str)  # the API's, for the floor plan's path


def _floor_plan(config: Config) -> tuple[bytes, str, str] | tuple[()]:
    name = config.dashboard.floor_plan
    if name is None:
        return ()
    try:
        data, content_type = read_floor_plan(config.path.parent / name)
    except ValueError as exc:  # check-config says so too, and the start's check of the box
        log.warning("dashboard: no floor plan on the map: %s", exc)
        return ()
    return data, content_type, f'"{hashlib.sha256(data).hexdigest()[:32]}"'


def _capacity(gw: Gateway, zone: str) -> int | float | None:
    inference = gw.config.inference
    if inference is not None and zone in inference.zone_capacity:
        return inference.zone_capacity[zone]
    asset = gw.twin.get(f"zone:{zone}")
    value = asset.reported.get("capacity") if asset is not None else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


@requires("viewer")
async def dashboard(request: web.Request) -> web.Response:
    """The token's role and what the page lays out: the venue, its zones on the plan, presets and universes."""
    gw = request.app[GATEWAY]
    cfg = gw.config
    now = time.time()
    places = cfg.dashboard.places([z.name for z in cfg.show.zones])
    doc: dict[str, Any] = {
        "role": request[ROLE_KEY], "gateway": cfg.gateway.id, "venue": cfg.gateway.venue, "version": __version__,
        "started_at": rfc3339(now - gw.health()["uptime_s"]), "now": rfc3339(now),
        "zones": [{"name": p.name, "x": p.x, "y": p.y, "w": p.w, "h": p.h, "capacity": _capacity(gw, p.name)}
                  for p in places],
        "floor_plan": f"{request.app[BASE]}/dashboard/floor-plan" if request.app[FLOOR_PLAN] else None,
        "presets": [p.name for p in cfg.show.presets],
        "universes": list(cfg.dmx.universes),
    }
    return web.Response(body=orjson.dumps(doc), content_type="application/json", headers={"Cache-Control": "no-store"})


@requires("viewer")
async def floor_plan(request: web.Request) -> web.Response:
    plan = request.app[FLOOR_PLAN]
    if not plan:
        raise json_error(web.HTTPNotFound, "not_configured", "no floor plan is configured (dashboard.floor_plan)")
    data, content_type, etag = plan
    # An SVG is a document: whatever it holds runs nothing, here or opened alone.
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox"}
    if _none_match(request.headers.get("If-None-Match"), etag):  # revalidated: the image (up to 2 MB) not again
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, headers={**headers, "Content-Type": content_type})


def add_routes(app: web.Application, base: str) -> None:
    """Add this module's routes under `base` (/api/v1) and beside it: the page, unless dashboard.enabled is false."""
    config = app[GATEWAY].config
    app[BASE] = base
    app[FLOOR_PLAN] = _floor_plan(config) if config.dashboard.enabled else ()
    app.router.add_get(f"{base}/dashboard", dashboard)
    app.router.add_get(f"{base}/dashboard/floor-plan", floor_plan)
    if config.dashboard.enabled:
        _page_routes(app)


_ZONE = {"type": "object", "required": ["name", "x", "y", "w", "h", "capacity"], "additionalProperties": False,
         "properties": {"name": {"type": "string"}, "x": {"type": "number", "minimum": 0, "maximum": 100},
                        "y": {"type": "number", "minimum": 0, "maximum": 100},
                        "w": {"type": "number", "minimum": 0, "maximum": 100},
                        "h": {"type": "number", "minimum": 0, "maximum": 100},
                        "capacity": {"type": ["number", "null"], "description": "people (inference.zone_capacity, "
                                                                                "or the zone's reported capacity)"}}}
_TIME = {"type": "string", "format": "date-time"}
_DASHBOARD = {
    "type": "object", "additionalProperties": False,
    "required": ["role", "gateway", "venue", "version", "started_at", "now", "zones", "floor_plan", "presets",
                 "universes"],
    "properties": {
        "role": {"enum": ["viewer", "operator", "admin"], "description": "the token's"},
        "gateway": {"type": "string"}, "venue": {"type": "string"}, "version": {"type": "string"},
        "started_at": _TIME, "now": {**_TIME, "description": "the box's clock when it answered"},
        "zones": {"type": "array", "items": _ZONE, "description": "the show's zones, in its order, placed on the "
                                                                  "plan (units 0-100 across and down)"},
        "floor_plan": {"type": ["string", "null"], "description": "the floor plan's path, or null"},
        "presets": {"type": "array", "items": {"type": "string"}},
        "universes": {"type": "array", "items": {"type": "integer"}},
    },
}

PATHS: dict[str, Any] = {  # this module's operations in the OpenAPI document
    "/api/v1/dashboard": {"get": operation(
        "getDashboard", "The token's role and the venue's layout for the dashboard (its login)", "viewer",
        {"200": json_answer("The role and the layout", _DASHBOARD)},
        description="The dashboard's first request: a valid token answers its role (what the page shows), the "
                    "zones' places on the map ([dashboard]), the presets and the DMX universes.")},
    "/api/v1/dashboard/floor-plan": {"get": operation(
        "getFloorPlan", "The floor plan drawn beneath the map's zones (dashboard.floor_plan)", "viewer",
        {"200": {"description": "The image, as configured",
                 "content": {t: {"schema": {"type": "string"}} for t in dict.fromkeys(FLOOR_PLAN_TYPES.values())},
                 "headers": {"ETag": {"required": True, "schema": {"type": "string"}}}},
         "304": {"description": "Unchanged since the ETag given (If-None-Match)"},
         "404": error("No floor plan is configured, or it could not be read at start", "not_configured")})},
}
