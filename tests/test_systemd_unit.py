"""The shipped systemd unit: verified and rated by systemd's own analysis, and what its sandbox forbids shown
harmless to what the gateway runs (this machine's PID 1 is not systemd, so the unit is analysed offline and its memory
rule applied by the kernel's equivalent; tests/test_install.py runs it, as installed, under a real systemd in a
container)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "venue-gateway.service"


def test_systemd_rates_the_units_exposure_at_2_or_lower() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (systemd)")
    result = subprocess.run([analyze, "security", "--offline=yes", str(UNIT)], capture_output=True, text=True,
                            timeout=60)
    found = re.search(r"Overall exposure level for venue-gateway\.service: (\d+\.\d+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout
    # What the gateway needs stays allowed: realtime scheduling, its devices, the address families of its drivers.
    settings = [line for line in UNIT.read_text().splitlines() if line and not line.startswith("#")]
    assert "LimitRTPRIO=10" in settings and "RestrictRealtime=yes" not in settings
    assert not any(line.startswith("SystemCallFilter=~") and "@resources" in line for line in settings)
    assert {"DeviceAllow=char-ttyUSB rw", "DeviceAllow=char-ttyACM rw", "DevicePolicy=closed"} <= set(settings)
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK" in settings


def test_systemd_verifies_the_shipped_unit() -> None:
    """`systemd-analyze verify` of the file as shipped, with its paths (/opt/venue-gateway/current) made to name
    this tree's gateway in a mount namespace of its own: verify checks that the commands exist. The unit as an install
    writes it, under a running systemd, is verified in tests/test_install.py."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs systemd-analyze, unshare and root (a private /opt)")
    venv = Path(sys.prefix)
    assert (venv / "bin" / "venue-gateway").exists()
    place = ('mount -t tmpfs -o mode=0755 unit-opt /opt && mkdir /opt/venue-gateway && '
             'ln -s "$0" /opt/venue-gateway/current')
    result = subprocess.run(["unshare", "--mount", "--propagation=private", "sh", "-c", f'{place} && "$@"', str(venv),
                             analyze, "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout + result.stderr, result.stdout + result.stderr


# prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): Linux 6.3's per-process form of MemoryDenyWriteExecute=yes.
UNDER_MDWE = """
import ctypes, mmap, sys
from pathlib import Path
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    print("no PR_SET_MDWE on this kernel:", ctypes.get_errno())
    sys.exit(3)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("a writable and executable mapping was allowed")
except PermissionError:
    pass
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import aiohttp, orjson
from gateway.inference.model import load
for path, kind in ((Path("models/equipment_anomaly.onnx"), "equipment_anomaly"),
                   (Path("models/audience_mood.onnx"), "audience_mood")):
    model = load(path, kind)  # opens the session and runs a trial inference on it
    print(path.name, model.spec.kind)
AESGCM(bytes(16)).encrypt(bytes(12), orjson.dumps({"ok": True}), None)
print("ran")
"""


def test_onnxruntime_loads_and_runs_the_shipped_models_without_writable_executable_memory() -> None:
    result = subprocess.run([sys.executable, "-c", UNDER_MDWE], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode == 3:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["equipment_anomaly.onnx", "equipment_anomaly", "audience_mood.onnx",
                                     "audience_mood", "ran"]
