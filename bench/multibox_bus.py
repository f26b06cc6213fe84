"""The shared show's bus: how long an effect fired on one box takes to be carried by another, and a console's live
look likewise, over a real Mosquitto on loopback (docs/multi-box.md). Two gateways in this process (each its own
engine, twin, store and `shared` unit, on one event loop), joined by `[show.shared]`: box A fires a stop (a
blackout, lead 0: never held by the flash cap) every GAP_S, or takes a look from the console; the figure is from
A's engine firing it (or the look arriving) to B's engine carrying it, on the one monotonic clock. A LAN adds its
round trip (a switched gigabit LAN: some 0.1-0.5 ms) to loopback's.

`python -m bench.multibox_bus`; `bus_latency(broker_url, samples)` gives the figures to another benchmark."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.common import Figure, exit_on_signals, figures_table, latency_line, percentile, title
from gateway import config as configuration
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.show.engine import Fired
from gateway.show.live import LiveChange, Look
from peers.mosquitto import Mosquitto
from peers.ports import LOOPBACK, free_port

GAP_S = 0.02  # between two effects (or looks) fired on A
BOXES = ("box-a", "box-b")
LEAD_MS = 500  # an effect's usual lead: the bus's latency must be well inside it
LIVE_DELAY_MS = 50  # a live look's usual delay (show.live.delay_ms)
# As config/multibox/mosquitto.conf: Mosquitto's default leaves Nagle's algorithm on, which holds a small message
# back behind an unacknowledged one (measured here: p99 65 ms without it, for the same 300 effects).
NODELAY = "set_tcp_nodelay true\n"


def _config(directory: Path, box: str, broker: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "{box}"
venue = "bench"
data_dir = "data"

[api]
listen = "{LOOPBACK}:{free_port()}"

[[show.zones]]
name = "floor"
index = 0

[show.shared]
brokers = ["{broker}"]
boxes = [{", ".join(f'"{b}"' for b in BOXES)}]
""")
    return path


@contextlib.asynccontextmanager
async def _box(path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(configuration.load(path), Tokens([]))
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        deadline = time.monotonic() + 10
        while not (gw.shared is not None and gw.shared.state == "online"):
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{gw.config.gateway.id} never joined the show's bus")
            await asyncio.sleep(0.02)
        yield gw
    finally:
        stop.set()
        await task


async def _measure(broker: str, samples: int, directory: Path) -> tuple[list[float], list[float]]:
    """Seconds from A firing to B carrying, for `samples` effects and `samples` live looks."""
    async with _box(_config(directory / "a", BOXES[0], broker)) as a, \
            _box(_config(directory / "b", BOXES[1], broker)) as b:
        for _ in range(500):
            if a.shared and b.shared and a.shared.peers[BOXES[1]].state == "online" \
                    and b.shared.peers[BOXES[0]].state == "online":
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("the two boxes never heard each other")
        carried: dict[str, float] = {}
        looked: dict[int, float] = {}

        def on_fire(fired: Fired) -> None:
            if fired.origin is not None:
                carried[fired.effect_id] = time.monotonic()

        def on_look(change: LiveChange) -> None:
            if change.origin is not None:
                looked[change.show_ms] = time.monotonic()

        b.show.on_fire(on_fire)
        b.show.live.subscribe(on_look)
        effects = []
        for _ in range(samples):
            began = time.monotonic()
            fired = a.show.fire(inline={"kind": "blackout"}, lead_ms=0)
            effects.append((fired.effect_id, began))
            await asyncio.sleep(GAP_S)
        looks = []
        for i in range(samples):  # below the flash cap's rise: never held back
            began = time.monotonic()
            a.show.live.set(("floor",), Look((255, 255, 255), 0.2 + 0.2 * (i % 2)))
            await asyncio.sleep(0)  # the look is taken when the loop turns
            looks.append((a.show.live.current()["floor"].show_ms, began))
            await asyncio.sleep(GAP_S)
        await asyncio.sleep(0.5)
        lost = [i for i, _ in effects if i not in carried] + [str(s) for s, _ in looks if s not in looked]
        if lost:
            raise RuntimeError(f"{len(lost)} of {2 * samples} never carried: {lost[:5]}")
        return [carried[i] - t for i, t in effects], [looked[s] - t for s, t in looks]


def bus_latency(broker: str, samples: int = 300) -> tuple[list[float], list[float]]:
    """Seconds from box A firing an effect (then taking a look) to box B carrying it, over the broker at `broker`
    (mqtt://...), `samples` of each."""
    with tempfile.TemporaryDirectory(prefix="vg-bench-bus-") as tmp:
        return asyncio.run(_measure(broker, samples, Path(tmp)))


def run(samples: int = 300) -> list[Figure]:
    title(f"Shared show bus: two gateways over Mosquitto on loopback, {samples} effects and {samples} live looks "
          f"fired on A {GAP_S * 1000:.0f} ms apart, carried by B")
    with tempfile.TemporaryDirectory(prefix="vg-bench-bus-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker", persistence=False)
        broker.conf.write_text(broker.conf.read_text() + NODELAY)
        with broker:
            effects, looks = asyncio.run(_measure(broker.url, samples, Path(tmp)))
    print(latency_line("effect fired on A -> carried by B", effects))
    print(latency_line("live look on A -> carried by B", looks))
    ms = [s * 1000 for s in effects]
    live = [s * 1000 for s in looks]
    return [Figure("bus: effect A->B p50", percentile(ms, 50), "ms"),
            Figure("bus: effect A->B p99", percentile(ms, 99), "ms", target=LEAD_MS / 10),
            Figure("bus: live look A->B p99", percentile(live, 99), "ms", target=LIVE_DELAY_MS / 2)]


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    print(figures_table(run(parser.parse_args().samples)))


if __name__ == "__main__":
    main()
