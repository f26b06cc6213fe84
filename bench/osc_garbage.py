"""OSC garbage: the real daemon (`venue-gateway run`, the show benchmark's configuration, logging at INFO) takes
3,000 malformed OSC packets a second from an allowed source, and, in the same run, 3,000 valid messages a second,
and nothing (the floor, on this machine as loaded as it is): the event loop's lag p99 in each (the daemon's own
10 ms lag timer), what its counters made of the garbage, and what reached its log. The garbage is every kind the
driver refuses: bytes that are not OSC, messages cut short, type tags it does not read, addresses and strings never
terminated, bundles of impossible element sizes (python-osc loops for ever on a negative one), bundles nested 1,500
deep (a RecursionError in python-osc) and arrays nested 20 deep."""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, Figure, child, exit_on_signals, figures_table, title, wait_until
from bench.daemon_probe import DaemonApi, cpu_seconds
from bench.osc_artnet import LAG_INTERVAL_MS, TOKEN, Target, blast, pace, udp_drops, wire, write_config
from drivers.osc.packets import BUNDLE
from peers.ports import LOOPBACK, free_port, free_udp_port

RATE_PER_S = 3000.0
TARGET_LAG_P99_MS = 5.0
SEED = 20


def garbage(count: int, seed: int = SEED) -> list[bytes]:
    """`count` malformed OSC packets, every kind in turn, each one different."""
    rng = random.Random(seed)
    valid = b"/vg/dmx/1/1\x00,i\x00\x00\x00\x00\x00\xff"
    header = BUNDLE + (1).to_bytes(8, "big")
    not_osc = bytes(b for b in range(256) if b not in b"/#")  # what neither a message nor a bundle starts with

    def nested(depth: int) -> bytes:
        packet = b"/vg/ping\x00\x00\x00\x00,\x00\x00\x00"
        for _ in range(depth):
            packet = header + len(packet).to_bytes(4, "big") + packet
        return packet

    def unterminated() -> bytes:
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(8, 1400)))

    deep = nested(1500)
    kinds: list[Callable[[], bytes]] = [
        lambda: bytes([rng.choice(not_osc)]) + rng.randbytes(rng.randrange(16, 1400)),
        lambda: valid[:rng.choice([*range(1, 12), *range(13, len(valid))])],  # (12 bytes: a message, no arguments)
        lambda: b"/vg/dmx/1/1\x00,i" + bytes([rng.choice(b"cSIjkq")]) + b"\x00" + rng.randbytes(8),
        lambda: b"/" + bytes(rng.randrange(33, 127) for _ in range(rng.randrange(8, 1400))),
        lambda: b"/vg/tempo\x00\x00\x00,s\x00\x00" + unterminated(),
        lambda: header + rng.randrange(-2**31, 0).to_bytes(4, "big", signed=True),
        lambda: header + rng.randrange(64, 2**31).to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 60)),
        lambda: header + (8).to_bytes(4, "big") + rng.randbytes(8).replace(b"/", b"_").replace(b"#", b"_"),
        lambda: deep[:-1] + bytes([rng.randrange(256)]),
        lambda: b"/vg/ping" + b"\x00" * 4 + b"," + b"[" * 20 + b"]" * 20 + b"\x00" * 3,
    ]
    return [kinds[i % len(kinds)]() for i in range(count)]


@dataclass(frozen=True)
class Phase:
    """One flood: what was sent, what the daemon counted and logged, and its loop meanwhile."""

    label: str
    sent: int
    seconds: float
    kernel_dropped: int
    counted: int  # by the driver: `malformed` + `too_deep` for garbage, `received` for valid messages
    lag: dict[str, float]  # the daemon's health window: its last 1200 x 10 ms, the flood's last 12 s
    cpu: float  # share of one core
    log_lines: int
    log_bytes: int
    tracebacks: int

    def line(self) -> str:
        return (f"{self.label}: sent {self.sent:,} in {self.seconds:.1f} s ({self.sent / self.seconds:,.0f}/s), "
                f"counted {self.counted:,}, dropped by the kernel {self.kernel_dropped:,}; loop lag p50 "
                f"{self.lag['p50_ms']:.3f} ms, p99 {self.lag['p99_ms']:.3f} ms, max {self.lag['max_ms']:.3f} ms "
                f"({self.lag['samples']:.0f} x {LAG_INTERVAL_MS} ms); daemon CPU {100 * self.cpu:.0f} %; log "
                f"{self.log_lines} lines, {self.log_bytes:,} bytes, {self.tracebacks} tracebacks")


def quiet(seconds: float) -> tuple[int, float]:
    """Nothing sent for `seconds`: the floor."""
    time.sleep(seconds)
    return 0, seconds


def phase(api: DaemonApi, pid: int, target: Target, log: Path, label: str, send: Callable[[], tuple[int, float]],
          counters: tuple[str, ...]) -> Phase:
    def counted(health: dict[str, Any]) -> int:
        detail = health["drivers"]["osc"]["detail"]
        return sum(int(detail.get(c, 0)) for c in counters)

    h0, c0, d0, size0 = api.health(), cpu_seconds(pid), udp_drops(target.port), log.stat().st_size
    sent, seconds = send()
    lag = api.health()["loop_lag"]  # first: its window is then the flood's last 12 s
    c1 = cpu_seconds(pid)
    time.sleep(0.3)  # what was queued in the socket is handled
    h1 = api.health()
    with log.open("rb") as f:
        f.seek(size0)
        added = f.read()
    return Phase(label, sent, seconds, udp_drops(target.port) - d0, counted(h1) - counted(h0), lag,
                 (c1 - c0) / seconds, added.count(b"\n"), len(added), added.count(b"Traceback"))


def run(seconds: float = 12.0) -> list[Figure]:
    title(f"OSC garbage: venue-gateway run (the show configuration, log level info), {seconds:g} s each of nothing,"
          f" {RATE_PER_S:,.0f} valid OSC messages/s and {RATE_PER_S:,.0f} malformed OSC packets/s, same run")
    junk = garbage(4096)
    with tempfile.TemporaryDirectory(prefix="vg-bench-osc-garbage-") as tmp_name:
        tmp = Path(tmp_name)
        api_port, osc_port = free_port(), free_udp_port(tcp_too=True)
        api = DaemonApi(f"http://{LOOPBACK}:{api_port}", TOKEN, timeout=10)
        log = tmp / "daemon.log"
        with wire() as w:
            config = write_config(tmp, api_port, osc_port, w.port, log_level="info")
            args = [str(ROOT / ".venv/bin/venue-gateway"), "run", "--config", str(config), "--data-dir",
                    str(tmp / "data")]
            with child(args, log) as daemon:
                wait_until(lambda: api.health()["status"] == "ok", 30, daemon, "the daemon reporting status ok")
                target = Target(osc_port, "/vg/dmx/{u}/{c}")
                idle = phase(api, daemon.pid, target, log, "nothing sent", lambda: quiet(seconds), ())
                valid = phase(api, daemon.pid, target, log, "valid /vg/dmx messages",
                              lambda: blast(target, seconds, RATE_PER_S), ("received",))
                bad = phase(api, daemon.pid, target, log, "malformed packets",
                            lambda: pace(target, junk, seconds, RATE_PER_S), ("malformed", "too_deep"))
                target.sock.close()
    for p in (idle, valid, bad):
        print(p.line())
    return [
        Figure(f"loop lag p99, {RATE_PER_S:,.0f} malformed OSC/s", bad.lag["p99_ms"], "ms", TARGET_LAG_P99_MS,
               peer=valid.lag["p99_ms"], peer_label=f"{RATE_PER_S:,.0f} valid/s"),
        Figure("loop lag p99, no OSC", idle.lag["p99_ms"], "ms"),
        Figure("malformed OSC counted", 100 * bad.counted / max(1, bad.sent - bad.kernel_dropped), "%", 100.0,
               "higher"),
        Figure(f"log bytes per {seconds:g} s of malformed OSC", bad.log_bytes, "B", peer=valid.log_bytes,
               peer_label="valid"),
    ]


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.osc_garbage", description=__doc__)
    parser.add_argument("--seconds", type=float, default=12.0, help="per flood (default 12: the lag window)")
    print(figures_table(run(parser.parse_args().seconds)))


if __name__ == "__main__":
    main()
