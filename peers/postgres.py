"""A throw-away PostgreSQL (Debian's `postgresql`, version 15 preferred) in a temporary directory of its own, for the
fleet mirror's tests and benchmarks. The server refuses to run as root, so as root it runs as the `postgres` user;
as anyone else, as that user.

    with Postgres() as pg:          # initdb, then the server on a free loopback port (trust auth, no password)
        pg.url                      # postgresql://postgres@127.0.0.1:PORT/postgres
        pg.database("t1")           # a new, empty database on it: its URL (one server, a database per test)
        pg.stop(); pg.start()       # a database that goes away and comes back, with its data
    # the block's end stops the server (fast shutdown) and removes the directory

`Postgres(options={"fsync": "off"})` adds server settings (`-c NAME=VALUE`); `socket_dir` holds its unix socket;
`log()` is its output so far; `argv` and `user` are for a benchmark that supervises the process itself. A machine
without the package raises `PeerMissing`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from peers import PeerMissing
from peers.ports import LOOPBACK, free_port

USER = "postgres"  # the Debian package's system user


def bin_dir() -> Path:
    """Where initdb and postgres are: Debian's /usr/lib/postgresql/VERSION/bin, 15 first, else the newest."""
    def preference(path: Path) -> tuple[bool, int]:
        version = path.parent.parent.name
        return version != "15", -int(version) if version.isdigit() else 0

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=preference)
    if not found:
        raise PeerMissing("the Debian package postgresql (its initdb and postgres in /usr/lib/postgresql/*/bin)")
    return found[0].parent


class Postgres:
    """A database cluster made by initdb in a new temporary directory; `start` and `stop` (or a `with` block, which
    also removes the directory) run its server on `port` (a free one if not given)."""

    def __init__(self, *, port: int | None = None, options: Mapping[str, str] | None = None) -> None:
        self.bin = bin_dir()
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(USER)
            except KeyError:
                raise PeerMissing(f"the user {USER} (made by the Debian package postgresql)") from None
            self.user = USER
        self.port = free_port() if port is None else port
        self.directory = Path(tempfile.mkdtemp(prefix="vg-postgres-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory
        self.log_path = self.directory / "postgres.log"
        if self.user is not None:
            shutil.chown(self.directory, self.user, self.user)
        settings = {"listen_addresses": LOOPBACK, "port": str(self.port), "unix_socket_directories":
                    str(self.socket_dir), "max_connections": "100", **(options or {})}
        self.argv = [str(self.bin / "postgres"), "-D", str(self.data)]
        for name, value in settings.items():
            self.argv += ["-c", f"{name}={value}"]
        self.proc: subprocess.Popen[bytes] | None = None
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@{LOOPBACK}:{self.port}/postgres"

    def database(self, name: str) -> str:
        """Create the empty database `name` (createdb) on the running server; its URL."""
        done = subprocess.run([str(self.bin / "createdb"), "-h", LOOPBACK, "-p", str(self.port), "-U", USER, name],
                              capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name} failed: {done.stderr.decode(errors='replace')}")
        return self.url.removesuffix("/postgres") + f"/{name}"

    def _run_as(self) -> dict[str, object]:
        return {} if self.user is None else {"user": self.user, "group": self.user, "extra_groups": []}

    def _initdb(self) -> None:
        done = subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "-A", "trust", "-E",
                               "UTF8", "--locale=C", "--no-sync"], capture_output=True, cwd=self.directory,
                              **self._run_as())  # type: ignore[call-overload]
        if done.returncode != 0:
            self.remove()
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')}")

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex((LOOPBACK, self.port)) == 0

    def start(self) -> Postgres:
        before = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:  # a restart adds to the log of the runs before
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
                                         **self._run_as())  # type: ignore[call-overload]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log()}")
            with self.log_path.open("rb") as log:  # this run's word, not an earlier run's
                log.seek(before)
                ready = b"ready to accept connections" in log.read()
            if ready and self.listening():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected, what was committed is kept); the data stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Postgres:
        try:
            return self.start()
        except BaseException:
            with contextlib.suppress(OSError):
                self.remove()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.remove()
