"""docs/writing-a-driver.md's example, as a site would use it: its code saved as a module outside the repository,
its configuration checked by `venue-gateway check-config`, and the real daemon loading it by `module:Class` and
reading datagrams from a real socket."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from tests.conftest import ROOT, VIEWER, Daemon, free_port

GUIDE = ROOT / "docs" / "writing-a-driver.md"


def _block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) == 1, f"the guide has one {language} block"
    return str(blocks[0])


def _site(tmp: Path, udp_port: int, **changes: Any) -> tuple[Path, int]:
    """The guide's module in a directory of its own and a configuration with the guide's driver table."""
    (tmp / "site").mkdir(exist_ok=True)
    (tmp / "site" / "stage_door.py").write_text(_block("python"))
    table = tomllib.loads(_block("toml"))
    (name, options), = table["drivers"].items()
    options |= {"listen": f"127.0.0.1:{udp_port}", "allow": ["127.0.0.0/8"], **changes}
    api_port = free_port()
    config = {"gateway": {"id": "site-01", "venue": "hall", "data_dir": "data"},
              "api": {"listen": f"127.0.0.1:{api_port}", "tokens": [{"role": "viewer", "demo_token": VIEWER}]},
              "drivers": {name: options}}
    path = tmp / "gateway.toml"
    path.write_text(tomli_w.dumps(config))
    return path, api_port


def _env(tmp: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{ROOT}:{tmp / 'site'}"}


def test_check_config_checks_the_site_driver_options(tmp_path: Path) -> None:
    path, _ = _site(tmp_path, free_port(), allow=["lan"])
    result = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True,
                            text=True, env=_env(tmp_path), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "drivers.stage-door.allow[0]: 'lan' is not a network (allowed: e.g. 10.0.0.0/24)" in result.stderr


def test_the_daemon_runs_the_guide_driver(tmp_path: Path) -> None:
    udp_port = free_port()
    path, api_port = _site(tmp_path, udp_port)
    ok = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True, text=True,
                        env=_env(tmp_path), timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    d = Daemon(path, api_port, _env(tmp_path)).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in (b"door=open", b"temp=21.5", b"temp=warm", b"\xff\xfe"):
                sock.sendto(datagram, ("127.0.0.1", udp_port))
        deadline = time.monotonic() + 10
        while True:
            asset = d.get("/api/v1/twin/assets/door:stage")
            detail = d.get("/api/v1/health")["drivers"]["stage-door"].get("detail", {})
            if (detail.get("received") == 2 and detail.get("dropped") == 2) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert asset["kind"] == "door" and asset["zone"] == "backstage"
        assert asset["reported"]["open"] is True
        assert asset["reported"]["temperature_c"] == 21.5
        assert detail == {"received": 2, "dropped": 2}
        assert d.terminate() == 0
    finally:
        d.cleanup()
