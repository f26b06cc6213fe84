"""Timecode cues: the error between each cue's effect start and the instant its timecode names, at 24, 25, 29.97
drop-frame and 30 fps. The real daemon (`venue-gateway run`) takes Art-Net TimeCode on its `artnet-in` driver (UDP
on loopback, a port of this benchmark's own) and runs a list of 100 cues. This benchmark is the console: a thread
sends one ArtTimeCode a frame at the frame's exact instant on the monotonic clock (slept to within 2 ms of it,
then spun), from 01:00:55:00 (so drop-frame crosses 01:01:00, whose frames 0 and 1 it skips). Each cue's effect
start is read back from `GET /api/v1/cues` (its `starts_at`: the wall clock, in ms, mapped to the monotonic clock
as this machine's clocks stand) and compared with the instant its label names on the sender's frame grid.

Not ola_timecode: it sends one frame a run (a process start, about 8 ms, with jitter of its own), so the instants
it sends at are not the frames' (the tests use it as the console; the benchmark needs frames at their instants).
Not what the virtual air's bands render: the `air` driver reports a zone's start spread, not its instants, so
the bands' own error is the wristband benchmark's (bench/wristband.py), on top of this one."""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import PYTHON, Figure, child, figures_table, percentile, title, wait_until
from gateway.show.timecode import Rate, Timecode
from peers.ports import LOOPBACK, free_port, free_udp_port

CUES = 100
SPACING_S = 0.12  # between cues; each of the four zones every 0.48 s, over the flash cap's 0.334 s
START = (1, 0, 55, 0)  # the first frame sent
FIRST_CUE_S = 2.0  # after it
AFTER_S = 1.5  # frames sent after the last cue
LEAD_MS = 500
TARGET_P99_MS = 5.0
TOKEN = "demo-viewer-token"
ZONES = ("floor", "balcony", "bar", "gallery")


def art_timecode(tc: Timecode) -> bytes:
    """ArtTimeCode as a console sends it (Art-Net 4: ID, OpCode 0x9700, version 14, two fillers, the label, type)."""
    kind = list(Rate).index(tc.rate)
    return b"Art-Net\x00" + struct.pack("<H", 0x9700) + bytes([0, 14, 0, 0, tc.frames, tc.seconds, tc.minutes,
                                                               tc.hours, kind])


def cue_labels(rate: Rate) -> list[Timecode]:
    """100 cues, SPACING_S apart from FIRST_CUE_S after the start, each on the frame that runs then."""
    start = Timecode(*START, rate).position()
    return [Timecode.at(start + FIRST_CUE_S + i * SPACING_S + rate.frame_s / 2, rate) for i in range(CUES)]


def write_config(directory: Path, rate: Rate, api_port: int, artnet_port: int) -> Path:
    lines = []
    for i, tc in enumerate(cue_labels(rate)):
        lines.append(f'[[cues]]\nid = "c{i:03}"\ntimecode = "{tc.label()}"\n'
                     f'effect = {{ kind = "solid", colour = "#{(i * 37) % 256:02x}80ff" }}\n'
                     f'zones = ["{ZONES[i % len(ZONES)]}"]\n')
    (directory / "cues.toml").write_text("\n".join(lines))
    zones = "".join(f'\n[[show.zones]]\nname = "{z}"\nindex = {i}\n' for i, z in enumerate(ZONES))
    path = directory / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "bench"
venue = "bench"
data_dir = "data"
log_level = "warning"

[api]
listen = "{LOOPBACK}:{api_port}"

[[api.tokens]]
name = "viewer"
role = "viewer"
demo_token = "{TOKEN}"

[show]
lead_ms = {LEAD_MS}

[show.cues]
file = "cues.toml"
rate = "{rate.value}"
{zones}
[drivers.console]
type = "artnet-in"
bind = "{LOOPBACK}"
port = {artnet_port}
""")
    return path


def get(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


class Console(threading.Thread):
    """Frames from `start` at their instants: frame k at `t0 + k * frame_s` on the monotonic clock."""

    def __init__(self, rate: Rate, frames: int, port: int) -> None:
        super().__init__(daemon=True)
        self.rate, self.frames, self.port = rate, frames, port
        self.t0 = time.monotonic() + 0.5
        self.late: list[float] = []  # how late each frame left (s)

    def run(self) -> None:
        start = Timecode(*START, self.rate).frame()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for k in range(self.frames):
                packet = art_timecode(Timecode.of_frame(start + k, self.rate))
                due = self.t0 + k * self.rate.frame_s
                if due - time.monotonic() > 0.002:
                    time.sleep(due - time.monotonic() - 0.002)
                while time.monotonic() < due:
                    pass
                sock.sendto(packet, (LOOPBACK, self.port))
                self.late.append(time.monotonic() - due)


def measure(rate: Rate, directory: Path) -> tuple[list[float], list[float], dict[str, Any]]:
    """The errors (ms) of the cues' starts against their labels' instants, the sender's lateness (ms), the list."""
    api_port, artnet_port = free_port(), free_udp_port()
    config = write_config(directory, rate, api_port, artnet_port)
    url = f"http://{LOOPBACK}:{api_port}/api/v1"
    with child([PYTHON, "-m", "gateway", "run", "--config", str(config)], directory / "daemon.log") as proc:
        def up() -> bool:
            try:
                return bool(get(f"{url}/cues")["state"] == "waiting")
            except OSError:
                return False
        wait_until(up, 30, proc, "the daemon's cue list")
        span = FIRST_CUE_S + (CUES - 1) * SPACING_S + AFTER_S
        console = Console(rate, int(span / rate.frame_s), artnet_port)
        console.start()
        console.join()
        doc = get(f"{url}/cues")
    start = Timecode(*START, rate).position()
    wall_minus_mono = time.time() - time.monotonic()
    errors = []
    for cue in doc["cues"]:
        if cue["starts_at"] is None:
            continue
        wall = datetime.fromisoformat(cue["starts_at"].replace("Z", "+00:00")).timestamp() + 0.0005  # (ms, cut)
        instant = console.t0 + Timecode.parse(cue["timecode"], rate).position() - start
        errors.append((wall - wall_minus_mono - instant) * 1000)
    return errors, [s * 1000 for s in console.late], doc


def run() -> list[Figure]:
    title("Timecode cues: effect start against the label's instant (100 cues a rate, Art-Net TimeCode in)")
    figures = []
    for rate in Rate:
        with tempfile.TemporaryDirectory(prefix="vg-bench-timecode-") as tmp:
            errors, late, doc = measure(rate, Path(tmp))
        fired = sum(c["state"] == "fired" for c in doc["cues"])
        absolute = [abs(e) for e in errors]
        print(f"{rate.value:>8} fps: {fired}/{CUES} fired; error p50 {percentile(absolute, 50):.2f} ms, p99 "
              f"{percentile(absolute, 99):.2f} ms, max {max(absolute, default=float('nan')):.2f} ms "
              f"(signed: min {min(errors, default=float('nan')):+.2f}, max {max(errors, default=float('nan')):+.2f}); "
              f"frames sent late by p99 {percentile(late, 99):.3f} ms; outliers {doc['outliers']}, jumps "
              f"{doc['jumps']}, dropped {doc['dropped']}")
        if fired < CUES:
            print("  not fired: " + ", ".join(f"{c['id']} {c['state']} ({c['why']})" for c in doc["cues"]
                                              if c["state"] != "fired"))
        figures.append(Figure(f"timecode cue start error p50, {rate.value} fps", percentile(absolute, 50), "ms"))
        figures.append(Figure(f"timecode cue start error p99, {rate.value} fps", percentile(absolute, 99), "ms",
                              TARGET_P99_MS if fired == CUES else 0.0))
    return figures


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    figures = run()
    print(figures_table(figures))
    return 0 if all(f.verdict != "SHORT" for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
