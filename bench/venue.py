"""Venue: the real daemon (`venue-gateway run`) on a ~500-asset virtual venue at 10x speed: event-loop lag,
readings/s and memory, against an idle asyncio loop's lag and a bare interpreter with the same imports."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import idle_loop
from bench.common import (
    PYTHON,
    ROOT,
    Figure,
    child,
    exit_on_signals,
    figures_table,
    proc_status,
    table,
    title,
    wait_until,
)
from bench.daemon_probe import DaemonApi, cpu_seconds, histogram_p99_ms, lag_histogram
from peers.ports import LOOPBACK, free_port

TOKEN = "bench-viewer-token"
ZONES, RACKS, CHANNELS, CIRCUITS, SPEED = 12, 116, 4, 4, 10.0
# Readings per tick of the sim driver: 6 per zone, 5 per amplifier channel, 4 per mains circuit.
NOMINAL_PER_S = (6 * ZONES + 5 * RACKS * CHANNELS + 4 * CIRCUITS) * SPEED
TARGET_LAG_P99_MS = 5.0
TARGET_RSS_MB = 150.0
BARE_IMPORTS = "import aiohttp, numpy, sqlite3, orjson, prometheus_client; import time; time.sleep(3)"


def write_config(directory: Path, port: int) -> Path:
    zones = "".join(f'\n[[drivers.venue.zones]]\nname = "z{i:02d}"\ncapacity = {400 + 100 * i}\n'
                    f"distance_m = {10 + 4 * i}\n" for i in range(ZONES))
    path = directory / "venue.toml"
    path.write_text(f"""
[gateway]
id = "bench-venue"
venue = "bench-arena"
data_dir = "data"
log_level = "warning"

[api]
listen = "{LOOPBACK}:{port}"

[[api.tokens]]
role = "viewer"
demo_token = "{TOKEN}"

[drivers.venue]
type = "sim"
seed = 7
speed = {SPEED}
start_min = 95
racks = {RACKS}
channels_per_rack = {CHANNELS}
circuits = {CIRCUITS}
{zones}""")
    return path


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    health: dict[str, Any]
    metrics: bytes
    cpu_s: float


def _sample(api: DaemonApi, pid: int) -> Sample:
    return Sample(time.monotonic(), api.health(), api.get("/metrics"), cpu_seconds(pid))


def run(warmup_s: float = 5.0, measure_s: float = 60.0, idle_s: float = 30.0) -> list[Figure]:
    title(f"Venue: venue-gateway run, sim driver at {SPEED:g}x, {ZONES} zones + {RACKS * CHANNELS} amplifier channels"
          f" + {CIRCUITS} circuits; warm-up {warmup_s:g} s, measured {measure_s:g} s")
    with tempfile.TemporaryDirectory(prefix="vg-bench-venue-") as tmp_name:
        tmp = Path(tmp_name)
        idle = idle_loop.floor(idle_s, tmp)  # first, alone: the floor of this machine, the daemon not yet running
        port = free_port()
        api = DaemonApi(f"http://{LOOPBACK}:{port}", TOKEN)
        args = [str(ROOT / ".venv/bin/venue-gateway"), "run", "--config", str(write_config(tmp, port)),
                "--data-dir", str(tmp / "data")]
        with child(args, tmp / "daemon.log") as daemon:
            wait_until(lambda: api.health()["status"] == "ok", 30, daemon, "the daemon reporting status ok")
            warm_until = time.monotonic() + warmup_s
            with child([PYTHON, "-c", BARE_IMPORTS], tmp / "bare.log") as bare:
                time.sleep(2.5)  # the imports are done well within this; the process then sleeps
                bare_mem = proc_status(bare.pid)
            time.sleep(max(0.0, warm_until - time.monotonic()))
            before = _sample(api, daemon.pid)
            rss_max = 0
            while time.monotonic() - before.at < measure_s:
                time.sleep(min(1.0, max(0.0, measure_s - (time.monotonic() - before.at))))
                rss_max = max(rss_max, proc_status(daemon.pid)["VmRSS"])
            after = _sample(api, daemon.pid)
            mem = proc_status(daemon.pid)
            began = time.monotonic()
            daemon.terminate()
            code = daemon.wait(10)
            stopped_s = time.monotonic() - began
    return report(before, after, mem, rss_max, bare_mem, idle, code, stopped_s)


def report(before: Sample, after: Sample, mem: dict[str, int], rss_max_kb: int, bare_mem: dict[str, int],
           idle: dict[str, float], code: int, stopped_s: float) -> list[Figure]:
    h0, h1, seconds = before.health, after.health, after.at - before.at
    lag = h1["loop_lag"]
    hist_p99, observed = histogram_p99_ms(lag_histogram(before.metrics), lag_histogram(after.metrics))
    rate = (h1["readings_total"] - h0["readings_total"]) / seconds
    committed = (h1["store"]["committed_rows"] - h0["store"]["committed_rows"]) / seconds
    cpu = (after.cpu_s - before.cpu_s) / seconds
    drv = h1["drivers"]["venue"].get("detail", {})
    mb = 1 / 1024
    rows = [
        ["loop lag, daemon (health, last 1200 x 50 ms)", f"{lag['p50_ms']:.3f}", f"{lag['p99_ms']:.3f}",
         f"{lag['max_ms']:.3f}", str(lag["samples"])],
        ["loop lag, daemon (/metrics histogram, window)", "-", f"<= {hist_p99:g} (bucket)", "-", f"{observed:.0f}"],
        ["loop lag, idle asyncio loop (same timer, alone)", f"{idle['p50_ms']:.3f}", f"{idle['p99_ms']:.3f}",
         f"{idle['max_ms']:.3f}", f"{idle['samples']:.0f}"],
    ]
    print(table(["event-loop lag", "p50 ms", "p99 ms", "max ms", "samples"], rows))
    print(f"readings: {rate:,.0f}/s ingested, {committed:,.0f}/s committed (sim nominal {NOMINAL_PER_S:,.0f}/s);"
          f" twin {h1['twin']['assets']} assets; driver ticks {drv.get('ticks')}, late ticks {drv.get('late_ticks')};"
          f" store dropped {h1['store']['dropped_rows']}")
    print(f"daemon CPU: {100 * cpu:.0f} % of one core over the window")
    print(f"memory: daemon VmRSS {mem['VmRSS'] * mb:.1f} MB at the end, {rss_max_kb * mb:.1f} MB max sampled,"
          f" VmHWM {mem['VmHWM'] * mb:.1f} MB; bare `python -c \"{BARE_IMPORTS}\"` VmRSS"
          f" {bare_mem['VmRSS'] * mb:.1f} MB")
    print(f"SIGTERM -> exit {code} in {stopped_s:.2f} s")
    return [
        Figure("daemon loop lag p99", lag["p99_ms"], "ms", TARGET_LAG_P99_MS, peer=idle["p99_ms"],
               peer_label="idle loop"),
        Figure("daemon readings/s", rate, "/s", better="higher", peer=NOMINAL_PER_S, peer_label="sim nominal"),
        Figure("daemon RSS", mem["VmRSS"] * mb, "MB", TARGET_RSS_MB, peer=bare_mem["VmRSS"] * mb,
               peer_label="bare imports"),
        Figure("daemon RSS high-water (VmHWM)", mem["VmHWM"] * mb, "MB", TARGET_RSS_MB,
               peer=bare_mem["VmHWM"] * mb, peer_label="bare imports"),
    ]


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.venue", description=__doc__)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds measured (default 60)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="of the idle-loop floor (default 30)")
    args = parser.parse_args()
    print(figures_table(run(args.warmup, args.seconds, args.idle_seconds)))


if __name__ == "__main__":
    main()
