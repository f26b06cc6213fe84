"""A real systemd as the init of a container (systemd-nspawn) booted on a copy-on-write overlay of this machine's own
root: what is installed there (users, units, files) goes to a tmpfs and is gone with the container, and the tests
reach it through its namespaces (nsenter). It shares this machine's network, so the package index and a service's
port on loopback are reached as on the machine itself. Booting takes about a second here."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The container boots into basic.target and no further: none of the machine's own services (a broker, a database)
# start in it to compete for their ports.
TARGET = """[Unit]
Description=A box for the tests: the basic system and what they start
Requires=basic.target
After=basic.target
AllowIsolate=yes
"""

# A tmpfs (the overlay's upper layer must not be on the filesystem it covers), the machine's root under it with the
# target in place, and the container on it; all in a mount namespace of its own, which goes with the container.
BOOT = """set -e
mount -t tmpfs -o mode=0755,size=4g box-upper "$1"
mkdir -p "$1/upper/etc/systemd/system" "$1/work" "$1/root"
printf '%s' "$2" >"$1/upper/etc/systemd/system/box.target"
mount -t overlay box-root -o lowerdir=/,upperdir="$1/upper",workdir="$1/work" "$1/root"
exec systemd-nspawn --quiet --directory="$1/root" --machine="$3" --boot --register=no --keep-unit \\
  --link-journal=no --console=pipe --bind-ro="$4:/srv/host" systemd.unit=box.target
"""


def unavailable() -> str | None:
    """Why no box can be booted here, or None."""
    if os.geteuid() != 0:
        return "needs root (a container and its mounts)"
    for tool in ("systemd-nspawn", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"needs {tool} (systemd-container, util-linux)"
    if not Path("/lib/systemd/systemd").exists():
        return "needs systemd"
    return None


class SystemdBox:
    """The container's systemd, PID 1 of its own namespaces; commands run in it as root."""

    def __init__(self, nspawn: subprocess.Popen[bytes], console: Path) -> None:
        self.nspawn = nspawn
        self.console = console
        self.init = 0

    def wait_booted(self, timeout: float) -> float:
        """Waits for the container's init, then for its boot to finish; returns the seconds it took."""
        start = time.monotonic()
        while not self.init:
            if self.nspawn.poll() is not None or time.monotonic() - start > timeout:
                raise AssertionError(f"no container (exit {self.nspawn.returncode}):\n{self.console.read_text()}")
            children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children").read_text().split()
            for child in children:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    self.init = int(child)
            time.sleep(0.05)
        state = ""
        while not state:  # empty until its manager listens ("Failed to connect to bus")
            if self.nspawn.poll() is not None or time.monotonic() - start > timeout:
                raise AssertionError(f"no manager (exit {self.nspawn.returncode}):\n{self.console.read_text()}")
            state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout).stdout.strip()
            time.sleep(0.05)
        assert state in ("running", "degraded"), f"{state}:\n{self.run('systemctl', '--failed', check=False).stdout}"
        return time.monotonic() - start

    def run(self, *argv: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`argv` in the container, as root, with `env` added to a plain environment and `input` on its stdin."""
        environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                       **{k: v for k, v in os.environ.items() if k.startswith("PIP_")}, **(env or {})}
        result = subprocess.run(["nsenter", f"--target={self.init}", "--all", "env", "-i",
                                 *(f"{k}={v}" for k, v in environment.items()), *argv],
                                input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} exited with {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def shutdown(self) -> None:
        """Powers the container off (its systemd stops every unit), or kills it if that takes too long."""
        if self.nspawn.poll() is None and self.init:
            subprocess.run(["nsenter", f"--target={self.init}", "--all", "systemctl", "--no-block", "poweroff"],
                           capture_output=True, timeout=10)
        try:
            self.nspawn.wait(20)
        except subprocess.TimeoutExpired:
            self.nspawn.kill()
            self.nspawn.wait(10)


@contextmanager
def systemd_box(directory: Path, name: str, share: Path, timeout: float = 60) -> Iterator[SystemdBox]:
    """A booted container whose scratch space (a tmpfs) is mounted on `directory`, with this machine's `share` at
    /srv/host, read-only (the container has a /tmp of its own, where a clone of the tree may be)."""
    directory.mkdir(parents=True, exist_ok=True)
    console = directory.parent / f"{name}.console"
    with console.open("wb") as out:
        nspawn = subprocess.Popen(["unshare", "--mount", "--propagation=private", "sh", "-c", BOOT, "sh",
                                   str(directory), TARGET, name, str(share)], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT)
    box = SystemdBox(nspawn, console)
    try:
        box.wait_booted(timeout)
        yield box
    finally:
        box.shutdown()
