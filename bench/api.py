"""API: latency of GET /api/v1/twin (10,000 assets) in full and as a 304, on a still and on a changing twin,
server in its own process, against a bare aiohttp handler serving the same bytes (the framework's floor)."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.api_server import CHURN_EVERY_S, TOKEN
from bench.common import (
    PYTHON,
    Figure,
    child,
    exit_on_signals,
    figures_table,
    latency_line,
    percentile,
    title,
    wait_until,
)
from peers.ports import LOOPBACK, free_port

TARGET_FULL_P99_MS = 25.0
TARGET_304_P99_MS = 2.0
WARMUP = 20


@dataclass
class Run:
    full: list[float] = field(default_factory=list)
    not_modified: list[float] = field(default_factory=list)
    body_bytes: int = 0
    etags: list[str] = field(default_factory=list)  # of the measured full responses
    unexpected: int = 0  # a status other than the one expected


async def client(base: str, full: int, conditional: int, pause: float = 0.0) -> Run:
    """Sequential requests on one kept-alive connection: `full` plain GETs (`pause` s apart), then
    `conditional` ones with the ETag last seen."""
    run = Run()
    url = f"{base}/api/v1/twin"
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        for i in range(WARMUP + full):
            t = time.perf_counter()
            async with s.get(url) as r:
                body = await r.read()
            if i >= WARMUP:
                run.full.append(time.perf_counter() - t)
                run.etags.append(r.headers.get("ETag", ""))
            run.unexpected += r.status != 200
            run.body_bytes = len(body)
            if pause:
                await asyncio.sleep(pause)
        headers = {"If-None-Match": r.headers.get("ETag", "")}
        for i in range(WARMUP + conditional if conditional else 0):
            t = time.perf_counter()
            async with s.get(url, headers=headers) as r:
                await r.read()
            if i >= WARMUP:
                run.not_modified.append(time.perf_counter() - t)
            run.unexpected += r.status != 304
    return run


def _answers(url: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return bool(response.status == 200)


def measure(mode: str, assets: int, full: int, conditional: int, tmp: Path, pause: float = 0.0) -> Run:
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    args = [PYTHON, "-m", "bench.api_server", "--mode", mode, "--port", str(port), "--assets", str(assets),
            "--dir", str(tmp / mode)]
    (tmp / mode).mkdir()
    with child(args, tmp / f"{mode}.log") as proc:
        wait_until(lambda: _answers(f"{base}/api/v1/twin"), 60, proc, f"the {mode} server answering")
        return asyncio.run(client(base, full, conditional, pause))


def run(assets: int = 10_000, full: int = 300, conditional: int = 2000) -> list[Figure]:
    title(f"API: GET /api/v1/twin, {assets:,} assets x 5 metrics, {full} full + {conditional} conditional requests,"
          " sequential, keep-alive, server in its own process")
    with tempfile.TemporaryDirectory(prefix="vg-bench-api-") as tmp:
        bare = measure("bare", assets, full, conditional, Path(tmp))
        still = measure("gateway", assets, full, conditional, Path(tmp))
        # A pause of one churn period between requests: each one meets a version the cache has not seen.
        churn = measure("churn", assets, full, 0, Path(tmp), CHURN_EVERY_S)
    print(f"response body: {still.body_bytes:,} bytes (bare peer: {bare.body_bytes:,} bytes)")
    print(latency_line("bare aiohttp, constant bytes, full  ", bare.full))
    print(latency_line("bare aiohttp, constant bytes, 304   ", bare.not_modified))
    print(latency_line("gateway, still twin, full           ", still.full))
    print(latency_line("gateway, still twin, 304            ", still.not_modified))
    print(latency_line("gateway, twin changing every 5 ms   ", churn.full))
    misses = sum(e != before for e, before in zip(churn.etags, ["", *churn.etags], strict=False))
    print(f"changing twin: {misses} of {len(churn.full)} responses met a new version (a snapshot cache miss);"
          f" {CHURN_EVERY_S * 1000:g} ms pause between these requests")
    for name, r in (("bare", bare), ("gateway", still), ("churn", churn)):
        if r.unexpected:
            print(f"WARNING: {name}: {r.unexpected} responses had an unexpected status")
    ms = 1000.0
    return [
        Figure("twin full p50", percentile(still.full, 50) * ms, "ms", peer=percentile(bare.full, 50) * ms,
               peer_label="bare"),
        Figure("twin full p99", percentile(still.full, 99) * ms, "ms", TARGET_FULL_P99_MS,
               peer=percentile(bare.full, 99) * ms, peer_label="bare"),
        Figure("twin 304 p50", percentile(still.not_modified, 50) * ms, "ms",
               peer=percentile(bare.not_modified, 50) * ms, peer_label="bare"),
        Figure("twin 304 p99", percentile(still.not_modified, 99) * ms, "ms", TARGET_304_P99_MS,
               peer=percentile(bare.not_modified, 99) * ms, peer_label="bare"),
        Figure("twin full p50, changing", percentile(churn.full, 50) * ms, "ms",
               peer=percentile(bare.full, 50) * ms, peer_label="bare"),
        Figure("twin full p99, changing", percentile(churn.full, 99) * ms, "ms", TARGET_FULL_P99_MS,
               peer=percentile(bare.full, 99) * ms, peer_label="bare"),
    ]


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--full", type=int, default=300, help="full requests per variant (default 300)")
    parser.add_argument("--conditional", type=int, default=2000, help="304 requests per variant (default 2000)")
    args = parser.parse_args()
    print(figures_table(run(args.assets, args.full, args.conditional)))


if __name__ == "__main__":
    main()
