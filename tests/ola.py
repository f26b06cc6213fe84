"""OLA (the Open Lighting Architecture daemon) as an independent receiver of Art-Net and sACN."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, require

PLUGINS_OFF = ["dummy", "espnet", "ftdidmx", "gpio", "karate", "kinet", "milinst", "opendmx", "openpixelcontrol",
               "osc", "pathport", "renard", "sandnet", "shownet", "spi", "stageprofi", "uartdmx", "usbdmx", "usbserial"]


class Ola:
    def __init__(self, http_port: int, host: str = "127.0.0.1") -> None:
        self.url = f"http://{host}:{http_port}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.load(resp)

    def ports(self) -> list[dict[str, Any]]:
        return list(self._get("/json/get_ports"))

    def patch_input(self, device: str, universe: int) -> None:
        """Patch the first input port of the device whose name starts with `device` to OLA `universe`."""
        port = next(p["id"] for p in self.ports() if p["device"].startswith(device) and not p["is_output"])
        data = urllib.parse.urlencode({"id": universe, "name": f"u{universe}", "add_ports": port}).encode()
        with urllib.request.urlopen(self.url + "/new_universe", data=data, timeout=5) as resp:
            assert json.load(resp)["ok"]

    def dmx(self, universe: int) -> list[int]:
        return list(self._get(f"/get_dmx?u={universe}")["dmx"])


@contextlib.contextmanager
def running_olad(directory: Path, ip: str = "127.0.0.1", netns: str | None = None) -> Iterator[Ola]:
    """olad with its Art-Net and E1.31 plugins on `ip` (loopback by default, or inside network namespace
    `netns`), every other plugin off."""
    require(shutil.which("olad") is not None, "OLA (Debian package ola)")
    config = directory / "ola"
    config.mkdir()
    loopback = "true" if ip.startswith("127.") else "false"
    (config / "ola-artnet.conf").write_text(f"enabled = true\nip = {ip}\nuse_loopback = {loopback}\n"
                                            "use_limited_broadcast = false\nalways_broadcast = false\n")
    (config / "ola-e131.conf").write_text(f"enabled = true\nip = {ip}\n")
    for plugin in PLUGINS_OFF:
        (config / f"ola-{plugin}.conf").write_text("enabled = false\n")
    http_port, rpc_port = free_port(), free_port()
    cmd = ["olad", "--config-dir", str(config), "--http-port", str(http_port), "--rpc-port", str(rpc_port),
           "--no-register-with-dns-sd", "--log-level", "1"]
    if os.geteuid() == 0:  # olad refuses to run as root
        for path in (directory, config, *config.iterdir()):
            path.chmod(0o777 if path.is_dir() else 0o666)
        cmd = ["runuser", "-u", "nobody", "--", *cmd]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    log = (directory / "olad.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    peer = Ola(http_port, "127.0.0.1" if netns is None else ip)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if len(peer.ports()) >= 2:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (directory / "olad.log").read_text()
            assert time.monotonic() < deadline, "olad did not start"
            time.sleep(0.1)
        yield peer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def ola(tmp_path: Path) -> Iterator[Ola]:
    with running_olad(tmp_path) as peer:
        yield peer
