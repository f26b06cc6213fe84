"""The cloud backlog that the cloud and wristband benchmarks have a daemon drain: an outbox filled as an outage
leaves it, and the Mosquitto broker it drains to, run as a child of the benchmark (stopped with it, however it
ends)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import child, wait_until
from gateway.outbox import OutboxSettings
from gateway.readings import Reading
from gateway.settings import StoreSection
from gateway.store import Store
from gateway.twin import Twin
from peers.mosquitto import Mosquitto

BATCH = 1000
ASSETS = 200


def fill(data_dir: Path, readings: int, gateway: tuple[str, str]) -> float:
    """A store whose outbox holds `readings` readings in full batches, as an outage leaves it, for the gateway
    (id, venue); returns seconds."""
    async def go() -> float:
        twin = Twin(*gateway)
        store = Store(data_dir, StoreSection(max_mb=8192), outbox=OutboxSettings(gateway[0], BATCH, 0.1, 2**40, 1e9))
        await store.open(twin)
        began = time.perf_counter()
        now = time.time()
        rng = random.Random(1)
        for start in range(0, readings, 50_000):
            store.add_telemetry([Reading(now + i / 1e4, f"amp:{i % ASSETS}", "temperature_c", rng.uniform(30, 60))
                                 for i in range(start, min(readings, start + 50_000))])
            await store.flush(twin)
        seconds = time.perf_counter() - began
        await store.close(twin)
        os.sync()  # on disk before anything is timed: the kernel's writeback of a gigabyte would be in the figures
        return seconds

    return asyncio.run(go())


@contextlib.contextmanager
def broker(directory: Path, port: int, nice: int = 0) -> Iterator[Mosquitto]:
    """Mosquitto on `port`, no persistence, at niceness `nice`, until the block ends."""
    mosquitto = Mosquitto(directory, port=port, persistence=False, nice=nice)
    with child(mosquitto.argv, mosquitto.log_path) as proc:
        wait_until(mosquitto.listening, 10, proc, "mosquitto listening")
        yield mosquitto
