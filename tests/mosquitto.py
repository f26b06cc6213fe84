"""A real Mosquitto broker per test, on a free port in a temporary directory: plain, TLS or mutual TLS, with
persistence so that a stop and start keeps what it had (as a broker restarted for maintenance does)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, require


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class Mosquitto:
    def __init__(self, directory: Path, *, tls: TlsFiles | None = None, require_certificate: bool = False,
                 acl: Path | None = None, passwords: Path | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if passwords else 'true'}",
            "persistence true",
            f"persistence_location {directory}/",
            "max_queued_messages 0",  # a persistent consumer away for a while gets everything
            f"log_dest file {directory}/mosquitto.log",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "user root" if _is_root() else "",
        ]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}",
                      f"require_certificate {'true' if require_certificate else 'false'}"]
        if acl is not None:
            lines.append(f"acl_file {acl}")
        if passwords is not None:
            lines.append(f"password_file {passwords}")
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(line for line in lines if line) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                                     f"{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        """Stop as a service manager would (SIGTERM): it saves its persistence database first."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    require(shutil.which("mosquitto") is not None, "the Debian package mosquitto (an MQTT broker)")
    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()
