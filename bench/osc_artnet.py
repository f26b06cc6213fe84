"""The OSC -> Art-Net measuring harness that the show and cloud benchmarks share: the daemon's show configuration
(the virtual venue at 10x, 8 universes at 40 Hz, an `osc` driver in and an `artnet` driver out to this process), a
UDP socket taking its ArtDmx with the kernel's arrival timestamps, OSC senders, and what is read from the wire:
latency raw and beyond the wait for the next frame slot, frame interval errors, and the kernel's drops.

Run as `python -m bench.osc_artnet`, it is the send-on-change benchmark: OSC (and a console's sACN, through the
`sacn-in` driver's DMX thru) to ArtDmx on the wire with the output sending on change, the same with the frame
clock (`mode = "frames"`), and OLA, which sends on change, as the peer in the same run."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import random
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pythonosc.osc_message_builder import OscMessageBuilder
from sacn.messages.data_packet import DataPacket

from bench.common import (
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
from bench.daemon_probe import DaemonApi
from drivers.dmx.artnet_codec import PORT as ARTNET_PORT
from drivers.dmx.artnet_codec import ArtDmx, ArtNetError, decode
from peers.ola import OSC_ADDRESS, Ola, Olad, osc_in_artnet_out
from peers.ports import LOOPBACK, free_port, free_udp_port

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
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python 3.11 does not name it
RCVBUF = 4 << 20

TARGET_BEYOND_P99_MS = 2.0
TARGET_JITTER_P99_MS = 1.0
TARGET_OLA_RATIO = 2.0  # on change: OSC (and sACN in) to ArtDmx p99 at most twice OLA's raw p99, same run
SACN_IN_UNIVERSE = 101  # the console's universe into the daemon's sacn-in, passed through to universe 1


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


class Sender(Protocol):
    """What sets channel C of universe U to V on the far side: an OSC message, or a console's sACN packet."""

    def message(self, universe: int, channel: int, value: int) -> bytes: ...

    def send(self, data: bytes) -> None: ...


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


class SacnConsole:
    """A console's sACN into the daemon's `sacn-in` driver (unicast on loopback, a port of its own): universe
    SACN_IN_UNIVERSE, whose levels the driver passes through to universe 1; `message(1, C, V)` is the whole universe
    with channel C at V (the packet is built with the `sacn` package's codec, a new sequence number each)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.cid = tuple(uuid.uuid4().bytes)
        self.sequence = 0

    def message(self, universe: int, channel: int, value: int) -> bytes:
        levels = [0] * 512
        levels[channel - 1] = value
        self.sequence = (self.sequence + 1) % 256
        return bytes(DataPacket(self.cid, "bench console", SACN_IN_UNIVERSE, tuple(levels), 100,
                                self.sequence).getBytes())

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (LOOPBACK, self.port))


def arrive(target: Sender, w: Wire, value: int, timeout: float = 10.0) -> None:
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


def latency(target: Sender, w: Wire, samples: int, seed: int = 5) -> Latency:
    """`samples` new values of channel 1, universe 1, 30-70 ms apart; each found on the wire by its value."""
    arrive(target, w, 255)
    time.sleep(GAP_S[0])  # the first sample as far from the warm-up's last value as the others are apart
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
    return pace(target, [target.message(1, c, (c * 7 + r) % 256) for r in range(4) for c in range(1, 513)],
                seconds, rate)


def pace(target: Target, datagrams: Sequence[bytes], seconds: float, rate: float | None) -> tuple[int, float]:
    """`datagrams` in turn, over and over, at `rate` per second (None: as fast as this loop goes), for `seconds`;
    returns the datagrams sent and the seconds taken."""
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


# -- the daemon -----------------------------------------------------------------------------------------
def write_config(directory: Path, api_port: int, osc_port: int, wire_port: int, log_level: str = "warning",
                 mode: str = "frames", sacn_in_port: int | None = None) -> Path:
    """The show daemon's configuration in `directory`: its API on `api_port` (a viewer's token is TOKEN), OSC in on
    `osc_port`, ArtDmx out to `wire_port`, all on loopback. The output sends with the frame clock's ticks (the
    show figures are the frame clock's), or on change (`mode = "on-change"`). With `sacn_in_port`, a console's
    universe SACN_IN_UNIVERSE in by sACN on that port, passed through to universe 1."""
    console = "" if sacn_in_port is None else f"""
[drivers.console]
type = "sacn-in"
bind = "{LOOPBACK}"
port = {sacn_in_port}
multicast = false
listen_universes = [{SACN_IN_UNIVERSE}]
thru = {{ "{SACN_IN_UNIVERSE}" = 1 }}
"""
    zones = "".join(f'\n[[drivers.venue.zones]]\nname = "{name}"\ncapacity = {cap}\ndistance_m = {dist}\n'
                    for name, cap, dist in (("floor", 1200, 10), ("balcony", 400, 35), ("bar", 150, 45)))
    path = directory / "show.toml"
    path.write_text(f"""
[gateway]
id = "bench-show"
venue = "bench-hall"
data_dir = "data"
log_level = "{log_level}"

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
mode = "{mode}"

[drivers.venue]
type = "sim"
seed = 7
speed = {SPEED}
start_min = 95
racks = 4
channels_per_rack = 4
circuits = 2
{zones}{console}""")
    return path


# -- send on change: the benchmark ---------------------------------------------------------------------
@dataclass(frozen=True)
class DaemonRun:
    osc: Latency
    sacn: Latency | None
    beyond: list[float]  # frames: each OSC sample's latency beyond its wait for the frame slot (seconds)


def daemon(tmp: Path, mode: str, samples: int, sacn: bool) -> DaemonRun:
    """The show daemon with its Art-Net output in `mode`: OSC, then (with `sacn`) a console's sACN, to ArtDmx."""
    api_port, osc_port = free_port(), free_udp_port(tcp_too=True)
    sacn_port = free_udp_port() if sacn else None
    api = DaemonApi(f"http://{LOOPBACK}:{api_port}", TOKEN, timeout=10)
    tmp.mkdir()
    with wire() as w:
        config = write_config(tmp, api_port, osc_port, w.port, mode=mode, sacn_in_port=sacn_port)
        args = [str(ROOT / ".venv/bin/venue-gateway"), "run", "--config", str(config), "--data-dir", str(tmp / "data")]
        with child(args, tmp / "daemon.log") as proc:
            wait_until(lambda: api.health()["status"] == "ok", 30, proc, "the daemon reporting status ok")
            osc_target = Target(osc_port, "/vg/dmx/{u}/{c}")
            osc_result = latency(osc_target, w, samples)
            sacn_result = latency(SacnConsole(sacn_port), w, samples) if sacn_port is not None else None
            osc_target.sock.close()
        beyond = beyond_slot(osc_result, w.packets)[1] if mode == "frames" else []
    return DaemonRun(osc_result, sacn_result, beyond)


def ola(tmp: Path, samples: int) -> tuple[Latency, str]:
    """olad, OSC in and Art-Net out to 127.0.0.1:6454, where this benchmark listens: OLA sends on every change."""
    deadline = time.monotonic() + 60
    while udp_port_holders(ARTNET_PORT):  # (a test or another benchmark on the machine, for a while)
        if time.monotonic() > deadline:
            raise RuntimeError(f"UDP port {ARTNET_PORT} is held by another socket: OLA's Art-Net output can only be"
                               " received on it, and nothing else may be listening there")
        time.sleep(1)
    tmp.mkdir()
    osc_port = free_udp_port()
    olad = Olad(tmp, osc_in_artnet_out(osc_port))
    http = Ola(olad.http_port)
    devices = {"ArtNet", "OSC Device"}
    with child(olad.argv, tmp / "olad.log", user=olad.user) as proc:
        wait_until(lambda: {d for d in devices for p in http.ports() if p["device"].startswith(d)} == devices, 20,
                   proc, "olad showing its Art-Net and OSC ports")
        http.patch(1, http.port("OSC Device", False), http.port("ArtNet", True))
        with wire(ARTNET_PORT, share=True) as w:
            target = Target(osc_port, OSC_ADDRESS.replace("%d", "{u}") + "/{c}")
            result = latency(target, w, samples)
            target.sock.close()
        if proc.poll() is not None:
            raise RuntimeError(f"olad exited with {proc.returncode} during the measurement")
        return result, http.version()


def run(samples: int = 300) -> list[Figure]:
    title(f"Send on change: OSC and sACN in -> ArtDmx on loopback, venue-gateway run (sim at {SPEED:g}x,"
          f" {len(UNIVERSES)} universes) on change and with the {FRAME_HZ:g} Hz frame clock, against olad;"
          f" {samples} samples each, {GAP_S[0] * 1000:.0f}-{GAP_S[1] * 1000:.0f} ms apart")
    with tempfile.TemporaryDirectory(prefix="vg-bench-on-change-") as name:
        tmp = Path(name)
        on_change = daemon(tmp / "on-change", "on-change", samples, sacn=True)
        frames_run = daemon(tmp / "frames", "frames", samples, sacn=False)
        try:
            peer: tuple[Latency, str] | None = ola(tmp / "ola", samples)
            why = ""
        except Exception as exc:  # the gateway's figures stand without the peer
            peer, why = None, f"{type(exc).__name__}: {exc}"
    assert on_change.sacn is not None
    rows = [("gateway on change, OSC -> ArtDmx        ", on_change.osc),
            ("gateway on change, sACN in -> ArtDmx    ", on_change.sacn),
            ("gateway frames (40 Hz), OSC -> ArtDmx   ", frames_run.osc)]
    if peer is not None:
        rows.append((f"OLA {peer[1]} OSC -> ArtDmx (on change)", peer[0]))
    for label, result in rows:
        print(latency_line(label, result.seconds) + f"; {result.missing} never seen within 1 s")
    print(latency_line("gateway frames, beyond the frame slot   ", frames_run.beyond))
    if peer is None:
        print(f"OLA peer NOT measured: {why}")
    ola_p99 = ms(peer[0].seconds, 99) if peer is not None else None
    ola_p50 = ms(peer[0].seconds, 50) if peer is not None else None
    target = None if ola_p99 is None else TARGET_OLA_RATIO * ola_p99
    return [
        Figure("on change: OSC->ArtDmx p50", ms(on_change.osc.seconds, 50), "ms", peer=ola_p50, peer_label="OLA"),
        Figure("on change: OSC->ArtDmx p99", ms(on_change.osc.seconds, 99), "ms", target, peer=ola_p99,
               peer_label="OLA"),
        Figure("on change: sACN in->ArtDmx p50", ms(on_change.sacn.seconds, 50), "ms", peer=ola_p50,
               peer_label="OLA (OSC)"),
        Figure("on change: sACN in->ArtDmx p99", ms(on_change.sacn.seconds, 99), "ms", target, peer=ola_p99,
               peer_label="OLA (OSC)"),
        Figure("frames: OSC->ArtDmx p50", ms(frames_run.osc.seconds, 50), "ms", peer=ola_p50, peer_label="OLA"),
        Figure("frames: OSC->ArtDmx p99", ms(frames_run.osc.seconds, 99), "ms", peer=ola_p99, peer_label="OLA"),
    ]


def ms(values: Sequence[float], p: float) -> float:
    return percentile(values, p) * 1000


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.osc_artnet", description=__doc__)
    parser.add_argument("--samples", type=int, default=300, help="latency samples per path (default 300)")
    print(figures_table(run(parser.parse_args().samples)))


if __name__ == "__main__":
    main()
