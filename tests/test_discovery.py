"""Discovery on a real network: two daemons, each in a network namespace of its own, joined by veth pairs to a bridge
in a third, where `venue-gateway discover` finds both with their TXT records (and the fingerprint it finds pins the
API), and where Avahi, an independent mDNS stack with its own D-Bus, sees them too, resolves a box's host name, and
drops a box that stops at once (its goodbye). A box whose API listens on loopback is not announced; one on a network
without the interface it names runs on while the announcer waits; a bad `[discovery]` section is refused with the
key and what is allowed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


# What the daemons' logs say once announced: the API of both, the OSC input of the first.
ANNOUNCED = {"a": ("'hall-a foh-1' (_venue-gateway._tcp)", "'hall-a foh-1' (_osc._udp)"),
             "b": ("'Balcony rack' (_venue-gateway._tcp)",)}


def announced(lan: Lan, deadline_s: float = 30.0) -> float:
    """Once both boxes have announced what they serve (their logs say so): the seconds since the daemons' start."""
    deadline = time.monotonic() + deadline_s
    while not all(f"discovery: announced {what}" in lan.log(role) for role, said in ANNOUNCED.items() for what in said):
        assert time.monotonic() < deadline, "not announced:\n" + "\n".join(f"{role}:\n{lan.log(role)}"
                                                                             for role in lan.daemons)
        time.sleep(0.1)
    return time.monotonic() - lan.started_at


def test_discover_finds_both_boxes_with_their_txt_records_and_nothing_else(lan: Lan) -> None:
    seconds = announced(lan)
    # The JSON with every TXT record, and the table a tech reads.
    found = lan.gateway("discover", "--timeout", "1", "--json")
    table = lan.gateway("discover", "--timeout", "1")
    print(f"\ndaemon start to both announced: {seconds:.1f} s; to `discover` listing them: "
          f"{time.monotonic() - lan.started_at:.1f} s")
    assert found.returncode == 0, found.stderr
    boxes = json.loads(found.stdout)
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

    # What discover found is enough to talk to the box safely: its URL, with the fingerprint pinned.
    status = lan.gateway("status", "--url", a["url"], "--fingerprint", a["fingerprint"])
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"certificate SHA-256 {fingerprint}" in status.stdout
    assert table.returncode == 0
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["name", "address", "port"] and len(rows) == 3
    assert re.match(rf"Balcony rack\s+{NET}\.2\s+8080\s+balcony-2\s+hall-a\s+{__version__}\s+\(http\)\s+-$", rows[1])
    assert re.match(rf"hall-a foh-1\s+{NET}\.1\s+8443\s+foh-1\s+hall-a\s+{__version__}\s+{fingerprint}\s+9000$",
                    rows[2])

    logged(lan, "br", "gateway lab-3 (venue hall-a) up", "the API listens on loopback only (127.0.0.1:8080): the box "
                                                         "is not announced")
    assert "service discovery" not in lan.log("br")  # no announcer at all


def logged(lan: Lan, role: str, *wanted: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not all(w in lan.log(role) for w in wanted):
        assert time.monotonic() < deadline, lan.log(role)
        time.sleep(0.1)


def test_an_announcer_without_its_interface_waits_while_the_box_runs(lan: Lan) -> None:
    logged(lan, "alone", "service discovery not ready: no interface eth9 with an IPv4 address on this box "
                         "(present: lo)", "service discovery restarts in", "service api running",
           "gateway spare-4 (venue hall-a) up")
    assert lan.daemons["alone"].poll() is None
    assert "Traceback" not in lan.log("alone")


# Avahi in its own namespace on the bridge: its own D-Bus system bus (a tmpfs over /run/dbus, in the mount namespace
# `ip netns exec` gives it); `avahi-browse -rpt` until both boxes are resolved, a box's host name resolved, then
# `avahi-browse -p` following.
AVAHI = """
set -u
mount -t tmpfs tmpfs /run/dbus
mkdir -p /run/avahi-daemon && mount -t tmpfs tmpfs /run/avahi-daemon
dbus-daemon --system --nofork --nopidfile >/dev/null 2>&1 &
for i in $(seq 50); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.1; done
avahi-daemon --no-drop-root --no-chroot --no-rlimits -f "$1" >"$2" 2>&1 &
for i in $(seq 150); do
    out=$(avahi-browse -rpt _venue-gateway._tcp 2>&1)
    [ "$(printf '%s\\n' "$out" | grep -c '^=;')" -ge 2 ] && break
    sleep 0.2
done
printf '%s\\n' "$out"
avahi-resolve -4 -n hall-a-foh-1.local 2>&1
echo following
avahi-browse -p _venue-gateway._tcp
"""


def avahi_unescape(text: str) -> str:
    """avahi-browse's escapes (\\DDD, a byte in decimal; \\. and \\\\) undone."""
    return re.sub(r"\\(\d{3}|.)", lambda m: chr(int(m.group(1))) if m.group(1).isdigit() else m.group(1), text)


class Lines:
    """A process's output, line by line, as it comes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._out = proc.stdout
        self._lines: list[str] = []
        self._buffer = b""

    def until(self, prefix: str, seconds: float) -> list[str]:
        """The lines up to the first that starts with `prefix` (the rest kept for the next call), or all those that
        came within `seconds`."""
        deadline = time.monotonic() + seconds
        while not any(line.startswith(prefix) for line in self._lines):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                break
            chunk = os.read(self._out.fileno(), 65536)
            if not chunk:
                break
            *complete, self._buffer = (self._buffer + chunk).split(b"\n")
            self._lines += [line.decode(errors="replace") for line in complete]
        end = next((i + 1 for i, line in enumerate(self._lines) if line.startswith(prefix)), len(self._lines))
        taken, self._lines = self._lines[:end], self._lines[end:]
        return taken


def test_avahi_sees_both_boxes_their_host_names_and_the_goodbye_of_one_stopping(lan: Lan) -> None:
    require(all(shutil.which(p) for p in ("avahi-daemon", "avahi-browse", "avahi-resolve", "dbus-daemon")),
            "avahi-daemon, avahi-utils and dbus (Debian packages avahi-daemon avahi-utils dbus)")
    announced(lan)
    conf = lan.directory / "avahi-daemon.conf"
    conf.write_text("[server]\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=eth0\n[publish]\npublish-workstation=no\n")
    log = lan.directory / "avahi-daemon.log"
    proc = subprocess.Popen(["ip", "netns", "exec", lan.names["avahi"], "sh", "-c", AVAHI, "avahi", str(conf),
                             str(log)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = Lines(proc)
    try:
        out = lines.until("following", 40)
        resolved = {}
        for line in out:
            fields = line.split(";")
            if fields[0] == "=" and len(fields) >= 10:
                # =;interface;protocol;name;type;domain;host;address;port;"key=value" "key=value"...
                txt = dict(t.split("=", 1) for t in re.findall(r'"([^"]*)"', fields[9]))
                resolved[avahi_unescape(fields[3])] = (fields[6], fields[7], int(fields[8]), txt)
        fingerprint = file_fingerprint(lan.directory / "a" / "data" / "tls" / "api.pem")
        assert resolved.get("hall-a foh-1") == ("hall-a-foh-1.local", f"{NET}.1", 8443, {
            "txtvers": "1", "id": "foh-1", "venue": "hall-a", "version": __version__, "path": "/api/v1",
            "scheme": "https", "fingerprint": fingerprint}), "\n".join(out) + log.read_text()
        assert resolved.get("Balcony rack") == ("hall-a-balcony-2.local", f"{NET}.2", 8080, {
            "txtvers": "1", "id": "balcony-2", "venue": "hall-a", "version": __version__, "path": "/api/v1",
            "scheme": "http"}), out

        # The box's host name in its records resolves to its address (a browser on a laptop with mDNS opens
        # https://hall-a-foh-1.local:8443/ui/).
        assert f"hall-a-foh-1.local\t{NET}.1" in out, out

        # A box that stops says goodbye: Avahi drops it at once, not when its records would have expired.
        lines.until("+;eth0;IPv4;Balcony", 10)  # (the follower's first look)
        lan.daemons["b"].send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert lan.daemons["b"].wait(10) == 0
        gone = lines.until("-;eth0;IPv4;Balcony\\032rack;", 10)
        assert gone and gone[-1].startswith("-;eth0;IPv4;Balcony\\032rack;_venue-gateway._tcp"), gone
        assert time.monotonic() - stopped < 5
        assert not any(line.startswith("-;eth0;IPv4;hall-a") for line in gone)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group: the shell, dbus-daemon, avahi-daemon and -browse
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


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


def test_the_table_shows_a_terminals_control_characters_from_the_network_as_escapes() -> None:
    """Any device on the LAN may announce `_venue-gateway._tcp`: what it puts in a name or a TXT value is printed, never
    acted on by the tech's terminal."""
    from gateway.discovery.browse import Box
    from gateway.discovery.cli import table

    rogue = Box(name="hall\x1b]0;owned\x07", addresses=["192.0.2.7"], port=8443, gateway_id="a\x1b[2Jb",
                venue="v\x9bx", version="0.1.0", scheme="https", path="/api/v1", fingerprint=None, host="h.local.")
    shown = table([rogue])
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "hall\\x1b]0;owned\\x07" in shown and "a\\x1b[2Jb" in shown and "v\\x9bx" in shown
