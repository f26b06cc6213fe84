"""`python -m bench.discovery` (root, iproute2): how long after a box's start `venue-gateway discover` can see it.

The demo box (config/demo.toml, its API on every address with HTTPS and file tokens, as a box's, its OSC input too)
runs in a network namespace of its own, joined by a veth pair to a bridge in another, where a browser of
`_venue-gateway._tcp` (python-zeroconf, as `discover` uses it) waits for it. Each run starts the daemon and times,
on the monotonic clock both namespaces share, its log saying it is up and the browser resolving its announcement
with the TXT records; then `venue-gateway discover` is run once there and timed whole."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import statistics
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

RUNS = 5
NET = "10.80.0"
DEMO_DEVICES = "/tmp/venue-gateway"


def demo_box(directory: Path) -> tuple[Path, str]:
    """config/demo.toml as a box would run it: the API on every address (HTTPS, a self-signed certificate), tokens
    from files, the OSC input on every address, no cloud; its devices and data under `directory`. The config file
    and the gateway id."""
    doc = tomllib.loads((ROOT / "config" / "demo.toml").read_text())
    doc["api"]["listen"] = "0.0.0.0:8443"
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
        if isinstance(value, str) and value.startswith(DEMO_DEVICES):
            return str(directory / "dev") + value[len(DEMO_DEVICES):]
        return value

    path = directory / "gateway.toml"
    path.write_text(tomli_w.dumps(moved(doc)))
    return path, str(doc["gateway"]["id"])


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def network() -> Iterator[tuple[str, str]]:
    """(the browser's namespace, with the bridge at .254; the box's, at .1)."""
    lan, box = f"vgbench{os.getpid() % 10000}l", f"vgbench{os.getpid() % 10000}b"
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
        yield lan, box
    finally:
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


def run(runs: int = RUNS) -> list[Figure]:
    title(f"Discovery: the demo box in a network namespace, from its start to a browser on the LAN resolving it, "
          f"{runs} starts")
    with tempfile.TemporaryDirectory(prefix="vg-bench-discovery-") as tmp_name, network() as (lan, box):
        tmp = Path(tmp_name)
        config, gateway_id = demo_box(tmp)
        results = [one_run(lan, box, config, gateway_id, tmp, n) for n in range(runs)]
    for n, (up, seen, discover) in enumerate(results):
        print(f"  start {n + 1}: up (READY) after {up:.2f} s, resolved on the LAN after {seen:.2f} s; "
              f"`discover` took {discover:.2f} s")
    ups, seens, discovers = zip(*results, strict=True)
    return [Figure("discovery: start to up (median)", statistics.median(ups), "s"),
            Figure("discovery: start to resolved on the LAN (median)", statistics.median(seens), "s"),
            Figure("discovery: start to resolved on the LAN (max)", max(seens), "s"),
            Figure("discovery: `discover` run (default 3 s listen)", statistics.median(discovers), "s")]


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
