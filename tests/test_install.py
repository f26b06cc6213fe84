"""The install script puts a working gateway in a prefix: packaging, entry points and configs as a box gets them,
every package from the lock file by its hash, the configuration closed to other users, and on a systemd box the unit
enabled after the clock's synchronisation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def overlay_etc(tmp_path: Path) -> list[str] | None:
    """A prefix that runs a command with a writable copy of /etc (an overlay in a private mount namespace), so that
    the install's user, unit and links are made for real without touching this machine; None where that cannot be
    had (not root, no unshare or overlayfs)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("systemctl") is None:
        return None
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    upper.mkdir()
    work.mkdir()
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
    if subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True).returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f'{mount} && "$@"', "sh"]


def test_install_script_into_a_prefix(tmp_path: Path) -> None:
    prefix, etc = tmp_path / "opt", tmp_path / "etc"
    (etc / "tokens").mkdir(parents=True)
    (etc / "tokens" / "admin").write_text("an-admin-token-left-open\n")
    (etc / "tokens" / "admin").chmod(0o644)
    (etc / "environment").write_text("VG_TOKEN_CLOUD=a-cloud-token\n")
    (etc / "environment").chmod(0o644)
    etc.chmod(0o755)
    overlay = overlay_etc(tmp_path)
    env = {**os.environ, "PREFIX": str(prefix), "ETC": str(etc), "SYSTEMD": "yes" if overlay else "no",
           "PYTHON": getattr(sys, "_base_executable", sys.executable)}
    install = [str(ROOT / "image-build" / "install.sh")]
    # Under the overlay, what the install left in /etc is looked at before the namespace goes.
    looks = ["sh", "-c", '"$@" && systemctl is-enabled systemd-time-wait-sync.service venue-gateway.service && '
             'stat -c "%a %G" "$ETC" "$ETC/tokens" "$ETC/gateway.toml" "$ETC/tokens/admin" "$ETC/environment"', "sh"]
    result = subprocess.run([*overlay, *looks, *install] if overlay else install, capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "venue-gateway 0.1.0" in result.stdout
    # The lock file was installed by hash: the venv holds exactly its pins.
    lock = ROOT / "image-build" / f"requirements-cp{sys.version_info[0]}{sys.version_info[1]}-{os.uname().machine}.txt"
    pins = {line.split(" ")[0] for line in lock.read_text().splitlines() if "==" in line}
    frozen = subprocess.run([str(prefix / "bin" / "pip"), "freeze", "--all", "--exclude", "venue-gateway"],
                            capture_output=True, text=True, check=True).stdout
    assert {line.lower().replace("_", "-") for line in frozen.split()} == pins
    modes = {p: oct(p.stat().st_mode & 0o777) for p in (etc, etc / "tokens", etc / "gateway.toml",
                                                        etc / "tokens" / "admin", etc / "environment")}
    assert list(modes.values()) == ["0o750", "0o750", "0o640", "0o640", "0o600"], modes
    if overlay:
        assert result.stdout.splitlines()[-7:] == [
            "enabled", "enabled", "750 venue-gateway", "750 venue-gateway", "640 venue-gateway", "640 venue-gateway",
            "600 root"], result.stdout
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
    again = subprocess.run(install, capture_output=True, text=True, env={**env, "SYSTEMD": "no"}, timeout=300)
    assert again.returncode == 0 and "keeping the existing" in again.stdout
