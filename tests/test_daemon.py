"""The daemon as a user runs it: a subprocess with the demo configuration, driven over HTTP and signals."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN, OPERATOR, ROOT, VIEWER, Daemon, with_tmpfs


def test_the_demo_venue_lives_in_the_twin_and_stops_cleanly(daemon_factory: Any, tmp_path: Path) -> None:
    d: Daemon = daemon_factory(speed=20).start()
    health = d.wait_healthy()
    assert health["drivers"]["venue"]["state"] == "running" and health["services"]["api"]["state"] == "running"
    time.sleep(1.0)
    twin = d.get("/api/v1/twin")
    expected = {"zone:floor", "spl:balcony", "env:bar", "amp:r01.1", "mains:A", "show", "driver:venue"}
    assert expected <= set(twin["assets"])
    assert 80 < twin["assets"]["spl:floor"]["reported"]["laeq_db"] < 115
    assert twin["assets"]["driver:venue"]["reported"]["state"] == "running"

    status = subprocess.run([sys.executable, "-m", "gateway", "status", "--url", d.url], capture_output=True,
                            text=True, timeout=30, env={**d.env, "VENUE_GATEWAY_TOKEN": VIEWER})
    assert status.returncode == 0, status.stderr
    assert "demo-01 (venue demo-hall): ok" in status.stdout and "venue" in status.stdout
    out = tmp_path / "snap.json"
    snap = subprocess.run([sys.executable, "-m", "gateway", "snapshot", "--url", d.url, "-o", str(out)],
                          capture_output=True, text=True, timeout=30, env={**d.env, "VENUE_GATEWAY_TOKEN": VIEWER})
    assert snap.returncode == 0, snap.stderr
    assert "zone:floor" in json.loads(out.read_text())["assets"]
    fired = subprocess.run([sys.executable, "-m", "gateway", "fire", "chorus", "--zone", "floor", "--url", d.url],
                           capture_output=True, text=True, timeout=30, env={**d.env, "VENUE_GATEWAY_TOKEN": OPERATOR})
    assert fired.returncode == 0, fired.stderr
    assert "(chorus) starts at" in fired.stdout and "in floor" in fired.stdout
    denied = subprocess.run([sys.executable, "-m", "gateway", "snapshot", "--url", d.url, "--token", "nope"],
                            capture_output=True, text=True, timeout=30)
    assert denied.returncode == 1 and "401 the bearer token is not valid" in denied.stderr

    # desired state travels to the driver that owns the asset, which reports back
    status_code, _, body = d.request("PATCH", "/api/v1/twin/assets/amp:r01.1/desired", ADMIN, {"enabled": False})
    assert status_code == 200, body
    deadline = time.monotonic() + 5
    while d.get("/api/v1/twin/assets/amp:r01.1")["reported"].get("enabled") is not False:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    assert d.get("/api/v1/twin/assets/amp:r01.1")["reported"]["current_a"] == 0.0

    began = time.monotonic()
    assert d.terminate() == 0
    assert time.monotonic() - began < 5
    assert "stopped in" in d.log.read_text()
    assert "Traceback" not in d.log.read_text()

    # a clean restart continues at the same version and keeps the desired state
    last = twin["version"]
    d.start()
    restarted = d.get("/api/v1/twin")
    assert restarted["version"] >= last
    assert restarted["assets"]["amp:r01.1"]["desired"] == {"enabled": False}
    d.terminate()


def test_kill_9_mid_load_loses_nothing_acknowledged(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(speed=200).start()
    shown_version, acked_seq = 0, 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        shown_version = max(shown_version, d.get("/api/v1/twin")["version"])
        acked_seq = max(acked_seq, d.get("/api/v1/health")["store"]["committed_seq"])
    assert acked_seq > 10_000
    d.kill()
    d.start()
    health = d.wait_healthy()
    assert health["twin"]["version"] >= shown_version
    status, _, _body = d.request("GET", f"/api/v1/twin/changes?since={shown_version - 1}")
    assert status == 410  # a client that held an older version takes a fresh snapshot
    d.terminate()
    with sqlite3.connect(d.config.parent / "data" / "gateway.db") as db:
        (count,) = db.execute("SELECT count(*) FROM telemetry WHERE rowid <= ?", (acked_seq,)).fetchone()
    assert count == acked_seq


def test_a_failing_driver_degrades_the_box_and_the_rest_runs_on(daemon_factory: Any) -> None:
    extra = ('\n[supervisor]\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.2\n'
             '\n[drivers.broken]\ntype = "tests.faulty:CrashingDriver"\n')
    d: Daemon = daemon_factory(speed=20, extra=extra).start(wait=False)
    health = d.wait_healthy(status=("degraded",))
    readings = health["readings_total"]
    deadline = time.monotonic() + 10
    while health["drivers"]["broken"]["restarts"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
        health = d.get("/api/v1/health")
    assert health["status"] == "degraded"
    assert health["drivers"]["venue"]["state"] == "running"
    assert "lost the RS-485 adapter" in health["drivers"]["broken"]["last_error"]
    while health["readings_total"] <= readings:  # the venue goes on publishing meanwhile
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
        health = d.get("/api/v1/health")
    assert d.get("/api/v1/twin/assets/driver:broken")["reported"]["restarts"] >= 1
    assert d.terminate() == 0


def test_systemd_is_told_ready_watchdog_and_stopping(daemon_factory: Any, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(20)
        d: Daemon = daemon_factory(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}).start(wait=False)
        messages: list[str] = []
        while sum("WATCHDOG=1" in m for m in messages) < 3 or not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert any(m.startswith("READY=1\nSTATUS=twin version") for m in messages)
        d.wait_healthy()
        d.terminate()
        while "STOPPING=1" not in messages[-1]:
            messages.append(sock.recv(4096).decode())


def test_a_read_only_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    from tests.conftest import demo_config, free_port

    config = demo_config(tmp_path, free_port())
    data = tmp_path / "data"
    data.mkdir()
    cmd = with_tmpfs(data, "ro", [sys.executable, "-m", "gateway", "run", "--config", str(config)])
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT),
                                                                                  "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "cannot run: the data directory" in result.stderr and "Read-only file system" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_is_reported_and_the_box_keeps_answering(tmp_path: Path) -> None:
    from tests.conftest import demo_config, free_port

    port = free_port()
    config = demo_config(tmp_path, port, speed=100)
    data = tmp_path / "data"
    data.mkdir()
    cmd = with_tmpfs(data, "size=400k", [sys.executable, "-m", "gateway", "run", "--config", str(config)])
    d = Daemon(config, port)
    log = (tmp_path / "full.log").open("wb")
    d.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=d.env)
    try:
        d.wait_healthy()
        deadline = time.monotonic() + 30
        health = d.get("/api/v1/health")
        while health["store"]["state"] != "degraded":
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
            health = d.get("/api/v1/health")
        assert "disk is full" in health["store"]["last_error"] and health["status"] == "degraded"
        assert health["drivers"]["venue"]["state"] == "running"
        assert d.get("/api/v1/twin")["version"] > 0
        assert d.terminate() == 0
    finally:
        d.cleanup()
    assert "Traceback" not in (tmp_path / "full.log").read_text()


def test_run_refuses_a_bad_config_or_a_missing_secret(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nid = "x"\n')
    result = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(bad)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "gateway.venue: is required" in result.stderr
    bad.write_text('[gateway]\nid = "x"\nvenue = "y"\n[[api.tokens]]\nrole = "admin"\nenv = "VG_NOT_SET_ANYWHERE"\n')
    result = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(bad)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "api.tokens[0]: environment variable VG_NOT_SET_ANYWHERE is not set or empty" in result.stderr


def test_sigterm_while_a_driver_hangs_in_start_stops_in_time(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(extra='\n[drivers.stuck]\ntype = "tests.faulty:HangingDriver"\n').start(wait=False)
    health = d.wait_healthy(status=("starting",))
    assert health["drivers"]["stuck"]["state"] == "starting"
    began = time.monotonic()
    assert d.terminate() == 0
    assert time.monotonic() - began < 5


def test_a_taken_port_is_retried_and_said_plainly(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(extra="\n[supervisor]\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.1\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", d.port))
        taken.listen()
        d.start(wait=False)
        deadline = time.monotonic() + 20
        while "service api not ready: cannot listen on 127.0.0.1:" not in (log := d.log.read_text()):
            assert time.monotonic() < deadline, log
            time.sleep(0.1)
        assert "address already in use" in log.lower()
        time.sleep(0.5)  # tried again meanwhile
        assert d.proc is not None and d.proc.poll() is None
    d.wait_healthy()  # the port is free again: the API comes up by itself
    log = d.log.read_text()
    assert "Traceback" not in log
    d.terminate()


def test_a_clean_start_of_the_demo_logs_no_warning_and_restarts_nothing(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory().start(wait=False)
    health = d.wait_healthy(timeout=30)  # every unit running: the radio and the BLE scanners start after the air
    assert {name: unit["restarts"] for name, unit in {**health["drivers"], **health["services"]}.items()
            if unit["restarts"]} == {}  # no restart, so no unit_failed alert either
    time.sleep(2.0)  # the scanners' first advertisements, the meters' first readings
    health = d.get("/api/v1/health")
    assert health["status"] == "ok" and health["problems"] == [], health
    noisy = [line for line in d.log.read_text().splitlines()
             if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    assert noisy == []
