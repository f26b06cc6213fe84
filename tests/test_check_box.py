"""`check-config` finds what a configuration needs from its box (secrets, files with safe modes, model files, the
drivers' optional libraries) in one run; `--offline` checks the file alone. At run time, what is missing costs one
log line per try, never a traceback, and the rest of the box runs on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from tests.conftest import ROOT, Daemon, demo_config, free_port

SECRETS = ("VG_TOKEN_CLOUD", "VENUE_GATEWAY_MQTT_PASSWORD")


def check_config(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path), *args], capture_output=True,
                          text=True, timeout=60, env={**clean, "PYTHONPATH": str(ROOT), **(env or {})})


def keys(result: subprocess.CompletedProcess[str], path: Path) -> list[str]:
    prefix = f"{path}: "
    return [line.removeprefix(prefix).split(": ")[0] for line in result.stderr.splitlines()]


def test_the_example_lists_everything_its_box_lacks_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    shutil.copy(ROOT / "config" / "venue.example.toml", path)
    result = check_config(path)
    assert result.returncode == 2, result.stdout
    assert keys(result, path) == [
        "api.tokens[0].env", "api.tokens[1].file", "api.tokens[2].file", "cloud.password_env", "cloud.ca_file",
        "inference.equipment_model", "inference.mood_model", "drivers.wristbands.key_file"]
    assert "environment variable VG_TOKEN_CLOUD (the viewer token) is not set" in result.stderr
    assert "the show key file /etc/venue-gateway/show.key does not exist" in result.stderr
    offline = check_config(path, "--offline")
    assert offline.returncode == 0, offline.stderr
    assert "ok (the file alone, --offline)" in offline.stdout


def _example_on_a_box(box: Path) -> Path:
    """The example with every file it names present under `box`, as an installation would lay them out."""
    doc = tomllib.loads((ROOT / "config" / "venue.example.toml").read_text())
    doc["gateway"]["data_dir"] = str(box / "data")
    for name in ("operator", "admin"):
        secret(box / "tokens" / name, os.urandom(16).hex())
    doc["api"]["tokens"][1]["file"] = str(box / "tokens" / "operator")
    doc["api"]["tokens"][2]["file"] = "tokens/admin"  # relative: from the configuration file's directory
    (box / "broker-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    doc["cloud"]["ca_file"] = str(box / "broker-ca.pem")
    doc["inference"]["equipment_model"] = str(ROOT / "models" / "equipment_anomaly.onnx")
    doc["inference"]["mood_model"] = str(ROOT / "models" / "audience_mood.onnx")
    secret(box / "show.key", os.urandom(16).hex())
    doc["drivers"]["wristbands"]["key_file"] = str(box / "show.key")
    path = box / "gateway.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def secret(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def test_the_example_is_ok_on_a_box_that_has_what_it_names_and_unsafe_or_bad_secrets_are_named(
        tmp_path: Path) -> None:
    path = _example_on_a_box(tmp_path)
    env = {"VG_TOKEN_CLOUD": "a-cloud-token-0123456789", "VENUE_GATEWAY_MQTT_PASSWORD": "a-password"}
    ok = check_config(path, env=env)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "tokens" / "admin").chmod(0o644)
    secret(tmp_path / "show.key", "not a key")
    (tmp_path / "tokens" / "operator").write_text("\n")
    result = check_config(path, env=env)
    assert result.returncode == 2
    lines = [line.removeprefix(f"{path}: ") for line in result.stderr.splitlines()]
    assert lines == [
        f"api.tokens[1].file: the operator token file {tmp_path}/tokens/operator is empty",
        f"api.tokens[2].file: the admin token file {tmp_path}/tokens/admin has mode 0644, open to other users "
        f"(allowed: 0600 or 0640; chmod 600 {tmp_path}/tokens/admin)",
        f"drivers.wristbands.key_file: show key file {tmp_path}/show.key: a show key is 32 hexadecimal digits",
    ]


def without_bumble(tmp_path: Path) -> str:
    """A PYTHONPATH on which `import bumble` fails as on an install without the `sim` extra."""
    shadow = tmp_path / "no-sim-extra" / "bumble"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'bumble'\", name='bumble')\n")
    return f"{shadow.parent}{os.pathsep}{ROOT}"


def test_the_demo_without_the_sim_extra_names_the_drivers_that_need_it(tmp_path: Path) -> None:
    result = check_config(ROOT / "config" / "demo.toml", env={"PYTHONPATH": without_bumble(tmp_path)})
    assert result.returncode == 2
    needs = "needs the Python package 'bumble', which is not installed (No module named 'bumble'); allowed: " \
            "install venue-gateway[sim]"
    assert result.stderr.splitlines() == [f"{(ROOT / 'config' / 'demo.toml').resolve()}: {key}: {needs}"
                                          for key in ("drivers.air", "drivers.ble.backend")]


def test_a_copy_of_the_demo_elsewhere_is_told_its_models_are_not_there(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    shutil.copy(ROOT / "config" / "demo.toml", path)
    result = check_config(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: inference.{key}: model file {tmp_path.parent}/models/{name}.onnx does not exist (allowed: the path "
        "of a readable file)" for key, name in (("equipment_model", "equipment_anomaly"),
                                                ("mood_model", "audience_mood"))] + [
        f"{path}: show.cues.file: the cue list {tmp_path}/demo-cues.toml does not exist (allowed: the path of a "
        "readable file)"]


def _driver_lines(log: str, driver: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(rf"driver {driver} (not ready|failed)", line)]


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_at_run_time_a_missing_show_key_is_a_line_per_try_until_it_arrives(tmp_path: Path) -> None:
    port = free_port()
    path = demo_config(tmp_path, port, sensing=False)
    doc = tomllib.loads(path.read_text())
    del doc["drivers"]["wristbands"]["demo_key"]
    key = tmp_path / "show.key"
    doc["drivers"]["wristbands"]["key_file"] = str(key)
    path.write_text(tomli_w.dumps(doc))
    daemon = Daemon(path, port).start(wait=False)
    try:
        daemon.wait_healthy(status=("degraded",))
        _wait(lambda: len(_driver_lines(daemon.log.read_text(), "wristbands")) >= 2, 15, "two tries")
        log = daemon.log.read_text()
        assert all(line.endswith(f"not ready: show key file {key} cannot be read: No such file or directory")
                   for line in _driver_lines(log, "wristbands")), log
        assert "Traceback" not in log
        secret(key, "76656e75652d67617465776179212121")
        _wait(lambda: daemon.get("/api/v1/health")["drivers"]["wristbands"]["state"] == "running", 60,
              "the radio to start with the key")
    finally:
        daemon.cleanup()


def test_at_run_time_a_missing_library_is_a_line_per_try_and_the_rest_runs(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(demo_config(tmp_path, port), port, env={"PYTHONPATH": without_bumble(tmp_path)})
    daemon.start(wait=False)
    try:
        health = daemon.wait_healthy(status=("degraded",))
        _wait(lambda: len(_driver_lines(daemon.log.read_text(), "air")) >= 2, 15, "two tries")
        log = daemon.log.read_text()
        assert all(line.endswith("failed: ModuleNotFoundError: No module named 'bumble'")
                   for name in ("air", "ble") for line in _driver_lines(log, name)), log
        assert "Traceback" not in log
        health = daemon.get("/api/v1/health")
        assert health["drivers"]["venue"]["state"] == "running" and health["drivers"]["osc"]["state"] == "running"
    finally:
        daemon.cleanup()


def test_the_file_and_the_box_are_checked_in_the_same_run(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    text = (ROOT / "config" / "venue.example.toml").read_text()
    path.write_text(text.replace("max_mb = 4096", "max_mb = 1").replace("show_id = 1", "show_id = -1"))
    result = check_config(path)
    assert result.returncode == 2
    found = keys(result, path)
    assert found[:2] == ["store.max_mb", "drivers.wristbands.show_id"]  # the file's own problems first
    assert "api.tokens[1].file" in found and "inference.mood_model" in found  # then the box's, valid sections
    assert "drivers.wristbands.key_file" not in found  # a driver table that is wrong is not looked at further


def test_at_run_time_a_missing_broker_password_keeps_the_cloud_link_waiting_and_the_rest_runs(tmp_path: Path) -> None:
    """A new box whose configuration names the broker's password in a variable not set yet (the shipped example's,
    before the venue fills in the environment file) starts: the cloud link waits, saying why, and the venue runs."""
    port = free_port()
    path = demo_config(tmp_path, port)
    doc = tomllib.loads(path.read_text())
    doc["cloud"] = {"broker": f"mqtt://127.0.0.1:{free_port()}", "username": "demo-hall/demo-01",
                    "password_env": "VG_TEST_PASSWORD_NOT_SET"}
    path.write_text(tomli_w.dumps(doc))
    daemon = Daemon(path, port).start(wait=False)
    try:
        daemon.wait_healthy(status=("degraded",))
        _wait(lambda: "environment variable VG_TEST_PASSWORD_NOT_SET is not set or empty"
              in str(daemon.get("/api/v1/health")["services"]["cloud"].get("last_error")), 15, "the cloud's reason")
        health = daemon.get("/api/v1/health")
        assert health["services"]["api"]["state"] == "running"
        assert health["drivers"]["venue"]["state"] == "running", health["drivers"]["venue"]
        assert "Traceback" not in daemon.log.read_text()
    finally:
        daemon.cleanup()
