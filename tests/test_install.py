"""The install script puts a working gateway in a prefix: packaging, entry points and configs as a box gets them,
every package from the lock file by its hash, one whole version under versions/ that `current` names, and the
configuration closed to other users. On a real systemd (a container booted on an overlay of this machine's root,
tests/systemd_box.py) the unit it writes with its own paths starts the gateway as its user, gets it back after a
kill -9, and an upgrade puts a new version beside the old one with the configuration and the state kept."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.systemd_box import SystemdBox, systemd_box, unavailable

INSTALL = ROOT / "image-build" / "install.sh"
# What the installer reads from the tree; copied once per test, so that the tree's changing meanwhile cannot change
# the version between two runs.
SOURCE = ("pyproject.toml", "README.md", "gateway", "drivers", "models", "config", "image-build", "systemd")


def snapshot(into: Path) -> Path:
    into.mkdir()
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, into / name)
    return into


def test_install_script_into_a_prefix(tmp_path: Path) -> None:
    prefix, etc = tmp_path / "opt", tmp_path / "etc"
    (etc / "tokens").mkdir(parents=True)
    (etc / "tokens" / "admin").write_text("an-admin-token-left-open\n")
    (etc / "tokens" / "admin").chmod(0o644)
    (etc / "environment").write_text("VG_TOKEN_CLOUD=a-cloud-token\n")
    (etc / "environment").chmod(0o644)
    etc.chmod(0o755)
    install = [str(snapshot(tmp_path / "src") / "image-build" / "install.sh")]
    env = {**os.environ, "PREFIX": str(prefix), "ETC": str(etc), "SYSTEMD": "no",
           "PYTHON": getattr(sys, "_base_executable", sys.executable)}
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "venue-gateway 0.1.0"
    # One version, named by the project's version and its content, that `current` names by a relative link.
    label = os.readlink(prefix / "current")
    assert re.fullmatch(r"versions/0\.1\.0-[0-9a-f]{12}", label), label
    version = prefix / label
    assert sorted(p.name for p in prefix.iterdir()) == ["current", "versions"]
    assert (version / "share" / "README.md").is_file()
    assert sorted(p.name for p in (version / "models").iterdir()) == sorted(
        p.name for p in (ROOT / "models").iterdir() if p.suffix in (".onnx", ".md"))
    # The lock file was installed by hash: the venv holds exactly its pins.
    lock = ROOT / "image-build" / f"requirements-cp{sys.version_info[0]}{sys.version_info[1]}-{os.uname().machine}.txt"
    pins = {line.split(" ")[0] for line in lock.read_text().splitlines() if "==" in line}
    frozen = subprocess.run([str(prefix / "current" / "bin" / "pip"), "freeze", "--all", "--exclude", "venue-gateway"],
                            capture_output=True, text=True, check=True).stdout
    assert {line.lower().replace("_", "-") for line in frozen.split()} == pins
    modes = {p: oct(p.stat().st_mode & 0o777) for p in (etc, etc / "tokens", etc / "gateway.toml",
                                                        etc / "tokens" / "admin", etc / "environment")}
    assert list(modes.values()) == ["0o750", "0o750", "0o640", "0o640", "0o600"], modes
    # The example's models are this prefix's.
    config = (etc / "gateway.toml").read_text()
    assert f'equipment_model = "{prefix}/current/models/equipment_anomaly.onnx"' in config
    gateway = prefix / "current" / "bin" / "venue-gateway"
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
    # Again from the same tree: the version is kept as it is, and so is the configuration.
    again = subprocess.run(install, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"version {label.removeprefix('versions/')} is installed and current: keeping it" in again.stdout
    assert "keeping the existing" in again.stdout and os.readlink(prefix / "current") == label
    assert (etc / "gateway.toml").read_text() == config


def test_install_refuses_paths_the_unit_cannot_use(tmp_path: Path) -> None:
    """A prefix the unit's sandbox hides from the service (PrivateTmp, ProtectHome), or one that the unit's syntax
    would read as more than a path, is refused before anything is installed."""
    for prefix, why in ((tmp_path / "opt", "cannot see"), ("/home/tech/vg", "cannot see"),
                        ("/opt/venue gateway", "only letters"), ("opt/vg", "absolute")):
        result = subprocess.run([str(INSTALL)], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PREFIX": str(prefix), "ETC": str(tmp_path / "etc")})
        assert result.returncode == 1 and why in result.stderr, (prefix, result.stderr)
    assert not (tmp_path / "opt").exists() and not (tmp_path / "etc").exists()


def show(box: SystemdBox, *properties: str) -> dict[str, str]:
    out = box.run("systemctl", "show", "venue-gateway.service", *(f"--property={p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def health(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=10) as resp:
        return str(json.load(resp)["status"])


def test_the_installed_unit_under_a_real_systemd(tmp_path: Path) -> None:
    why = unavailable()
    if why:
        pytest.skip(why)
    prefix, etc = "/srv/venue-gateway", "/srv/venue-gateway-etc"  # not the defaults: the unit is written with these
    port = free_port()
    small = f"""[gateway]
id = "box-1"
venue = "test-venue"
data_dir = "/var/lib/venue-gateway"

[api]
listen = "127.0.0.1:{port}"

[drivers.venue]
type = "sim"
seed = 3
"""
    begun = time.monotonic()
    with systemd_box(tmp_path / "scratch", f"vg-install-{os.getpid()}") as box:
        booted = time.monotonic() - begun
        # The tree as it is now (the host's /tmp, where pytest's directories are, is not the container's).
        box.run("sh", "-c", 'mkdir /srv/src && cd "$0" && cp -r "$@" /srv/src', str(ROOT), *SOURCE)
        install = ["/srv/src/image-build/install.sh"]
        first = box.run(*install, env={"PREFIX": prefix, "ETC": etc}, timeout=300)
        label = box.run("readlink", f"{prefix}/current").stdout.strip()
        # The unit names this install's paths and no other, and systemd finds nothing wrong with it.
        unit = box.run("systemctl", "cat", "venue-gateway.service").stdout
        assert f"ExecStart={prefix}/current/bin/venue-gateway run --config {etc}/gateway.toml" in unit.splitlines()
        assert f"EnvironmentFile=-{etc}/environment" in unit.splitlines()
        settings = "\n".join(line for line in unit.splitlines() if not line.startswith("#"))
        assert "/opt/venue-gateway" not in settings and "/etc/venue-gateway" not in settings
        verify = box.run("systemd-analyze", "verify", "venue-gateway.service", check=False)
        assert verify.returncode == 0 and not verify.stdout + verify.stderr, verify.stdout + verify.stderr
        # Every group the unit names exists, as a system group (the installer made those that did not).
        for group in ("dialout", "bluetooth"):
            gid = int(box.run("getent", "group", group).stdout.split(":")[2])
            assert gid < 1000, (group, gid, first.stdout)
        box.run("tee", f"{etc}/gateway.toml", input=small)
        # Type=notify: `start` returns once the gateway said READY=1.
        clock = time.monotonic()
        box.run("systemctl", "start", "venue-gateway.service")
        started = time.monotonic() - clock
        state = show(box, "ActiveState", "SubState", "MainPID", "NRestarts")
        assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == ("active", "running", "0"), state
        pid = state["MainPID"]
        assert box.run("ps", "-o", "user=", "-p", pid).stdout.strip() == "venue-gateway"
        assert health(port) == "ok"
        # The exposure as the running manager sees the installed unit.
        security = box.run("systemd-analyze", "security", "venue-gateway.service", check=False).stdout
        found = re.search(r"Overall exposure level for venue-gateway\.service: (\d+\.\d+)", security)
        assert found is not None and float(found.group(1)) <= 2.0, security
        # kill -9: the service comes back (RestartSec=2), with a new main process, ready again.
        clock = time.monotonic()
        box.run("kill", "-9", pid)
        while (state := show(box, "ActiveState", "SubState", "MainPID", "NRestarts"))["NRestarts"] == "0" or \
                state["SubState"] != "running":
            assert time.monotonic() - clock < 30, state
            time.sleep(0.1)
        restarted = time.monotonic() - clock
        assert state["ActiveState"] == "active" and state["MainPID"] != pid, state
        assert health(port) == "ok"
        kept = box.run("sh", "-c", f"sha256sum {etc}/gateway.toml; ls /var/lib/venue-gateway").stdout
        # An upgrade: a changed tree is a new version, installed beside the running one; current switches to it,
        # previous names the old one, and the running service goes onto the new version.
        box.run("sh", "-c", "echo >>/srv/src/README.md")
        clock = time.monotonic()
        second = box.run(*install, env={"PREFIX": prefix, "ETC": etc}, timeout=300)
        upgraded = time.monotonic() - clock
        new = box.run("readlink", f"{prefix}/current").stdout.strip()
        assert new != label and box.run("readlink", f"{prefix}/previous").stdout.strip() == label
        assert box.run("ls", f"{prefix}/versions").stdout.split() == sorted(
            name.removeprefix("versions/") for name in (label, new))
        assert "keeping the existing" in second.stdout
        assert box.run("sh", "-c", f"sha256sum {etc}/gateway.toml; ls /var/lib/venue-gateway").stdout == kept
        state = show(box, "ActiveState", "MainPID")
        assert state["ActiveState"] == "active", state
        assert f"{prefix}/{new}/bin/python" in box.run("cat", f"/proc/{state['MainPID']}/cmdline").stdout
        assert health(port) == "ok"
    print(f"\nboot {booted:.1f} s, start to READY {started:.1f} s, kill -9 to running again {restarted:.1f} s, "
          f"upgrade {upgraded:.1f} s, in all {time.monotonic() - begun:.1f} s")
