"""`python -m bench.discovery` (root, iproute2): how long after a box's start `venue-gateway discover` can see it.

The demo box (config/demo.toml, its API on every address with HTTPS and file tokens, as a box's, its OSC input too)
runs in a network namespace of its own, joined by a veth pair to a bridge in another, where a browser of
`_venue-gateway._tcp` (python-zeroconf, as `discover` uses it) waits for it. Each run starts the daemon and times,
on the monotonic clock both namespaces share, its log saying it is up and the browser resolving its announcement
with the TXT records; then `venue-gateway discover` is run once there and timed whole.

The daemon answers mDNS on its own event loop, so a flood of queries on the LAN costs the loop time: the last part
sends the running box FLOOD_RATE queries a second for its service (each from an ephemeral port, a legacy unicast
query that is answered every time, the dearest kind) and compares its loop lag (the Prometheus histogram) and CPU
with as long a quiet spell."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w

from bench.common import PYTHON, ROOT, Figure, child, figures_table, tail, title, wait_until
from bench.daemon_probe import DaemonApi, cpu_seconds, histogram_quantile_ms, lag_histogram

RUNS = 5
FLOOD_RATE = 1000  # mDNS queries a second
SPELL_S = 15.0  # each of the quiet and the flooded spell
NET = "10.80.0"
DEMO_DEVICES = "/tmp/venue-gateway"


def demo_box(directory: Path, plain_http: bool = False) -> tuple[Path, str]:
    """config/demo.toml as a box would run it: the API on every address (HTTPS, a self-signed certificate; or plain
    HTTP), tokens from files (the first a viewer's), the OSC input on every address, no cloud; its devices and data
    under `directory`. The config file and the gateway id."""
    doc = tomllib.loads((ROOT / "config" / "demo.toml").read_text())
    doc["api"]["listen"] = "0.0.0.0:8443"
    if plain_http:
        doc["api"]["tls"], doc["api"]["insecure_http"] = "off", True
    for i, token in enumerate(doc["api"]["tokens"]):
        path = directory / f"token-{i}"
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
        token.pop("demo_token")
        token["file"] = str(path)
    doc["drivers"]["osc"]["listen"] = "0.0.0.0:9000"
    doc["gateway"]["data_dir"] = "data"
    del doc["cloud"]
    for key in ("equipment_model", "mood_model"):
        doc["inference"][key] = str((ROOT / "config" / doc["inference"][key]).resolve())

    def moved(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        return value.replace(DEMO_DEVICES, str(directory / "dev")) if isinstance(value, str) else value

    path = directory / "gateway.toml"
    path.write_text(tomli_w.dumps(moved(doc)))
    return path, str(doc["gateway"]["id"])


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def network() -> Iterator[tuple[str, str]]:
    """(the browser's namespace, with the bridge at .254; the box's, at .1); this one joined to the bridge too, at
    .253, to read the box's API and send it queries."""
    lan, box = f"vgbench{os.getpid() % 10000}l", f"vgbench{os.getpid() % 10000}b"
    here = f"vgbench{os.getpid() % 10000}r"
    try:
        for name in (lan, box):
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", lan, "link", "add", "br0", "type", "bridge")
        ip("-n", lan, "addr", "add", f"{NET}.254/24", "dev", "br0")
        ip("-n", lan, "link", "set", "br0", "up")
        ip("-n", lan, "link", "add", "vbox", "type", "veth", "peer", "name", "eth0", "netns", box)
        ip("-n", lan, "link", "set", "vbox", "master", "br0", "up")
        ip("-n", box, "addr", "add", f"{NET}.1/24", "dev", "eth0")
        ip("-n", box, "link", "set", "eth0", "up")
        ip("link", "add", here, "type", "veth", "peer", "name", "vhere", "netns", lan)
        ip("-n", lan, "link", "set", "vhere", "master", "br0", "up")
        ip("addr", "add", f"{NET}.253/24", "dev", here)
        ip("link", "set", here, "up")
        yield lan, box
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=10)
        for name in (lan, box):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


async def watch(gateway_id: str) -> None:
    """Browse until the box `gateway_id` is resolved with its TXT records; print `ready`, then `seen T` (the
    monotonic clock)."""
    from zeroconf import IPVersion, ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    from gateway.discovery.records import GATEWAY_TYPE

    azc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    seen = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(GATEWAY_TYPE, name)
        if await info.async_request(azc.zeroconf, 3000) and info.properties.get(b"id") == gateway_id.encode():
            print(f"seen {time.monotonic():.6f}", flush=True)
            seen.set()

    def changed(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            task = asyncio.get_running_loop().create_task(resolve(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    browser = AsyncServiceBrowser(azc.zeroconf, [GATEWAY_TYPE], handlers=[changed])
    print("ready", flush=True)
    await seen.wait()
    await browser.async_cancel()
    await azc.async_close()


def one_run(lan: str, box: str, config: Path, gateway_id: str, directory: Path, n: int) -> tuple[float, float, float]:
    """(start to the daemon's `up` line, start to the browser resolving the box, `discover`'s whole run), seconds."""
    with child(["ip", "netns", "exec", lan, PYTHON, "-m", "bench.discovery", "--watch", gateway_id],
               directory / f"watch-{n}.log", stdout=subprocess.PIPE) as watcher:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == b"ready", tail(directory / f"watch-{n}.log")
        log = directory / f"daemon-{n}.log"
        started = time.monotonic()
        with child(["ip", "netns", "exec", box, str(ROOT / ".venv/bin/venue-gateway"), "run", "--config",
                    str(config)], log) as daemon:
            line = watcher.stdout.readline().decode()
            if not line.startswith("seen "):
                raise RuntimeError(f"the browser ended without seeing the box:\n{tail(log)}")
            seen = float(line.split()[1]) - started
            wait_until(lambda: " up: " in log.read_text(), 60, daemon, "the daemon's `up` line")
            up = _logged_up(log.read_text()) - (time.time() - time.monotonic() + started)
            began = time.monotonic()
            result = subprocess.run(["ip", "netns", "exec", lan, str(ROOT / ".venv/bin/venue-gateway"), "discover"],
                                    capture_output=True, text=True, timeout=60)
            discover = time.monotonic() - began
            if result.returncode != 0 or gateway_id not in result.stdout:
                raise RuntimeError(f"discover did not list the box: {result.stdout}{result.stderr}")
            if n == 0:
                print(result.stdout)
    return up, seen, discover


def _logged_up(text: str) -> float:
    """The wall-clock time of the daemon's `up` line (its log's timestamps are local time, to the millisecond)."""
    match = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO +gateway\.daemon: gateway .* up: ", text,
                      re.MULTILINE)
    assert match, text
    return time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000


def mdns_query(name: str, query_id: int = 0) -> bytes:
    """A DNS query for `name`'s PTR records, as a browser sends it (RFC 1035's wire format)."""
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.rstrip(".").split("."))
    header = struct.pack("!6H", query_id, 0, 1, 0, 0, 0)  # id, flags (a query), one question, no records
    return header + labels + b"\x00" + struct.pack("!2H", 12, 1)  # PTR, IN


def flood(rate: int, seconds: float) -> tuple[int, int]:
    """`rate` queries a second for the box's service, sent to its mDNS port from an ephemeral port, each with an id
    of its own (python-zeroconf skips a packet identical to one it has just handled): (sent, answers received)."""
    from gateway.discovery.records import GATEWAY_TYPE

    queries = [mdns_query(GATEWAY_TYPE, i) for i in range(65536)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = answers = 0
    began = time.monotonic()
    with sock:
        while (elapsed := time.monotonic() - began) < seconds:
            while sent < elapsed * rate:
                sock.sendto(queries[sent % len(queries)], (f"{NET}.1", 5353))
                sent += 1
            with contextlib.suppress(BlockingIOError):
                while sock.recv(65536):
                    answers += 1
            time.sleep(0.002)
        time.sleep(0.2)
        with contextlib.suppress(BlockingIOError):
            while sock.recv(65536):
                answers += 1
    return sent, answers


def flooded(box: str, directory: Path) -> list[Figure]:
    """The running demo box's loop lag and CPU, quiet and under a flood of mDNS queries."""
    config, _ = demo_box(directory, plain_http=True)
    api = DaemonApi(f"http://{NET}.1:8443", (directory / "token-0").read_text())
    with child(["ip", "netns", "exec", box, str(ROOT / ".venv/bin/venue-gateway"), "run", "--config",
                str(config)], directory / "daemon-flood.log") as daemon:
        wait_until(lambda: api.health()["status"] == "ok", 60, daemon, "the daemon reporting status ok")
        time.sleep(5.0)  # settled
        spells = {}
        for spell in ("quiet", "flood"):
            before, cpu = lag_histogram(api.get("/metrics")), cpu_seconds(daemon.pid)
            counts = None
            if spell == "flood":
                counts = flood(FLOOD_RATE, SPELL_S)
            else:
                time.sleep(SPELL_S)
            after = lag_histogram(api.get("/metrics"))
            spells[spell] = (histogram_quantile_ms(before, after, 0.99),
                             (cpu_seconds(daemon.pid) - cpu) / SPELL_S * 100, counts)
    (quiet_p99, quiet_cpu, _), (flood_p99, flood_cpu, counts) = spells["quiet"], spells["flood"]
    assert counts is not None
    print(f"  flood: {counts[0]} queries sent in {SPELL_S:g} s, {counts[1]} answers received")
    return [Figure(f"discovery: loop lag p99 under {FLOOD_RATE} mDNS queries/s", flood_p99, "ms", peer=quiet_p99,
                   peer_label="quiet"),
            Figure(f"discovery: daemon CPU under {FLOOD_RATE} mDNS queries/s", flood_cpu, "%", peer=quiet_cpu,
                   peer_label="quiet")]


def run(runs: int = RUNS) -> list[Figure]:
    title(f"Discovery: the demo box in a network namespace, from its start to a browser on the LAN resolving it, "
          f"{runs} starts")
    with tempfile.TemporaryDirectory(prefix="vg-bench-discovery-") as tmp_name, network() as (lan, box):
        tmp = Path(tmp_name)
        config, gateway_id = demo_box(tmp)
        results = [one_run(lan, box, config, gateway_id, tmp, n) for n in range(runs)]
        flood_figures = flooded(box, tmp)
    for n, (up, seen, discover) in enumerate(results):
        print(f"  start {n + 1}: up (READY) after {up:.2f} s, resolved on the LAN after {seen:.2f} s; "
              f"`discover` took {discover:.2f} s")
    ups, seens, discovers = zip(*results, strict=True)
    return [Figure("discovery: start to up (median)", statistics.median(ups), "s"),
            Figure("discovery: start to resolved on the LAN (median)", statistics.median(seens), "s"),
            Figure("discovery: start to resolved on the LAN (max)", max(seens), "s"),
            Figure("discovery: `discover` run (default 3 s listen)", statistics.median(discovers), "s"),
            *flood_figures]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watch", metavar="GATEWAY_ID", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    if args.watch:
        asyncio.run(watch(args.watch))
        return 0
    if os.geteuid() != 0:
        print("bench.discovery needs root (ip netns)", file=sys.stderr)
        return 2
    figures = run(args.runs)
    print(figures_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
