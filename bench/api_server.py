"""The server side of bench.api, run in its own process: a real Gateway (store, loop lag, API) with a twin of
N assets, optionally changing every 5 ms, or a bare aiohttp app serving the same snapshot bytes (the floor)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path

from aiohttp import web

from gateway import config as configuration
from gateway.api.app import ApiService
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.readings import Reading
from gateway.twin import Twin

TOKEN = "bench-viewer-token"
METRICS = ("temperature_c", "current_a", "fan_rpm", "load_ohm", "protect")
CHURN_EVERY_S = 0.005
CHURN_ASSETS = 20  # assets changed per churn step: 100 readings every 5 ms, 20,000 readings/s


def populate(twin: Twin, assets: int) -> None:
    """Declare `assets` amplifiers and report every metric of each once."""
    now = time.time()
    for i in range(assets):
        twin.declare(f"amp:{i:05d}", "amplifier", "stage", "bench")
    twin.apply_readings([Reading(now, f"amp:{i:05d}", m, round(20 + i % 97 + j * 0.25, 3))
                         for i in range(assets) for j, m in enumerate(METRICS)], "bench")


def write_config(directory: Path, port: int) -> Path:
    path = directory / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "bench"
venue = "bench-hall"
data_dir = "."
log_level = "warning"

[api]
listen = "127.0.0.1:{port}"

[[api.tokens]]
role = "viewer"
demo_token = "{TOKEN}"
""")
    return path


async def _churn(gw: Gateway, assets: int) -> None:
    """Publish a small batch through Ingest every 5 ms, so every snapshot request meets a new version."""
    start = 0
    while True:
        await asyncio.sleep(CHURN_EVERY_S)
        now = time.time()
        gw.ingest.publish([Reading(now, f"amp:{(start + k) % assets:05d}", m, now % 100)
                           for k in range(CHURN_ASSETS) for m in METRICS], "bench")
        start += CHURN_ASSETS


async def serve_gateway(directory: Path, port: int, assets: int, churn: bool, stop: asyncio.Event) -> None:
    cfg = configuration.load(write_config(directory, port))
    tokens = Tokens([(TOKEN, "viewer")])
    gw = Gateway(cfg, tokens, data_dir=directory / "data")
    await gw.store.open(gw.twin)
    populate(gw.twin, assets)
    await gw.store.flush(gw.twin)  # the first write of every asset is startup work, not the steady state
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(gw.store.run(gw.twin)), loop.create_task(gw.loop_lag.run())]
    if churn:
        tasks.append(loop.create_task(_churn(gw, assets)))
    api = ApiService(gw, tokens)
    await api.start()
    try:
        await stop.wait()
    finally:
        await api.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gw.store.close(gw.twin)


async def serve_bare(port: int, assets: int, stop: asyncio.Event) -> None:
    """No middleware, no auth, no twin lookup: the same bytes from a constant, with the same ETag logic."""
    twin = Twin("bench", "bench-hall")
    populate(twin, assets)
    body, etag = twin.snapshot_json(), f'"{twin.version}"'

    async def snapshot(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})

    app = web.Application()
    app.router.add_get("/api/v1/twin", snapshot)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def main_async(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.mode == "bare":
        await serve_bare(args.port, args.assets, stop)
    else:
        await serve_gateway(Path(args.dir), args.port, args.assets, args.mode == "churn", stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_server", description=__doc__)
    parser.add_argument("--mode", choices=["gateway", "churn", "bare"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--dir", default=".", help="for the configuration and the store (gateway modes)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
