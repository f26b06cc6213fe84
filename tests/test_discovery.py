"""Discovery on a real network: two daemons, each in a network namespace of its own, joined by veth pairs to a bridge
in a third, where `venue-gateway discover` finds both with their TXT records (and the fingerprint it finds pins the
API), and where Avahi, an independent mDNS stack with its own D-Bus, sees them too. A box whose API listens on
loopback is not announced; one on a network without the interface it names runs on while the announcer waits; a bad
`[discovery]` section is refused with the key and what is allowed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import __version__
from gateway.api.tls import file_fingerprint
from gateway.cli import main
from tests.conftest import ROOT, require

pytestmark = pytest.mark.timeout(90)

NET = "10.79.0"  # (tests/test_dmx_outputs.py's lighting network is 10.77.0.0/24)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

BOX_A = """
[gateway]
id = "foh-1"
venue = "hall-a"
data_dir = "data"

[api]
listen = "0.0.0.0:8443"

[drivers.osc]
type = "osc"
listen = "0.0.0.0:9000"
"""

# Plain HTTP on its own address, a name of its own, no OSC input.
BOX_B = f"""
[gateway]
id = "balcony-2"
venue = "hall-a"
data_dir = "data"

[api]
listen = "{NET}.2:8080"
tls = "off"
insecure_http = true

[discovery]
name = "Balcony rack"
"""

# In the bridge's namespace, where `discover` runs: its API on loopback, so it is not announced.
LOOPBACK_BOX = """
[gateway]
id = "lab-3"
venue = "hall-a"
data_dir = "data"

[api]
listen = "127.0.0.1:8080"

[drivers.osc]
type = "osc"
listen = "0.0.0.0:9000"
"""

# In a namespace with nothing but loopback, naming an interface that is not there.
UNPLUGGED_BOX = """
[gateway]
id = "spare-4"
venue = "hall-a"
data_dir = "data"

[api]
listen = "0.0.0.0:8443"

[discovery]
interfaces = ["eth9"]
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Lan:
    bridge: str  # the namespace holding the bridge, where `discover` runs
    names: dict[str, str]  # role -> namespace
    directory: Path
    started_at: float  # when the daemons were started (time.monotonic)
    daemons: dict[str, subprocess.Popen[bytes]]

    def run(self, namespace: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True,
                              timeout=timeout, env=ENV)

    def gateway(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """`venue-gateway ARGV` in the bridge's namespace."""
        return self.run(self.bridge, sys.executable, "-m", "gateway", *argv)

    def log(self, role: str) -> str:
        return (self.directory / role / "daemon.log").read_text()


@contextlib.contextmanager
def namespaces(prefix: str, roles: list[str], linked: list[str]) -> Iterator[dict[str, str]]:
    """A namespace per role; those `linked` joined to a bridge in the first one's (address .254), each at
    10.79.0.N/24 in the order given; the others with loopback alone."""
    names = {role: f"{prefix}{role}" for role in roles}
    bridge = names[roles[0]]
    try:
        for name in names.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge, "addr", "add", f"{NET}.254/24", "dev", "br0")
        ip("-n", bridge, "link", "set", "br0", "up")
        for n, role in enumerate(linked, start=1):
            port = f"v{role}"
            ip("-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", names[role])
            ip("-n", bridge, "link", "set", port, "master", "br0", "up")
            ip("-n", names[role], "addr", "add", f"{NET}.{n}/24", "dev", "eth0")
            ip("-n", names[role], "link", "set", "eth0", "up")
        yield names
    finally:
        for name in names.values():  # (a namespace's veth ends go with it)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    require(os.geteuid() == 0 and shutil.which("ip") is not None, "root and iproute2 (ip netns)")
    directory = tmp_path_factory.mktemp("lan")
    configs = {"a": BOX_A, "b": BOX_B, "br": LOOPBACK_BOX, "alone": UNPLUGGED_BOX}
    with namespaces(f"vgd{os.getpid() % 100000}", ["br", "a", "b", "avahi", "alone"], ["a", "b", "avahi"]) as names:
        daemons: dict[str, subprocess.Popen[bytes]] = {}
        started_at = time.monotonic()
        try:
            for role, text in configs.items():
                (directory / role).mkdir()
                (directory / role / "gateway.toml").write_text(text)
                with (directory / role / "daemon.log").open("wb") as out:
                    daemons[role] = subprocess.Popen(
                        ["ip", "netns", "exec", names[role], sys.executable, "-m", "gateway", "run", "--config",
                         str(directory / role / "gateway.toml")],
                        stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=directory / role)
            yield Lan(names["br"], names, directory, started_at, daemons)
        finally:
            for proc in daemons.values():  # (`ip netns exec` execs the daemon: the process is the daemon's)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in daemons.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def discovered(lan: Lan, want: set[str], deadline_s: float = 30.0) -> tuple[list[dict[str, Any]], float]:
    """`discover --json` in the bridge's namespace until it lists every gateway id in `want`: its boxes and the
    seconds from the daemons' start to the answer."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = lan.gateway("discover", "--timeout", "1", "--json")
        boxes = json.loads(result.stdout or "[]")
        if want <= {b["gateway_id"] for b in boxes}:
            assert result.returncode == 0, result.stderr
            return boxes, time.monotonic() - lan.started_at
        assert time.monotonic() < deadline, f"{want} not discovered: {boxes} {result.stderr}\n" + \
            "\n".join(f"{role}:\n{lan.log(role)}" for role in lan.daemons)


def test_discover_finds_both_boxes_with_their_txt_records_and_nothing_else(lan: Lan) -> None:
    boxes, seconds = discovered(lan, {"foh-1", "balcony-2"})
    print(f"\ndaemon start to `discover` seeing both boxes: {seconds:.1f} s")
    # Sorted by venue, id and name; the loopback box in discover's own namespace is not among them.
    assert [b["gateway_id"] for b in boxes] == ["balcony-2", "foh-1"]
    b, a = boxes
    fingerprint = file_fingerprint(lan.directory / "a" / "data" / "tls" / "api.pem")
    assert a["name"] == "hall-a foh-1" and a["addresses"] == [f"{NET}.1"] and a["port"] == 8443
    assert a["txt"] == {"txtvers": "1", "id": "foh-1", "venue": "hall-a", "version": __version__,
                        "path": "/api/v1", "scheme": "https", "fingerprint": fingerprint}
    assert a["osc_port"] == 9000 and a["host"] == "hall-a-foh-1.local."
    assert b["name"] == "Balcony rack" and b["addresses"] == [f"{NET}.2"] and b["port"] == 8080
    assert b["txt"] == {"txtvers": "1", "id": "balcony-2", "venue": "hall-a", "version": __version__,
                        "path": "/api/v1", "scheme": "http"}
    assert b["fingerprint"] is None and b["osc_port"] is None

    # What discover found is enough to talk to the box safely: its URL, with the fingerprint pinned. And the table a
    # tech reads: a row per box, the OSC port or "-". (The two at once.)
    with ThreadPoolExecutor(2) as pool:
        pinned = pool.submit(lan.gateway, "status", "--url", a["url"], "--fingerprint", a["fingerprint"])
        table = lan.gateway("discover", "--timeout", "1")
        status = pinned.result()
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"certificate SHA-256 {fingerprint}" in status.stdout
    assert table.returncode == 0
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["name", "address", "port"] and len(rows) == 3
    assert re.match(rf"Balcony rack\s+{NET}\.2\s+8080\s+balcony-2\s+hall-a\s+{__version__}\s+\(http\)\s+-$", rows[1])
    assert re.match(rf"hall-a foh-1\s+{NET}\.1\s+8443\s+foh-1\s+hall-a\s+{__version__}\s+{fingerprint}\s+9000$",
                    rows[2])

    assert "the API listens on loopback only (127.0.0.1:8080): the box is not announced" in lan.log("br")
    assert "service discovery" not in lan.log("br")  # no announcer at all


def test_an_announcer_without_its_interface_waits_while_the_box_runs(lan: Lan) -> None:
    deadline = time.monotonic() + 20
    wanted = ("service discovery not ready: no interface eth9 with an IPv4 address on this box (present: lo)",
              "service discovery restarts in", "service api running", "gateway spare-4 (venue hall-a) up")
    while not all(w in lan.log("alone") for w in wanted):
        assert time.monotonic() < deadline, lan.log("alone")
        time.sleep(0.2)
    assert lan.daemons["alone"].poll() is None
    assert "Traceback" not in lan.log("alone")


# Avahi in its own namespace on the bridge: its own D-Bus system bus (a tmpfs over /run/dbus, in the mount namespace
# `ip netns exec` gives it), then `avahi-browse` until both boxes are resolved or the time is up.
AVAHI = """
set -u
mount -t tmpfs tmpfs /run/dbus
mkdir -p /run/avahi-daemon && mount -t tmpfs tmpfs /run/avahi-daemon
dbus-daemon --system --nofork --nopidfile >/dev/null 2>&1 &
bus=$!
for i in $(seq 50); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.1; done
avahi-daemon --no-drop-root --no-chroot --no-rlimits -f "$1" >"$2" 2>&1 &
avahi=$!
for i in $(seq 150); do
    out=$(avahi-browse -rpt _venue-gateway._tcp 2>&1)
    [ "$(printf '%s\\n' "$out" | grep -c '^=;')" -ge 2 ] && break
    sleep 0.2
done
printf '%s\\n' "$out"
kill "$avahi" "$bus"
wait
"""


def avahi_unescape(text: str) -> str:
    """avahi-browse's escapes (\\DDD, a byte in decimal; \\. and \\\\) undone."""
    return re.sub(r"\\(\d{3}|.)", lambda m: chr(int(m.group(1))) if m.group(1).isdigit() else m.group(1), text)


def test_avahi_an_independent_mdns_stack_sees_both_boxes(lan: Lan) -> None:
    require(all(shutil.which(p) for p in ("avahi-daemon", "avahi-browse", "dbus-daemon")),
            "avahi-daemon, avahi-utils and dbus (Debian packages avahi-daemon avahi-utils dbus)")
    discovered(lan, {"foh-1", "balcony-2"})  # (announced by now)
    conf = lan.directory / "avahi-daemon.conf"
    conf.write_text(textwrap.dedent("""
        [server]
        use-ipv4=yes
        use-ipv6=no
        allow-interfaces=eth0
        [publish]
        publish-addresses=yes
        publish-workstation=no
        """))
    proc = subprocess.Popen(["ip", "netns", "exec", lan.names["avahi"], "sh", "-c", AVAHI, "avahi", str(conf),
                             str(lan.directory / "avahi-daemon.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=40)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group: the shell, dbus-daemon and avahi-daemon
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    resolved = {}
    for line in out.splitlines():
        fields = line.split(";")
        if fields[0] == "=" and len(fields) >= 10:
            # =;interface;protocol;name;type;domain;host;address;port;"key=value" "key=value"...
            txt = dict(t.split("=", 1) for t in re.findall(r'"([^"]*)"', fields[9]))
            resolved[avahi_unescape(fields[3])] = (fields[6], fields[7], int(fields[8]), txt)
    fingerprint = file_fingerprint(lan.directory / "a" / "data" / "tls" / "api.pem")
    assert resolved.get("hall-a foh-1") == ("hall-a-foh-1.local", f"{NET}.1", 8443, {
        "txtvers": "1", "id": "foh-1", "venue": "hall-a", "version": __version__, "path": "/api/v1",
        "scheme": "https", "fingerprint": fingerprint}), out + (lan.directory / "avahi-daemon.log").read_text()
    assert resolved.get("Balcony rack") == ("hall-a-balcony-2.local", f"{NET}.2", 8080, {
        "txtvers": "1", "id": "balcony-2", "venue": "hall-a", "version": __version__, "path": "/api/v1",
        "scheme": "http"}), out


def test_a_bad_discovery_section_is_refused_with_the_key_and_what_is_allowed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(textwrap.dedent("""
        [gateway]
        id = "foh-1"
        venue = "hall-a"

        [discovery]
        enabled = "yes"
        interfaces = ["eth0", "eth0/1", "eth0"]
        name = "hall.a"
        port = 5353

        [drivers.discovery]
        type = "osc"
        """))
    assert main(["check-config", "--offline", str(path)]) == 2
    lines = sorted(capsys.readouterr().err.splitlines())
    assert lines == sorted(f"{path}: {line}" for line in [
        "discovery.port: unknown key (allowed: enabled, interfaces, name)",
        "discovery.enabled: must be true or false (got 'yes')",
        "discovery.interfaces[1]: 'eth0/1' is not a network interface's name (allowed: 1-15 of A-Z a-z 0-9 _ . @ + "
        "-, e.g. eth0)",
        "discovery.interfaces[2]: 'eth0' is named twice (allowed: each interface once)",
        "discovery.name: 'hall.a' is not a service name (allowed: 1-63 bytes of UTF-8 text, without '.' or control "
        "characters)",
        "drivers.discovery: 'discovery' is the name of a gateway service (allowed: any other name)",
    ])
