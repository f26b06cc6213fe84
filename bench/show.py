"""Show: OSC in -> Art-Net out, measured on the wire. The real daemon (`venue-gateway run`, sim venue at 10x,
8 universes at 40 Hz) gets `/vg/dmx/1/1 ,i V` over UDP and sends ArtDmx to a socket of this benchmark, which
takes the kernel's arrival timestamps: latency raw and beyond the wait for the next frame slot, frame interval
jitter, and OSC messages handled per second with the event-loop lag meanwhile. OLA (olad, OSC plugin in, Art-Net
plugin out) does the same job in the same run as the peer, with the daemon stopped; the daemon's own FrameClock
alone on an idle asyncio loop is the floor of frame timing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pythonosc.osc_message_builder import OscMessageBuilder

from bench.common import (
    LOOPBACK,
    PYTHON,
    ROOT,
    Figure,
    child,
    exit_on_signals,
    figures_table,
    free_port,
    latency_line,
    percentile,
    title,
    wait_until,
)
from bench.venue import cpu_seconds, histogram_p99_ms, lag_histogram
from drivers.dmx.artnet_codec import PORT as ARTNET_PORT
from drivers.dmx.artnet_codec import ArtDmx, ArtNetError, decode
from gateway.dmx import FrameClock
from gateway.looplag import LoopLag

TOKEN = "bench-viewer-token"
SPEED = 10.0
FRAME_HZ = 40.0
PERIOD_NS = round(1e9 / FRAME_HZ)
UNIVERSES = tuple(range(1, 9))
LAG_INTERVAL_MS = 10  # the daemon's loop-lag timer: its health window (1200 samples) is then the last 12 s
GAP_S = (0.030, 0.070)  # between latency samples, drawn at random so sends fall anywhere in the frame
FRAME_GAP_NS = 5_000_000  # packets closer than this belong to one frame (frames are 25 ms apart)
GRID_SPREAD_NS = 1_000_000  # on-time frames arrive within this of each other (the frame interval target)
DRIVE_EVERY_S = 0.005  # the jitter phase changes every universe this often: each frame carries all 8
OLA_OSC_ADDRESS = "/dmx/universe/%d"
OLA_DEVICES = ("ArtNet", "OSC Device")
OLA_PLUGINS_OFF = ["dummy", "e131", "espnet", "ftdidmx", "gpio", "karate", "kinet", "milinst", "opendmx",
                   "openpixelcontrol", "pathport", "renard", "sandnet", "shownet", "spi", "stageprofi", "uartdmx",
                   "usbdmx", "usbserial"]
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python 3.11 does not name it
RCVBUF = 4 << 20

TARGET_BEYOND_P99_MS = 2.0
TARGET_JITTER_P99_MS = 1.0
TARGET_OSC_PER_S = 20_000.0
OFFERED_PER_S = 1.1 * TARGET_OSC_PER_S  # a tenth above the target, so meeting it does not hinge on rounding
TARGET_LAG_P99_MS = 5.0


# -- the wire -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Packet:
    at_ns: int  # the kernel's arrival time (CLOCK_REALTIME, as time.time_ns())
    universe: int  # the Art-Net Port-Address
    first: int  # the level of channel 1


class Wire:
    """A UDP socket on loopback taking ArtDmx, timestamped by the kernel on arrival, read by a thread."""

    def __init__(self, port: int = 0, *, share: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if share:  # beside olad's own 0.0.0.0:6454 (it sets SO_REUSEADDR too); the more specific bind gets unicast
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((LOOPBACK, port))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.packets: list[Packet] = []
        self.other = 0  # datagrams that are not ArtDmx (ArtPoll, ArtPollReply, ArtSync)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self.reading = threading.Event()  # cleared: datagrams stay in (and overflow) the socket buffer, unread
        self.reading.set()
        self._thread = threading.Thread(target=self._read, name="wire", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        space = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            if not self.reading.is_set():
                time.sleep(0.05)
                continue
            try:
                data, ancillary, _, _ = self.sock.recvmsg(1024, space)
            except TimeoutError:
                continue
            except OSError:
                return
            at_ns = next((s * 1_000_000_000 + ns for level, kind, raw in ancillary
                          if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                          for s, ns in [struct.unpack("qq", raw[:16])]), time.time_ns())
            try:
                packet = decode(data)
            except ArtNetError:
                self.other += 1
                continue
            if not isinstance(packet, ArtDmx):
                self.other += 1
                continue
            with self._changed:
                self.packets.append(Packet(at_ns, packet.port_address, packet.data[0]))
                self._changed.notify_all()

    def wait_for(self, check: Callable[[Packet], bool], start: int, timeout: float) -> Packet | None:
        """The first packet from index `start` on that passes `check`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            i = start
            while True:
                while i < len(self.packets):
                    if check(self.packets[i]):
                        return self.packets[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Not read meanwhile: a flood of OSC has the sender alone on the benchmark's interpreter."""
        self.reading.clear()
        try:
            yield
        finally:
            self.reading.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@contextlib.contextmanager
def wire(port: int = 0, *, share: bool = False) -> Iterator[Wire]:
    w = Wire(port, share=share)
    try:
        yield w
    finally:
        w.close()


def frames(packets: Sequence[Packet], since_ns: int = 0, until_ns: int = 2**63) -> list[list[Packet]]:
    """The packets between two times grouped into frames: a gap over 5 ms starts the next frame."""
    out: list[list[Packet]] = []
    for p in sorted((p for p in packets if since_ns <= p.at_ns < until_ns), key=lambda p: p.at_ns):
        if out and p.at_ns - out[-1][-1].at_ns < FRAME_GAP_NS:
            out[-1].append(p)
        else:
            out.append([p])
    return out


def frame_errors(packets: Sequence[Packet], since_ns: int, until_ns: int) -> tuple[list[float], list[list[Packet]],
                                                                                  int]:
    """|interval - 25 ms| between consecutive frames' first packets (seconds), the frames, and the frames missing
    (an interval of 1.5 periods or more: it counts as missing frames, not as jitter)."""
    run = frames(packets, since_ns, until_ns)
    intervals = [b[0].at_ns - a[0].at_ns for a, b in itertools.pairwise(run)]
    errors = [abs(i - PERIOD_NS) / 1e9 for i in intervals if i < 1.5 * PERIOD_NS]
    return errors, run, sum(round(i / PERIOD_NS) - 1 for i in intervals if i >= 1.5 * PERIOD_NS)


# -- OSC ------------------------------------------------------------------------------------------------
def osc(address: str, value: int) -> bytes:
    builder = OscMessageBuilder(address)
    builder.add_arg(value)
    return builder.build().dgram


@dataclass
class Target:
    """Where OSC goes: the daemon's /vg/dmx/U/C or OLA's /dmx/universe/U/C, on a loopback UDP port."""

    port: int
    template: str  # with {u} and {c}
    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    def message(self, universe: int, channel: int, value: int) -> bytes:
        return osc(self.template.format(u=universe, c=channel), value)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (LOOPBACK, self.port))


def arrive(target: Target, w: Wire, value: int, timeout: float = 10.0) -> None:
    """Send channel 1 of universe 1 to `value` until an ArtDmx shows it: the path is up end to end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        start = len(w.packets)
        target.send(target.message(1, 1, value))
        if w.wait_for(lambda p: p.universe == 1 and p.first == value, start, 0.3):
            return
    raise TimeoutError(f"no ArtDmx with channel 1 = {value} within {timeout:g} s of sending it by OSC")


@dataclass(frozen=True)
class Latency:
    sent_ns: list[int]
    arrived_ns: list[int]
    missing: int

    @property
    def seconds(self) -> list[float]:
        return [(a - s) / 1e9 for s, a in zip(self.sent_ns, self.arrived_ns, strict=True)]


def carries(value: int, after_ns: int) -> Callable[[Packet], bool]:
    return lambda p: p.universe == 1 and p.first == value and p.at_ns >= after_ns


def latency(target: Target, w: Wire, samples: int, seed: int = 5) -> Latency:
    """`samples` new values of channel 1, universe 1, 30-70 ms apart; each found on the wire by its value."""
    arrive(target, w, 255)
    rng = random.Random(seed)
    sent_ns: list[int] = []
    arrived_ns: list[int] = []
    missing = 0
    for i in range(samples):
        value = i % 255 + 1  # never the level before it (the warm-up left 255)
        data = target.message(1, 1, value)
        start = len(w.packets)
        due = time.monotonic() + rng.uniform(*GAP_S)
        sent = time.time_ns()
        target.send(data)
        packet = w.wait_for(carries(value, sent), start, 1.0)
        if packet is None:
            missing += 1
        else:
            sent_ns.append(sent)
            arrived_ns.append(packet.at_ns)
        time.sleep(max(0.0, due - time.monotonic()))
    return Latency(sent_ns, arrived_ns, missing)


def path_floor(result: Latency) -> int:
    """The fastest sample's latency (ns): the least time the wire and the gateway's parse take."""
    return min((a - s for s, a in zip(result.sent_ns, result.arrived_ns, strict=True)), default=0)


def beyond_slot(result: Latency, packets: Sequence[Packet], floor_ns: int | None = None) -> tuple[list[float],
                                                                                                list[float]]:
    """Each sample's wait for the frame slot at or after its send, and its latency beyond that wait (seconds).

    The slots are recovered from the frames seen on the wire within 2 s of the send: slot k = phase + k x 25 ms,
    the phase being the earliest frame's arrival modulo the period (so the tick's own lateness in the best frame
    is left out) among the frames within GRID_SPREAD_NS of the 5th percentile (taken around the median, so the grid
    does not wrap). Not the earliest of all: a tick is never early, only late, and one held up by more than half a
    period (the first frame of a daemon still starting, say) wraps round and looks early; taken for the grid, it
    would put its lateness on the samples within 2 s of it.
    A value that went out with a late tick of the slot before its send waited for nothing. A value sent less than
    the path's floor (the run's fastest sample: the wire and the OSC parse) before a slot cannot be in that frame,
    however fast the gateway: its slot is the next one (`floor_ns` gives it when `result` is a loaded part of a run)."""
    starts = [f[0].at_ns for f in frames(packets)]
    floor = path_floor(result) if floor_ns is None else floor_ns
    waits: list[float] = []
    beyond: list[float] = []
    for sent, arrived in zip(result.sent_ns, result.arrived_ns, strict=True):
        near = [s for s in starts if abs(s - sent) < 2_000_000_000]
        if not near:  # no frame within 2 s: cannot happen while the outputs keep universes alive every second
            continue
        ref = near[0]
        offsets = sorted((s - ref + PERIOD_NS // 2) % PERIOD_NS - PERIOD_NS // 2 for s in near)
        typical = offsets[len(offsets) // 2]
        around = sorted((o - typical + PERIOD_NS // 2) % PERIOD_NS - PERIOD_NS // 2 for o in offsets)
        low = around[len(around) // 20] - GRID_SPREAD_NS
        phase = ref + typical + next(d for d in around if d >= low)
        slot = phase + math.ceil((sent + floor - phase) / PERIOD_NS) * PERIOD_NS
        wait = slot - sent if arrived >= slot else 0
        waits.append(wait / 1e9)
        beyond.append((arrived - sent - wait) / 1e9)
    return waits, beyond


def drive_all(target: Target, seconds: float) -> int:
    """Every universe's channel 1 to a new value every 5 ms, so each frame carries all of them."""
    began = time.monotonic()
    k = 0
    while (now := time.monotonic()) - began < seconds:
        k += 1
        for u in UNIVERSES:
            target.send(target.message(u, 1, k % 255 + 1))
        time.sleep(max(0.0, began + k * DRIVE_EVERY_S - now))
    return k * len(UNIVERSES)


def blast(target: Target, seconds: float, rate: float | None) -> tuple[int, float]:
    """Channel N (1..512, changing values) of universe 1 at `rate` per second (None: as fast as this loop goes),
    for `seconds`; returns the messages sent and the seconds taken."""
    datagrams = [target.message(1, c, (c * 7 + r) % 256) for r in range(4) for c in range(1, 513)]
    n = len(datagrams)
    sock, address = target.sock, (LOOPBACK, target.port)
    sent = 0
    total = math.inf if rate is None else round(rate * seconds)
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds and sent < total:
        # paced: message k goes at k / rate, in steps of ~0.5 ms
        due = n * 2 if rate is None else min(int(total), int(elapsed * rate) + 1) - sent
        for _ in range(due):
            sock.sendto(datagrams[sent % n], address)
            sent += 1
        if rate is not None:
            time.sleep(0.0005)
    return sent, time.monotonic() - began


def udp_drops(port: int) -> int:
    """The kernel's count of datagrams dropped (receive buffer full) on the sockets bound to a UDP port."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rpartition(":")[2], 16) == port:
            total += int(fields[-1])
    return total


def udp_port_holders(port: int) -> int:
    return sum(int(line.split()[1].rpartition(":")[2], 16) == port
               for name in ("udp", "udp6") if Path(f"/proc/net/{name}").exists()
               for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:])


def free_udp_port(tcp_too: bool = False) -> int:
    """A UDP port free on loopback now (and TCP too when asked: the OSC driver listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((LOOPBACK, 0))
            port: int = u.getsockname()[1]
            if not tcp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port on loopback")


def histogram_quantile_ms(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of the observations between two scrapes, interpolated in its bucket as Prometheus does."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta[math.inf]
    if not total:
        return math.nan
    rank, low, below = q * total, 0.0, 0.0
    for le, n in delta.items():
        if n >= rank:
            if le == math.inf or n == below:
                return low * 1000
            return (low + (le - low) * (rank - below) / (n - below)) * 1000
        low, below = le, n
    return math.nan


# -- the daemon -----------------------------------------------------------------------------------------
def write_config(directory: Path, api_port: int, osc_port: int, wire_port: int) -> Path:
    zones = "".join(f'\n[[drivers.venue.zones]]\nname = "{name}"\ncapacity = {cap}\ndistance_m = {dist}\n'
                    for name, cap, dist in (("floor", 1200, 10), ("balcony", 400, 35), ("bar", 150, 45)))
    path = directory / "show.toml"
    path.write_text(f"""
[gateway]
id = "bench-show"
venue = "bench-hall"
data_dir = "data"
log_level = "warning"

[api]
listen = "{LOOPBACK}:{api_port}"

[[api.tokens]]
role = "viewer"
demo_token = "{TOKEN}"

[loop]
lag_interval_ms = {LAG_INTERVAL_MS}

[dmx]
universes = {list(UNIVERSES)}
frame_rate_hz = {FRAME_HZ:g}

[drivers.osc]
type = "osc"
listen = "{LOOPBACK}:{osc_port}"

[drivers.artnet]
type = "artnet"
targets = ["{LOOPBACK}:{wire_port}"]
bind = "{LOOPBACK}"

[drivers.venue]
type = "sim"
seed = 7
speed = {SPEED}
start_min = 95
racks = 4
channels_per_rack = 4
circuits = 2
{zones}""")
    return path


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def _health(base: str) -> dict[str, Any]:
    health: dict[str, Any] = json.loads(_get(f"{base}/api/v1/health"))
    return health


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


def gateway_load(base: str, pid: int, target: Target, w: Wire, label: str, seconds: float,
                 rate: float | None) -> Load:
    h0, m0, c0, d0 = _health(base), _get(f"{base}/metrics"), cpu_seconds(pid), udp_drops(target.port)
    since = time.time_ns()
    sent, elapsed = blast(target, seconds, rate)
    errors, _, _ = frame_errors(w.packets, since, time.time_ns())
    h1 = _health(base)  # first: its loop-lag window is then the flood's last 12 s
    c1 = cpu_seconds(pid)
    time.sleep(0.3)  # what was queued in the socket is handled
    m1, h2 = _get(f"{base}/metrics"), _health(base)
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


def gateway(tmp: Path, samples: int, jitter_s: float, load_s: float) -> GatewayRun:
    api_port, osc_port = free_port(), free_udp_port(tcp_too=True)
    base = f"http://{LOOPBACK}:{api_port}"
    with wire() as w:
        args = [str(ROOT / ".venv/bin/venue-gateway"), "run", "--config",
                str(write_config(tmp, api_port, osc_port, w.port)), "--data-dir", str(tmp / "data")]
        with child(args, tmp / "daemon.log") as daemon:
            wait_until(lambda: _health(base)["status"] == "ok", 30, daemon, "the daemon reporting status ok")
            target = Target(osc_port, "/vg/dmx/{u}/{c}")
            m0 = _get(f"{base}/metrics")
            result = latency(target, w, samples)
            light_lag = _health(base)["loop_lag"]
            light_hist = histogram_quantile_ms(lag_histogram(m0), lag_histogram(_get(f"{base}/metrics")), 0.99)

            since = time.time_ns() + 200_000_000  # from 0.2 s in: every universe changes in every frame by then
            driven = drive_all(target, jitter_s)
            until = time.time_ns()
            health = _health(base)
            loads = [gateway_load(base, daemon.pid, target, w, f"{OFFERED_PER_S:,.0f}/s offered", load_s,
                                  OFFERED_PER_S),
                     gateway_load(base, daemon.pid, target, w, "flat out", load_s, None)]
            target.sock.close()
        waits, beyond = beyond_slot(result, w.packets)
        jitter, run, missed = frame_errors(w.packets, since, until)
        other = w.other
    return GatewayRun(result, waits, beyond, light_lag, light_hist, jitter, len(run),
                      sum({p.universe for p in f} >= set(UNIVERSES) for f in run), missed,
                      [(f[-1].at_ns - f[0].at_ns) / 1e9 for f in run], driven, health["dmx"], loads, other)


# -- OLA, the peer --------------------------------------------------------------------------------------
class OlaHttp:
    def __init__(self, port: int) -> None:
        self.url = f"http://{LOOPBACK}:{port}"

    def ports(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/json/get_ports", timeout=5) as response:
            ports: list[dict[str, Any]] = json.load(response)
            return ports

    def port(self, device: str, output: bool) -> str:
        return str(next(p["id"] for p in self.ports() if p["device"].startswith(device) and p["is_output"] == output))

    def patch(self, universe: int, *port_ids: str) -> None:
        data = urllib.parse.urlencode({"id": universe, "name": f"u{universe}", "add_ports": ",".join(port_ids)})
        with urllib.request.urlopen(self.url + "/new_universe", data=data.encode(), timeout=5) as response:
            answer = json.load(response)
        if not answer.get("ok"):
            raise RuntimeError(f"OLA refused the patch of universe {universe}: {answer}")


@dataclass
class OlaRun:
    latency: Latency
    loads: list[Load]
    version: str


def ola_config(directory: Path, osc_port: int) -> None:
    # Art-Net: on loopback (use_loopback), every ArtDmx to the interface's broadcast address, which for lo is
    # 127.0.0.1 itself (no node has to subscribe first); OSC: one input port at /dmx/universe/N.
    (directory / "ola-artnet.conf").write_text("enabled = true\nip = 127.0.0.1\nuse_loopback = true\n"
                                               "use_limited_broadcast = false\nalways_broadcast = true\n")
    (directory / "ola-osc.conf").write_text(f"enabled = true\nudp_listen_port = {osc_port}\ninput_ports = 1\n"
                                            f"output_ports = 0\nport_0_address = {OLA_OSC_ADDRESS}\n")
    for plugin in OLA_PLUGINS_OFF:
        (directory / f"ola-{plugin}.conf").write_text("enabled = false\n")


def ola_load(target: Target, label: str, seconds: float, rate: float | None) -> Load:
    """OLA counts no OSC messages: handled = sent - what the kernel dropped at olad's OSC socket."""
    d0 = udp_drops(target.port)
    sent, elapsed = blast(target, seconds, rate)
    time.sleep(0.3)
    dropped = udp_drops(target.port) - d0
    return Load(label, elapsed, sent, sent - dropped, dropped)


def ola(tmp: Path, samples: int, load_s: float) -> OlaRun:
    """olad, OSC in on a free port and Art-Net out to 127.0.0.1:6454, where this benchmark listens."""
    olad = shutil.which("olad")
    if olad is None:
        raise RuntimeError("olad is not installed (Debian package ola)")
    if udp_port_holders(ARTNET_PORT):
        raise RuntimeError(f"UDP port {ARTNET_PORT} is held by another socket: OLA's Art-Net output can only be"
                           " received on it, and nothing else may be listening there")
    config = tmp / "ola"
    config.mkdir()
    osc_port, http_port, rpc_port = free_udp_port(), free_port(), free_port()
    ola_config(config, osc_port)
    user = None
    if os.geteuid() == 0:  # olad refuses to run as root
        user = "nobody"
        tmp.parent.chmod(0o711)  # the benchmark's temporary directory: only passed through
        for path in (tmp, config, *config.iterdir()):
            path.chmod(0o777 if path.is_dir() else 0o666)
    args = [olad, "--config-dir", str(config), "--http-port", str(http_port), "--rpc-port", str(rpc_port),
            "--no-register-with-dns-sd", "--log-level", "1"]
    http = OlaHttp(http_port)
    with child(args, tmp / "olad.log", user=user) as proc:
        wait_until(lambda: {d for d in OLA_DEVICES for p in http.ports() if p["device"].startswith(d)}
                   == set(OLA_DEVICES), 20, proc, "olad showing its Art-Net and OSC ports")
        http.patch(1, http.port("OSC Device", False), http.port("ArtNet", True))
        with urllib.request.urlopen(f"{http.url}/json/server_stats", timeout=5) as response:
            version = str(json.load(response).get("version", "?"))
        with wire(ARTNET_PORT, share=True) as w:
            target = Target(osc_port, OLA_OSC_ADDRESS.replace("%d", "{u}") + "/{c}")
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
        idle_s: float = 8.0) -> list[Figure]:
    title(f"Show: OSC -> Art-Net on loopback, venue-gateway run (sim at {SPEED:g}x, {len(UNIVERSES)} universes at"
          f" {FRAME_HZ:g} Hz) against olad; {samples} latency samples {GAP_S[0] * 1000:.0f}-{GAP_S[1] * 1000:.0f} ms"
          f" apart, {jitter_s:g} s of all-universe frames, {load_s:g} s OSC floods")
    with tempfile.TemporaryDirectory(prefix="vg-bench-show-") as tmp_name:
        tmp = Path(tmp_name)
        floor = idle_floor(idle_s, tmp)  # first, alone: this machine's floor, nothing else running
        (tmp / "gateway").mkdir()
        g = gateway(tmp / "gateway", samples, jitter_s, load_s)
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
    parser.add_argument("--idle-clock", type=float, metavar="S", help=argparse.SUPPRESS)  # the floor's child
    args = parser.parse_args()
    if args.idle_clock:
        print(json.dumps(asyncio.run(_idle_clock(args.idle_clock))))
        return
    print(figures_table(run(args.samples, args.jitter_seconds, args.load_seconds, args.ola_load_seconds,
                            args.idle_seconds)))


if __name__ == "__main__":
    main()
