"""Broker failover under telemetry load: a gateway daemon (about 2,000 readings a second from the venue simulator)
whose broker in use is killed (SIGKILL) a few times, against two independent Mosquittos (a consumer on each: their
union is what the cloud holds) and against a three-node NATS cluster with JetStream and its MQTT gateway (the gateway
given two of its nodes, a consumer with a persistent session on the third). Per kill, the time to resume: from the
broker's death to the gateway's first acknowledged publish on the next (its `status` birth, as a consumer receives
it); and over the run, readings lost (every reading the gateway committed must arrive) and duplicates delivered
(batches and events a consumer dropped by id).

    python -m bench.failover
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, Figure, child, percentile, table, title, wait_until
from bench.daemon_probe import DaemonApi
from gateway.cloud.mirror import GatewayMirror, Mirror
from gateway.cloud.settings import parse_broker
from peers.mosquitto import Mosquitto
from peers.nats import NatsCluster
from peers.ports import LOOPBACK, free_port

KILLS = 3
TOKEN = "bench-failover-token"
GATEWAY = ("bench", "failover-1")  # (venue, id)
SETTLE_S = 3.0  # load between kills, once the link is back
RESUME_LIMIT_S = 60.0
CATCH_UP_S = 60.0


@dataclass
class Run:
    """One backend's figures: the resume time of each kill, and the union's duplicates and losses."""

    name: str
    resumes: list[float] = field(default_factory=list)
    rejoins: list[float] = field(default_factory=list)  # the killed broker back and ready, after its restart
    committed: int = 0
    held: int = 0
    duplicates: int = 0
    batches: int = 0
    failovers: int = 0

    @property
    def lost(self) -> int:
        return self.committed - self.held


def write_config(directory: Path, urls: Sequence[str], api_port: int, cloud: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    brokers = ", ".join(f'"{u}"' for u in urls)
    path.write_text(f"""
[gateway]
id = "{GATEWAY[1]}"
venue = "{GATEWAY[0]}"
data_dir = "data"
log_level = "warning"

[api]
listen = "{LOOPBACK}:{api_port}"

[[api.tokens]]
role = "viewer"
demo_token = "{TOKEN}"

[cloud]
brokers = [{brokers}]
backoff_initial_s = 0.1
backoff_max_s = 1.0
batch_readings = 100
batch_delay_ms = 20
{cloud}

[drivers.venue]
type = "sim"
seed = 11
racks = 4
channels_per_rack = 4
sample_interval_s = 0.05
""")
    return path


def held(mirrored: GatewayMirror) -> int:
    """Readings held from sequence number 1 on, without a gap."""
    return mirrored.seqs[0][1] if mirrored.seqs and mirrored.seqs[0][0] == 1 else 0


class Births:
    """When each `status` online arrives at any consumer: the first after a kill is the link resumed."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.arrived = asyncio.Event()

    def __call__(self, gw: GatewayMirror, what: str, doc: Any) -> None:
        if what == "status" and doc.get("online"):
            self.at.append(time.monotonic())
            self.arrived.set()

    async def after(self, killed: float) -> float:
        """Seconds from `killed` to the first birth after it."""
        deadline = time.monotonic() + RESUME_LIMIT_S
        while True:
            later = [t for t in self.at if t > killed]
            if later:
                return later[0] - killed
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))


@contextlib.asynccontextmanager
async def following(urls: Sequence[str], client_id: str | None = None) -> AsyncIterator[list[Mirror]]:
    """A consumer on each of `urls`, all adding to one view of the gateway (duplicates dropped by id across them)."""
    mirrors = [Mirror(parse_broker(u), venue=GATEWAY[0], gateway=GATEWAY[1], client_id=client_id, ask_snapshots=False)
               for u in urls]
    for m in mirrors[1:]:
        m.gateways = mirrors[0].gateways
    tasks = [asyncio.create_task(m.run()) for m in mirrors]
    try:
        await asyncio.wait_for(asyncio.gather(*(m.connected.wait() for m in mirrors)), 30)
        yield mirrors
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def measure(run: Run, directory: Path, urls: Sequence[str], mirrors: list[Mirror], cloud: str,
                  kill: Callable[[int], None], restart: Callable[[int], None]) -> None:
    """Start the gateway on `urls`, kill the address in use KILLS times (bringing it back after the link has moved
    on), then wait for every committed reading to arrive."""
    births = Births()
    for m in mirrors:
        m.listeners.append(births)
    port = free_port()
    api = DaemonApi(f"http://{LOOPBACK}:{port}", TOKEN)
    config = write_config(directory, urls, port, cloud)

    def link() -> dict[str, Any]:
        detail: dict[str, Any] = api.health()["services"]["cloud"]["detail"]
        return detail

    with child([PYTHON, "-m", "gateway", "run", "--config", str(config)], directory / "gateway.log") as proc:
        await asyncio.to_thread(wait_until, lambda: link()["link"] == "online", 30, proc, "the link online")
        view = mirrors[0].gateways
        for _ in range(KILLS):
            await asyncio.sleep(SETTLE_S)
            in_use = urls.index(link()["broker"])
            killed = time.monotonic()
            kill(in_use)
            run.resumes.append(await births.after(killed))
            await asyncio.to_thread(wait_until, lambda: link()["link"] == "online", RESUME_LIMIT_S, proc,
                                    "the link online on the next broker")
            started = time.monotonic()
            await asyncio.to_thread(restart, in_use)
            run.rejoins.append(time.monotonic() - started)
            for m in mirrors:  # a consumer of a broker brought back follows it again
                await asyncio.wait_for(m.connected.wait(), 30)
        await asyncio.sleep(SETTLE_S)
        health = api.health()
        run.committed = health["store"]["committed_seq"]
        run.failovers = health["services"]["cloud"]["detail"]["failovers"]
        mirrored = view[(GATEWAY[0], GATEWAY[1])]
        with contextlib.suppress(TimeoutError):  # what has not arrived by then is lost
            await asyncio.to_thread(wait_until, lambda: held(mirrored) >= run.committed, CATCH_UP_S, None,
                                    "every committed reading at the consumers")
    run.held = min(held(mirrored), run.committed)
    run.duplicates = mirrored.duplicates
    run.batches = mirrored.batches


async def two_mosquittos(directory: Path) -> Run:
    run = Run("two Mosquittos")
    brokers = [Mosquitto(directory / name, persistence=False) for name in ("a", "b")]
    for b in brokers:
        b.start()
    try:
        urls = [b.url for b in brokers]
        async with following(urls, client_id="bench-failover") as mirrors:
            def kill(i: int) -> None:
                proc = brokers[i].proc
                assert proc is not None
                proc.kill()
                proc.wait()
                brokers[i].proc = None

            def restart(i: int) -> None:
                brokers[i].start()

            await measure(run, directory / "gateway", urls, mirrors, "", kill, restart)
    finally:
        for b in brokers:
            b.stop()
    return run


async def nats_cluster(directory: Path) -> Run:
    run = Run("NATS cluster (3 nodes)")
    with NatsCluster(directory / "nats") as cluster:
        # the gateway on two nodes; the consumer's persistent session on the third, which stays up
        urls = cluster.urls[:2]
        async with following([cluster.urls[2]], client_id="bench-failover") as mirrors:
            await measure(run, directory / "gateway", urls, mirrors, "connect_timeout_s = 2\nack_timeout_s = 5",
                          cluster.kill, cluster.restart)
    return run


def report(runs: Sequence[Run]) -> list[Figure]:
    title("broker failover: the broker in use killed (SIGKILL) under load, "
          f"{KILLS} times per backend")
    rows = []
    figures = []
    for r in runs:
        ms = [s * 1000 for s in r.resumes]
        rows.append([r.name, str(len(ms)), f"{percentile(ms, 50):,.0f} ms", f"{max(ms):,.0f} ms",
                     " ".join(f"{m:,.0f}" for m in ms), f"{r.committed:,}", str(r.lost), str(r.duplicates),
                     str(r.failovers), f"{max(r.rejoins):,.1f} s"])
        figures += [Figure(f"failover {r.name}: time to resume p50", percentile(ms, 50), "ms"),
                    Figure(f"failover {r.name}: time to resume max", max(ms), "ms"),
                    Figure(f"failover {r.name}: readings lost", r.lost, "readings", target=1),
                    Figure(f"failover {r.name}: duplicates delivered (dropped by id)", r.duplicates, "messages")]
    print(table(["backend", "kills", "resume p50", "resume max", "each (ms)", "readings", "lost",
                 "duplicates", "failovers", "rejoin max"], rows))
    return figures


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        runs = [asyncio.run(two_mosquittos(Path(tmp) / "mosquitto")), asyncio.run(nats_cluster(Path(tmp) / "nats"))]
    return report(runs)


if __name__ == "__main__":
    from bench.common import exit_on_signals, figures_table

    exit_on_signals()
    print(figures_table(run()))
