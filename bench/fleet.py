"""The fleet's cloud side at scale: 200 simulated boxes (bench/fleet_load.py) on a real Mosquitto (MQTT 5), drained
into PostgreSQL by 1, 2 and 4 replicas of `venue-gateway mirror --database ... --share GROUP`, beside the limits
measured in the same run (the broker alone: a plain subscriber counting the same messages; PostgreSQL alone: the
same rows written by COPY from one client); a replica killed with SIGKILL under load and restarted (lost and
doubled readings against the load's ledger); and the snapshot queries' latency over HTTP (`--serve`).

Each drain is timed the same way: the consumers subscribe, are paused (SIGSTOP) while the boxes publish the whole
load as fast as the broker takes it, so that it waits in the broker, then resumed; the rate is the readings counted
over the drain (for the replicas: rows committed, counted in the database every 50 ms, from their resumption to the
count reaching the whole load; for the plain subscriber, from its resumption to the last message).

    python -m bench.fleet
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.backlog import broker
from bench.common import PYTHON, ROOT, Figure, child, figures_table, latency_line, percentile, stop, title, wait_until
from peers import PeerMissing
from peers.ports import LOOPBACK, free_port
from peers.postgres import Postgres

BOXES = 200
BOXES_PER_VENUE = 10
ASSETS = 20
READINGS_PER_BOX = 3_000  # 600,000 readings a drain, in batches of the gateway's 1000
REPLICAS = (1, 2, 4)
KILL_REPLICAS = 2
KILL_RATE = 100.0  # readings/s per box while a replica is killed: 20,000/s from the fleet
KILL_SECONDS = 20.0
KILL_AT_S, RESTART_AT_S = 6.0, 9.0
KILL_RESEND = 0.02  # the share of batches and events the boxes send twice (as reconnects do)
ALONE_GROUP = 100  # PostgreSQL alone: batches to a transaction (the mirror commits what has arrived, up to 500)
QUERIES = 500  # snapshot queries of each kind (a venue's takes tens of ms: 500 keep the run within minutes)
# The twins just before the gateway's periodic snapshot (300 s): a change per asset a second since the last one
WORST_BOXES = 20
WORST_SECONDS = 30.0  # a fold every 0.1 s (the load's tick), 200 readings/s a box: a change per asset each fold
WORST_CHANGES_PER_ASSET = 300
WORST_QUERIES = 100  # a venue's answer then takes a third of a second
CATCH_UP_S = 120.0
POLL_S = 0.05
VENUE_GATEWAY = str(ROOT / ".venv/bin/venue-gateway")


@dataclass
class Drain:
    readings: int
    seconds: float
    cpu: dict[str, float] | None = None  # CPU seconds spent in the drain: "replicas", "postgres"

    @property
    def rate(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0


def send(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """`sig` to the child's process group (its session: `child` starts one)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def load_argv(broker_url: str, ledger: Path, *options: str, boxes: int = BOXES) -> list[str]:
    """The fleet's boxes in a process of their own (bench/fleet_load.py), their ledger written to `ledger`."""
    return [PYTHON, "-m", "bench.fleet_load", "--broker", broker_url, "--boxes", str(boxes), "--boxes-per-venue",
            str(BOXES_PER_VENUE), "--assets", str(ASSETS), "--progress-s", "5", "--ledger", str(ledger), *options]


def load(broker_url: str, ledger: Path, log: Path) -> dict[str, Any]:
    """READINGS_PER_BOX from each box as fast as the broker takes them; the ledger."""
    with child(load_argv(broker_url, ledger, "--rate", "0", "--readings", str(READINGS_PER_BOX), "--seconds",
                         "600"), log) as proc:
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the fleet load failed ({proc.returncode}): {log.read_text()[-2000:]}")
    doc: dict[str, Any] = orjson.loads(ledger.read_bytes())
    return doc


# -- the broker alone ------------------------------------------------------------------------------------
def broker_alone(tmp: Path) -> Drain:
    port = free_port()
    expected = BOXES * READINGS_PER_BOX
    with broker(tmp / "broker", port), child([PYTHON, "-m", "bench.fleet_peers", "count", str(port), str(expected)],
                                             tmp / "count.log", stdout=subprocess.PIPE) as counter:
        assert counter.stdout is not None
        if counter.stdout.readline().strip() != b"ready":
            raise RuntimeError("the counting subscriber did not start")
        send(counter, signal.SIGSTOP)
        load(f"mqtt://{LOOPBACK}:{port}", tmp / "ledger.json", tmp / "load.log")
        resumed = time.time_ns()
        send(counter, signal.SIGCONT)
        counted = orjson.loads(counter.stdout.readline())
    if counted["readings"] < expected:
        raise RuntimeError(f"the plain subscriber counted {counted['readings']:,} of {expected:,} readings")
    return Drain(counted["readings"], (counted["last_ns"] - resumed) / 1e9)


# -- PostgreSQL ------------------------------------------------------------------------------------------
def postgres_alone(pg: Postgres, ledger: Path, log: Path, group: int) -> Drain:
    """The ledger's rows by COPY from one client, `group` batches to a transaction."""
    assert pg.proc is not None
    database = pg.database(f"alone_{group}")
    before = cpu_seconds(family(pg.proc.pid))
    done = subprocess.run([PYTHON, "-m", "bench.fleet_peers", "copy", database, str(ledger), str(group)],
                          capture_output=True, cwd=ROOT, check=False)
    spent = cpu_seconds(family(pg.proc.pid)) - before  # its backend is gone: what the server's others spent
    log.write_bytes(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"PostgreSQL alone failed: {done.stderr.decode(errors='replace')[-2000:]}")
    doc = orjson.loads(done.stdout.splitlines()[-1])
    if doc["written"] != doc["rows"]:
        raise RuntimeError(f"PostgreSQL alone wrote {doc['written']:,} of {doc['rows']:,} rows")
    return Drain(doc["rows"], doc["seconds"], {"postgres": spent, "backend": doc["backend_cpu_s"]})


class Counts:
    """What the mirror's tables hold, read through the mirror's own module (gateway.cloud.mirror_db)."""

    def __init__(self, url: str) -> None:
        from gateway.cloud.mirror_db import Database

        self.db = Database(url)

    async def readings(self) -> int:
        return sum(g["telemetry"]["readings"] for g in await self.db.gateways())

    async def seqs(self, venue: str, gateway_id: str) -> list[int]:
        """Every sequence number the box's readings hold in the database, once per row."""
        out: list[int] = []
        after: tuple[float, int] | None = None
        while page := await self.db.telemetry(venue, gateway_id, after=after, limit=10_000):
            out += [r[0] for r in page]
            after = (page[-1][1], page[-1][0])
        return out

    async def close(self) -> None:
        await self.db.close()


# -- the replicas ----------------------------------------------------------------------------------------
class Replicas:
    """`count` mirror replicas in one share group, each with a fixed client id (a persistent session), serving
    HTTP; started, paused, resumed, killed and started again one by one."""

    def __init__(self, tmp: Path, broker_url: str, database: str, count: int, group: str) -> None:
        self.tmp, self.broker_url, self.database, self.group = tmp, broker_url, database, group
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._stack = contextlib.ExitStack()
        self.starts = 0

    def argv(self, i: int) -> list[str]:
        return [VENUE_GATEWAY, "mirror", "--broker", self.broker_url, "--database", self.database, "--share",
                self.group, "--client-id", f"{self.group}-{i}", "--serve", f"{LOOPBACK}:{self.ports[i]}", "--quiet"]

    def start(self, i: int) -> None:
        self.starts += 1
        proc = self._stack.enter_context(child(self.argv(i), self.tmp / f"replica-{i}-{self.starts}.log"))
        self.procs[i] = proc
        wait_until(lambda: self.ready(i), 30, proc, f"replica {i} subscribed, its database open")

    def ready(self, i: int) -> bool:
        """The replica's own word (GET /mirror): subscribed, and its database there."""
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.ports[i]}/mirror", timeout=2) as response:
            doc = orjson.loads(response.read())
        return bool(doc.get("connected") and doc.get("database") == "ok")

    def signal(self, sig: signal.Signals) -> None:
        for proc in self.procs:
            if proc is not None:
                send(proc, sig)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        send(proc, signal.SIGKILL)
        proc.wait()

    def __enter__(self) -> Replicas:
        for i in range(len(self.ports)):
            self.start(i)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc is not None:
                send(proc, signal.SIGCONT)
                stop(proc)
        self._stack.close()


async def watch(counts: Counts, expected: int, within_s: float) -> list[tuple[float, int]]:
    """(monotonic time, readings in the database) every POLL_S until `expected`, for at most `within_s`; each time
    taken once the count is read, so that the count held at that time at least."""
    polls: list[tuple[float, int]] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        held = await counts.readings()
        polls.append((time.monotonic(), held))
        if held >= expected:
            break
        await asyncio.sleep(POLL_S)
    return polls


def replicas_drain(tmp: Path, pg: Postgres, count: int) -> Drain:
    tmp.mkdir()
    port = free_port()
    url = f"mqtt://{LOOPBACK}:{port}"
    database = pg.database(f"fleet_{count}")
    expected = BOXES * READINGS_PER_BOX
    with broker(tmp / "broker", port), Replicas(tmp, url, database, count, f"drain{count}") as replicas:
        replicas.signal(signal.SIGSTOP)
        load(url, tmp / "ledger.json", tmp / "load.log")
        counts = Counts(database)
        mirrors = [p.pid for p in replicas.procs if p is not None]
        assert pg.proc is not None
        before = {"replicas": cpu_seconds(mirrors), "postgres": cpu_seconds(family(pg.proc.pid))}

        async def drain() -> tuple[float, list[tuple[float, int]]]:
            try:
                await counts.readings()  # connected before the clock starts
                began = time.monotonic()
                replicas.signal(signal.SIGCONT)
                return began, await watch(counts, expected, CATCH_UP_S)
            finally:
                await counts.close()

        began, polls = asyncio.run(drain())
        cpu = {"replicas": cpu_seconds(mirrors) - before["replicas"],
               "postgres": cpu_seconds(family(pg.proc.pid)) - before["postgres"]}
    held = polls[-1][1]
    if held < expected:
        raise RuntimeError(f"{count} replicas: {held:,} of {expected:,} readings in the database after "
                           f"{CATCH_UP_S:.0f} s")
    # From the replicas' resumption, the backlog waiting for them, to the count reaching the whole of it: the first
    # commit comes only after a group of messages has been read and written, so it cannot start the clock.
    return Drain(held, polls[-1][0] - began, cpu)


def family(pid: int) -> list[int]:
    """A process and its children (PostgreSQL's backends are the postmaster's)."""
    children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    return [pid, *children]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes, in seconds (those gone since count nothing)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


# -- a replica killed under load -------------------------------------------------------------------------
@dataclass
class Killed:
    readings: int  # in the ledger
    lost: int
    doubled: int  # rows of a reading already held
    duplicates_dropped: int
    resent: int
    twins_equal: int
    boxes: int
    catch_up_s: float  # from the load's end to every reading in the database
    changes: float  # the twin changes after each box's last snapshot, on average: what a twin query folds
    queries: dict[str, list[float]]


def killed_replica(tmp: Path, pg: Postgres) -> Killed:
    tmp.mkdir()
    port = free_port()
    url = f"mqtt://{LOOPBACK}:{port}"
    database = pg.database("fleet_kill")
    with broker(tmp / "broker", port), Replicas(tmp, url, database, KILL_REPLICAS, "kill") as replicas:
        ledger_path = tmp / "ledger.json"
        args = load_argv(url, ledger_path, "--rate", str(KILL_RATE), "--seconds", str(KILL_SECONDS), "--resend",
                         str(KILL_RESEND))
        with child(args, tmp / "load.log") as generator:
            began = time.monotonic()
            time.sleep(KILL_AT_S)
            replicas.kill(0)
            print(f"replica 0 killed (SIGKILL) {KILL_AT_S:.0f} s into the load", flush=True)
            time.sleep(RESTART_AT_S - KILL_AT_S)
            replicas.start(0)
            print(f"replica 0 started again {time.monotonic() - began:.1f} s into the load", flush=True)
            generator.wait()
        if generator.returncode != 0:
            raise RuntimeError(f"the fleet load failed: {(tmp / 'load.log').read_text()[-2000:]}")
        print((tmp / "load.log").read_text().splitlines()[-1], flush=True)
        ledger = orjson.loads(ledger_path.read_bytes())
        ended = time.monotonic()
        return asyncio.run(check_and_query(ledger, database, replicas.ports[1], ended))


async def check_and_query(ledger: dict[str, Any], database: str, http_port: int, ended: float) -> Killed:
    counts = Counts(database)
    try:
        expected = ledger["readings"]
        polls = await watch(counts, expected, CATCH_UP_S)
        catch_up = polls[-1][0] - ended
        await asyncio.sleep(1.0)  # anything doubled would come now
        lost = doubled = twins = 0
        for box in ledger["boxes"]:
            seqs = await counts.seqs(box["venue"], box["gateway_id"])
            held = set(seqs)
            doubled += len(seqs) - len(held)
            lost += sum(1 for s in range(1, box["last_seq"] + 1) if s not in held)
        summaries = {(g["venue"], g["gateway_id"]): g for g in await counts.db.gateways()}
        dropped = sum(g["telemetry"]["duplicates"] for g in summaries.values())
        for venue in sorted({b["venue"] for b in ledger["boxes"]}):
            held_twins = {t.document["gateway_id"]: t for t in await counts.db.twins(venue)}
            for box in (b for b in ledger["boxes"] if b["venue"] == venue):
                twin = held_twins.get(box["gateway_id"])
                twins += twin is not None and twin.version == box["twin_version"] and \
                    twin.document["assets"] == box["twin"]["assets"]
        queries = await snapshot_queries(http_port, ledger)
    finally:
        await counts.close()
    return Killed(expected, lost, doubled, dropped, ledger["resent"], twins, len(ledger["boxes"]), catch_up,
                  changes_after_snapshot(ledger), queries)


# -- snapshot queries ------------------------------------------------------------------------------------
@dataclass
class Queries:
    changes: float  # the twin changes after each box's last snapshot, on average: what a twin query folds
    latency: dict[str, list[float]]


def worst_case_queries(tmp: Path, pg: Postgres) -> Queries:
    """Twins as they are just before the periodic snapshot (the gateway's default, 300 s): WORST_BOXES boxes whose
    changes since their last snapshot are what 300 s of a change per asset a second leave, made in WORST_SECONDS
    by folding more often; then the same queries."""
    tmp.mkdir()
    port = free_port()
    url = f"mqtt://{LOOPBACK}:{port}"
    database = pg.database("fleet_worst")
    fold_s = WORST_SECONDS / WORST_CHANGES_PER_ASSET
    with broker(tmp / "broker", port), Replicas(tmp, url, database, 1, "worst") as replicas:
        ledger_path = tmp / "ledger.json"
        with child(load_argv(url, ledger_path, "--rate", "200", "--seconds", str(WORST_SECONDS), "--fold-s",
                             str(fold_s), "--events-per-s", "0", boxes=WORST_BOXES), tmp / "load.log") as generator:
            generator.wait()
        ledger = orjson.loads(ledger_path.read_bytes())
        database_ready = Counts(database)

        async def measure() -> Queries:
            try:
                polls = await watch(database_ready, ledger["readings"], CATCH_UP_S)
                if polls[-1][1] < ledger["readings"]:
                    raise RuntimeError("the worst case's readings did not all reach the database")
                return Queries(changes_after_snapshot(ledger),
                               await snapshot_queries(replicas.ports[0], ledger, WORST_QUERIES))
            finally:
                await database_ready.close()

        return asyncio.run(measure())


def changes_after_snapshot(ledger: dict[str, Any]) -> float:
    """The twin changes after each box's last snapshot, on average: what a query of its twin folds."""
    total: int = sum(b["twin_version"] - b["snapshot_version"] for b in ledger["boxes"])
    return total / len(ledger["boxes"])


async def snapshot_queries(port: int, ledger: dict[str, Any], count: int = QUERIES) -> dict[str, list[float]]:
    """`count` of each: one box's twin, and a venue's (10 boxes) in one answer; one at a time, keep-alive."""
    rng = random.Random(5)
    boxes = [(b["venue"], b["gateway_id"]) for b in ledger["boxes"]]
    venues = sorted({v for v, _ in boxes})
    base = f"http://{LOOPBACK}:{port}"
    out: dict[str, list[float]] = {"box": [], "venue": []}
    async with aiohttp.ClientSession() as http:
        for kind, paths in (("box", [f"/gateways/{v}/{g}/twin" for v, g in boxes]),
                            ("venue", [f"/venues/{v}/twins" for v in venues])):
            for i in range(count + 50):
                path = rng.choice(paths)
                began = time.perf_counter()
                async with http.get(base + path) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
                if i >= 50:  # the first are the warm-up
                    out[kind].append(time.perf_counter() - began)
    return out


# -- the run ---------------------------------------------------------------------------------------------
def queries_figures(when: str, latency: dict[str, list[float]]) -> list[Figure]:
    def ms(kind: str, p: float) -> float:
        return percentile([s * 1000 for s in latency[kind]], p)

    return [Figure(f"fleet: snapshot query p99{when}, one box", ms("box", 99), "ms", peer=ms("box", 50),
                   peer_label="p50"),
            Figure(f"fleet: snapshot query p99{when}, a venue of {BOXES_PER_VENUE} boxes", ms("venue", 99), "ms",
                   peer=ms("venue", 50), peer_label="p50")]


def run() -> list[Figure]:
    title(f"Fleet: {BOXES} simulated boxes ({BOXES // BOXES_PER_VENUE} venues) on Mosquitto into PostgreSQL by "
          f"{', '.join(map(str, REPLICAS))} mirror replicas; a replica killed under load; snapshot queries")
    if shutil.which("mosquitto") is None:
        print("NOT MEASURED: needs the Debian package mosquitto (make peers installs it)")
        return []
    try:
        import psycopg  # noqa: F401

        from gateway.cloud import mirror_db  # noqa: F401
    except ImportError as exc:
        print(f"NOT MEASURED: {exc} (the fleet extra: pip install -e '.[fleet]')")
        return []
    figures: list[Figure] = []
    began = time.monotonic()
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="vg-bench-fleet-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        try:
            pg = stack.enter_context(Postgres())  # as Debian ships it: fsync on, the VM's disk
        except PeerMissing as exc:
            print(f"NOT MEASURED: needs {exc}")
            return []
        (tmp / "alone").mkdir()
        alone = broker_alone(tmp / "alone")
        print(f"broker alone: a plain subscriber counted {alone.readings:,} readings from {BOXES} boxes in "
              f"{alone.seconds:.2f} s = {alone.rate:,.0f}/s", flush=True)
        pg_alone = postgres_alone(pg, tmp / "alone" / "ledger.json", tmp / "alone" / "copy.log", ALONE_GROUP)
        cpu = pg_alone.cpu or {}
        print(f"PostgreSQL alone: the same {pg_alone.readings:,} rows by COPY from one client into tables shaped as "
              f"the mirror's, {ALONE_GROUP} batches to a transaction, in {pg_alone.seconds:.2f} s = "
              f"{pg_alone.rate:,.0f}/s; PostgreSQL's CPU per 100,000 rows "
              f"{(cpu.get('postgres', 0) + cpu.get('backend', 0)) * 1e5 / pg_alone.readings:.2f} s", flush=True)
        rates: dict[int, Drain] = {}
        for count in REPLICAS:
            rates[count] = replicas_drain(tmp / f"replicas-{count}", pg, count)
            cpu = rates[count].cpu or {}
            print(f"{count} replica{'s' if count > 1 else ''}: {rates[count].readings:,} readings committed in "
                  f"{rates[count].seconds:.2f} s = {rates[count].rate:,.0f}/s; CPU per 100,000 readings: the "
                  f"replicas {cpu.get('replicas', 0) * 1e5 / rates[count].readings:.2f} s, PostgreSQL "
                  f"{cpu.get('postgres', 0) * 1e5 / rates[count].readings:.2f} s", flush=True)
        killed = killed_replica(tmp / "kill", pg)
        worst = worst_case_queries(tmp / "worst", pg)
    print(f"(the fleet benchmark took {time.monotonic() - began:.0f} s; load average {load_before} before, "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} after)")
    print(f"replica killed under load: {killed.readings:,} readings in the ledger, {killed.lost} lost, "
          f"{killed.doubled} doubled in the database; {killed.duplicates_dropped:,} duplicate batches and events "
          f"dropped and counted ({killed.resent:,} sent twice by the boxes); twins equal to the ledger "
          f"{killed.twins_equal}/{killed.boxes}; every reading in the database {killed.catch_up_s:.1f} s after the "
          "load ended")
    print(f"snapshot queries, one at a time over a kept-alive connection, each twin its snapshot and "
          f"{killed.changes:,.0f} changes after it on average ({ASSETS} assets a box, a change per asset a second):")
    print(latency_line("snapshot of one box (GET /gateways/V/ID/twin)  ", killed.queries["box"]))
    print(latency_line(f"snapshot of a venue of {BOXES_PER_VENUE} boxes (GET /venues/V/twins)",
                       killed.queries["venue"]))
    print(f"the same, just before the periodic snapshot: {WORST_BOXES} boxes, each twin its snapshot and "
          f"{worst.changes:,.0f} changes after it")
    print(latency_line("snapshot of one box (GET /gateways/V/ID/twin)  ", worst.latency["box"]))
    print(latency_line(f"snapshot of a venue of {BOXES_PER_VENUE} boxes (GET /venues/V/twins)",
                       worst.latency["venue"]))
    for count in REPLICAS:
        figures.append(Figure(f"fleet: readings/s into PostgreSQL, {count} replica{'s' if count > 1 else ''}, "
                              f"{BOXES} boxes", rates[count].rate, "/s", better="higher", peer=pg_alone.rate,
                              peer_label="PostgreSQL alone"))
    figures += [
        Figure("fleet: broker alone (plain subscriber), readings/s", alone.rate, "/s", better="higher"),
        Figure("fleet: replica killed under load, readings lost", killed.lost, "", 1, "lower"),
        Figure("fleet: replica killed under load, readings doubled in the database", killed.doubled, "", 1, "lower"),
        Figure("fleet: replica killed under load, twins equal to the ledger", 100 * killed.twins_equal / killed.boxes,
               "%", 100, "higher"),
        *queries_figures("", killed.queries),
        *queries_figures(", before the periodic snapshot", worst.latency),
    ]
    return figures


if __name__ == "__main__":
    from bench.common import exit_on_signals

    exit_on_signals()
    print(figures_table(run()))
