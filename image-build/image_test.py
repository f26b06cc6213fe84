"""Boot the image's virt variant in qemu-system-aarch64 and check the box as it runs (`make image-test`): the
service under the image's own systemd, its user, its exposure score, the watchdog, a crash, a reboot, a missing
serial adapter and a refused broker. Prints each check and each figure (docs/image.md).

The guest is a copy of build/image/venue-gateway-arm64.img, prepared as a tech prepares a card: on its boot
partition, an SSH key (the commands run over key-only SSH, the box's own way in) and a configuration naming a serial
adapter that is not there and a broker that refuses. qemu's user network forwards the API's port and SSH to this
machine's loopback, and hands the guest's NTP queries to a small SNTP server here (image-build/sntp.py): the unit
starts after time-sync.target, which the box's chrony-wait reaches only once the real chronyd has synchronised.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sntp import SntpServer

HERE = Path(__file__).resolve().parent
SRC = HERE.parent
IMAGE = SRC / "build" / "image" / "venue-gateway-arm64.img"
VIRT = SRC / "build" / "image" / "virt"
WORK = SRC / "build" / "image-test"
API_PORT = 8080

# The box's configuration for the test: the virtual venue (so that the twin moves), a sound meter on a serial
# adapter that is not plugged in, and a cloud broker that refuses (nothing listens on the guest's port 1883).
CONFIG = """\
[gateway]
id = "qemu-01"
venue = "image-test"
data_dir = "/var/lib/venue-gateway"
realtime_priority = 10

[api]
listen = "0.0.0.0:8080"
tls = "auto"

[[api.tokens]]
name = "lighting console"
role = "operator"
file = "/etc/venue-gateway/tokens/operator"

[[api.tokens]]
name = "venue tech"
role = "admin"
file = "/etc/venue-gateway/tokens/admin"

[store]
max_mb = 256

[cloud]
broker = "mqtt://127.0.0.1:1883"

[drivers.rehearsal]
type = "sim"
speed = 1.0
sample_interval_s = 2.0

[drivers.meter]
type = "xl2"
port = "/dev/serial/by-id/usb-NTiAudio_XL2_A2A-00000-E0-if00"
zone = "floor"
"""
TIMESYNCD = "[Time]\nNTP=10.0.2.2\n"
CARD_SPARE_MIB = 1024  # the card is this much larger than the image (whose data partition is 512 MiB)

STARTED = time.monotonic()
FIGURES: dict[str, str] = {}


def say(message: str) -> None:
    elapsed = time.monotonic() - STARTED
    print(f"image-test [{int(elapsed) // 60:2d}:{int(elapsed) % 60:02d}] {message}", flush=True)


def check(ok: bool, what: str) -> None:
    say(f"{'PASS' if ok else 'FAIL'}: {what}")
    if not ok:
        raise SystemExit(f"image-test failed: {what}")


def figure(name: str, value: str) -> None:
    FIGURES[name] = value
    say(f"figure: {name}: {value}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kwargs)


class Guest:
    """The virt variant running in qemu: the console in a file, SSH and the API on loopback ports."""

    def __init__(self, disk: Path, key: Path) -> None:
        self.disk = disk
        self.key = key
        self.ssh_port = free_port()
        self.api_port = free_port()
        self.console = WORK / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        cmdline = (VIRT / "cmdline").read_text().strip()
        # -cpu max with the implementation-defined pointer authentication: the same instructions, which TCG
        # emulates many times faster than the architected QARMA algorithm.
        argv = ["qemu-system-aarch64", "-M", "virt", "-cpu", "max,pauth-impdef=on", "-smp", "2", "-m", "2048",
                "-kernel", str(VIRT / "vmlinuz"), "-initrd", str(VIRT / "initrd.img"), "-append", cmdline,
                "-drive", f"file={self.disk},format=raw,if=virtio",
                "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,"
                           f"hostfwd=tcp:127.0.0.1:{self.api_port}-:{API_PORT}",
                "-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci",
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise SystemExit(f"qemu ended; the console is in {self.console}")

    def ssh(self, command: str, timeout: float = 120, check: bool = True) -> str:
        argv = ["ssh", "-i", str(self.key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=10", "root@127.0.0.1", command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise SystemExit(f"in the guest: {command}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout.strip()

    def put(self, local: Path, remote: str) -> None:
        """A file into the guest, over SSH."""
        with local.open("rb") as f:
            subprocess.run(["ssh", "-i", str(self.key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
                            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                            "-o", "LogLevel=ERROR", "root@127.0.0.1", f"cat > {remote}"], stdin=f, check=True,
                           timeout=600)

    def health(self, token: bool = True) -> dict[str, Any] | None:
        """The API's health document over HTTPS (the box's own certificate, self-signed: not verified here), or
        None while it does not answer."""
        request = urllib.request.Request(f"https://127.0.0.1:{self.api_port}/api/v1/health")
        if token and self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as answer:
                doc: dict[str, Any] = json.loads(answer.read())
                return doc
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def wait(self, what: str, probe: Any, timeout: float, interval: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            value = probe()
            if value:
                return value
            time.sleep(interval)
        raise SystemExit(f"image-test failed: {what} within {timeout:.0f} s; the console is in {self.console}")

    def wait_ssh(self, timeout: float) -> None:
        def probe() -> bool:
            try:
                return self.ssh("echo up", timeout=30, check=False) == "up"
            except subprocess.TimeoutExpired:
                return False
        self.wait("SSH", probe, timeout, interval=2)

    def main_pid(self) -> int:
        return int(self.ssh("systemctl show -P MainPID venue-gateway.service"))


def partition_offsets(disk: Path) -> list[int]:
    table = json.loads(run("sfdisk", "-J", disk, stdout=subprocess.PIPE).stdout)["partitiontable"]
    return [int(p["start"]) * 512 for p in table["partitions"]]


def prepare(key: Path) -> Path:
    """A copy of the image with the test's SSH key and configuration on its boot partition."""
    disk = WORK / "disk.img"
    say(f"copy of {IMAGE.relative_to(SRC)} with an SSH key and the test's configuration on its boot partition")
    run("cp", "--sparse=always", IMAGE, disk)
    # A card larger than the image, as every card is: the data partition grows to its end at boot.
    run("truncate", "-s", f"+{CARD_SPARE_MIB}M", disk)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f", key)
    card = WORK / "card"
    card.mkdir()
    shutil.copy(key.with_suffix(".pub"), card / "authorized_keys")
    (card / "gateway.toml").write_text(CONFIG)
    (card / "timesyncd.conf").write_text(TIMESYNCD)
    fat = f"{disk}@@{partition_offsets(disk)[0]}"
    for f in sorted(card.iterdir()):
        run("mcopy", "-o", "-i", fat, f, f"::/venue-gateway/{f.name}")
    return disk


def checks(guest: Guest) -> None:
    booted = time.monotonic()
    guest.start()
    say(f"qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 2 (TCG); API on 127.0.0.1:{guest.api_port}, "
        f"SSH on 127.0.0.1:{guest.ssh_port}")
    first = guest.wait("the API's health", lambda: guest.health(token=False), timeout=900, interval=2)
    figure("boot to healthy (first boot, under emulation)", f"{time.monotonic() - booted:.0f} s")
    say(f"health without a token: {first}")
    guest.wait_ssh(timeout=300)
    check(True, "SSH with the key left on the boot partition (keys only)")
    check("PasswordAuthentication no" in guest.ssh("sshd -T | grep -i '^passwordauthentication'").replace(
        "passwordauthentication", "PasswordAuthentication"), "sshd refuses passwords")
    guest.token = guest.ssh("cat /etc/venue-gateway/tokens/admin")
    console = guest.console.read_text(errors="replace")
    check(guest.token in console, "first boot showed the admin token on the console")
    modes = guest.ssh("stat -c '%a %U:%G %n' /etc/venue-gateway/tokens/*")
    say(f"tokens: {modes.replace(chr(10), '; ')}")
    check(all(line.split()[0] in ("600", "640") for line in modes.splitlines()), "tokens are 0600 or 0640")
    hostname = guest.ssh("hostname")
    check(hostname != "venue-gateway", f"first boot named the box: {hostname}")
    check(guest.ssh("systemctl is-active chrony-wait.service") == "active"
          and guest.ssh("timedatectl show --property=NTPSynchronized --value") == "yes",
          "the clock is synchronised (chrony-wait reached time-sync.target; the kernel says synchronised)")
    check(guest.ssh("cat /etc/chrony/sources.d/*.sources") == "server 10.0.2.2 iburst minpoll 2 maxpoll 4",
          "chrony's sources: the card's NTP server alone (Debian's pool taken away)")
    tracking = dict(line.split(" : ", 1) for line in guest.ssh("chronyc -n tracking").splitlines() if " : " in line)
    tracking = {k.strip(): v.strip() for k, v in tracking.items()}
    check(tracking.get("Reference ID", "").endswith("(10.0.2.2)") and tracking.get("Leap status") == "Normal",
          f"chronyd follows 10.0.2.2 ({tracking.get('Reference ID')}, leap status {tracking.get('Leap status')})")
    figure("chrony in the guest (TCG) after boot", f"system time {tracking.get('System time')}, RMS offset "
           f"{tracking.get('RMS offset')}, root dispersion {tracking.get('Root dispersion')}")

    # The service's user, and its sandbox as systemd rates it.
    pid = guest.main_pid()
    user = guest.ssh(f"ps -o user= -p {pid}")
    check(user == "venue-gateway", f"the daemon (pid {pid}) runs as venue-gateway, not root ({user})")
    security = guest.ssh("systemd-analyze security --no-pager venue-gateway.service | tail -n 1")
    score = float(re.search(r"exposure level for venue-gateway.service: ([0-9.]+)", security).group(1))  # type: ignore[union-attr]
    figure("systemd-analyze security venue-gateway (in the guest)", security.split(": ", 1)[1])
    check(score <= 2.0, f"exposure {score} <= 2.0")

    # A missing serial adapter and a refused broker: the rest runs.
    doc = guest.wait("the virtual venue in the twin", lambda: (d := guest.health()) and d["twin"]["assets"] and d,
                     timeout=300, interval=3)
    say(f"health: status {doc['status']}; problems {doc['problems']}; drivers "
        + ", ".join(f"{n}: {d.get('state')}" for n, d in doc["drivers"].items()))
    check(doc["drivers"]["rehearsal"].get("state") == "running", "the virtual venue runs")
    check(doc["drivers"]["meter"].get("state") != "running", "the meter without its adapter is not running "
          f"({doc['drivers']['meter'].get('state')}: {doc['drivers']['meter'].get('last_error')})")
    check(bool(doc["problems"]), f"the refused broker is reported: {doc['problems']}")
    v1 = doc["twin"]["version"]
    later = guest.wait("the twin moving", lambda: (d := guest.health()) and d["twin"]["version"] > v1 and d,
                       timeout=120, interval=2)
    check(True, f"the twin moves with the meter and the broker missing (version {v1} -> {later['twin']['version']})")

    # SIGSTOP: the loop no longer pings the watchdog; systemd kills and restarts the daemon.
    props = dict(line.split("=", 1) for line in guest.ssh(
        "systemctl show -p WatchdogUSec -p RestartUSec -p NRestarts venue-gateway.service").splitlines())
    bound = parse_seconds(props["WatchdogUSec"]) + parse_seconds(props["RestartUSec"])
    # Measured in the guest: from the SIGSTOP to the restart job (NRestarts counts it), polled every 0.1 s for up
    # to a minute.
    took_ms = int(guest.ssh(
        "n=$(systemctl show -P NRestarts venue-gateway); pid=$(systemctl show -P MainPID venue-gateway); "
        "t0=$(date +%s%N); kill -STOP $pid; i=0; "
        "while [ $(systemctl show -P NRestarts venue-gateway) = $n ] && [ $i -lt 600 ]; do "
        "sleep 0.1; i=$((i+1)); done; "
        "echo $(( ($(date +%s%N) - t0) / 1000000 ))", timeout=180))
    took = took_ms / 1000
    t_stop = time.monotonic()
    figure("watchdog restart (SIGSTOP to the restart)",
           f"{took:.1f} s (bound WatchdogSec + RestartSec = {bound:.0f} s)")
    check(took <= bound + 1.0, f"restarted by the watchdog within {bound:.0f} s (+1 s of polling)")
    journal = guest.ssh("journalctl -b -u venue-gateway.service --no-pager -o cat | grep -i watchdog | tail -n 2")
    check("watchdog" in journal.lower(), f"systemd says why: {journal.splitlines()[-1] if journal else ''}")
    guest.wait("health after the watchdog's restart", guest.health, timeout=300)
    figure("SIGSTOP to healthy again", f"{time.monotonic() - t_stop:.0f} s")

    # kill -9: restarted, and the twin's version does not go back.
    before = guest.wait("health", guest.health, timeout=60)["twin"]["version"]
    pid = guest.main_pid()
    t_kill = time.monotonic()
    guest.ssh(f"kill -9 {pid}")
    after_kill = guest.wait("health after kill -9", lambda: guest.main_pid() not in (0, pid) and guest.health(),
                            timeout=300)
    figure("kill -9 to healthy again", f"{time.monotonic() - t_kill:.0f} s")
    check(after_kill["twin"]["version"] >= before,
          f"after kill -9 the twin's version does not go back ({before} -> {after_kill['twin']['version']})")

    # A reboot: the same box (no second first boot), its state kept.
    data_mib = int(guest.ssh("df -B1M --output=size /data | tail -1"))
    check(data_mib > CARD_SPARE_MIB, f"the data partition grew to the end of the card ({data_mib} MiB, the card "
          f"{CARD_SPARE_MIB} MiB larger than the image)")
    identity = guest.ssh("hostname; cat /etc/machine-id; sha256sum /etc/venue-gateway/tokens/admin")
    before = guest.health()["twin"]["version"]  # type: ignore[index]
    now = guest.ssh("date +%s")
    rows = stored_readings(guest, now)
    t_reboot = time.monotonic()
    guest.ssh("systemd-run --on-active=1 systemctl reboot")
    guest.wait("the box going down", lambda: guest.health(token=False) is None, timeout=120)
    back = guest.wait("health after the reboot", guest.health, timeout=900, interval=2)
    figure("reboot to healthy", f"{time.monotonic() - t_reboot:.0f} s")
    check(guest.ssh("hostname; cat /etc/machine-id; sha256sum /etc/venue-gateway/tokens/admin") == identity,
          "after the reboot: the same host name, machine id and tokens")
    kept = stored_readings(guest, now)
    check(back["twin"]["version"] >= before and rows > 0 and kept >= rows,
          f"after the reboot the state is kept (twin version {before} -> {back['twin']['version']}; readings "
          f"stored before the reboot: {rows} -> {kept})")
    check(guest.ssh("findmnt -n -o SOURCE /var/lib/venue-gateway").endswith("[/state]"),
          "the state is on the data partition")



def stored_readings(guest: Guest, before: str) -> int:
    """How many readings the box's store holds from before the time `before` (the guest's seconds), read by the
    guest's Python from the database (read-only, beside the running gateway)."""
    return int(guest.ssh(
        "python3 -c \"import sqlite3; db = sqlite3.connect('file:/var/lib/venue-gateway/gateway.db?mode=ro', "
        f"uri=True); print(db.execute('SELECT count(*) FROM telemetry WHERE ts < {before}').fetchone()[0])\""))


def updates(guest: Guest) -> None:
    """`venue-gateway update` under the guest's systemd: a good bundle installed and switched to, then a bundle whose
    gateway crashes on start, rolled back. Both bundles are built here for aarch64 from this tree (the second with
    its daemon made to fail at import), from the image build's cached wheels, and signed by a key made for the
    test, whose public half goes into the guest's update-keys."""
    venv = SRC / ".venv" / "bin" / "venue-gateway"
    wheels = sorted((SRC / "build" / "image-cache").glob("wheels-*"), key=lambda p: p.stat().st_mtime)[-1]
    key = WORK / "update.key"
    run(venv, "bundle-keygen", key, stdout=subprocess.DEVNULL)
    broken = WORK / "broken-src"
    for name in run("git", "-C", SRC, "ls-files", "--cached", "--others", "--exclude-standard",
                    stdout=subprocess.PIPE).stdout.splitlines():
        if (SRC / name).is_file():
            (broken / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SRC / name, broken / name)
    with (broken / "gateway" / "daemon.py").open("a") as f:
        f.write('\nraise RuntimeError("image-test: this version of the gateway does not start")\n')
    bundles = {"good": ("0.1.0-imagetest-good", SRC), "broken": ("0.1.0-imagetest-broken", broken)}
    for name, (label, source) in bundles.items():
        say(f"update: building the {name} bundle ({label}) for aarch64")
        run(venv, "bundle", "--key", key, "--arch", "aarch64", "--wheels", wheels, "--label", label,
            "--source", source, "-o", WORK / f"{name}.vgb", stdout=subprocess.DEVNULL)
        guest.put(WORK / f"{name}.vgb", f"/root/{name}.vgb")
    guest.ssh("install -d -m 0755 /etc/venue-gateway/update-keys")
    guest.put(key.with_name(key.name + ".pub"), "/etc/venue-gateway/update-keys/image-test.pub")

    # Under emulation the new version's first start takes minutes: the bound is raised to match.
    t = time.monotonic()
    out = guest.ssh("venue-gateway update --bound-s 600 /root/good.vgb 2>&1; echo exit=$?", timeout=1800)
    figure("update, good bundle (install, switch, restart, healthy)", f"{time.monotonic() - t:.0f} s")
    say("update: " + out.splitlines()[-2] if len(out.splitlines()) > 1 else out)
    current = guest.ssh("readlink /opt/venue-gateway/current")
    check(out.endswith("exit=0") and current == "versions/0.1.0-imagetest-good",
          f"the good bundle is installed and current ({current})")
    check(guest.wait("health on the new version", guest.health, timeout=300) is not None,
          "the box is healthy on the new version")

    t = time.monotonic()
    out = guest.ssh("venue-gateway update --bound-s 300 /root/broken.vgb 2>&1; echo exit=$?", timeout=1800)
    figure("update, crashing bundle (install, switch, restart, rolled back)", f"{time.monotonic() - t:.0f} s")
    say("update: " + out.splitlines()[-2] if len(out.splitlines()) > 1 else out)
    current = guest.ssh("readlink /opt/venue-gateway/current")
    check(out.endswith("exit=1") and current == "versions/0.1.0-imagetest-good",
          f"the crashing bundle is rolled back ({current})")
    status = guest.ssh("venue-gateway update --status", check=False)
    say(f"update --status: {status}")
    check(guest.wait("health after the rollback", guest.health, timeout=300) is not None,
          "the box is healthy after the rollback")

def parse_seconds(value: str) -> float:
    """A systemd time span as `systemctl show` prints it (10s, 2s, 1min 30s, 500ms)."""
    units = {"min": 60.0, "ms": 0.001, "us": 1e-6, "s": 1.0, "h": 3600.0}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(min|ms|us|s|h)", value):
        total += float(number) * units[unit]
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the guest running at the end (Ctrl-C stops it)")
    parser.add_argument("--no-update", action="store_true", help="leave out the updates (built and installed: long)")
    args = parser.parse_args()
    if not IMAGE.exists():
        print(f"no image at {IMAGE.relative_to(SRC)}: make image first", file=sys.stderr)
        return 2
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    key = WORK / "id_ed25519"
    disk = prepare(key)
    ntp = SntpServer()
    guest = Guest(disk, key)
    try:
        checks(guest)
        if not args.no_update:
            updates(guest)
        if args.keep:
            say(f"the guest runs on: ssh -i {key} -p {guest.ssh_port} root@127.0.0.1; Ctrl-C stops it")
            guest.proc.wait()  # type: ignore[union-attr]
    finally:
        guest.stop()
        ntp.close()
    say(f"all checks passed in {time.monotonic() - STARTED:.0f} s (NTP queries answered: {ntp.answered})")
    for name, value in FIGURES.items():
        print(f"  {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
