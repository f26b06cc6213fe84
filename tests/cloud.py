"""Helpers for the cloud tests: a small gateway configuration with a cloud section, a gateway run inside the
test's loop, the reference mirror beside it, and waiting for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson

from gateway import config as configuration
from gateway.api.auth import Tokens
from gateway.cloud.link import tls_context
from gateway.cloud.mirror import GatewayMirror, Mirror
from gateway.cloud.settings import credentials, parse_broker
from gateway.daemon import Gateway
from tests.conftest import ADMIN, VIEWER, free_port


def cloud_config(directory: Path, broker: str, *, gateway_id: str = "gw-1", venue: str = "hall", cloud: str = "",
                 sample_s: float = 0.2, api_port: int | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "{gateway_id}"
venue = "{venue}"
data_dir = "data"

[api]
listen = "127.0.0.1:{api_port or free_port()}"

[[api.tokens]]
role = "viewer"
demo_token = "{VIEWER}"

[[api.tokens]]
role = "admin"
demo_token = "{ADMIN}"

[store]
max_mb = 256

[show]
lead_ms = 100

[[show.zones]]
name = "floor"
index = 0

[[show.presets]]
name = "intro"
kind = "pulse"

[cloud]
broker = "{broker}"
backoff_initial_s = 0.1
backoff_max_s = 1.0
{cloud}

[drivers.venue]
type = "sim"
seed = 3
racks = 1
channels_per_rack = 2
circuits = 1
sample_interval_s = {sample_s}
""")
    return path


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Gateway]:
    """A gateway on `path`, in this loop, until the block ends."""
    cfg = configuration.load(path)
    assert cfg.cloud is not None
    creds = credentials(cfg.cloud, cfg.path.parent)
    tls = tls_context(creds) if cfg.cloud.tls else None
    gw = Gateway(cfg, Tokens([(VIEWER, "viewer"), (ADMIN, "admin")]), cloud=lambda: (creds, tls))
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await until(lambda: gw._up or task.done(), 20)
        if task.done():
            task.result()
        yield gw
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def mirroring(url: str, **options: Any) -> AsyncIterator[Mirror]:
    mirror = Mirror(parse_broker(url), **options)
    task = asyncio.create_task(mirror.run())
    try:
        await asyncio.wait_for(mirror.connected.wait(), 10)
        yield mirror
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], Any], seconds: float, what: str = "the condition") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.02)


def twin_of(gw: Gateway) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(gw.twin.snapshot_json())
    return doc


async def in_step(gw: Gateway, mirrored: GatewayMirror, seconds: float = 10) -> None:
    """Wait for a moment when the mirror holds the gateway's version, and compare the twins there."""
    await until(lambda: mirrored.version == gw.twin.version, seconds, "the mirror to catch up with the twin")
    assert orjson.loads(orjson.dumps(mirrored.assets)) == twin_of(gw)["assets"]


def events(mirrored: GatewayMirror, kind: str) -> list[dict[str, Any]]:
    return [e for e in mirrored.events if e.get("kind") == kind]
