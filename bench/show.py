"""Show: OSC in -> Art-Net out, measured on the wire. The real daemon (`venue-gateway run`, sim venue at 10x,
8 universes at 40 Hz) gets `/vg/dmx/1/1 ,i V` over UDP and sends ArtDmx to a socket of this benchmark, which
takes the kernel's arrival timestamps: latency raw and beyond the wait for the next frame slot, frame interval
jitter, and OSC messages handled per second with the event-loop lag meanwhile. OLA (olad, OSC plugin in, Art-Net
plugin out) does the same job in the same run as the peer, with the daemon stopped; the daemon's own FrameClock
alone on an idle asyncio loop is the floor of frame timing. Meanwhile a console (the `sacn` package's sender,
bench/console.py) streams 8 universes of sACN in at 44 Hz, every channel changing every frame, to the daemon's
`sacn-in` driver: the show figures hold, or not, with a console's input to take as well."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.common import (
    PYTHON,
    ROOT,
    Figure,
    child,
    exit_on_signals,
    figures_table,
    latency_line,
    percentile,
    title,
    wait_until,
)
from bench.console import Console
from bench.daemon_probe import DaemonApi, cpu_seconds, histogram_p99_ms, histogram_quantile_ms, lag_histogram
from bench.osc_artnet import (
    FRAME_HZ,
    GAP_S,
    LAG_INTERVAL_MS,
    SPEED,
    TARGET_BEYOND_P99_MS,
    TARGET_JITTER_P99_MS,
    TOKEN,
    UNIVERSES,
    Latency,
    Target,
    Wire,
    beyond_slot,
    blast,
    drive_all,
    frame_errors,
    latency,
    udp_drops,
    udp_port_holders,
    wire,
    write_config,
)
from drivers.dmx.artnet_codec import PORT as ARTNET_PORT
from gateway.dmx import FrameClock
from gateway.looplag import LoopLag
from peers.ola import OSC_ADDRESS, Ola, Olad, osc_in_artnet_out
from peers.ports import LOOPBACK, free_port, free_udp_port

OLA_DEVICES = ("ArtNet", "OSC Device")
TARGET_OSC_PER_S = 20_000.0
OFFERED_PER_S = 1.1 * TARGET_OSC_PER_S  # a tenth above the target, so meeting it does not hinge on rounding
TARGET_LAG_P99_MS = 5.0
CONSOLE_UNIVERSES = tuple(range(1, 9))  # the console's own universes, into the daemon's sacn-in
CONSOLE_HZ = 44


def add_console_input(config: Path, port: int) -> None:
    """The show daemon's configuration given an sACN input of the console's universes (unicast on loopback)."""
    with config.open("a") as out:
        out.write(f'''
[drivers.console]
type = "sacn-in"
bind = "{LOOPBACK}"
port = {port}
multicast = false
listen_universes = {list(CONSOLE_UNIVERSES)}
''')


@dataclass(frozen=True)
class Load:
    """One OSC flood: offered and handled messages, drops, and the loop meanwhile."""

    label: str
    seconds: float
    sent: int
    handled: int
    dropped: int  # by the kernel, at the receiver's socket
    lag_p99_ms: float = math.nan  # the daemon's own window (its last 1200 x 10 ms: the flood)
    lag_hist_p99_ms: float = math.nan  # the /metrics histogram between two scrapes, interpolated
    lag_bucket_ms: float = math.nan  # ... and the upper bound of its bucket
    lag_max_ms: float = math.nan
    lag_samples: int = 0
    cpu: float = math.nan  # share of one core
    frame_error_p99_ms: float = math.nan  # frame interval |error| on the wire meanwhile

    @property
    def offered(self) -> float:
        return self.sent / self.seconds

    @property
    def rate(self) -> float:
        return self.handled / self.seconds

    def line(self) -> str:
        text = (f"{self.label}: sent {self.sent:,} in {self.seconds:.1f} s ({self.offered:,.0f}/s), handled"
                f" {self.handled:,} ({self.rate:,.0f}/s), dropped by the kernel {self.dropped:,}"
                f" ({100 * self.dropped / max(1, self.sent):.1f} %)")
        if not math.isnan(self.lag_p99_ms):
            text += (f"; loop lag p99 {self.lag_p99_ms:.3f} ms, max {self.lag_max_ms:.3f} ms ({self.lag_samples}"
                     f" samples), /metrics p99 ~{self.lag_hist_p99_ms:.3f} ms (bucket <= {self.lag_bucket_ms:g} ms);"
                     f" frame interval |error| p99 {self.frame_error_p99_ms:.3f} ms (wire);"
                     f" daemon CPU {100 * self.cpu:.0f} %")
        return text


def gateway_load(api: DaemonApi, pid: int, target: Target, w: Wire, label: str, seconds: float,
                 rate: float | None) -> Load:
    h0, m0, c0, d0 = api.health(), api.get("/metrics"), cpu_seconds(pid), udp_drops(target.port)
    since = time.time_ns()
    sent, elapsed = blast(target, seconds, rate)
    errors, _, _ = frame_errors(w.packets, since, time.time_ns())
    h1 = api.health()  # first: its loop-lag window is then the flood's last 12 s
    c1 = cpu_seconds(pid)
    time.sleep(0.3)  # what was queued in the socket is handled
    m1, h2 = api.get("/metrics"), api.health()
    handled = h2["drivers"]["osc"]["detail"]["received"] - h0["drivers"]["osc"]["detail"]["received"]
    before, after = lag_histogram(m0), lag_histogram(m1)
    lag = h1["loop_lag"]
    return Load(label, elapsed, sent, handled, udp_drops(target.port) - d0, lag["p99_ms"],
                histogram_quantile_ms(before, after, 0.99), histogram_p99_ms(before, after)[0], lag["max_ms"],
                lag["samples"], (c1 - c0) / elapsed, ms(errors, 99))


@dataclass
class GatewayRun:
    latency: Latency
    waits: list[float]
    beyond: list[float]
    light_lag: dict[str, float]  # the daemon's loop lag over the last 12 s of the latency phase
    light_lag_hist_p99_ms: float  # ... and over all of it from /metrics, interpolated
    jitter: list[float]  # |interval - 25 ms| of consecutive frames, seconds
    frames: int
    full_frames: int
    missed_frames: int
    spread: list[float]  # first to last packet of a frame, seconds
    driven: int
    health_dmx: dict[str, Any]
    loads: list[Load]
    wire_other: int
    console: dict[str, Any]  # the console's packets sent, and the input driver's health after the run


def gateway(tmp: Path, samples: int, jitter_s: float, load_s: float, console: bool) -> GatewayRun:
    api_port, osc_port = free_port(), free_udp_port(tcp_too=True)
    api = DaemonApi(f"http://{LOOPBACK}:{api_port}", TOKEN, timeout=10)
    console_port = free_udp_port()
    with wire() as w, contextlib.ExitStack() as streaming:
        config = write_config(tmp, api_port, osc_port, w.port)
        if console:
            add_console_input(config, console_port)
        args = [str(ROOT / ".venv/bin/venue-gateway"), "run", "--config", str(config), "--data-dir", str(tmp / "data")]
        with child(args, tmp / "daemon.log") as daemon:
            wait_until(lambda: api.health()["status"] == "ok", 30, daemon, "the daemon reporting status ok")
            desk = None
            if console:
                desk = streaming.enter_context(Console(CONSOLE_UNIVERSES, console_port, CONSOLE_HZ))
                streaming.enter_context(desk.busy())
                time.sleep(1.0)  # the input has every universe's source before the figures start
            target = Target(osc_port, "/vg/dmx/{u}/{c}")
            m0 = api.get("/metrics")
            result = latency(target, w, samples)
            light_lag = api.health()["loop_lag"]
            light_hist = histogram_quantile_ms(lag_histogram(m0), lag_histogram(api.get("/metrics")), 0.99)

            since = time.time_ns() + 200_000_000  # from 0.2 s in: every universe changes in every frame by then
            driven = drive_all(target, jitter_s)
            until = time.time_ns()
            health = api.health()
            loads = [gateway_load(api, daemon.pid, target, w, f"{OFFERED_PER_S:,.0f}/s offered", load_s,
                                  OFFERED_PER_S),
                     gateway_load(api, daemon.pid, target, w, "flat out", load_s, None)]
            target.sock.close()
            taken = api.health()["drivers"].get("console", {}) if console else {}
            streaming.close()  # the console stops before the daemon does
        waits, beyond = beyond_slot(result, w.packets)
        jitter, run, missed = frame_errors(w.packets, since, until)
        other = w.other
    return GatewayRun(result, waits, beyond, light_lag, light_hist, jitter, len(run),
                      sum({p.universe for p in f} >= set(UNIVERSES) for f in run), missed,
                      [(f[-1].at_ns - f[0].at_ns) / 1e9 for f in run], driven, health["dmx"], loads, other,
                      {"sent": desk.packets if desk else 0, "input": taken})


# -- OLA, the peer --------------------------------------------------------------------------------------
@dataclass
class OlaRun:
    latency: Latency
    loads: list[Load]
    version: str


def ola_load(target: Target, label: str, seconds: float, rate: float | None) -> Load:
    """OLA counts no OSC messages: handled = sent - what the kernel dropped at olad's OSC socket."""
    d0 = udp_drops(target.port)
    sent, elapsed = blast(target, seconds, rate)
    time.sleep(0.3)
    dropped = udp_drops(target.port) - d0
    return Load(label, elapsed, sent, sent - dropped, dropped)


def ola(tmp: Path, samples: int, load_s: float) -> OlaRun:
    """olad, OSC in on a free port and Art-Net out to 127.0.0.1:6454, where this benchmark listens."""
    if udp_port_holders(ARTNET_PORT):
        raise RuntimeError(f"UDP port {ARTNET_PORT} is held by another socket: OLA's Art-Net output can only be"
                           " received on it, and nothing else may be listening there")
    osc_port = free_udp_port()
    olad = Olad(tmp, osc_in_artnet_out(osc_port))
    http = Ola(olad.http_port)
    with child(olad.argv, tmp / "olad.log", user=olad.user) as proc:
        wait_until(lambda: {d for d in OLA_DEVICES for p in http.ports() if p["device"].startswith(d)}
                   == set(OLA_DEVICES), 20, proc, "olad showing its Art-Net and OSC ports")
        http.patch(1, http.port("OSC Device", False), http.port("ArtNet", True))
        version = http.version()
        with wire(ARTNET_PORT, share=True) as w:
            target = Target(osc_port, OSC_ADDRESS.replace("%d", "{u}") + "/{c}")
            result = latency(target, w, samples)
            with w.paused():
                loads = [ola_load(target, f"{OFFERED_PER_S:,.0f}/s offered", load_s, OFFERED_PER_S),
                         ola_load(target, "flat out", load_s, None)]
            target.sock.close()
            if proc.poll() is not None:
                raise RuntimeError(f"olad exited with {proc.returncode} during the measurement")
    return OlaRun(result, loads, version)


# -- the floor: the same frame clock on an idle asyncio loop ---------------------------------------------
async def _idle_clock(seconds: float) -> dict[str, float]:
    """gateway.dmx.FrameClock at 40 Hz and the daemon's 10 ms loop-lag timer, nothing else on the loop."""
    clock = FrameClock(FRAME_HZ)
    clock.lateness = deque(maxlen=100_000)
    lag = LoopLag(CollectorRegistry(), LAG_INTERVAL_MS / 1000, window=100_000)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(clock.run()), loop.create_task(lag.run())]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    late = list(clock.lateness)
    errors = [abs(b - a) for a, b in itertools.pairwise(late)]  # interval - period = change of lateness
    return {"late_p50_ms": ms(late, 50), "late_p99_ms": ms(late, 99), "error_p50_ms": ms(errors, 50),
            "error_p99_ms": ms(errors, 99), "frames": len(late), "lag_p99_ms": lag.summary()["p99_ms"]}


def idle_floor(seconds: float, tmp: Path) -> dict[str, float]:
    with child([PYTHON, "-m", "bench.show", "--idle-clock", str(seconds)], tmp / "idle.log",
               stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=seconds + 30)
    floor: dict[str, float] = json.loads(out)
    return floor


# -- the run --------------------------------------------------------------------------------------------
def ms(values: Sequence[float], p: float) -> float:
    return percentile(values, p) * 1000


def run(samples: int = 400, jitter_s: float = 10.0, load_s: float = 12.0, ola_load_s: float = 5.0,
        idle_s: float = 8.0, console: bool = True) -> list[Figure]:
    title(f"Show: OSC -> Art-Net on loopback, venue-gateway run (sim at {SPEED:g}x, {len(UNIVERSES)} universes at"
          f" {FRAME_HZ:g} Hz) against olad; {samples} latency samples {GAP_S[0] * 1000:.0f}-{GAP_S[1] * 1000:.0f} ms"
          f" apart, {jitter_s:g} s of all-universe frames, {load_s:g} s OSC floods"
          + (f"; a console streaming {len(CONSOLE_UNIVERSES)} sACN universes in at {CONSOLE_HZ} Hz meanwhile"
             if console else ""))
    with tempfile.TemporaryDirectory(prefix="vg-bench-show-") as tmp_name:
        tmp = Path(tmp_name)
        floor = idle_floor(idle_s, tmp)  # first, alone: this machine's floor, nothing else running
        (tmp / "gateway").mkdir()
        g = gateway(tmp / "gateway", samples, jitter_s, load_s, console)
        (tmp / "ola").mkdir()
        o: OlaRun | None = None
        why = ""
        try:
            o = ola(tmp / "ola", samples, ola_load_s)
        except Exception as exc:  # the gateway's figures stand without the peer
            why = f"{type(exc).__name__}: {exc}"
            log = tmp / "ola" / "olad.log"
            if log.exists():
                why += "\n  olad.log: " + "\n  ".join(log.read_text(errors="replace").splitlines()[-5:])
    return report(g, o, why, floor)


def report(g: GatewayRun, o: OlaRun | None, why: str, floor: dict[str, float]) -> list[Figure]:
    lat = g.latency.seconds
    if g.console["sent"]:
        taken = g.console["input"].get("detail", {})
        print(f"console: {g.console['sent']:,} sACN packets sent ({len(CONSOLE_UNIVERSES)} universes at {CONSOLE_HZ}"
              f" Hz); the daemon's sacn-in: {taken.get('received', 0):,} received, {taken.get('changes', 0):,} "
              f"changes, {len(taken.get('universes', {}))} universes ({g.console['input'].get('state')})")
    print(latency_line("gateway OSC -> ArtDmx, raw              ", lat))
    print(latency_line("gateway, wait for the next frame slot   ", g.waits))
    print(latency_line("gateway, beyond the frame slot          ", g.beyond))
    print(f"  ({g.latency.missing} samples never seen on the wire within 1 s;"
          f" {sum(b > 0.5 / FRAME_HZ for b in g.beyond)} missed the first frame slot after their send)")
    if o is not None:
        print(latency_line(f"OLA {o.version} OSC -> ArtDmx, raw          ", o.latency.seconds))
        print(f"  ({o.latency.missing} samples never seen on the wire within 1 s; OLA sends on every change,"
              " it has no frame clock)")
    else:
        print(f"OLA peer NOT measured: {why}")
    period_ms = 1000 / FRAME_HZ
    print(latency_line(f"frame interval |error| vs {period_ms:g} ms (wire)  ", g.jitter))
    print(f"  ({g.frames} frames, {g.full_frames} carrying all {len(UNIVERSES)} universes, {g.missed_frames} missing;"
          f" {g.driven:,} OSC messages sent; frame spread first->last packet p50 {ms(g.spread, 50):.3f} ms,"
          f" p99 {ms(g.spread, 99):.3f} ms; {g.wire_other} non-ArtDmx datagrams)")
    fl = g.health_dmx["frame_lateness"]
    print(f"daemon's own frame lateness (health, last {fl['samples']} frames): p50 {fl['p50_ms']:.3f} ms,"
          f" p99 {fl['p99_ms']:.3f} ms, max {fl['max_ms']:.3f} ms; {g.health_dmx['frames']} frames,"
          f" {g.health_dmx['skipped_frames']} skipped")
    print(f"floor, the same FrameClock + 10 ms lag timer alone on an idle asyncio loop ({floor['frames']:.0f} frames):"
          f" lateness p50 {floor['late_p50_ms']:.3f} ms, p99 {floor['late_p99_ms']:.3f} ms; interval |error| p50"
          f" {floor['error_p50_ms']:.3f} ms, p99 {floor['error_p99_ms']:.3f} ms; loop lag p99"
          f" {floor['lag_p99_ms']:.3f} ms")
    ll = g.light_lag
    print(f"daemon loop lag, latency phase (light OSC): p99 {ll['p99_ms']:.3f} ms, max {ll['max_ms']:.3f} ms"
          f" (health, last {ll['samples']:.0f} x {LAG_INTERVAL_MS} ms); /metrics p99 ~{g.light_lag_hist_p99_ms:.3f} ms")
    for load in g.loads:
        print("gateway " + load.line())
    if o is not None:
        for load in o.loads:
            print("OLA " + load.line() + " (handled = sent - dropped: olad counts no OSC)")
    paced, flat = g.loads
    peer_lat = o.latency.seconds if o is not None else []
    ola_paced, ola_flat = o.loads if o is not None else (None, None)

    def peer(values: Sequence[float], p: float) -> float | None:
        return ms(values, p) if values else None

    return [
        Figure("OSC->ArtDmx latency p50", ms(lat, 50), "ms", peer=peer(peer_lat, 50), peer_label="OLA"),
        Figure("OSC->ArtDmx latency p99", ms(lat, 99), "ms", peer=peer(peer_lat, 99), peer_label="OLA"),
        Figure("OSC->ArtDmx beyond frame slot p50", ms(g.beyond, 50), "ms", peer=peer(peer_lat, 50),
               peer_label="OLA (raw)"),
        Figure("OSC->ArtDmx beyond frame slot p99", ms(g.beyond, 99), "ms", TARGET_BEYOND_P99_MS,
               peer=peer(peer_lat, 99), peer_label="OLA (raw)"),
        Figure("frame interval |error| p50", ms(g.jitter, 50), "ms", peer=floor["error_p50_ms"],
               peer_label="idle FrameClock"),
        Figure("frame interval |error| p99", ms(g.jitter, 99), "ms", TARGET_JITTER_P99_MS,
               peer=floor["error_p99_ms"], peer_label="idle FrameClock"),
        Figure("frame lateness p99 (daemon health)", fl["p99_ms"], "ms", peer=floor["late_p99_ms"],
               peer_label="idle FrameClock"),
        Figure(f"OSC handled/s, {paced.offered:,.0f}/s offered", paced.rate, "/s", TARGET_OSC_PER_S, "higher",
               peer=ola_paced.rate if ola_paced else None, peer_label="OLA"),
        Figure(f"loop lag p99, {paced.offered:,.0f} OSC/s", paced.lag_p99_ms, "ms", TARGET_LAG_P99_MS,
               peer=floor["lag_p99_ms"], peer_label="idle loop"),
        Figure(f"OSC dropped, {paced.offered:,.0f}/s offered", 100 * paced.dropped / max(1, paced.sent), "%",
               peer=100 * ola_paced.dropped / max(1, ola_paced.sent) if ola_paced else None, peer_label="OLA"),
        Figure("OSC handled/s, flat out", flat.rate, "/s", better="higher",
               peer=ola_flat.rate if ola_flat else None, peer_label="OLA"),
        Figure("loop lag p99, OSC flat out", flat.lag_p99_ms, "ms", peer=floor["lag_p99_ms"],
               peer_label="idle loop"),
    ]


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.show", description=__doc__)
    parser.add_argument("--samples", type=int, default=400, help="latency samples (default 400)")
    parser.add_argument("--jitter-seconds", type=float, default=10.0, help="of all-universe frames (default 10)")
    parser.add_argument("--load-seconds", type=float, default=12.0, help="per gateway OSC flood (default 12)")
    parser.add_argument("--ola-load-seconds", type=float, default=5.0, help="per OLA OSC flood (default 5)")
    parser.add_argument("--idle-seconds", type=float, default=8.0, help="of the idle FrameClock floor (default 8)")
    parser.add_argument("--no-console", action="store_true", help="no console streaming sACN in meanwhile")
    parser.add_argument("--idle-clock", type=float, metavar="S", help=argparse.SUPPRESS)  # the floor's child
    args = parser.parse_args()
    if args.idle_clock:
        print(json.dumps(asyncio.run(_idle_clock(args.idle_clock))))
        return
    print(figures_table(run(args.samples, args.jitter_seconds, args.load_seconds, args.ola_load_seconds,
                            args.idle_seconds, not args.no_console)))


if __name__ == "__main__":
    main()
