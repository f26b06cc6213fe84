"""OLA (the Open Lighting Architecture daemon) as an independent receiver of Art-Net and sACN."""

from __future__ import annotations

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
    def __init__(self, http_port: int) -> None:
        self.url = f"http://127.0.0.1:{http_port}"

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


@pytest.fixture
def ola(tmp_path: Path) -> Iterator[Ola]:
    require(shutil.which("olad") is not None, "OLA (Debian package ola)")
    config = tmp_path / "ola"
    config.mkdir()
    (config / "ola-artnet.conf").write_text("enabled = true\nip = 127.0.0.1\nuse_loopback = true\n"
                                            "use_limited_broadcast = false\nalways_broadcast = false\n")
    (config / "ola-e131.conf").write_text("enabled = true\nip = 127.0.0.1\n")
    for plugin in PLUGINS_OFF:
        (config / f"ola-{plugin}.conf").write_text("enabled = false\n")
    http_port, rpc_port = free_port(), free_port()
    cmd = ["olad", "--config-dir", str(config), "--http-port", str(http_port), "--rpc-port", str(rpc_port),
           "--no-register-with-dns-sd", "--log-level", "1"]
    if os.geteuid() == 0:  # olad refuses to run as root
        for path in (tmp_path, config, *config.iterdir()):
            path.chmod(0o777 if path.is_dir() else 0o666)
        cmd = ["runuser", "-u", "nobody", "--", *cmd]
    log = (tmp_path / "olad.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    peer = Ola(http_port)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if len(peer.ports()) >= 2:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "olad.log").read_text()
            assert time.monotonic() < deadline, "olad did not start"
            time.sleep(0.1)
        yield peer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
