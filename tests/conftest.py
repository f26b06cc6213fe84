"""Shared fixtures: free ports, configurations written to temporary directories, and a real daemon process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.common import free_port as free_port  # the tests import it from here

pytest_plugins = ("tests.ola", "tests.mosquitto")  # the `ola` and `mosquitto` fixtures

ROOT = Path(__file__).resolve().parent.parent
VIEWER, OPERATOR, ADMIN = "demo-viewer-token", "demo-operator-token", "demo-admin-token"


def demo_config(directory: Path, port: int, *, speed: float = 1.0, extra: str = "", sensing: bool = True) -> Path:
    """The shipped demo configuration, moved to `port` and `directory`, optionally sped up and extended;
    without `sensing`, the demo's own BLE room and its `ble` driver are off (a test brings its own)."""
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{port}"')
    text = text.replace('listen = "127.0.0.1:9000"', f'listen = "127.0.0.1:{free_port()}"')
    text = text.replace('data_dir = "../var/demo"', 'data_dir = "data"')
    text = text.replace("speed = 1.0", f"speed = {speed}")
    text = text.replace('"/tmp/venue-gateway-air"', f'"{directory / "air"}"')
    text = text.replace("/tmp/venue-gateway-ble", str(directory / "ble"))
    if not sensing:
        text = text.replace(f'sensing_pty_prefix = "{directory / "ble"}"\n', "")
        text = text.replace('type = "ble"\n', 'type = "ble"\nenabled = false\n')
    text = text.replace('"/tmp/venue-gateway', f'"{directory}/dev')  # the venue's serial devices
    path = directory / "gateway.toml"
    path.write_text(text + extra)
    return path


class Daemon:
    """`venue-gateway run` as a subprocess, talked to over its HTTP API like any client would."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "daemon.log"

    def start(self, wait: bool = True) -> Daemon:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.config.parent)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 20.0, status: tuple[str, ...] = ("ok",)) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                last = self.get("/api/v1/health", token=None)
                if last["status"] in status:
                    return dict(last)
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"daemon not {status} after {timeout} s: {last}\n{self.log.read_text()}")

    def request(self, method: str, path: str, token: str | None = VIEWER, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {},
                                     data=None if body is None else json.dumps(body).encode())
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str, token: str | None = VIEWER) -> Any:
        status, _, body = self.request("GET", path, token)
        if status != 200:
            raise OSError(f"GET {path}: {status} {body!r}")
        return json.loads(body)

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(speed: float = 1.0, extra: str = "", env: dict[str, str] | None = None) -> Daemon:
        port = free_port()
        d = Daemon(demo_config(tmp_path, port, speed=speed, extra=extra), port, env)
        started.append(d)
        return d

    yield make
    for d in started:
        d.cleanup()


def require(condition: bool, what: str) -> None:
    """Skip when something this machine lacks is missing, but fail in CI (VG_REQUIRE_PEERS=1)."""
    if not condition:
        if os.environ.get("VG_REQUIRE_PEERS") == "1":
            pytest.fail(f"{what} is required here (VG_REQUIRE_PEERS=1)")
        pytest.skip(f"needs {what}")


def with_tmpfs(directory: Path, options: str, argv: list[str]) -> list[str]:
    """`argv` run in a private mount namespace with a tmpfs on `directory`: a real read-only or full
    filesystem for one process, without touching the machine's own mounts. Needs root and unshare(1)."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True) if os.geteuid() == 0 else None
    require(probe is not None and probe.returncode == 0, "root and unshare(1) for a private tmpfs mount")
    script = f'mount -t tmpfs -o {options} tmpfs "{directory}" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", *argv]
