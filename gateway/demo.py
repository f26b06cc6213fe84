"""`venue-gateway demo`: a configuration run with the cloud side beside it, so that a newcomer sees the whole box.

When the `[cloud]` section names a plain broker on loopback, the demo starts Mosquitto there (its files under the
data directory, persistent, so that nothing is lost across its restarts) and the reference consumer
(`venue-gateway mirror`) subscribed to this gateway, whose summaries show the twin and the telemetry arriving. Stop
the broker to watch an outage: the gateway keeps what it would send in its outbox, the demo starts the broker again
after an outage (30 s unless told), and the backlog drains. Mosquitto is found where the MOSQUITTO environment
variable names it, or on PATH and in /usr/sbin. Where no broker can run, the demo says so once and runs without
the section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.addresses import is_loopback
from gateway.config import Config

log = logging.getLogger("gateway.demo")

OUTAGE_S = 30.0  # how long the demo's broker stays down when it is stopped
LISTEN_TIMEOUT_S = 10.0


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class DemoBroker:
    """Mosquitto on loopback `port`, its configuration, persistence and log in `directory`; started again
    `outage_s` after it stops, until `close`. Its waits block: it starts from the command line before the gateway's
    event loop runs, and is kept by a thread of its own."""

    def __init__(self, executable: str, directory: Path, host: str, port: int, outage_s: float = OUTAGE_S) -> None:
        self.outage_s = outage_s
        directory.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port
        self.log_path = directory / "mosquitto.log"
        conf = directory / "mosquitto.conf"
        lines = [f"listener {port} {host}", "allow_anonymous true", "persistence true",
                 f"persistence_location {directory}/", "max_queued_messages 0"]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to `mosquitto`, who cannot write the data directory
        conf.write_text("# Written by `venue-gateway demo`: a broker for the demo, on loopback only.\n"
                        + "\n".join(lines) + "\n")
        self.argv = [executable, "-c", str(conf)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="demo-broker", daemon=True)

    def start(self) -> bool:
        """Start it; False (said in the log) when it does not listen within LISTEN_TIMEOUT_S."""
        if not self._spawn():
            return False
        self._thread.start()
        return True

    def _spawn(self) -> bool:
        with self.log_path.open("ab") as out:
            # A session of its own: Ctrl-C in the terminal stops the gateway, which then stops the broker.
            self._proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _listening(self.host, self.port):
                return True
            time.sleep(0.05)
        self._stop_process()
        log.warning("demo: Mosquitto did not start (its log: %s); running without cloud sync", self.log_path)
        return False

    def _keep(self) -> None:
        while not self._closed.is_set():
            assert self._proc is not None
            code = self._proc.wait()
            if self._closed.is_set():
                return
            log.info("demo: the broker stopped (exit %s); the gateway keeps what it would send in its outbox, and "
                     "the broker starts again in %.0f s", code, self.outage_s)
            if self._closed.wait(self.outage_s):
                return
            if self._spawn():
                log.info("demo: the broker is back on %s:%d", self.host, self.port)
            else:
                return

    def _stop_process(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def close(self) -> None:
        self._closed.set()
        self._stop_process()
        if self._thread.is_alive():
            self._thread.join(5)


def _mirror(url: str, config: Config) -> subprocess.Popen[bytes]:
    """The reference consumer, following this gateway with a persistent session: it misses nothing while away."""
    return subprocess.Popen([sys.executable, "-m", "gateway", "mirror", "--broker", url,
                             "--venue", config.gateway.venue, "--gateway", config.gateway.id,
                             "--client-id", f"demo-mirror-{config.gateway.id}"], stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _mosquitto() -> str | None:
    """The broker's executable: where MOSQUITTO names it, or on PATH and the sbin directories Debian installs to."""
    named = os.environ.get("MOSQUITTO")
    found = named or shutil.which("mosquitto", path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))
    return found if found and os.access(found, os.X_OK) else None


@contextlib.contextmanager
def cloud_side(config: Config, data_dir: Path, outage_s: float = OUTAGE_S) -> Iterator[Config]:
    """The configuration to run: as given, with its loopback broker and a mirror running beside it; or without
    its `[cloud]` section when no broker can run here. A stopped broker is started again after `outage_s`."""
    if config.cloud is None:
        yield config
        return
    broker = config.cloud.addresses()[0]  # the demo runs the first broker
    if broker.tls or not is_loopback(broker.host):
        log.info("demo: the cloud broker %s is not a plain loopback one: the demo leaves it to you", broker)
        yield config
        return
    keeper: DemoBroker | None = None
    if _listening(broker.host, broker.port):
        log.info("demo: a broker already listens on %s: the gateway and the mirror use it", broker)
    else:
        executable = _mosquitto()
        if executable is None:
            log.warning("demo: no MQTT broker here (install Mosquitto: `make run` does as root, or sudo apt-get "
                        "install mosquitto); running without cloud sync")
            yield dataclasses.replace(config, cloud=None)
            return
        keeper = DemoBroker(executable, data_dir / "broker", broker.host, broker.port, outage_s)
        if not keeper.start():
            yield dataclasses.replace(config, cloud=None)
            return
        log.info("demo: Mosquitto on %s (stop it to watch an outage: pkill -f %s)", broker,
                 data_dir / "broker" / "mosquitto.conf")
    mirror = _mirror(str(broker), config)
    try:
        yield config
    finally:
        mirror.terminate()
        try:
            mirror.wait(5)
        except subprocess.TimeoutExpired:
            mirror.kill()
        if keeper is not None:
            keeper.close()
