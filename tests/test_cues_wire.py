"""The cue list on the wire: OLA as the console, in a network namespace of its own behind a veth pair, sends Art-Net
TimeCode (`ola_timecode`, one frame a run, 25 fps) to the gateway daemon's `artnet-in` driver. Cues start at their
labels (against the frames' arrivals as this test hears them), a seek skips the cue it passes over, and timecode
that stops freezes the list."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.show.timecode import Rate, Timecode
from peers.ola import Olad
from peers.ports import free_port
from tests.conftest import OPERATOR, Daemon, require

pytestmark = pytest.mark.wire  # OLA broadcasts on the machine's Art-Net port

HOST, NODE = "10.78.0.1", "10.78.0.2"
OLA_RPC_PORT = 9010  # ola_timecode talks to olad here, and only here (in the namespace: no other olad sees it)
FPS = Rate.EBU
CUES = """
[[cues]]
id = "first"
timecode = "01:00:01:00"
effect = { kind = "solid", colour = "#ff0000" }

[[cues]]
id = "passed"
timecode = "01:00:02:00"
effect = { kind = "solid", colour = "#00ff00" }

[[cues]]
id = "after-seek"
timecode = "01:00:03:10"
effect = { kind = "solid", colour = "#0000ff" }

[[cues]]
id = "frozen"
timecode = "01:00:04:00"
effect = { kind = "solid", colour = "#ffffff" }
"""


def config(directory: Path, port: int) -> Path:
    (directory / "cues.toml").write_text(CUES)
    path = directory / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "gw"
venue = "hall"
data_dir = "data"

[api]
listen = "127.0.0.1:{port}"

[[api.tokens]]
name = "viewer"
role = "viewer"
demo_token = "demo-viewer-token"

[[api.tokens]]
name = "operator"
role = "operator"
demo_token = "demo-operator-token"

[show]
lead_ms = 300

[show.cues]
file = "cues.toml"
rate = "25"

[[show.zones]]
name = "floor"
index = 0

[drivers.console]
type = "artnet-in"
allow = ["10.78.0.0/24"]
""")
    return path


@contextlib.contextmanager
def console_network(name: str) -> Iterator[str]:
    """A veth pair from this host ({HOST}/24) into network namespace `name` ({NODE}/24)."""
    require(os.geteuid() == 0 and shutil.which("ip") is not None, "root and iproute2 (ip netns)")
    host_side = f"{name}h"
    try:
        for command in (["ip", "netns", "add", name],
                        ["ip", "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", name],
                        ["ip", "addr", "add", f"{HOST}/24", "brd", "+", "dev", host_side],
                        ["ip", "link", "set", host_side, "up"],
                        ["ip", "-n", name, "addr", "add", f"{NODE}/24", "brd", "+", "dev", "eth0"],
                        ["ip", "-n", name, "link", "set", "eth0", "up"],
                        ["ip", "-n", name, "link", "set", "lo", "up"]):
            subprocess.run(command, check=True, capture_output=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_side], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@contextlib.contextmanager
def olad_in(netns: str, directory: Path) -> Iterator[None]:
    """olad with its Art-Net plugin on {NODE}, its RPC port where ola_timecode looks for it."""
    require(shutil.which("ola_timecode") is not None, "OLA's ola_timecode (Debian package ola)")
    olad = Olad(directory, {"artnet": f"enabled = true\nip = {NODE}\nuse_limited_broadcast = false\n"})
    argv = list(olad.argv)
    argv[argv.index("--rpc-port") + 1] = str(OLA_RPC_PORT)
    user = ["runuser", "-u", olad.user, "--"] if olad.user else []
    with (directory / "olad.log").open("wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *user, *argv], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "netns", "exec", netns, "ola_timecode", "-f", "EBU", "00:00:00:00"],
                             capture_output=True, timeout=5).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (directory / "olad.log").read_text()
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


class Ear:
    """This test's own ear on UDP 6454 (beside the daemon's: broadcasts reach both): each ArtTimeCode's arrival."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 6454))
        self.sock.settimeout(0.2)
        self.heard: list[tuple[float, float]] = []  # (arrival, the label's position)
        self.running = True
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(64)
            except TimeoutError:
                continue
            if data[:10] == b"Art-Net\x00\x00\x97" and len(data) >= 19:
                frames, seconds, minutes, hours = data[14], data[15], data[16], data[17]
                self.heard.append((time.monotonic(), Timecode(hours, minutes, seconds, frames, FPS).position()))

    def zero(self, after: float) -> float:
        """The monotonic time of 00:00:00:00 by the least delayed frame heard since `after` (the link's way)."""
        return min(arrival - position for arrival, position in self.heard if arrival >= after)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def send(netns: str, start: Timecode, frames: int) -> float:
    """`frames` frames from `start`, each by one run of ola_timecode at its instant; when the run began."""
    began = time.monotonic()
    for k in range(frames):
        time.sleep(max(0.0, began + k * FPS.frame_s - time.monotonic()))
        label = Timecode.of_frame(start.frame() + k, FPS).label()
        subprocess.run(["ip", "netns", "exec", netns, "ola_timecode", "-f", "EBU", label], check=True,
                       capture_output=True, timeout=5)
    return began


def starts_mono(cue: dict[str, Any]) -> float:
    """The cue's effect start, from the wall clock the API names it by to this machine's monotonic clock."""
    wall = datetime.fromisoformat(cue["starts_at"].replace("Z", "+00:00")).timestamp()
    return wall - (time.time() - time.monotonic())


def test_ola_timecode_fires_cues_at_their_labels_a_seek_skips_and_a_stop_freezes(tmp_path: Path) -> None:
    port = free_port()
    with console_network(f"vgtc{os.getpid() % 100000}") as netns, olad_in(netns, tmp_path):
        ear = Ear()
        daemon = Daemon(config(tmp_path, port), port).start()
        try:
            began = send(netns, Timecode(1, 0, 0, 10, FPS), 25)  # 01:00:00:10 to 01:00:01:09: first fires
            zero = ear.zero(began)
            jumped = send(netns, Timecode(1, 0, 2, 20, FPS), 20)  # a seek past 'passed'; to 01:00:03:14
            zero_after = ear.zero(jumped + FPS.frame_s)
            time.sleep(0.5)  # stopped at 01:00:03:14: 'frozen' is 340 ms on, and never comes
            doc = daemon.get("/api/v1/cues")
            states = {c["id"]: c for c in doc["cues"]}
            assert doc["state"] == "stopped" and doc["timecode"] == "01:00:03:14" and doc["jumps"] == 1, doc
            assert [states[c]["state"] for c in ("first", "passed", "after-seek", "frozen")] == [
                "fired", "skipped", "fired", "next"], doc
            for cue, z in (("first", zero), ("after-seek", zero_after)):
                label = Timecode.parse(states[cue]["timecode"], FPS).position()
                error_ms = (starts_mono(states[cue]) - (z + label)) * 1000
                assert abs(error_ms) < 6, (cue, error_ms)  # the API's times are in whole ms
            assert len(daemon.get("/api/v1/show")["recent"]) == 2  # nothing else was fired
            status, _, body = daemon.request("POST", "/api/v1/cues/frozen/fire", OPERATOR)  # by hand, though
            assert status == 202, body
        finally:
            ear.close()
            daemon.cleanup()
