"""Shared fixtures: free ports, configurations written to temporary directories, and a real daemon process; a peer
that this machine lacks (peers.PeerMissing) is a skip, or a failure in CI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from peers import PeerMissing
from peers.ports import free_port as free_port  # the tests import it from here

pytest_plugins = ("tests.fixtures",)  # the `ola` and `mosquitto` fixtures

ROOT = Path(__file__).resolve().parent.parent
VIEWER, OPERATOR, ADMIN = "demo-viewer-token", "demo-operator-token", "demo-admin-token"


DEMO_DEVICES = "/tmp/venue-gateway"  # the demo's pseudo-terminals: every path under it is moved into the test's


def demo_config(directory: Path, port: int, *, speed: float = 1.0, extra: str = "", sensing: bool = True,
                overrides: Mapping[str, Any] | None = None) -> Path:
    """The shipped demo configuration, moved to `port` and `directory`, optionally sped up and extended: `extra` is
    TOML merged into it (tables merge key by key, other values replace), `overrides` sets dotted keys that the demo
    must have. The demo's `[cloud]` is left out (a test names its own broker). Without `sensing`, the demo's own
    BLE room and its `ble` driver are off (a test brings its own). The demo is edited as parsed TOML: a key this
    changes that the demo no longer has fails here, loudly."""
    doc = tomllib.loads((ROOT / "config" / "demo.toml").read_text())
    devices = directory / "dev"
    change(doc, "api.listen", f"127.0.0.1:{port}")
    change(doc, "drivers.osc.listen", f"127.0.0.1:{free_port()}")
    change(doc, "gateway.data_dir", "data")
    del doc["cloud"]  # the demo's broker is started by `venue-gateway demo`; a test brings its own
    for key in ("equipment_model", "mood_model"):  # relative to the file: a copy elsewhere names them in full
        change(doc, f"inference.{key}", str((ROOT / "config" / doc["inference"][key]).resolve()))
    change(doc, "show.cues.file", str((ROOT / "config" / doc["show"]["cues"]["file"]).resolve()))
    change(doc, "drivers.venue.speed", speed)
    change(doc, "drivers.air.pty", str(directory / "air"))
    change(doc, "drivers.wristbands.port", str(directory / "air"))
    change(doc, "drivers.air.sensing_pty_prefix", str(directory / "ble"))
    for i, scanner in enumerate(doc["drivers"]["ble"]["scanners"]):
        change(doc, f"drivers.ble.scanners.{i}.adapter", f"serial:{directory / 'ble'}-{scanner['zone']}")
    if not sensing:
        del doc["drivers"]["air"]["sensing_pty_prefix"]
        doc["drivers"]["ble"]["enabled"] = False
    change(doc, "drivers.venue.device_prefix", str(devices))
    for name, driver in doc["drivers"].items():  # the venue's serial devices: the Modbus bus, XL2s, the nodes
        if driver["type"] in ("modbus", "xl2", "nodes"):
            change(doc, f"drivers.{name}.port", driver["port"].replace(DEMO_DEVICES, str(devices), 1))
    left = [path for path, value in _leaves(doc) if isinstance(value, str) and value.startswith(DEMO_DEVICES)]
    assert not left, f"config/demo.toml has device paths this fixture does not move: {left}"
    _merge(doc, tomllib.loads(extra))
    for key, value in (overrides or {}).items():
        change(doc, key, value)
    path = directory / "gateway.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def change(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (a number steps into a list) that `doc` already has; fail when it has not."""
    *parents, last = key.split(".")
    node: Any = doc
    try:
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
            return
        if last not in node:
            raise KeyError(last)
    except (KeyError, IndexError, ValueError, TypeError):
        raise AssertionError(f"config/demo.toml has no {key}: the test's change to it would do nothing") from None
    node[last] = value


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        yield path, node
        return
    for key, value in items:
        yield from _leaves(value, f"{path}.{key}" if path else str(key))


class Daemon:
    """`venue-gateway run` (or `command`, with `args`) as a subprocess, talked to over its HTTP API like any client
    would."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None, command: str = "run",
                 args: tuple[str, ...] = ()) -> None:
        self.command = [command, "--config", str(config), *args]
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "daemon.log"

    def start(self, wait: bool = True) -> Daemon:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", *self.command],
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
                try:  # the details come with a token
                    last = self.get("/api/v1/health")
                except OSError:  # refused: a configuration without the demo's viewer token (or not up yet)
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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The demo venue as it ships, one daemon for the module that asks for it."""
    directory = tmp_path_factory.mktemp("demo")
    port = free_port()
    daemon = Daemon(demo_config(directory, port), port)
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(speed: float = 1.0, extra: str = "", env: dict[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> Daemon:
        port = free_port()
        d = Daemon(demo_config(tmp_path, port, speed=speed, extra=extra, overrides=overrides), port, env)
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A peer missing for a fixture (peers.PeerMissing) is `require`d: a skip, or a failure in CI."""
    try:
        yield
    except PeerMissing as exc:
        require(False, exc.what)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A peer missing for the test itself (peers.PeerMissing) is `require`d: a skip, or a failure in CI."""
    try:
        yield
    except PeerMissing as exc:
        require(False, exc.what)


def with_tmpfs(directory: Path, options: str, argv: list[str]) -> list[str]:
    """`argv` run in a private mount namespace with a tmpfs on `directory`: a real read-only or full
    filesystem for one process, without touching the machine's own mounts. Needs root and unshare(1)."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True) if os.geteuid() == 0 else None
    require(probe is not None and probe.returncode == 0, "root and unshare(1) for a private tmpfs mount")
    script = f'mount -t tmpfs -o {options} tmpfs "{directory}" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", *argv]
