"""The install script puts a working gateway in a prefix: packaging, entry points and configs as a box gets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_install_script_into_a_prefix(tmp_path: Path) -> None:
    prefix, etc = tmp_path / "opt", tmp_path / "etc"
    env = {**os.environ, "PREFIX": str(prefix), "ETC": str(etc), "SYSTEMD": "no",
           "PYTHON": getattr(sys, "_base_executable", sys.executable)}
    result = subprocess.run([str(ROOT / "image-build" / "install.sh")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "venue-gateway 0.1.0" in result.stdout
    gateway = prefix / "bin" / "venue-gateway"
    installed = subprocess.run([str(gateway), "check-config", "--offline", str(etc / "gateway.toml")],
                               capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0, installed.stderr  # the example config, with the sim driver found by name
    # A box is installed without the `sim` extra: the demo's virtual devices are named as what it cannot run.
    demo = subprocess.run([str(gateway), "check-config", str(ROOT / "config" / "demo.toml")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert demo.returncode == 2
    assert [line.split(": ")[1] for line in demo.stderr.splitlines()] == [
        "drivers.air", "drivers.venue.devices", "drivers.ble.backend"], demo.stderr
    assert all("install venue-gateway[sim]" in line for line in demo.stderr.splitlines())
    again = subprocess.run([str(ROOT / "image-build" / "install.sh")], capture_output=True, text=True, env=env,
                           timeout=300)
    assert again.returncode == 0 and "keeping the existing" in again.stdout
