"""The install script puts a working gateway in a prefix: packaging, entry points and configs as a box gets them,
every package from the lock file by its hash, one whole version under versions/ that `current` names, and the
configuration closed to other users. On a real systemd (a container booted on an overlay of this machine's root,
tests/systemd_box.py) the unit it writes with its own paths starts the gateway as its user, gets it back after a
kill -9, and an upgrade puts a new version beside the old one with the configuration and the state kept. Where no
such container can be had, the same install is checked as a trial, without systemd."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.systemd_box import SystemdBox, systemd_box, unavailable

INSTALL = ROOT / "image-build" / "install.sh"
# What the installer reads from the tree; copied once per test, so that the tree's changing meanwhile cannot change
# the version between two runs.
SOURCE = ("pyproject.toml", "README.md", "gateway", "drivers", "models", "config", "image-build", "systemd")
# Secrets left open before the install, which closes them.
SECRETS = """mkdir -p "$0/tokens"
echo an-admin-token-left-open >"$0/tokens/admin"
echo VG_TOKEN_CLOUD=a-cloud-token >"$0/environment"
chmod 0644 "$0/tokens/admin" "$0/environment"
chmod 0755 "$0"
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


def on_this_machine(*argv: str, check: bool = True, env: dict[str, str] | None = None,
                    timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited with {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def check_installed(run: Run, src: str, prefix: str, etc: str, systemd: bool) -> str:
    """What a first install left (run by `run`, here or in the container); returns the version's label."""
    # One version, named by the project's version and its content, that `current` names by a relative link.
    label = run("readlink", f"{prefix}/current").stdout.strip()
    assert re.fullmatch(r"versions/0\.1\.0-[0-9a-f]{12}", label), label
    assert run("ls", "-A", prefix).stdout.split() == ["current", "versions"]
    assert run("ls", "-A", f"{prefix}/versions").stdout.split() == [label.removeprefix("versions/")]
    # Built through its final name: the scripts and the activation name versions/<label>, not where it was made.
    assert run("head", "-n1", f"{prefix}/current/bin/venue-gateway").stdout == f"#!{prefix}/{label}/bin/python\n"
    assert f"{prefix}/{label}\n" in run("grep", "-h", "^VIRTUAL_ENV=", f"{prefix}/current/bin/activate").stdout \
        .replace("'", "").replace('"', "")
    assert run("ls", f"{prefix}/{label}/models").stdout.split() == sorted(
        p.name for p in (ROOT / "models").iterdir() if p.suffix in (".onnx", ".md"))
    run("test", "-f", f"{prefix}/{label}/share/README.md")
    # The lock file was installed by hash: the venv holds exactly its pins.
    lock = ROOT / "image-build" / f"requirements-cp{sys.version_info[0]}{sys.version_info[1]}-{os.uname().machine}.txt"
    pins = {line.split(" ")[0] for line in lock.read_text().splitlines() if "==" in line}
    frozen = run(f"{prefix}/current/bin/pip", "freeze", "--all", "--exclude", "venue-gateway").stdout
    assert {line.lower().replace("_", "-") for line in frozen.split()} == pins
    # The configuration closed: to the gateway's group (with systemd) and root.
    modes = run("stat", "-c", "%a %G", etc, f"{etc}/tokens", f"{etc}/gateway.toml", f"{etc}/tokens/admin",
                f"{etc}/environment").stdout.split("\n")[:5]
    group = "venue-gateway" if systemd else "root"
    assert modes == [f"750 {group}", f"750 {group}", f"640 {group}", f"640 {group}", "600 root"], modes
    # The example, with this prefix's models, runs as it is (the sim driver found by name).
    config = run("cat", f"{etc}/gateway.toml").stdout
    assert f'equipment_model = "{prefix}/current/models/equipment_anomaly.onnx"' in config
    gateway = f"{prefix}/current/bin/venue-gateway"
    run(gateway, "check-config", "--offline", f"{etc}/gateway.toml")
    # A box is installed without the `sim` extra: the demo's virtual devices are named as what it cannot run.
    demo = run(gateway, "check-config", f"{src}/config/demo.toml", check=False)
    assert demo.returncode == 2
    assert [line.split(": ")[1] for line in demo.stderr.splitlines()] == [
        "drivers.air", "drivers.venue.devices", "drivers.ble.backend"], demo.stderr
    assert all("install venue-gateway[sim]" in line for line in demo.stderr.splitlines())
    return label


def check_again(run: Run, src: str, prefix: str, etc: str, label: str, env: dict[str, str]) -> None:
    """Installing again from the same tree keeps the version and the configuration as they are."""
    config = run("cat", f"{etc}/gateway.toml").stdout
    again = run(f"{src}/image-build/install.sh", env=env)
    assert f"version {label.removeprefix('versions/')} is installed and current: keeping it" in again.stdout
    assert "keeping the existing" in again.stdout
    assert run("readlink", f"{prefix}/current").stdout.strip() == label
    assert run("cat", f"{etc}/gateway.toml").stdout == config


def test_install_script_into_a_prefix_without_systemd(tmp_path: Path) -> None:
    why = unavailable()
    if why is None:
        pytest.skip("the same install is checked under a real systemd (test_the_installed_unit_under_a_real_systemd)")
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    prefix, etc = str(tmp_path / "opt"), str(tmp_path / "etc")
    on_this_machine("sh", "-c", SECRETS, etc)
    env = {"PREFIX": prefix, "ETC": etc, "SYSTEMD": "no", "PYTHON": getattr(sys, "_base_executable", sys.executable)}
    first = on_this_machine(f"{src}/image-build/install.sh", env=env)
    assert first.stdout.splitlines()[-1] == "venue-gateway 0.1.0"
    label = check_installed(on_this_machine, str(src), prefix, etc, systemd=False)
    check_again(on_this_machine, str(src), prefix, etc, label, env)


def test_install_refuses_paths_the_unit_cannot_use(tmp_path: Path) -> None:
    """A prefix the unit's sandbox hides from the service (PrivateTmp, ProtectHome), one that the unit's syntax
    would read as more than a path, or a label that is not one name in versions/, is refused before anything is
    installed."""
    for prefix, label, why in ((tmp_path / "opt", "", "cannot see"), ("/home/tech/vg", "", "cannot see"),
                               ("/opt/venue gateway", "", "only letters"), ("opt/vg", "", "absolute"),
                               (tmp_path / "opt", ".build-1", "starts with"), (tmp_path / "opt", "1/..", "only")):
        result = subprocess.run([str(INSTALL)], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PREFIX": str(prefix), "ETC": str(tmp_path / "etc"),
                                     "SYSTEMD": "no" if label else "yes", "LABEL": label})
        assert result.returncode == 1 and why in result.stderr, (prefix, label, result.stderr)
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
    src, prefix, etc = "/srv/src", "/srv/venue-gateway", "/srv/venue-gateway-etc"  # the unit is written with these
    env = {"PREFIX": prefix, "ETC": etc}
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
    with systemd_box(tmp_path / "scratch", f"vg-install-{os.getpid()}", ROOT) as box:
        booted = time.monotonic() - begun
        # The tree as it is now, from this machine's, which the container sees at /srv/host.
        box.run("sh", "-c", 'mkdir "$0" && cd "$1" && shift && cp -r "$@" "$0"', src, "/srv/host", *SOURCE)
        box.run("sh", "-c", SECRETS, etc)
        # A box without BlueZ has no bluetooth group, which the unit names (this machine may have one).
        box.run("sh", "-c", "! getent group bluetooth >/dev/null || groupdel bluetooth")
        clock = time.monotonic()
        first = box.run(f"{src}/image-build/install.sh", env=env, timeout=300)
        installed = time.monotonic() - clock
        assert first.stdout.splitlines()[-1] == "venue-gateway 0.1.0"
        label = check_installed(box.run, src, prefix, etc, systemd=True)
        check_again(box.run, src, prefix, etc, label, env)
        # The unit names this install's paths and no other, and systemd finds nothing wrong with it.
        unit = box.run("systemctl", "cat", "venue-gateway.service").stdout
        assert f"ExecStart={prefix}/current/bin/venue-gateway run --config {etc}/gateway.toml" in unit.splitlines()
        assert f"EnvironmentFile=-{etc}/environment" in unit.splitlines()
        settings = "\n".join(line for line in unit.splitlines() if not line.startswith("#"))
        assert "/opt/venue-gateway" not in settings and "/etc/venue-gateway" not in settings
        verify = box.run("systemd-analyze", "verify", "venue-gateway.service", check=False)
        assert verify.returncode == 0 and not verify.stdout + verify.stderr, verify.stdout + verify.stderr
        # The unit waits for the clock: chrony's own wait where chrony keeps it (the image), else systemd's.
        wait = "chrony-wait.service" if any(Path(d, "chrony-wait.service").exists() for d in (
            "/lib/systemd/system", "/usr/lib/systemd/system")) else "systemd-time-wait-sync.service"
        assert box.run("systemctl", "is-enabled", wait, "venue-gateway.service").stdout.split() == \
            ["enabled", "enabled"], wait
        # Every group the unit names exists, as a system group (the installer made those that did not).
        gids = {int(box.run("getent", "group", group).stdout.split(":")[2]) for group in ("dialout", "bluetooth")}
        assert max(gids) < 1000 and "created the system group bluetooth" in first.stdout, (gids, first.stdout)
        box.run("tee", f"{etc}/gateway.toml", input=small)
        # Type=notify: `start` returns once the gateway said READY=1.
        clock = time.monotonic()
        box.run("systemctl", "start", "venue-gateway.service")
        started = time.monotonic() - clock
        state = show(box, "ActiveState", "SubState", "MainPID", "NRestarts")
        assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == ("active", "running", "0"), state
        pid = state["MainPID"]
        assert box.run("ps", "-o", "user=", "-p", pid).stdout.strip() == "venue-gateway"
        status = dict(line.split(":\t", 1) for line in box.run("cat", f"/proc/{pid}/status").stdout.splitlines())
        assert gids <= {int(gid) for gid in status["Groups"].split()}, status["Groups"]
        assert health(port) == "ok"
        # The exposure as the running manager sees the installed unit.
        security = box.run("systemd-analyze", "security", "venue-gateway.service", check=False).stdout
        found = re.search(r"Overall exposure level for venue-gateway\.service: (\d+\.\d+)", security)
        assert found is not None and float(found.group(1)) <= 2.0, security
        exposure = found.group(1)
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
        # Installing the same tree again leaves the running service alone; a changed unit alone restarts it.
        pid = state["MainPID"]
        box.run(f"{src}/image-build/install.sh", env=env)
        assert show(box, "MainPID")["MainPID"] == pid
        box.run("sh", "-c", f"echo '# changed' >>{src}/systemd/venue-gateway.service")
        box.run(f"{src}/image-build/install.sh", env=env)
        state = show(box, "ActiveState", "SubState", "MainPID")
        assert (state["ActiveState"], state["SubState"]) == ("active", "running") and state["MainPID"] != pid, state
        assert box.run("readlink", f"{prefix}/current").stdout.strip() == label
        kept = box.run("sh", "-c", f"sha256sum {etc}/gateway.toml; ls /var/lib/venue-gateway").stdout
        # An upgrade: a changed tree is a new version, installed beside the running one; current switches to it,
        # previous names the old one, and the running service goes onto the new version.
        box.run("sh", "-c", f"echo >>{src}/README.md")
        clock = time.monotonic()
        second = box.run(f"{src}/image-build/install.sh", env=env, timeout=300)
        upgraded = time.monotonic() - clock
        new = box.run("readlink", f"{prefix}/current").stdout.strip()
        assert new != label and box.run("readlink", f"{prefix}/previous").stdout.strip() == label
        assert box.run("ls", f"{prefix}/versions").stdout.split() == sorted(
            name.removeprefix("versions/") for name in (label, new))
        assert "keeping the existing" in second.stdout
        # The state kept (the store and its lock); the start after the upgrade also ran the previous version's
        # update recovery, which keeps its journal in the state directory.
        after = box.run("sh", "-c", f"sha256sum {etc}/gateway.toml; ls /var/lib/venue-gateway").stdout
        assert set(kept.splitlines()) <= set(after.splitlines()) <= {*kept.splitlines(), "update"}, (kept, after)
        state = show(box, "ActiveState", "MainPID")
        assert state["ActiveState"] == "active", state
        assert f"{prefix}/{new}/bin/python" in box.run("cat", f"/proc/{state['MainPID']}/cmdline").stdout
        assert health(port) == "ok"
        # That start ran the previous version's update recovery as root, first, and it succeeded.
        pre = box.run("systemctl", "show", "venue-gateway.service", "--property=ExecStartPre").stdout.splitlines()
        assert f"path={prefix}/previous/bin/python" in pre[0] and "status=0" in pre[0], pre
    print(f"\nboot {booted:.1f} s, install {installed:.1f} s, start to READY {started:.1f} s, exposure {exposure}, "
          f"kill -9 to running again {restarted:.1f} s, upgrade {upgraded:.1f} s, "
          f"in all {time.monotonic() - begun:.1f} s")
