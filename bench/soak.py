"""`make soak` (`python -m bench.soak`): the demo as a box runs it for a month, at high show speed. The daemon runs
as a subprocess (`venue-gateway demo`: the gateway with its Mosquitto and the cloud mirror) on the demo's
configuration, with this run's ports, devices and data directory, the virtual venue at `--speed` show seconds per
real second, for `--show-hours` of show time. Every `--sample-s` it samples the gateway process: resident memory,
open file descriptors, threads, the store's disk use against its bound (store.max_mb), the whole data directory,
and the event loop's lag (p99 and max between samples, from /metrics). At the end it reports the slope of each
per show-hour (least squares, after the first show-hour's warm-up) and the first show-hour against the last.

The sensing, the wristbands, DMX and the cloud link run in real time whatever the speed: a figure per show-hour
is the venue's; the real time a run took is printed beside it.

`--tracemalloc DIR` runs the daemon under tracemalloc and writes to DIR at every sample a snapshot and the count
of live objects by type (slow: for finding where memory grows, not for figures); `python -m bench.soak --diff DIR`
then prints the object types and the allocation sites that grew most between the first snapshot after the warm-up
and the last.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import math
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, child, exit_on_signals, proc_status, table, tail, title, wait_until
from bench.daemon_probe import DaemonApi, lag_histogram
from gateway.config import load
from peers.ports import LOOPBACK, free_port, free_udp_port

TOKEN = "demo-viewer-token"  # the demo's documented viewer token
WARMUP_SHOW_H = 1.0  # the first show-hour fills the twin's change log, the windows and the caches: not a trend
STARTUP_TIMEOUT_S = 120.0
MIB = 1024 * 1024
FRAMES = 4  # tracemalloc's frames per allocation: more slows the daemon past its show speed


@dataclass
class Sample:
    real_s: float
    show_h: float
    rss_mb: float
    fds: int
    threads: int
    store_mb: float  # the store's files (database, WAL, shared memory), MiB as store.max_mb counts
    used_mb: float  # what the store counts against its bound (its pages in use)
    data_mb: float
    lag_p99_ms: float
    lag_max_ms: float


@dataclass
class Run:
    directory: Path
    config: Path
    api: DaemonApi
    store_bound_mb: float
    tick_s: float  # the virtual venue's show seconds per tick
    samples: list[Sample] = field(default_factory=list)


def soak_config(directory: Path, speed: float, store_mb: float) -> tuple[Path, int]:
    """The demo's configuration on this run's ports, devices and data directory, at `speed`."""
    api_port, osc_port, broker_port = free_port(), free_udp_port(tcp_too=True), free_port()
    text = (ROOT / "config" / "demo.toml").read_text()
    replacements = {'listen = "127.0.0.1:8080"': f'listen = "{LOOPBACK}:{api_port}"',
                    'listen = "127.0.0.1:9000"': f'listen = "{LOOPBACK}:{osc_port}"',
                    '"127.0.0.1:9001"': f'"{LOOPBACK}:{free_udp_port()}"',
                    "mqtt://127.0.0.1:1884": f"mqtt://{LOOPBACK}:{broker_port}",
                    'data_dir = "../var/demo"': 'data_dir = "data"',
                    "/tmp/venue-gateway": str(directory / "dev"),
                    "max_mb = 256": f"max_mb = {store_mb:g}",
                    "snapshot_interval_s = 60": f"snapshot_interval_s = 60\noutbox_max_mb = {store_mb / 4:g}",
                    "seed = 7\nspeed = 1.0": f"seed = 7\nspeed = {speed:g}",
                    '"../models/': f'"{ROOT}/models/'}
    for old, new in replacements.items():
        if old not in text:
            raise RuntimeError(f"config/demo.toml no longer has {old!r}: bench/soak.py needs updating")
        text = text.replace(old, new)
    path = directory / "gateway.toml"
    path.write_text(text)
    return path, api_port


def _mib(paths: list[Path]) -> float:
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total / MIB


def _tree(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def _show_hours(run: Run, health: dict[str, Any]) -> float:
    """The virtual venue's show time, as its driver's ticks count it (the night loops; the ticks count on)."""
    return float(health["drivers"]["venue"]["detail"]["ticks"]) * run.tick_s / 3600


def sample(run: Run, pid: int, began: float, before: dict[float, float]) -> tuple[Sample, dict[float, float]]:
    status = proc_status(pid)
    threads = int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)[1])  # type: ignore[index]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    data = run.directory / "data"
    store = [p for p in _tree(data) if p.name.startswith("gateway.db")]
    after = lag_histogram(run.api.get("/metrics"))
    p99, worst = _lag(before, after)
    health = run.api.health()
    s = Sample(time.monotonic() - began, _show_hours(run, health), status["VmRSS"] / 1024, fds, threads,
               _mib(store), health["store"]["used_bytes"] / MIB, _mib(_tree(data)), p99, worst)
    return s, after


def _lag(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """The p99 and the max of the loop lag between two scrapes: the upper bounds of the buckets holding them."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(math.inf, 0.0)
    if not total:
        return math.nan, math.nan
    p99 = next(le for le, n in delta.items() if n >= 0.99 * total)
    worst = next(le for le, n in delta.items() if n >= total)
    return p99 * 1000, worst * 1000


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (nan with fewer than two points or no spread)."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    if len(points) < 2:
        return math.nan
    mx, my = statistics.fmean(x for x, _ in points), statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else math.nan


FIGURES = [("resident memory", "rss_mb", "MiB"), ("open file descriptors", "fds", ""), ("threads", "threads", ""),
           ("store files", "store_mb", "MiB"), ("store used", "used_mb", "MiB"), ("data directory", "data_mb", "MiB"),
           ("loop lag p99", "lag_p99_ms", "ms"), ("loop lag max", "lag_max_ms", "ms")]


def report(run: Run, real_s: float) -> str:
    samples = run.samples
    span = samples[-1].show_h if samples else 0.0
    steady = [s for s in samples if s.show_h >= min(WARMUP_SHOW_H, span / 2)]
    first = [s for s in steady if s.show_h < steady[0].show_h + 1] if steady else []
    last = [s for s in steady if s.show_h > span - 1] if steady else []
    rows = []
    for label, attr, unit in FIGURES:
        xs, ys = [s.show_h for s in steady], [float(getattr(s, attr)) for s in steady]
        per_h = slope(xs, ys)
        per_real_h = slope([s.real_s / 3600 for s in steady], ys)
        mean_first = statistics.fmean(float(getattr(s, attr)) for s in first) if first else math.nan
        mean_last = statistics.fmean(float(getattr(s, attr)) for s in last) if last else math.nan
        noise = statistics.pstdev([y for y in ys if not math.isnan(y)]) if len(ys) > 1 else math.nan
        rows.append([f"{label}{f' ({unit})' if unit else ''}", f"{per_h:+.4f}", f"{per_real_h:+.3f}",
                     f"{per_h * 720:+.2f}",
                     f"{mean_first:.2f}", f"{mean_last:.2f}", f"{noise:.2f}",
                     f"{min(ys, default=math.nan):.2f}", f"{max(ys, default=math.nan):.2f}"])
    head = (f"{span:.1f} show-hours in {real_s / 60:.1f} min ({len(samples)} samples, {len(steady)} after the "
            f"first show-hour's warm-up); store bound {run.store_bound_mb:g} MiB")
    headers = ["figure", "slope /show-h", "slope /real h", "x 720 show-h (a month)", "first hour", "last hour",
               "stdev", "min", "max"]
    return head + "\n" + table(headers, rows)


def _progress(s: Sample, bound: float) -> str:
    return (f"  show {s.show_h:6.2f} h  real {s.real_s / 60:6.1f} min  rss {s.rss_mb:6.1f} MiB  fds {s.fds:3d}  "
            f"threads {s.threads:2d}  store {s.store_mb:5.1f} (used {s.used_mb:5.1f} of {bound:g}) MiB  "
            f"data {s.data_mb:5.1f} MiB  "
            f"lag p99 {s.lag_p99_ms:5.1f} ms max {s.lag_max_ms:6.1f} ms")


def soak(show_hours: float, speed: float, sample_s: float, store_mb: float, keep: Path | None,
         snapshots: Path | None, max_real_min: float = math.inf) -> Run:
    directory = Path(tempfile.mkdtemp(prefix="vg-soak-")) if keep is None else keep
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dev").mkdir(exist_ok=True)
    config, api_port = soak_config(directory, speed, store_mb)
    venue = next(d for d in load(config).drivers if d.name == "venue")
    api = DaemonApi(f"http://{LOOPBACK}:{api_port}", TOKEN, timeout=5.0 if snapshots is None else 60.0)
    run = Run(directory, config, api, store_mb,
              venue.options.sample_interval_s)
    argv = [PYTHON, "-m", "gateway", "demo", "--config", str(config)]
    env = dict(os.environ)
    if snapshots is not None:
        snapshots.mkdir(parents=True, exist_ok=True)
        argv = [PYTHON, "-m", "bench.soak", "--child", str(snapshots), "--", *argv[3:]]
    title(f"soak: the demo at {speed:g}x for {show_hours:g} show-hours (about {show_hours * 3600 / speed / 60:.0f} "
          f"min), sampled every {sample_s:g} s, in {directory}")
    try:
        with child(argv, directory / "daemon.log", env=env) as proc:
            wait_until(lambda: run.api.health() is not None, STARTUP_TIMEOUT_S * (1 if snapshots is None else 5),
                       proc, "the gateway's API")
            began = time.monotonic()
            before = lag_histogram(run.api.get("/metrics"))
            next_at = began
            while True:
                next_at += sample_s
                time.sleep(max(0.0, next_at - time.monotonic()))
                if proc.poll() is not None:
                    raise RuntimeError(f"the gateway exited with {proc.returncode}:\n{tail(directory / 'daemon.log')}")
                if snapshots is not None:  # the loop stands still while the daemon writes it: wait for it
                    os.kill(proc.pid, signal.SIGUSR1)
                    wait_until(lambda: len(list(snapshots.glob("*.types.json"))) > len(run.samples), 600, proc,
                               "a snapshot")
                s, before = sample(run, proc.pid, began, before)
                run.samples.append(s)
                print(_progress(s, store_mb), flush=True)
                if s.show_h >= show_hours or s.real_s >= max_real_min * 60:
                    break
        print(report(run, time.monotonic() - began), flush=True)
    finally:
        _stop_leftovers(directory)
        if keep is None and snapshots is None:
            shutil.rmtree(directory, ignore_errors=True)
    return run


def _stop_leftovers(directory: Path) -> None:
    """The demo's Mosquitto runs in a session of its own: a gateway killed before it stopped it leaves it behind.
    Only processes started on this run's files are ended (their command line names its directory)."""
    mark, ours = str(directory).encode(), _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        with contextlib.suppress(OSError):
            if mark in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGTERM)


def _ancestors() -> set[int]:
    """This process and those above it (a shell that started it with --keep names the directory too)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


# -- tracemalloc: the daemon under it, and the diff of its snapshots ----------------------------------------
def child_main(snapshots: Path, argv: list[str]) -> int:
    """The gateway's CLI under tracemalloc; each SIGUSR1 writes a snapshot (the handler runs between bytecodes
    of the main thread, so the loop is paused while it writes)."""
    tracemalloc.start(FRAMES)
    count = 0

    def dump(signum: int, frame: object) -> None:
        nonlocal count
        tracemalloc.take_snapshot().dump(str(snapshots / f"{count:05d}.snapshot"))
        types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        (snapshots / f"{count:05d}.types.json").write_text(json.dumps(types))
        count += 1

    signal.signal(signal.SIGUSR1, dump)
    from gateway.cli import main

    return main(argv)


def diff(snapshots: Path, top: int, skip: int) -> None:
    files = sorted(snapshots.glob("*.snapshot"))
    if len(files) < skip + 2:
        raise SystemExit(f"{snapshots}: {len(files)} snapshots, at least {skip + 2} needed")
    first, last = tracemalloc.Snapshot.load(str(files[skip])), tracemalloc.Snapshot.load(str(files[-1]))
    filters = [tracemalloc.Filter(False, tracemalloc.__file__),
               tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    first, last = first.filter_traces(filters), last.filter_traces(filters)
    traced = [sum(s.size for s in snap.statistics("filename")) / 1e6 for snap in (first, last)]
    print(f"{files[skip].name} -> {files[-1].name}: traced {traced[0]:.2f} -> {traced[1]:.2f} MB")
    before, after = (collections.Counter(json.loads(f.with_suffix(".types.json").read_text()))
                     for f in (files[skip], files[-1]))
    print(f"\n-- the {top} object types (gc) that grew most")
    for name, grown in sorted(((n, after[n] - before[n]) for n in after), key=lambda x: -x[1])[:top]:
        print(f"{grown:+9d}  now {after[name]:9d}  {name}")
    for key in ("lineno", "traceback"):
        print(f"\n-- the {top} sites that grew most, by {key}")
        for stat in last.compare_to(first, key)[:top]:
            print(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  now {stat.size / 1024:9.1f} KiB")
            frames = stat.traceback.format(limit=6 if key == "traceback" else 1)
            print("    " + "\n    ".join(frames))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        return child_main(Path(args[1]), args[3:])
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--show-hours", type=float, default=float(os.environ.get("SOAK_SHOW_HOURS", 24)),
                        help="show time to run (default 24, or SOAK_SHOW_HOURS)")
    parser.add_argument("--speed", type=float, default=float(os.environ.get("SOAK_SPEED", 60)),
                        help="show seconds per real second (default 60, or SOAK_SPEED)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="real seconds between samples (default 10)")
    parser.add_argument("--store-mb", type=float, default=64.0,
                        help="the store's bound, store.max_mb (default 64: full within the run)")
    parser.add_argument("--max-real-min", type=float, default=math.inf,
                        help="stop after this many real minutes, show time reached or not")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (default: a temporary one)")
    parser.add_argument("--tracemalloc", type=Path, metavar="DIR", help="snapshots of the daemon's allocations")
    parser.add_argument("--diff", type=Path, metavar="DIR", help="compare the snapshots in DIR, and stop")
    parser.add_argument("--skip", type=int, default=3, help="with --diff: the snapshots of the warm-up to skip")
    options = parser.parse_args(args)
    if options.diff is not None:
        diff(options.diff, 25, options.skip)
        return 0
    exit_on_signals()
    soak(options.show_hours, options.speed, options.sample_s, options.store_mb, options.keep, options.tracemalloc,
         options.max_real_min)
    return 0


if __name__ == "__main__":
    sys.exit(main())
