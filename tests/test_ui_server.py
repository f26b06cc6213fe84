"""The dashboard's server side, in-process (aiohttp's test server on a real socket): the page's files with their
types, security headers, compression and revalidation; no way out of the page's directory; the first load's
weight; the layout the page logs in with, per role; the floor plan; and the [dashboard] section's checks."""

from __future__ import annotations

import asyncio
import gzip
import posixpath
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import config
from gateway.api import ui
from gateway.api.app import build_app
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.readings import Reading
from gateway.settings import Role
from gateway.ui.settings import MAX_FLOOR_PLAN_BYTES

VIEWER, OPERATOR, ADMIN = "v-token-123", "o-token-123", "a-token-123"
TOKENS: list[tuple[str, Role]] = [(VIEWER, "viewer"), (OPERATOR, "operator"), (ADMIN, "admin")]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # what the server checks of a PNG: its signature
FIRST_LOAD_MAX = 250_000  # bytes on the wire, compressed: the bound

VENUE = """
[gateway]
id = "gw"
venue = "hall"
data_dir = "data"
[dmx]
universes = [1, 3]
[show]
[[show.zones]]
name = "floor"
index = 0
[[show.zones]]
name = "balcony"
index = 1
[[show.zones]]
name = "bar"
index = 2
[[show.presets]]
name = "intro"
[inference.zone_capacity]
floor = 1200
"""
PLACED = """
[dashboard]
floor_plan = "plan.png"
[[dashboard.zones]]
name = "floor"
x = 10
y = 20
w = 50
h = 40
[[dashboard.zones]]
name = "bar"
x = 70
"""


async def _gateway(directory: Path, text: str) -> Gateway:
    gw = Gateway(config.parse(directory / "gw.toml", text), Tokens(TOKENS))
    await gw.store.open(gw.twin)
    return gw


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    (tmp_path / "plan.png").write_bytes(PNG)
    gw = await _gateway(tmp_path, VENUE + PLACED)
    gw.twin.declare("zone:balcony", "zone", "balcony", "sim")
    gw.ingest.publish([Reading(1.7e9, "zone:balcony", "capacity", 400.0)], owner="sim")
    yield gw
    await gw.store.close(gw.twin)


@pytest.fixture
async def client(gateway: Gateway, aiohttp_client: Any) -> TestClient[Any, Any]:
    c: TestClient[Any, Any] = await aiohttp_client(build_app(gateway, Tokens(TOKENS)), auto_decompress=False)
    return c


def _security(headers: Any) -> None:
    assert headers["Content-Security-Policy"] == ui.CSP
    assert "script-src 'self'" in ui.CSP and "frame-ancestors 'none'" in ui.CSP and "unsafe" not in ui.CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"


async def test_the_root_sends_a_browser_to_the_page(client: TestClient[Any, Any]) -> None:
    for path in ("/", "/ui"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "/ui/"
        _security(resp.headers)
    resp = await client.get("/ui/", headers={"Accept-Encoding": "identity"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert await resp.read() == (ui.STATIC / "index.html").read_bytes()
    _security(resp.headers)


TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".md": "text/plain; charset=utf-8"}


async def test_every_file_is_served_as_it_is_with_its_type_and_the_strict_policy(
        client: TestClient[Any, Any]) -> None:
    files = sorted(p for p in ui.STATIC.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    names = {p.relative_to(ui.STATIC).as_posix() for p in files}
    assert {"index.html", "js/app.js", "js/api.js", "js/live.js", "js/lib.js", "js/views/index.js",
            "js/views/overview.js", "js/views/admin.js", "css/app.css", "vendor/preact.module.js",
            "vendor/LICENSE-preact"} <= names
    for path in files:
        name = path.relative_to(ui.STATIC).as_posix()
        resp = await client.get(f"/ui/{name}", headers={"Accept-Encoding": "identity"})
        assert resp.status == 200, name
        expected = "text/plain; charset=utf-8" if path.name.startswith("LICENSE") else TYPES[path.suffix]
        assert resp.headers["Content-Type"] == expected, name
        assert "Content-Encoding" not in resp.headers
        assert await resp.read() == path.read_bytes(), name
        assert resp.headers["Cache-Control"] == ("no-cache" if name == "index.html" else ui.ASSET_CACHE)
        _security(resp.headers)


async def test_answers_are_gzipped_when_allowed_and_revalidated_with_a_strong_etag(
        client: TestClient[Any, Any]) -> None:
    source = (ui.STATIC / "js" / "app.js").read_bytes()
    resp = await client.get("/ui/js/app.js", headers={"Accept-Encoding": "br, gzip;q=0.8"})
    packed = await resp.read()
    assert resp.headers["Content-Encoding"] == "gzip" and resp.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(packed) == source and len(packed) < len(source) / 2
    etag = resp.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}-gz"', etag)  # strong: no W/, and not the identity answer's tag
    plain = await client.get("/ui/js/app.js", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in plain.headers and await plain.read() == source
    assert plain.headers["ETag"] != etag and not plain.headers["ETag"].startswith("W/")

    again = await client.get("/ui/js/app.js", headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["ETag"] == etag
    _security(again.headers)
    other = await client.get("/ui/js/app.js", headers={"Accept-Encoding": "gzip", "If-None-Match": '"other"'})
    assert other.status == 200


async def _raw_status(client: TestClient[Any, Any], target: bytes) -> int:
    """The status for a request line sent byte for byte (a client library would tidy `..` away first)."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
    await writer.drain()
    status = await reader.readline()
    await reader.read()
    writer.close()
    return int(status.split()[1])


TRAVERSALS = [
    b"/ui/../gateway/config.py", b"/ui/../../../../../etc/passwd", b"/ui/js/../../settings.py",
    b"/ui/%2e%2e/settings.py", b"/ui/%2E%2E/%2e%2e/api/ui.py", b"/ui/js/%2e%2e/%2e%2e/settings.py",
    b"/ui//etc/passwd", b"/ui/%2Fetc%2Fpasswd", b"/ui/..%5csettings.py", b"/ui/js\\..\\..\\settings.py",
    b"/ui/js/app.js%00", b"/ui/js/app.js%00.png", b"/ui/%00", b"/ui/__init__.py", b"/ui/settings.py",
    b"/ui/js/", b"/ui/.", b"/ui/js/app.js/", b"/ui/JS/APP.JS",
]


async def test_nothing_outside_the_page_is_reached(client: TestClient[Any, Any]) -> None:
    assert await _raw_status(client, b"/ui/js/app.js") == 200
    for target in TRAVERSALS:
        assert await _raw_status(client, target) == 404, target


IMPORT = re.compile(r"""(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]|import\s*\(?\s*['"]([^'"]+)['"]""")


def _imports(source: str) -> list[str]:
    """The modules a module imports (statically, or by a dynamic import of a literal path)."""
    return [a or b for a, b in IMPORT.findall(source)]


async def test_the_first_load_is_small(client: TestClient[Any, Any]) -> None:
    """index.html, its styles and every module it imports, however deep, gzipped as served: within 250 KB."""
    index = (ui.STATIC / "index.html").read_text()
    todo = re.findall(r'(?:href|src)="([^"#:]+)"', index)
    seen: set[str] = set()
    sizes: dict[str, int] = {}
    resp = await client.get("/ui/", headers={"Accept-Encoding": "gzip"})
    sizes["index.html"] = len(await resp.read())
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        resp = await client.get(f"/ui/{name}", headers={"Accept-Encoding": "gzip"})
        assert resp.status == 200, f"{name} is named by the page but not served"
        sizes[name] = len(await resp.read())
        if name.endswith(".js"):
            base = posixpath.dirname(name)
            for module in _imports((ui.STATIC / name).read_text()):
                assert module.startswith("."), f"{name} imports {module}: not a file of the page"
                todo.append(posixpath.normpath(posixpath.join(base, module)))
    total = sum(sizes.values())
    assert {"js/app.js", "js/lib.js", "js/live.js", "js/api.js", "js/views/index.js", "js/views/overview.js",
            "vendor/preact.module.js", "css/app.css"} <= set(sizes)
    largest = ", ".join(f"{n} {s / 1000:.1f}" for n, s in sorted(sizes.items(), key=lambda i: -i[1])[:5])
    figure = f"first load: {total / 1000:.1f} KB gzipped in {len(sizes)} files (largest, KB: {largest})"
    print(figure)
    assert total <= FIRST_LOAD_MAX, figure


async def test_the_layout_answers_each_role_and_refuses_without_a_valid_token(
        client: TestClient[Any, Any]) -> None:
    for token, role in TOKENS:
        resp = await client.get("/api/v1/dashboard", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200
        doc = await resp.json()
        assert doc["role"] == role
    assert set(doc) == {"role", "gateway", "venue", "version", "started_at", "now", "zones", "floor_plan", "presets",
                        "universes"}
    assert (doc["gateway"], doc["venue"], doc["presets"], doc["universes"]) == ("gw", "hall", ["intro"], [1, 3])
    assert doc["floor_plan"] == "/api/v1/dashboard/floor-plan"
    zones = {z["name"]: z for z in doc["zones"]}
    assert list(zones) == ["floor", "balcony", "bar"]  # the show's order
    assert zones["floor"] == {"name": "floor", "x": 10, "y": 20, "w": 50, "h": 40, "capacity": 1200}
    assert zones["balcony"]["capacity"] == 400  # from the zone's reported capacity
    assert zones["bar"]["capacity"] is None and zones["bar"]["x"] == 70  # its other coordinates: its place in a row
    assert (zones["bar"]["y"], zones["bar"]["h"]) == (zones["balcony"]["y"], zones["balcony"]["h"])
    assert zones["balcony"]["x"] + zones["balcony"]["w"] < zones["bar"]["x"] + zones["bar"]["w"] <= 100
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic dTpw"}):
        resp = await client.get("/api/v1/dashboard", headers=headers)
        assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"


async def test_the_floor_plan_is_served_to_a_token_as_configured(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/dashboard/floor-plan", headers={"Authorization": f"Bearer {VIEWER}"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
    assert await resp.read() == PNG
    assert "sandbox" in resp.headers["Content-Security-Policy"] and resp.headers["X-Content-Type-Options"]
    again = await client.get("/api/v1/dashboard/floor-plan", headers={"Authorization": f"Bearer {VIEWER}",
                                                                       "If-None-Match": resp.headers["ETag"]})
    assert again.status == 304 and await again.read() == b""
    assert (await client.get("/api/v1/dashboard/floor-plan")).status == 401


async def test_without_a_floor_plan_and_with_the_page_off(tmp_path: Path, aiohttp_client: Any) -> None:
    gw = await _gateway(tmp_path, VENUE + "[dashboard]\nenabled = false\n")
    try:
        client = await aiohttp_client(build_app(gw, Tokens(TOKENS)))
        for path in ("/", "/ui/", "/ui/js/app.js"):
            assert (await client.get(path, allow_redirects=False)).status == 404, path
        auth = {"Authorization": f"Bearer {VIEWER}"}
        doc = await (await client.get("/api/v1/dashboard", headers=auth)).json()
        assert doc["floor_plan"] is None and [z["name"] for z in doc["zones"]] == ["floor", "balcony", "bar"]
        resp = await client.get("/api/v1/dashboard/floor-plan", headers=auth)
        assert resp.status == 404 and (await resp.json())["error"] == "not_configured"
    finally:
        await gw.store.close(gw.twin)


def _problems(directory: Path, text: str) -> list[str]:
    """What check-config says of the file's [dashboard] (config.parse with what it needs from this box)."""
    with pytest.raises(config.ConfigError) as caught:
        config.parse(directory / "gw.toml", text, box=True)
    return [str(p) for p in caught.value.problems if p.path.startswith("dashboard")]


def test_the_dashboard_section_is_checked_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    zones = _problems(tmp_path, VENUE + '[dashboard]\n[[dashboard.zones]]\nname = "stage"\n')
    assert zones == ["dashboard.zones[0].name: 'stage' is not a zone of the show (allowed: floor, balcony, bar)"]
    placed = _problems(tmp_path, VENUE + '[[dashboard.zones]]\nname = "floor"\nx = 60\nw = 50\ny = -1\n'
                                         '[[dashboard.zones]]\nname = "floor"\n')
    assert placed == ["dashboard.zones[0].y: -1 is out of range (allowed: from 0 to 100)",
                      "dashboard.zones[1].name: 'floor' is placed twice (allowed: each zone once)",
                      "dashboard.zones[0].w: x + w is 110, off the plan (allowed: at most 100)"]
    assert _problems(tmp_path, VENUE + '[dashboard]\nenabled = "yes"\n') == [
        "dashboard.enabled: must be true or false (got 'yes')"]

    def plan(name: str, data: bytes | None) -> list[str]:
        if data is not None:
            (tmp_path / name).write_bytes(data)
        return _problems(tmp_path, VENUE + f'[dashboard]\nfloor_plan = "{name}"\n')

    assert plan("plan.gif", b"GIF89a") == ["dashboard.floor_plan: 'plan.gif' is not an image the page can draw "
                                           "(allowed: .png, .jpg, .jpeg, .svg)"]
    assert plan("gone.png", None) == [f"dashboard.floor_plan: the floor plan {tmp_path / 'gone.png'} does not exist "
                                      "(allowed: the path of a readable file)"]
    assert plan("huge.svg", b"<svg>" + b" " * MAX_FLOOR_PLAN_BYTES) == [
        f"dashboard.floor_plan: the floor plan {tmp_path / 'huge.svg'} is larger than 2 MB (allowed: an image up to "
        "that size)"]
    assert plan("fake.png", b"<svg/>") == [
        f"dashboard.floor_plan: the floor plan {tmp_path / 'fake.png'} is not the image/png its name says (allowed: "
        ".png, .jpg, .jpeg, .svg files)"]
    (tmp_path / "dir.svg").mkdir()
    assert plan("dir.svg", None) == [f"dashboard.floor_plan: the floor plan {tmp_path / 'dir.svg'} is not a regular "
                                     "file (allowed: the path of a readable file)"]
    (tmp_path / "ok.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    cfg = config.parse(tmp_path / "gw.toml", VENUE + '[dashboard]\nfloor_plan = "ok.jpg"\n')
    assert not [p for p in config.check_box(cfg) if p.path.startswith("dashboard")]


async def test_a_floor_plan_gone_at_start_is_logged_and_the_map_drawn_without_it(
        tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    gw = await _gateway(tmp_path, VENUE + PLACED)  # (no plan.png in the directory)
    try:
        client = await aiohttp_client(build_app(gw, Tokens(TOKENS)))
        auth = {"Authorization": f"Bearer {VIEWER}"}
        assert (await (await client.get("/api/v1/dashboard", headers=auth)).json())["floor_plan"] is None
        assert (await client.get("/api/v1/dashboard/floor-plan", headers=auth)).status == 404
        assert (await client.get("/ui/")).status == 200
        assert f"dashboard: no floor plan on the map: the floor plan {tmp_path / 'plan.png'} does not exist" in \
            caplog.text
    finally:
        await gw.store.close(gw.twin)
