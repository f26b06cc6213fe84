"""`venue-gateway doctor` against a real box: the demo venue's daemon (a subprocess) with its cloud link to a real
Mosquitto over TLS with the shipped ACL and a password file. Healthy, every check is ok or skipped and the exit
status 0. Then one thing wrong at a time, each a problem with its fix and exit status 1, the same in --json: a
broker that refuses the box's password or, by its ACL, its messages; a serial port not there; the kernel saying its
clock is not synchronised (the clock's state is the one seam a test sets: this machine's own may be either); a
corrupt store; a store bound the disk cannot hold. And without a daemon: the wristband radio's controller (Bumble,
on a pseudo-terminal) answering HCI Reset or silent, a dead broker bounded in time, stable serial names and a
Raspberry Pi's heat and throttling read under a root of the test's."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import trustme

from drivers.wristband.hci_port import HciPort
from gateway import cli
from gateway.api import tls
from gateway.box import doctor
from gateway.box.check import Box, Finding
from gateway.box.checklist import CHECKS, Entry
from gateway.box.checks import broker as broker_check
from gateway.config import load
from gateway.database import open_database
from gateway.kernel_clock import Timex, kernel_clock
from peers.mosquitto import Mosquitto, TlsFiles
from peers.socat import SocatPair
from tests.conftest import ROOT, Daemon, demo_config, free_port, require

USER, PASSWORD, ENV = "demo-hall/demo-01", "box-password-0123", "VG_TEST_MQTT_PASSWORD"
SYNCED = Timex(status=0x0001, max_error_us=12_000, est_error_us=700)  # STA_PLL: disciplined by NTP
UNSYNCED = Timex(status=0x0041, max_error_us=16_000_000, est_error_us=16_000_000)  # STA_UNSYNC
KEY_HEX = "000102030405060708090a0b0c0d0e0f"


@dataclass
class Rig:
    config: Path
    tls: TlsFiles
    passwords: Path


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    require(shutil.which("mosquitto") is not None and shutil.which("mosquitto_passwd") is not None,
            "the Debian package mosquitto (an MQTT broker, and mosquitto_passwd)")
    directory = tmp_path_factory.mktemp("doctor")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(files.ca)
    server.cert_chain_pems[0].write_to_path(files.cert)
    server.private_key_pem.write_to_path(files.key)
    passwords = directory / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), USER, PASSWORD], check=True)
    broker = Mosquitto(directory / "broker", tls=files, acl=ROOT / "config" / "mosquitto.acl",
                       passwords=passwords).start()
    port = free_port()
    extra = (f'[cloud]\nbroker = "{broker.url}"\nusername = "{USER}"\npassword_env = "{ENV}"\n'
             f'ca_file = "{files.ca}"\noutbox_max_mb = 64\nbackoff_initial_s = 0.1\nbackoff_max_s = 1.0\n')
    daemon = Daemon(demo_config(directory, port, sensing=False, extra=extra), port, env={ENV: PASSWORD})
    try:
        daemon.start()
        yield Rig(daemon.config, files, passwords)
    finally:
        daemon.cleanup()
        broker.stop()


def variant(rig: Rig, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """The rig's configuration with one thing changed, beside it (the same data directory unless changed)."""
    doc = tomllib.loads(rig.config.read_text())
    change(doc)
    path = rig.config.parent / f"{name}.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def examine(config: Path, clock: Timex = SYNCED) -> tuple[int, str, dict[str, Any]]:
    """The doctor's exit status, its text and its JSON (two runs, which must agree on the status)."""
    text, document = io.StringIO(), io.StringIO()
    code = doctor.report(config, text, clock=lambda: clock)
    assert doctor.report(config, document, as_json=True, clock=lambda: clock) == code
    return code, text.getvalue(), json.loads(document.getvalue())


def problems(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in doc["checks"] if c["status"] == "problem"]


def only_problem(doc: dict[str, Any], check: str) -> dict[str, Any]:
    """The one problem found, which must be `check`'s, with its fix."""
    found = problems(doc)
    assert [c["check"] for c in found] == [check], json.dumps(found, indent=1)
    assert found[0]["fix"] and doc["status"] == "problem"
    return found[0]


def test_a_healthy_box_is_ready_for_doors(rig: Rig, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    code, text, doc = examine(rig.config)
    assert code == 0, text
    assert doc["status"] == "ok" and {c["status"] for c in doc["checks"]} <= {"ok", "skipped"}, text
    assert text.rstrip().endswith("ready for doors")
    first = {c["check"]: c for c in reversed(doc["checks"])}
    assert [c["check"] for c in doc["checks"] if c["status"] == "ok"][:4] == ["configuration", "clock", "disk", "store"]
    for name in ("serial", "radio", "broker", "api", "tokens"):
        assert first[name]["status"] == "ok", first[name]
    assert "over TLS as 'demo-hall/demo-01': a message to venues/demo-hall/demo-01/events was taken (MQTT 5 " \
           "PUBACK)" in first["broker"]["message"]
    assert "radio on" in first["radio"]["message"] and "is running" in first["radio"]["message"]
    assert "no error found, schema 2" in first["store"]["message"]
    assert first["api"]["message"].endswith(": ok")

    # The command itself, on this machine's own clock (whatever the kernel says of it is the one thing that may
    # differ), with the broker's password from the service's environment file beside the configuration.
    environment = rig.config.parent / "environment"
    environment.write_text(f'# the service\'s secrets (EnvironmentFile=)\n{ENV}="{PASSWORD}"\n')
    monkeypatch.delenv(ENV)
    state = kernel_clock()
    unsynchronised = state is not None and bool(state.status & 0x40)
    assert cli.main(["doctor", "--config", str(rig.config), "--json"]) == (1 if unsynchronised else 0)
    environment.unlink()
    shown = json.loads(capsys.readouterr().out)
    assert [c["check"] for c in problems(shown)] in ([], ["clock"])
    assert [c["status"] for c in shown["checks"] if c["check"] == "broker"] == ["ok"]


def test_a_broker_that_refuses_the_box_or_its_messages_is_a_problem(rig: Rig, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "not-the-password")
    code, text, doc = examine(rig.config)
    found = only_problem(doc, "broker")
    assert code == 1 and "refused the connection as 'demo-hall/demo-01': Not authorized" in found["message"], text
    assert "password_env" in found["fix"] and "fix: check cloud.username" in text

    # Under MQTT 3.1.1 the acknowledgement cannot say whether the ACL took the message: a warning, not an ok.
    monkeypatch.setenv(ENV, PASSWORD)
    [found_311] = checked(doctor.load(variant(rig, "mqtt-311", lambda d: d["cloud"].update(protocol="3.1.1"))),
                          "broker")
    assert found_311.status == "warn" and "under MQTT 3.1.1" in found_311.message, found_311

    # A broker whose ACL lets the box in but not write its events.
    acl = tmp_path / "acl"
    acl.write_text((ROOT / "config" / "mosquitto.acl").read_text().replace("pattern write venues/%u/events\n", ""))
    with Mosquitto(tmp_path / "strict", tls=rig.tls, acl=acl, passwords=rig.passwords) as strict:
        path = variant(rig, "strict-broker", lambda d: d["cloud"].update(broker=strict.url))
        monkeypatch.setenv(ENV, PASSWORD)
        code, text, doc = examine(path)
    found = only_problem(doc, "broker")
    assert code == 1 and "took the connection as 'demo-hall/demo-01' but refused a message to " \
                         "venues/demo-hall/demo-01/events: Not authorized (reason code 0x87)" in found["message"], text
    assert "ACL" in found["fix"]


def test_a_serial_port_not_there_is_a_problem(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    port = "/dev/serial/by-id/usb-ENTTEC_DMX_USB_PRO_EN999999-if00-port0"
    path = variant(rig, "widget", lambda d: d["drivers"].update(widget={"type": "enttec", "port": port,
                                                                        "universe": 1}))
    code, _, doc = examine(path)
    found = only_problem(doc, "serial")
    assert code == 1 and found["subject"] == "drivers.widget.port" and found["message"] == f"{port} is not there"
    assert found["fix"].startswith("plug the adapter in")


def test_a_clock_not_synchronised_is_a_problem(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    code, text, doc = examine(rig.config, clock=UNSYNCED)
    found = only_problem(doc, "clock")
    assert code == 1 and "not synchronised" in found["message"] and "maximum error 16 s" in found["message"]
    assert "timedatectl set-ntp true" in found["fix"] and "fix: give the box a time source" in text


def test_a_corrupt_store_is_a_problem(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    store = rig.config.parent / "corrupt" / "gateway.db"
    connection = open_database(store, "full")
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO telemetry (ts, series, value) VALUES (?, 1, ?)",
                           [(i, i / 2) for i in range(20_000)])
    connection.execute("COMMIT")
    connection.close()
    data = bytearray(store.read_bytes())
    page = 4096
    data[page * 20:page * 20 + 64] = b"\xa5" * 64  # a b-tree page's header, as a torn write leaves it
    store.write_bytes(data)
    code, text, doc = examine(variant(rig, "corrupt", lambda d: d["gateway"].update(data_dir="corrupt")))
    found = only_problem(doc, "store")
    assert code == 1 and found["message"].startswith(f"the store {store} is corrupt"), text
    assert "move" in found["fix"] and ".recover" in found["fix"]


def test_a_store_bound_the_disk_cannot_hold_is_a_problem(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    free_mb = shutil.disk_usage(rig.config.parent).free // 2**20
    bound = free_mb * 4 + 1024
    code, text, doc = examine(variant(rig, "big-store", lambda d: d["store"].update(max_mb=bound)))
    found = only_problem(doc, "disk")
    assert code == 1 and f"store.max_mb = {bound}" in found["message"] and "MB free" in found["message"], text
    assert found["fix"].startswith("lower store.max_mb to ") and found["details"]["store_bound_bytes"] == bound * 2**20


def test_after_first_boot_doctor_checks_the_api_over_https_and_shows_the_tokens_to_root(tmp_path: Path) -> None:
    """The two commands together, as on a new box: first boot turns a configuration with the example's commented
    certificate lines to the certificate it makes; the gateway serves it; doctor pins it and shows root the tokens."""
    etc, state, port = tmp_path / "etc", tmp_path / "state", free_port()
    etc.mkdir()
    (etc / "gateway.toml").write_text(f"""[gateway]
id = "doc-02"
venue = "hall"
data_dir = "{state}"
realtime_priority = 5

[api]
listen = "127.0.0.1:{port}"
# cert_file = "/etc/venue-gateway/api.pem"
# key_file = "/etc/venue-gateway/api.key"

[[api.tokens]]
role = "admin"
file = "tokens/admin"

[[api.tokens]]
role = "operator"
file = "tokens/operator"

[drivers.venue]
type = "sim"
seed = 3
racks = 1
channels_per_rack = 2
circuits = 1
""")
    (tmp_path / "serial-number").write_bytes(b"10000000abcdef12\x00")
    assert cli.main(["first-boot", "--etc", str(etc), "--state", str(state), "--hostname-from",
                     str(tmp_path / "serial-number"), "--hostname-file", str(tmp_path / "hostname"), "--console",
                     str(tmp_path / "console")]) == 0
    fingerprint = json.loads((state / "first-boot.json").read_text())["fingerprint"]
    daemon = Daemon(etc / "gateway.toml", port).start(wait=False)
    try:
        deadline = time.monotonic() + 20
        while checked(doctor.load(etc / "gateway.toml"), "api")[0].status != "ok":
            assert time.monotonic() < deadline and daemon.proc is not None and daemon.proc.poll() is None, \
                daemon.log.read_text()
            time.sleep(0.2)
        code, text, doc = examine(etc / "gateway.toml")
        # A certificate put in place of the one the gateway serves, not yet restarted onto.
        other, _ = tls.self_signed(tmp_path / "other", "other")
        (etc / "api.pem").write_bytes(other.read_bytes())
        [served] = checked(doctor.load(etc / "gateway.toml"), "api")
    finally:
        daemon.cleanup()
    assert code == 0, text
    assert f"api: https://127.0.0.1:{port}: ok, certificate SHA-256 {fingerprint}" in text
    assert served.status == "problem" and served.message == (
        f"https://127.0.0.1:{port} serves the certificate SHA-256 {fingerprint}, not the one configured "
        f"({etc / 'api.pem'}, SHA-256 {tls.file_fingerprint(other)})") and "restart" in str(served.fix)
    [realtime] = [c for c in doc["checks"] if c["check"] == "realtime"]
    said = {"ok": "the gateway's event loop runs SCHED_FIFO 5",  # as the system allows it or not
            "warn": "the gateway's event loop runs at ordinary priority, not SCHED_FIFO 5: normal: the system refused"}
    assert realtime["message"].startswith(said[realtime["status"]]), realtime
    admin = (etc / "tokens" / "admin").read_text().strip()
    tokens = {c["subject"]: c for c in doc["checks"] if c["check"] == "tokens"}
    shown = f"{admin} (in {etc / 'tokens' / 'admin'})" if os.geteuid() == 0 else \
        f"in {etc / 'tokens' / 'admin'} (run doctor as root to see it)"
    assert tokens["api.tokens[0] admin"]["message"] == shown
    assert tokens["first boot"]["status"] == "ok" and "host name vg-cdef12" in tokens["first boot"]["message"]


def small_config(directory: Path, extra: str = "") -> Path:
    """A box of its own with nothing running: its API's port is free."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    path.write_text(f'[gateway]\nid = "doc-01"\nvenue = "hall"\ndata_dir = "data"\n\n[api]\n'
                    f'listen = "127.0.0.1:{free_port()}"\n\n[dmx]\nuniverses = [1, 2]\n{extra}')
    return path


def checked(box: Box, name: str) -> list[Finding]:
    return [f for check, f in doctor.run(box, [e for e in CHECKS if e.name == name])]


async def test_the_wristband_controller_answers_hci_reset_and_a_silent_one_is_a_problem(tmp_path: Path) -> None:
    from drivers.sim.air import VirtualAir  # the `sim` extra: Bumble's controller, an independent implementation
    from drivers.wristband.protocol import show_key

    pty = tmp_path / "radio"
    air = VirtualAir(show_key(bytes.fromhex(KEY_HEX), 1), 1, seed=1)
    await air.open(str(pty), [])
    try:
        radio = f'\n[drivers.radio]\ntype = "wristband"\nport = "{pty}"\ndemo_key = "{KEY_HEX}"\n'
        box = doctor.load(small_config(tmp_path / "answering", radio))
        box.timeout_s = 1.0
        [found] = await asyncio.to_thread(checked, box, "radio")
        # The port held as the gateway's radio holds it (a gateway whose health doctor could not read): no reset is
        # sent under the show.
        held = HciPort(str(pty), 1_000_000, False, 1.0, logging.getLogger("test"))
        await held.open()
        try:
            [busy] = await asyncio.to_thread(checked, box, "radio")
        finally:
            await held.close()
    finally:
        await air.close()
    assert found.status == "ok" and found.message.startswith(f"the controller on {pty} answered HCI Reset in "), found
    assert busy.status == "warn" and busy.message.startswith(f"{pty} is held by another process: not reset"), busy

    silent = SocatPair(tmp_path, "silent-port")  # a port with nothing answering on its far end
    silent.plug()
    try:
        radio = f'\n[drivers.radio]\ntype = "wristband"\nport = "{silent.device}"\ndemo_key = "{KEY_HEX}"\n'
        box = doctor.load(small_config(tmp_path / "silent", radio))
        box.timeout_s = 0.5
        started = time.monotonic()
        [found] = checked(box, "radio")
    finally:
        silent.close()
    assert found.status == "problem" and "no answer to HCI Reset within 0.5 s" in found.message, found
    assert "plugged in" in str(found.fix) and time.monotonic() - started < 2


def test_a_dead_broker_or_a_stuck_check_costs_its_bound_not_the_run(tmp_path: Path) -> None:
    with socket.socket() as dead:  # takes the connection, never says a word
        dead.bind(("127.0.0.1", 0))
        dead.listen()
        cloud = f'\n[cloud]\nbroker = "mqtt://127.0.0.1:{dead.getsockname()[1]}"\n'
        box = doctor.load(small_config(tmp_path, cloud))
        box.timeout_s = 0.5
        started = time.monotonic()
        [found] = checked(box, "broker")
        assert found.status == "problem" and "cannot be reached: no answer within 0.5 s" in found.message, found
        assert time.monotonic() - started < 2
    def stuck_check(box: Box) -> list[Finding]:
        time.sleep(30)
        return []

    stuck = Entry("stuck", stuck_check, needs_config=False)
    started = time.monotonic()
    [(name, found)] = doctor.run(box, [stuck], budget_s=0.3)
    assert (name, found.status, found.message) == ("stuck", "problem", "did not finish within 0.3 s")
    assert time.monotonic() - started < 1


def test_serial_ports_are_named_by_their_stable_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "dev" / "serial" / "by-id").mkdir(parents=True)
    (root / "dev" / "ttyUSB0").symlink_to("/dev/null")
    stable = "usb-FTDI_FT232R_USB_UART_A10K3XYZ-if00-port0"
    (root / "dev" / "serial" / "by-id" / stable).symlink_to("../../ttyUSB0")
    drivers = ('\n[drivers.front]\ntype = "enttec"\nport = "/dev/ttyUSB0"\nuniverse = 1\n'
               f'\n[drivers.back]\ntype = "enttec"\nport = "/dev/serial/by-id/{stable}"\nuniverse = 2\n')
    box = doctor.load(small_config(tmp_path, drivers), root=root)
    front, back = checked(box, "serial")
    assert (front.status, front.subject) == ("warn", "drivers.front.port")
    assert front.fix == f"name it /dev/serial/by-id/{stable} in the configuration"
    assert (back.status, back.message) == ("ok", f"/dev/serial/by-id/{stable} is there (ttyUSB0)")


def test_a_raspberry_pi_too_hot_and_under_powered_is_a_problem(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\x00")
    zone = root / "sys" / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("83452\n")
    firmware = root / "sys" / "devices" / "platform" / "soc" / "soc:firmware"
    firmware.mkdir(parents=True)
    (firmware / "get_throttled").write_text("50005\n")  # under-voltage and throttled now, and since boot
    heat, power = checked(doctor.load(small_config(tmp_path), root=root), "pi")
    assert (heat.status, heat.subject) == ("problem", "temperature") and "83.5 °C" in heat.message
    assert (power.status, power.message) == ("problem", "now under-voltage, throttled (get_throttled 0x50005)")
    assert "power supply" in str(power.fix)
    (firmware / "get_throttled").write_text("50000\n")  # since boot only
    (zone / "temp").write_text("51000\n")
    heat, power = checked(doctor.load(small_config(tmp_path), root=root), "pi")
    assert (heat.status, power.status) == ("ok", "warn") and power.message.startswith("since boot: under-voltage")


def test_the_last_update_is_told_as_the_updater_recorded_it(tmp_path: Path) -> None:
    from gateway.update.journal import Journal, Outcome

    config, root = small_config(tmp_path), tmp_path / "root"
    assert [f.status for f in checked(doctor.load(config, root=root), "update")] == ["skipped"]
    updates = root / "var" / "lib" / "venue-gateway-update"
    updates.mkdir(parents=True)
    Journal(updates).write(None, Outcome("rolled back", "0.1.0-bbbbbbbbbbbb", "0.1.0-aaaaaaaaaaaa", time.time(),
                                         "not healthy within 90 s"))
    [found] = checked(doctor.load(config, root=root), "update")
    assert found.status == "warn" and "rolled back to 0.1.0-aaaaaaaaaaaa" in found.message and found.fix


def test_bluetooth_adapters_there_and_not_blocked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    switch = root / "sys" / "class" / "bluetooth" / "hci0" / "rfkill3"
    switch.mkdir(parents=True)
    (switch / "soft").write_text("1\n")
    (switch / "hard").write_text("0\n")
    scanners = ('\n[drivers.sensing]\ntype = "ble"\n[[drivers.sensing.scanners]]\nadapter = "hci0"\nzone = "floor"\n'
                '[[drivers.sensing.scanners]]\nadapter = "hci1"\nzone = "bar"\n')
    config = small_config(tmp_path, scanners)
    blocked, missing = checked(doctor.load(config, root=root), "bluetooth")
    assert (blocked.status, blocked.message, blocked.fix) == ("problem", "hci0 is switched off (rfkill soft block)",
                                                             "rfkill unblock bluetooth")
    assert (missing.status, missing.message) == ("problem", "no Bluetooth adapter hci1 (there: hci0)")
    (switch / "soft").write_text("0\n")
    there = Finding("ok", "hci0 is there", None, "drivers.sensing.scanners[0].adapter")
    assert checked(doctor.load(config, root=root), "bluetooth")[0] == there


def test_run_by_another_user_the_doctor_says_where_things_are_and_shows_no_secret(tmp_path: Path) -> None:
    require(os.geteuid() == 0 and shutil.which("setpriv") is not None, "root and setpriv(1), to run as nobody")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"], "HOME": "/"}
    probe = subprocess.run([*nobody, "-c", "import gateway"], env=env, cwd="/", capture_output=True, timeout=30)
    if probe.returncode != 0:  # where the clone is (a private directory), not a peer this machine lacks
        pytest.skip(f"needs an interpreter and a tree ({ROOT}) that the user nobody can read")
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="vg-doctor-"))  # (pytest's own is root's alone)
    try:
        directory.chmod(0o755)
        data = directory / "data"
        data.mkdir(mode=0o700)
        (data / "gateway.db").write_bytes(b"")
        (directory / "tokens").mkdir(mode=0o755)
        secret = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
        (directory / "tokens" / "admin").write_text(secret)
        (directory / "tokens" / "admin").chmod(0o600)
        config = small_config(directory, '\n[[api.tokens]]\nrole = "admin"\nfile = "tokens/admin"\n')
        config.chmod(0o644)
        run = subprocess.run([*nobody, "-m", "gateway", "doctor", "--config", str(config), "--json"],
                             capture_output=True, text=True, env=env, cwd=directory, timeout=60)
    finally:
        shutil.rmtree(directory)
    assert run.returncode == 1 and secret not in run.stdout, run.stdout + run.stderr
    found = {(c["check"], c["subject"]): c for c in json.loads(run.stdout)["checks"]}
    for name in ("disk", "store"):
        assert found[name, ""]["status"] == "skipped" and "run doctor as root" in found[name, ""]["message"]
    assert found["tokens", "api.tokens[0] admin"]["message"] == \
        f"in {directory / 'tokens' / 'admin'} (run doctor as root to see it)"
    assert "is not readable by this user (uid 65534)" in found["configuration", ""]["message"]


def test_a_configuration_not_there_is_said_so_and_the_checks_it_feeds_are_skipped(tmp_path: Path) -> None:
    out = io.StringIO()
    assert doctor.report(tmp_path / "gateway.toml", out, as_json=True, clock=lambda: SYNCED) == 1
    doc = json.loads(out.getvalue())
    found = only_problem(doc, "configuration")
    assert "cannot be read: No such file or directory" in found["message"] and "--config" in found["fix"]
    assert {c["check"]: c["status"] for c in doc["checks"]}["api"] == "skipped"


def test_the_shows_brokers_are_probed_with_the_shows_credentials(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A box of a shared show with no [cloud]: the doctor connects to each of the show's brokers as the box's user
    VENUE/show/ID and subscribes to the show's topics (the venue's ACL, config/multibox/mosquitto.acl); a dead
    address and a wrong password are each a problem."""
    require(shutil.which("mosquitto_passwd") is not None, "the Debian package mosquitto (mosquitto_passwd)")
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "arena/show/box-a", PASSWORD], check=True)
    acl = ROOT / "config" / "multibox" / "mosquitto.acl"
    dead = free_port()
    monkeypatch.setenv(ENV, PASSWORD)

    def probe(box: str) -> list[Finding]:
        path = tmp_path / f"{box}.toml"
        path.write_text(f'[gateway]\nid = "{box}"\nvenue = "arena"\n[show.shared]\n'
                        f'brokers = ["{venue.url}", "mqtt://127.0.0.1:{dead}"]\nboxes = ["{box}", "box-b"]\n'
                        f'username = "arena/show/{box}"\npassword_env = "{ENV}"\n')
        return broker_check.check(Box(path, load(path), [], timeout_s=2.0))

    with Mosquitto(tmp_path / "venue", acl=acl, passwords=passwords) as venue:
        skipped_cloud, live, gone = probe("box-a")
        assert skipped_cloud.status == "skipped" and skipped_cloud.subject == ""
        assert live.status == "ok" and live.subject == "show", live
        assert live.message == (f"the show's broker {venue.url} as 'arena/show/box-a': a subscription to "
                                "venues/arena/show/+/+ was granted (MQTT 5 SUBACK); nothing is published there")
        assert gone.status == "problem" and gone.message.startswith(
            f"the show's broker mqtt://127.0.0.1:{dead} cannot be reached: "), gone
        assert gone.fix is not None and "plays the show alone" in gone.fix
        monkeypatch.setenv(ENV, "not-the-password")
        _, refused, _ = probe("box-a")
        assert refused.status == "problem" and refused.message.startswith(
            f"the show's broker {venue.url} refused the connection as 'arena/show/box-a': "), refused
        assert refused.fix is not None and "'arena/show/box-a'" in refused.fix
