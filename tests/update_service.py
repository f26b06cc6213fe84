"""A small service manager for the update tests, doing for one service what systemd does for the shipped unit (this
machine's PID 1 is not systemd):

- start: the recovery the unit runs first (`ExecStartPre=-+$PREFIX/previous/bin/python -I -m gateway.update
  --recover --no-restart ... --state-dir S --config FILE`, its failure ignored, as is a missing previous version),
  then `$PREFIX/current/bin/venue-gateway run --config FILE` with $NOTIFY_SOCKET set; the start has succeeded
  when the daemon says READY=1 (Type=notify), and failed when it exits first;
- stop: SIGTERM, SIGKILL after 8 s (TimeoutStopSec);
- a daemon that exits with a failure while wanted is started again after 0.5 s (Restart=on-failure).

    python tests/update_service.py serve DIR --prefix P --state-dir S --config FILE     (S: the update's state)
    python tests/update_service.py ctl DIR start|stop|restart       (exit 1 with the reason when it fails)

DIR holds the control socket, the notify socket and the logs (service.log: what the manager did; daemon.log: what
the daemon printed)."""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 8.0
RESTART_S = 0.5


class Unit:
    def __init__(self, where: Path, prefix: Path, state_dir: Path, config: Path) -> None:
        self.where, self.prefix, self.state_dir, self.config = where, prefix, state_dir, config
        self.lock = threading.Lock()
        self.child: subprocess.Popen[bytes] | None = None
        self.wanted = False
        self.notify_path = where / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.daemon_log = (where / "daemon.log").open("ab")

    def log(self, text: str) -> None:
        with (self.where / "service.log").open("a") as f:
            f.write(f"{time.time():.3f} {text}\n")

    def start(self) -> str | None:
        if self.child is not None and self.child.poll() is None:
            return None
        self.wanted = True
        recovery = self.prefix / "previous" / "bin" / "python"
        if recovery.exists():
            pre = subprocess.run([str(recovery), "-I", "-m", "gateway.update", "--recover", "--no-restart",
                                  "--prefix", str(self.prefix), "--state-dir", str(self.state_dir), "--config",
                                  str(self.config)],
                                 capture_output=True, text=True, check=False)
            self.log(f"ExecStartPre exit {pre.returncode}: {pre.stdout.strip()} {pre.stderr.strip()}")
        while select.select([self.notify], [], [], 0)[0]:
            self.notify.recv(4096)
        started = time.monotonic()
        self.child = subprocess.Popen(
            [str(self.prefix / "current" / "bin" / "venue-gateway"), "run", "--config", str(self.config)],
            stdout=self.daemon_log, stderr=subprocess.STDOUT,
            env={**os.environ, "NOTIFY_SOCKET": str(self.notify_path)})
        self.log(f"started pid {self.child.pid}: {os.path.realpath(self.prefix / 'current')}")
        while time.monotonic() - started < START_TIMEOUT_S:
            if select.select([self.notify], [], [], 0.1)[0] and b"READY=1" in self.notify.recv(4096):
                self.log(f"ready after {time.monotonic() - started:.2f} s")
                return None
            code = self.child.poll()
            if code is not None:
                self.log(f"exited {code} before READY=1")
                return f"the daemon exited {code} before it was ready (see {self.where / 'daemon.log'})"
        return f"not ready within {START_TIMEOUT_S:g} s"

    def stop(self) -> None:
        self.wanted = False
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        self.log(f"stopped pid {child.pid}: exit {child.returncode}")

    def watch(self) -> None:
        """Restart=on-failure."""
        while True:
            time.sleep(0.1)
            with self.lock:
                child = self.child
                if not self.wanted or child is None or child.poll() in (None, 0):
                    continue
                self.log(f"pid {child.pid} failed with {child.returncode}: restarting in {RESTART_S} s")
            time.sleep(RESTART_S)
            with self.lock:
                if self.wanted and self.child is child:
                    self.start()

    def handle(self, action: str) -> str | None:
        with self.lock:
            if action == "stop":
                self.stop()
                return None
            if action == "restart":
                self.stop()
            if action in ("start", "restart"):
                return self.start()
            return f"unknown action {action!r}"


def serve(args: argparse.Namespace) -> None:
    where = Path(args.dir)
    unit = Unit(where, Path(args.prefix), Path(args.state_dir), Path(args.config))
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(where / "control.sock"))
    control.listen(4)

    def leave(signum: int, frame: object) -> None:
        with unit.lock:
            unit.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, leave)
    threading.Thread(target=unit.watch, daemon=True).start()
    while True:
        conn, _ = control.accept()
        with conn:
            action = conn.recv(64).decode().strip()
            unit.log(f"ctl {action}")
            error = unit.handle(action)
            conn.sendall(b"ok\n" if error is None else f"error {error}\n".encode())


def ctl(args: argparse.Namespace) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(Path(args.dir) / "control.sock"))
        conn.sendall(args.action.encode() + b"\n")
        answer = conn.makefile().readline().strip()
    if answer == "ok":
        return 0
    print(answer.removeprefix("error "), file=sys.stderr)
    return 1


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("dir")
    s.add_argument("--prefix", required=True)
    s.add_argument("--state-dir", required=True)
    s.add_argument("--config", required=True)
    c = sub.add_parser("ctl")
    c.add_argument("dir")
    c.add_argument("action")
    args = p.parse_args()
    if args.command == "serve":
        serve(args)
    return ctl(args)


if __name__ == "__main__":
    sys.exit(main())
