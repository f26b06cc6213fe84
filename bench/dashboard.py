"""Dashboard: what the live web dashboard costs the box and how fast it is, on the demo venue (`venue-gateway run`
on config/demo.toml, its devices moved to a temporary directory) at 10x sim speed.

(a) 20 dashboards' traffic as the page makes it, from a client process: the change stream (a WebSocket with the
    token as subprotocol, as a browser opens it), the /dashboard, /show and /alerts fetches on opening, and the DMX
    view's 4 Hz poll for a few of them (the overview's /health every 5 s for the others). The daemon's event-loop
    lag p99 (its /metrics histogram) and CPU with none and with 20, and the CPU each dashboard adds; beside them an
    idle asyncio loop's lag alone, the machine's floor.
(b) First load to a live overview in headless Chromium: Navigation Timing of the page, then the time from the
    login's submit until the overview shows live values, measured in the page (performance.now()).
(c) A one-hour plot of 10 series at 1 Hz (a store seeded with them before the daemon starts): the /series request's
    time and bytes on the wire, and the time the page's own plot code (js/plot.js over uPlot) takes to draw it.

(b) and (c) need Chromium and Selenium (peers.chromium); without them they are left out and said so."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import idle_loop
from bench.common import (
    PYTHON,
    ROOT,
    Figure,
    child,
    exit_on_signals,
    figures_table,
    percentile,
    table,
    title,
    wait_until,
)
from bench.daemon_probe import DaemonApi, cpu_seconds, histogram_quantile_ms, lag_histogram
from gateway.database import open_database
from peers import PeerMissing
from peers.ports import LOOPBACK, free_port

SPEED = 10.0
DASHBOARDS = 20
DMX_POLLERS = 4  # of the dashboards, those with the DMX view open
DMX_POLL_HZ = 4.0
VIEWER, OPERATOR = "demo-viewer-token", "demo-operator-token"  # config/demo.toml's documented tokens
OPENING = ("/api/v1/dashboard", "/api/v1/show", "/api/v1/alerts")  # what the page fetches when it opens
SERIES, SERIES_HOURS = 10, 1.0  # (c): 10 series at 1 Hz over an hour
TARGET_LAG_P99_MS = 5.0
TARGET_FIRST_LOAD_MS = 1000.0
TARGET_PLOT_MS = 300.0
DEMO_DEVICES = "/tmp/venue-gateway"
# The page's markers (its data-testid names): the login's token field, and a live value on the overview.
LOGIN_INPUT = '[data-testid="login-token"]'
OVERVIEW_LIVE = '[data-testid="view-overview"] [data-testid="box-live"]'
LIVE_TEXT = r"live, twin version \d+"  # what OVERVIEW_LIVE says once the change stream's snapshot is in
DMX_PATHS = ("/api/v1/dmx?universe=1", "/api/v1/dmx?universe=2")  # what the DMX view polls: the demo's universes
HEALTH, HEALTH_S = ("/api/v1/health",), 5.0  # what the overview polls, and how often


# -- the demo venue ---------------------------------------------------------------------------------------
def _replace(text: str, pattern: str, new: str) -> str:
    """`pattern` (a regular expression) replaced in config/demo.toml's text; it must be there (the demo changed)."""
    out, n = re.subn(pattern, new, text, flags=re.MULTILINE)
    if n == 0:
        raise RuntimeError(f"config/demo.toml has no {pattern!r}: bench/dashboard.py must follow it")
    return out


def demo_config(directory: Path, port: int, speed: float = SPEED) -> Path:
    """config/demo.toml on `port`, its devices, data and OSC port moved, at `speed`, without its cloud section
    (the demo's broker is started by `venue-gateway demo`, not here)."""
    text = (ROOT / "config" / "demo.toml").read_text()
    text = _replace(text, r'^listen = "127\.0\.0\.1:8080"', f'listen = "{LOOPBACK}:{port}"')
    text = _replace(text, r'^listen = "127\.0\.0\.1:9000"', f'listen = "{LOOPBACK}:{free_port()}"')
    text = _replace(text, r'^data_dir = .*$', 'data_dir = "data"')
    text = _replace(text, r"^speed = 1\.0$", f"speed = {speed}")
    text = _replace(text, r'"\.\./models/', f'"{ROOT}/models/')
    text = _replace(text, r"^\[cloud\]\n(?:[^\[\n].*\n)*", "")
    text = text.replace(DEMO_DEVICES, str(directory / "dev"))
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


def seed_series(data_dir: Path, now: float) -> list[tuple[str, str]]:
    """An hour of SERIES series at 1 Hz, ending at `now`, written into the store before the daemon opens it."""
    conn = open_database(data_dir / "gateway.db", "normal")
    pairs = [(f"bench:plot{i:02d}", "level") for i in range(SERIES)]
    seconds = int(SERIES_HOURS * 3600)
    with conn:
        for i, (asset, metric) in enumerate(pairs):
            sid = conn.execute("INSERT INTO series (asset, metric) VALUES (?, ?)", (asset, metric)).lastrowid
            conn.executemany("INSERT INTO telemetry (ts, series, value) VALUES (?, ?, ?)",
                             [(now - seconds + s, sid, 50 + 20 * ((s * (i + 3)) % 600) / 600 + i)
                              for s in range(seconds)])
    conn.close()
    return pairs


# -- (a) the dashboards' traffic --------------------------------------------------------------------------
@dataclass
class Traffic:
    frames: int = 0
    stream_bytes: int = 0
    requests: int = 0
    request_bytes: int = 0
    polls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    closed: int = 0  # streams that ended before the run did


async def dashboard(base: str, token: str, dmx: bool, until: float, traffic: Traffic) -> None:
    """One open dashboard: the opening fetches, the change stream read to the end, and the open view's poll: the
    DMX view's if `dmx` (every universe at once, the next round 1/DMX_POLL_HZ after the last began, as
    js/views/dmx.js does), else the overview's /health every HEALTH_S (js/views/overview.js)."""
    headers = {"Authorization": f"Bearer {token}"}  # on fetches; a browser's WebSocket cannot carry it
    async with aiohttp.ClientSession() as session:
        async def fetch(path: str) -> None:
            async with session.get(base + path, headers=headers) as response:
                body = await response.read()
            traffic.requests += 1
            traffic.request_bytes += len(body)
            traffic.statuses[response.status] += 1

        for path in OPENING:
            await fetch(path)

        async def poll(paths: tuple[str, ...], every_s: float) -> None:
            while time.monotonic() < until:
                began = time.monotonic()
                await asyncio.gather(*(fetch(path) for path in paths))
                traffic.polls += dmx
                await asyncio.sleep(min(max(0.0, every_s - (time.monotonic() - began)), until - time.monotonic()))

        poller = asyncio.create_task(poll(DMX_PATHS, 1 / DMX_POLL_HZ) if dmx else poll(HEALTH, HEALTH_S))
        async with session.ws_connect(base.replace("http", "ws", 1) + "/api/v1/twin/stream",
                                      protocols=("venue-gateway", f"bearer.{token}"), headers={"Origin": base},
                                      heartbeat=None, compress=15) as ws:  # permessage-deflate, as a browser offers
            while (left := until - time.monotonic()) > 0:
                try:
                    message = await ws.receive(timeout=left)
                except TimeoutError:
                    break
                if message.type != aiohttp.WSMsgType.TEXT:
                    traffic.closed += 1
                    break
                json.loads(message.data)  # as the page does
                traffic.frames += 1
                traffic.stream_bytes += len(message.data.encode())
        await poller


async def dashboards(base: str, count: int, seconds: float) -> dict[str, Any]:
    until = time.monotonic() + seconds
    traffic = Traffic()
    await asyncio.gather(*(dashboard(base, OPERATOR if i < DMX_POLLERS else VIEWER, i < DMX_POLLERS, until, traffic)
                           for i in range(count)))
    return {"frames": traffic.frames, "stream_bytes": traffic.stream_bytes, "requests": traffic.requests,
            "request_bytes": traffic.request_bytes, "polls": traffic.polls, "closed": traffic.closed,
            "statuses": {str(k): v for k, v in sorted(traffic.statuses.items())}}


@dataclass(frozen=True)
class Window:
    lag_p50_ms: float  # the daemon's own summary (/health's loop_lag: its last 1200 timers of 50 ms, a minute)
    lag_p99_ms: float
    lag_max_ms: float
    histogram_p99_ms: float  # from /metrics' histogram over the window, interpolated in its bucket
    cpu: float  # share of one core
    seconds: float


def measure(api: DaemonApi, pid: int, seconds: float) -> Window:
    before, cpu0, t0 = lag_histogram(api.get("/metrics")), cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    after, cpu1, t1 = lag_histogram(api.get("/metrics")), cpu_seconds(pid), time.monotonic()
    lag = api.health()["loop_lag"]
    return Window(lag["p50_ms"], lag["p99_ms"], lag["max_ms"], histogram_quantile_ms(before, after, 0.99),
                  (cpu1 - cpu0) / (t1 - t0), t1 - t0)


# -- (b) and (c) in Chromium ------------------------------------------------------------------------------
# Run in the page (Selenium's execute_async_script): log in with the token as a person would, and time from the
# submit until the overview shows a live value. `arguments`: token, selectors, then the callback. The time the
# page took to reach the form (and the 50 ms a person takes to type) are not counted: Navigation Timing has those.
LOGIN_TO_LIVE_JS = """
const [token, input, live, pattern, done] = arguments;
const shown = () => { const e = document.querySelector(live); return e && new RegExp(pattern).test(e.textContent); };
const field = document.querySelector(input);
const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
setter.call(field, token);
field.dispatchEvent(new Event('input', {bubbles: true}));
let began = 0;
const check = () => {
  if (shown()) done({submit: began, live: performance.now()});
  else requestAnimationFrame(check);
};
setTimeout(() => {  // once the form has rendered with the token typed
  began = performance.now();
  field.form.requestSubmit();
  check();
}, 50);
"""

# The page's own modules: GET /series through js/api.js, the answer joined by js/plot.js and drawn by its Plot
# component (uPlot) into a box at the view's width; each step timed, the draw until the frame after it.
PLOT_JS = """
const [token, pairs, from, to, done] = arguments;
(async () => {
  const {html, render} = await import('/ui/js/lib.js');
  const {createApi} = await import('/ui/js/api.js');
  const {Plot, loadSeries, seriesData, plotWidth} = await import('/ui/js/plot.js');
  const box = document.createElement('div');
  box.style.width = '1000px';
  document.body.appendChild(box);
  const api = createApi(token);
  const t0 = performance.now();
  const doc = await loadSeries(api, pairs, from, to, plotWidth(box));
  const t1 = performance.now();
  const data = seriesData(doc);
  const t2 = performance.now();
  render(html`<${Plot} data=${data} height=${300} label="bench" testid="bench-plot"/>`, box);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const t3 = performance.now();
  const points = doc.series.reduce((n, s) => n + s.data[0].length, 0);
  render(null, box);
  box.remove();
  done({fetch: t1 - t0, join: t2 - t1, draw: t3 - t2, points, reduced: doc.series.every((s) => s.reduced)});
})().catch((e) => done({error: String(e)}));
"""


def first_load(base: str, runs: int) -> list[dict[str, float]]:
    """`runs` first loads of the page (the browser's cache emptied before each) to a live overview."""
    from peers.chromium import chromium

    out = []
    with chromium(1440, 900) as driver:
        for _ in range(runs):
            driver.execute_cdp_cmd("Network.clearBrowserCache", {})
            driver.get("about:blank")
            driver.get(base + "/ui/")
            wait_until(lambda: driver.execute_script("return !!document.querySelector(arguments[0])", LOGIN_INPUT),
                       10, what="the login form")
            nav = driver.execute_script("const n = performance.getEntriesByType('navigation')[0];"
                                        "return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd,"
                                        " bytes: n.transferSize};")
            live = driver.execute_async_script(LOGIN_TO_LIVE_JS, VIEWER, LOGIN_INPUT, OVERVIEW_LIVE, LIVE_TEXT)
            fetched = driver.execute_script("return performance.getEntriesByType('resource')"
                                            ".reduce((n, r) => n + r.transferSize, 0)")
            out.append({"dcl": nav["dcl"], "load": nav["load"], "login_to_live": live["live"] - live["submit"],
                        "bytes": nav["bytes"] + fetched})
    return out


def plot_in_browser(base: str, pairs: list[tuple[str, str]], start: float, end: float,
                    runs: int) -> list[dict[str, Any]]:
    from peers.chromium import chromium

    with chromium(1440, 900) as driver:
        driver.get(base + "/ui/")
        return [driver.execute_async_script(PLOT_JS, VIEWER, [list(p) for p in pairs], start, end)
                for _ in range(runs)]


def series_request(base: str, pairs: list[tuple[str, str]], start: float, end: float, points: int,
                   runs: int) -> list[tuple[float, int, int]]:
    """GET /series as the page asks for it (gzip accepted): (seconds, bytes on the wire, bytes of JSON) each run."""
    query = "&".join([f"series={a}/{m}" for a, m in pairs] + [f"from={start:.3f}", f"to={end:.3f}",
                                                               f"points={points}"])
    out = []
    for _ in range(runs):
        request = urllib.request.Request(f"{base}/api/v1/series?{query}", headers={
            "Authorization": f"Bearer {VIEWER}", "Accept-Encoding": "gzip"})
        began = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:
            wire = response.read()
            encoding = response.headers.get("Content-Encoding")
        seconds = time.perf_counter() - began
        plain = gzip.decompress(wire) if encoding == "gzip" else wire
        out.append((seconds, len(wire), len(plain)))
    return out


# -- the run ----------------------------------------------------------------------------------------------
def run(idle_s: float = 60.0, load_s: float = 60.0, warmup_s: float = 5.0, browser_runs: int = 5) -> list[Figure]:
    title(f"Dashboard: the demo venue at {SPEED:g}x; {DASHBOARDS} dashboards' traffic ({DMX_POLLERS} polling DMX at"
          f" {DMX_POLL_HZ:g} Hz) {load_s:g} s against none {idle_s:g} s; first load and a {SERIES}-series hour's"
          f" plot in Chromium")
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="vg-bench-dashboard-") as tmp_name:
        tmp = Path(tmp_name)
        floor = idle_loop.floor(30.0, tmp)  # first, alone: the machine's own floor, the daemon not yet running
        port = free_port()
        base = f"http://{LOOPBACK}:{port}"
        api = DaemonApi(base, VIEWER)
        config = demo_config(tmp, port)
        end = time.time()
        pairs = seed_series(tmp / "data", end)
        args = [str(ROOT / ".venv/bin/venue-gateway"), "run", "--config", str(config)]
        with child(args, tmp / "daemon.log") as daemon:
            wait_until(lambda: api.health()["status"] == "ok", 60, daemon, "the daemon reporting status ok")
            time.sleep(warmup_s)
            idle = measure(api, daemon.pid, idle_s)
            with child([PYTHON, "-m", "bench.dashboard", "--clients-for", str(load_s + warmup_s), "--base", base],
                       tmp / "clients.log", stdout=subprocess.PIPE) as clients:
                time.sleep(warmup_s)
                loaded = measure(api, daemon.pid, load_s)
                assert clients.stdout is not None
                out, _ = clients.communicate(timeout=load_s + warmup_s + 60)
            traffic = json.loads(out)
            figures += report_load(idle, loaded, traffic, load_s + warmup_s, floor)
            try:
                loads = first_load(base, browser_runs)
                plots = plot_in_browser(base, pairs, end - 3600 * SERIES_HOURS, end, browser_runs)
            except PeerMissing as exc:
                print(f"(b) and (c) in the browser not measured: {exc}")
                loads, plots = [], []
            requests = series_request(base, pairs, end - 3600 * SERIES_HOURS, end, 1000, browser_runs * 4)
            figures += report_browser(loads, plots, requests)
    return figures


def report_load(idle: Window, loaded: Window, traffic: dict[str, Any], seconds: float,
                floor: dict[str, float]) -> list[Figure]:
    per_cpu = (loaded.cpu - idle.cpu) / DASHBOARDS
    print(table(["loop lag (last minute)", "p50 ms", "p99 ms", "max ms", "p99 ms (histogram)", "CPU % of a core",
                 "seconds"], [
        ["idle asyncio loop alone (the machine's floor)", f"{floor['p50_ms']:.3f}", f"{floor['p99_ms']:.3f}",
         f"{floor['max_ms']:.3f}", "-", "-", f"{floor['samples'] * 0.05:.0f}"],
        *([label, f"{w.lag_p50_ms:.3f}", f"{w.lag_p99_ms:.3f}", f"{w.lag_max_ms:.3f}", f"{w.histogram_p99_ms:.1f}",
           f"{100 * w.cpu:.1f}", f"{w.seconds:.0f}"] for label, w in (("daemon, no dashboard", idle),
                                                                      (f"daemon, {DASHBOARDS} dashboards", loaded)))]))
    print(f"per dashboard: {100 * per_cpu:.2f} % of a core; stream {traffic['frames'] / DASHBOARDS / seconds:.1f}"
          f" frames/s, {traffic['stream_bytes'] / DASHBOARDS / seconds / 1024:.1f} KiB/s of JSON (deflate offered, "
          "as a browser does; sent as it is); "
          f"{traffic['requests']} requests ({traffic['polls']} DMX polls), answers {traffic['statuses']};"
          f" streams closed early {traffic['closed']}")
    return [
        Figure(f"loop lag p99, {DASHBOARDS} dashboards", loaded.lag_p99_ms, "ms", TARGET_LAG_P99_MS,
               peer=idle.lag_p99_ms, peer_label="none"),
        Figure("daemon CPU per dashboard", 100 * per_cpu, "%", peer=100 * idle.cpu, peer_label="daemon, none"),
    ]


def report_browser(loads: list[dict[str, float]], plots: list[dict[str, Any]],
                   requests: list[tuple[float, int, int]]) -> list[Figure]:
    figures = []
    if loads:
        rows = [[f"load {i + 1}", f"{r['dcl']:.0f}", f"{r['load']:.0f}", f"{r['login_to_live']:.0f}",
                 f"{r['load'] + r['login_to_live']:.0f}", f"{r['bytes'] / 1024:.1f}"] for i, r in enumerate(loads)]
        print(table(["first load, empty cache", "DOMContentLoaded ms", "load ms", "login->live ms", "to live ms",
                     "KiB on the wire"], rows))
        to_live = [r["load"] + r["login_to_live"] for r in loads]
        figures += [Figure("first load to a live overview (median)", statistics.median(to_live), "ms",
                           TARGET_FIRST_LOAD_MS, peer=statistics.median(r["load"] for r in loads),
                           peer_label="page load alone"),
                    Figure("first load, KiB on the wire", statistics.median(r["bytes"] for r in loads) / 1024, "KiB",
                           250.0)]
    errors = [p["error"] for p in plots if "error" in p]
    if errors:
        print(f"(c) the plot in the page failed: {errors[0]}")
    drawn = [p for p in plots if "error" not in p]
    seconds = [r[0] for r in requests]
    print(f"GET /series ({SERIES} series, {SERIES_HOURS:g} h at 1 Hz, 1000 columns): p50"
          f" {1000 * percentile(seconds, 50):.1f} ms, p99 {1000 * percentile(seconds, 99):.1f} ms,"
          f" {requests[0][1] / 1024:.1f} KiB on the wire ({requests[0][2] / 1024:.1f} KiB of JSON)")
    if drawn:
        print(table(["plot in the page", "fetch ms", "join ms", "draw ms", "total ms", "points"],
                    [[f"run {i + 1}", f"{p['fetch']:.1f}", f"{p['join']:.1f}", f"{p['draw']:.1f}",
                      f"{p['fetch'] + p['join'] + p['draw']:.1f}", str(p["points"])] for i, p in enumerate(drawn)]))
        total = statistics.median(p["fetch"] + p["join"] + p["draw"] for p in drawn)
        figures.append(Figure(f"{SERIES}-series hour served and drawn (median)", total, "ms", TARGET_PLOT_MS,
                              peer=statistics.median(p["draw"] for p in drawn), peer_label="draw alone"))
    figures.append(Figure(f"GET /series {SERIES} x 1 h, KiB on the wire", requests[0][1] / 1024, "KiB",
                          peer=requests[0][2] / 1024, peer_label="JSON"))
    return figures


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="measured without dashboards (default 60,"
                        " the daemon's own lag summary's minute)")
    parser.add_argument("--seconds", type=float, default=60.0, help=f"measured with {DASHBOARDS} (default 60)")
    parser.add_argument("--browser-runs", type=int, default=5, help="first loads and plots (default 5)")
    parser.add_argument("--clients-for", type=float, metavar="S", help=argparse.SUPPRESS)  # the clients' child
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients_for:
        print(json.dumps(asyncio.run(dashboards(args.base, DASHBOARDS, args.clients_for))))
        return
    print(figures_table(run(args.idle_seconds, args.seconds, browser_runs=args.browser_runs)))


if __name__ == "__main__":
    main()
