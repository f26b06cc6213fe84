"""A real Mosquitto broker on a loopback port in a directory of its own, its output in mosquitto.log there. As the
tests run it: plain, TLS or mutual TLS, with an ACL and a password file, and with persistence so that a stop and
start keeps what it had (as a broker restarted for maintenance does). As the benchmarks run it: without
persistence, at a niceness of their choosing, the process theirs to supervise (`argv`, `listening`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from peers import PeerMissing
from peers.ports import LOOPBACK, free_port


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class Mosquitto:
    """The broker's configuration in `directory`, on `port` (a free one if not given); `start` and `stop` (or a
    `with` block) run it. `nice`: run under nice(1) at that niceness."""

    def __init__(self, directory: Path, *, port: int | None = None, tls: TlsFiles | None = None,
                 require_certificate: bool = False, acl: Path | None = None, passwords: Path | None = None,
                 persistence: bool = True, nice: int | None = None) -> None:
        if shutil.which("mosquitto") is None:
            raise PeerMissing("the Debian package mosquitto (an MQTT broker)")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port() if port is None else port
        self.tls = tls
        lines = [f"listener {self.port} {LOOPBACK}", f"allow_anonymous {'false' if passwords else 'true'}"]
        if persistence:
            lines += ["persistence true", f"persistence_location {directory}/"]
        else:
            lines.append("persistence false")
        lines.append("max_queued_messages 0")  # a persistent consumer away for a while gets everything
        if os.geteuid() == 0:
            lines.append("user root")
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}",
                      f"require_certificate {'true' if require_certificate else 'false'}"]
        if acl is not None:
            lines.append(f"acl_file {acl}")
        if passwords is not None:
            lines.append(f"password_file {passwords}")
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log_path = directory / "mosquitto.log"  # its log: to stderr, as Mosquitto logs by default
        self.argv = [*([] if nice is None else ["nice", "-n", str(nice)]), "mosquitto", "-c", str(self.conf)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{LOOPBACK}:{self.port}"

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex((LOOPBACK, self.port)) == 0

    def start(self) -> Mosquitto:
        with self.log_path.open("ab") as log:  # a restart adds to the log of the runs before
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            if self.listening():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

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
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
