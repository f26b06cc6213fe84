"""A throw-away chronyd (Debian's chrony) for the clock tests: `chronyd -x` (it never touches the system clock) with
its configuration in a temporary directory, its command port on loopback (`port`, for chronyc), and one source: a
small SNTP server (RFC 4330) on loopback that answers with this machine's clock once `serve()` is called, so the
daemon is first a clock with no source ("Not synchronised") and then one synchronised to it."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from peers import PeerMissing
from peers.ports import LOOPBACK, free_udp_port

NTP_EPOCH = 2_208_988_800  # seconds from 1900-01-01 (NTP's era 0) to 1970-01-01


def _timestamp(t: float) -> bytes:
    return struct.pack("!II", int(t) + NTP_EPOCH, int((t % 1) * 2**32))


class Sntp:
    """Answers a client's queries (mode 3) on a loopback UDP port of its own, from a thread, once `answering`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.answering = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sntp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            received = time.time()
            if not self.answering.is_set() or len(query) < 48 or query[0] & 0x07 != 3:
                continue
            # Leap indicator 0, the client's version, mode 4 (server); stratum 1, reference "LOCL", precision 2^-20,
            # root delay 0 and root dispersion 2^-12 s (16.16 fixed point).
            head = struct.pack("!BBBbII4s", query[0] & 0x38 | 4, 1, query[2], -20, 0, 16, b"LOCL")
            self.sock.sendto(head + _timestamp(received) + query[40:48] + _timestamp(received)
                             + _timestamp(time.time()), peer)

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.sock.close()


class Chronyd:
    """chronyd on its own command port (`port`), polling `sntp` every 1/16 s; `close` stops both. `env` is added to
    its environment (libfaketime's, for a daemon whose clock is off)."""

    def __init__(self, directory: Path, env: dict[str, str] | None = None) -> None:
        program = shutil.which("chronyd") or next((p for p in ("/usr/sbin/chronyd",) if Path(p).exists()), None)
        if program is None or shutil.which("chronyc") is None:
            raise PeerMissing("chronyd and chronyc (Debian package chrony)")
        self.sntp = Sntp()
        self.port = free_udp_port()
        conf = directory / "chrony.conf"
        conf.write_text(f"cmdport {self.port}\nbindcmdaddress {LOOPBACK}\nport 0\n"
                        f"pidfile {directory / 'chronyd.pid'}\nuser {getpass.getuser()}\n"
                        f"server {LOOPBACK} port {self.sntp.port} iburst minpoll -4 maxpoll -4\n")
        self.log = directory / "chronyd.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([program, "-x", "-d", "-f", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})
        try:
            self.wait(lambda line: line.split(",")[-1] != "", "its command port to answer")
        except RuntimeError:
            self.close()
            raise

    def tracking(self) -> str:
        """`chronyc -c tracking` as this daemon answers it ("" while it does not)."""
        done = subprocess.run(["chronyc", "-c", "-n", "-h", LOOPBACK, "-p", str(self.port), "tracking"],
                              capture_output=True, text=True, timeout=5)
        return done.stdout.strip() if done.returncode == 0 else ""

    def wait(self, until: object, what: str, timeout_s: float = 10.0) -> None:
        """Waits for `until(tracking line)` to hold."""
        assert callable(until)
        deadline = time.monotonic() + timeout_s
        while not until(self.tracking()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chronyd: no {what} within {timeout_s:g} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def serve(self) -> None:
        """The source answers from now on; returns once chronyd is synchronised to it."""
        self.sntp.answering.set()
        self.wait(lambda line: bool(line) and not line.endswith(",Not synchronised"), "synchronisation")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.sntp.close()
