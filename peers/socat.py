"""Two pseudo-terminals joined by socat: the gateway opens `device` as it would a USB serial port, the simulated
device sits on `far`. Killing socat is unplugging the device; `plug` again is plugging it back."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from peers import PeerMissing


class SocatPair:
    def __init__(self, directory: Path, name: str) -> None:
        self.device, self.far = directory / name, directory / f"{name}-far"
        self.proc: subprocess.Popen[bytes] | None = None

    def plug(self) -> None:
        if shutil.which("socat") is None:
            raise PeerMissing("socat (Debian package socat)")
        self.proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={self.device}",
                                      f"pty,raw,echo=0,link={self.far}"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not (self.device.exists() and self.far.exists()):
            assert time.monotonic() < deadline, "socat made no links within 5 s"
            time.sleep(0.02)

    def unplug(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.unplug()
