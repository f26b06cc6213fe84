"""`venue-gateway demo` (what `make run` runs): the virtual venue with its cloud side, Mosquitto and the reference
consumer beside it; light levels set over OSC leave as Art-Net; a broker outage is held in the outbox and drained;
where no broker can run, the demo says so once and runs without."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import Daemon, demo_config, free_port, require

# The demo's Art-Net is received on the machine's Art-Net port, where any test's daemon sends: these run on their own.
pytestmark = pytest.mark.wire


def _demo(tmp_path: Path, broker_port: int, env: dict[str, str] | None = None) -> Daemon:
    api = free_port()
    path = demo_config(tmp_path, api, speed=5)
    doc = tomllib.loads(path.read_text())
    doc["cloud"] = {"broker": f"mqtt://127.0.0.1:{broker_port}"}
    path.write_text(tomli_w.dumps(doc))
    return Daemon(path, api, env, command="demo", args=("--outage-s", "3"))


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def _cloud(d: Daemon) -> dict[str, Any]:
    health = d.get("/api/v1/health")
    return dict(health["services"]["cloud"]["detail"], status=health["status"], problems=health["problems"])


def _artnet(sock: socket.socket, channel: int, level: int, timeout: float = 5.0) -> bool:
    """An ArtDmx for Port-Address 1 with `level` on `channel` arrives (bytes read as the Art-Net spec lays them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1024)
        except TimeoutError:
            continue
        if data[:8] == b"Art-Net\0" and data[8:10] == b"\x00\x50" and data[14:16] == b"\x01\x00" \
                and data[17 + channel] == level:
            return True
    return False


def _summaries(d: Daemon) -> list[tuple[str, str]]:
    """The mirror's summaries so far: (readings received, duplicates dropped)."""
    return re.findall(r"demo-hall/demo-01: online, twin version \d+ \(\d+ assets\), (\d+) readings in \d+ "
                      r"batches, (\d+) duplicates", d.log.read_text())


def test_the_demo_brings_its_broker_and_mirror_shows_light_and_drains_an_outage(tmp_path: Path) -> None:
    require(shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists(),
            "mosquitto (Debian package mosquitto)")
    require(shutil.which("oscsend") is not None, "oscsend (Debian package liblo-tools)")
    broker_port = free_port()
    d = _demo(tmp_path, broker_port)
    artnet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    artnet.settimeout(0.5)
    try:
        artnet.bind(("127.0.0.1", 6454))
        d.start(wait=False)
        d.wait_healthy(timeout=30)
        assert _cloud(d)["link"] == "online"
        _wait(lambda: re.search(r"demo-hall/demo-01: snapshot at version \d+", d.log.read_text()), 10,
              "the mirror to rebuild the twin from the snapshot")

        # The README's DMX-over-OSC step: a level on the wire as Art-Net, and in the twin.
        osc = tomllib.loads(d.config.read_text())["drivers"]["osc"]["listen"].split(":")[1]
        subprocess.run(["oscsend", "127.0.0.1", osc, "/vg/dmx/1/3", "i", "255"], check=True, timeout=10)
        _wait(lambda: d.get("/api/v1/twin/assets/universe:1")["reported"]["levels"][2] == 255, 5, "the level")
        assert _artnet(artnet, 3, 255)

        conf = d.config.parent / "data" / "broker" / "mosquitto.conf"
        subprocess.run(["pkill", "-f", str(conf)], check=True)
        outage = _wait(lambda: (c := _cloud(d))["link"] == "offline" and c["outbox"]["readings"] > 0 and c, 15,
                       "a backlog while the broker is down")
        assert outage["status"] == "degraded" and outage["problems"][0].startswith("cloud offline")
        _wait(lambda: "demo: the broker is back" in d.log.read_text(), 15, "the demo to bring the broker back")
        _wait(lambda: (c := _cloud(d))["link"] == "online" and c["outbox"]["readings"] == 0, 30, "the drain")
        drained = len(_summaries(d))
        after = _wait(lambda: _summaries(d)[drained:], 15, "the mirror's summary after the drain")
        committed = d.get("/api/v1/health")["store"]["committed_seq"]
        # Every reading once: the mirror counts readings after dropping duplicates by batch id (a batch in flight when
        # the broker was killed may arrive twice: the broker can pass it on and die before its acknowledgement).
        assert 0 < int(after[0][0]) <= committed
        log = d.log.read_text()
        assert "demo: Mosquitto on mqtt://127.0.0.1:" in log and "Traceback" not in log
    finally:
        artnet.close()
        if d.proc is not None:
            d.proc.send_signal(signal.SIGTERM)
            d.proc.wait(15)
        d.cleanup()
    gone = subprocess.run(["pgrep", "-f", str(d.config.parent / "data" / "broker")], capture_output=True)
    assert gone.returncode == 1, "the demo's broker outlived it"


def test_without_a_broker_the_demo_says_so_once_and_runs_without(tmp_path: Path) -> None:
    d = _demo(tmp_path, free_port(), env={"MOSQUITTO": str(tmp_path / "no-such-broker")})
    try:
        d.start(wait=False).wait_healthy(timeout=30)
        health = d.get("/api/v1/health")
        assert "cloud" not in health["services"]
        time.sleep(1)
        said = [line for line in d.log.read_text().splitlines() if "no MQTT broker here" in line]
        assert len(said) == 1 and "running without cloud sync" in said[0]
    finally:
        d.cleanup()
