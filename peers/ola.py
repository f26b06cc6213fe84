"""OLA (the Open Lighting Architecture daemon, olad) as an independent peer: olad with a chosen set of its plugins
on and every other off, as nobody when run by root (olad refuses to run as root), and its HTTP API. The tests run
it as an Art-Net and E1.31 (sACN) receiver on an address of their choice, in a network namespace if need be
(`running_olad`); the show benchmark as an OSC-in, Art-Net-out node (`osc_in_artnet_out`), under its own
supervision (`Olad.argv`, `Olad.user`); the console-in tests as a console sending sACN, Art-Net and Art-Net
timecode from its command-line clients (`console_sender`, `Ola.stream`, `Ola.timecode`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from peers import PeerMissing
from peers.ports import LOOPBACK, free_port

PLUGINS = ("artnet", "dummy", "e131", "espnet", "ftdidmx", "gpio", "karate", "kinet", "milinst", "opendmx",
           "openpixelcontrol", "osc", "pathport", "renard", "sandnet", "shownet", "spi", "stageprofi", "uartdmx",
           "usbdmx", "usbserial")
OSC_ADDRESS = "/dmx/universe/%d"  # OLA's OSC input port for universe N
CLIENT_RPC_PORT = 9010  # where OLA's command-line clients find olad (they take no other)


def artnet_sacn_receiver(ip: str) -> dict[str, str]:
    """The Art-Net and E1.31 plugins on `ip` (Art-Net's loopback mode when `ip` is a loopback address)."""
    loopback = "true" if ip.startswith("127.") else "false"
    return {"artnet": f"enabled = true\nip = {ip}\nuse_loopback = {loopback}\nuse_limited_broadcast = false\n"
                      "always_broadcast = false\n",
            "e131": f"enabled = true\nip = {ip}\n"}


def osc_in_artnet_out(osc_port: int) -> dict[str, str]:
    """OSC: one input port at /dmx/universe/N on UDP `osc_port`. Art-Net: on loopback (use_loopback), every ArtDmx
    to the interface's broadcast address, which for lo is 127.0.0.1 itself (no node has to subscribe first)."""
    return {"artnet": "enabled = true\nip = 127.0.0.1\nuse_loopback = true\nuse_limited_broadcast = false\n"
                      "always_broadcast = true\n",
            "osc": f"enabled = true\nudp_listen_port = {osc_port}\ninput_ports = 1\noutput_ports = 0\n"
                   f"port_0_address = {OSC_ADDRESS}\n"}


def console_sender() -> dict[str, str]:
    """The Art-Net and E1.31 plugins on loopback as a console's outputs: every ArtDmx and ArtTimeCode to lo's
    broadcast address (127.0.0.1 itself; no node has to answer an ArtPoll first), sACN multicast on lo."""
    return {"artnet": "enabled = true\nip = 127.0.0.1\nuse_loopback = true\nuse_limited_broadcast = false\n"
                      "always_broadcast = true\n",
            "e131": "enabled = true\nip = 127.0.0.1\n"}


class Ola:
    """olad's HTTP API, and its command-line clients (which reach an olad on CLIENT_RPC_PORT only)."""

    def __init__(self, http_port: int, host: str = LOOPBACK) -> None:
        self.url = f"http://{host}:{http_port}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.load(resp)

    def ports(self) -> list[dict[str, Any]]:
        return list(self._get("/json/get_ports"))

    def port(self, device: str, output: bool) -> str:
        """The id of the first output (or input) port of the device whose name starts with `device`."""
        return str(next(p["id"] for p in self.ports() if p["device"].startswith(device) and p["is_output"] == output))

    def patch(self, universe: int, *port_ids: str) -> None:
        """OLA `universe`, made with these ports patched to it."""
        data = urllib.parse.urlencode({"id": universe, "name": f"u{universe}", "add_ports": ",".join(port_ids)})
        with urllib.request.urlopen(self.url + "/new_universe", data=data.encode(), timeout=5) as resp:
            answer = json.load(resp)
        if not answer.get("ok"):
            raise RuntimeError(f"OLA refused the patch of universe {universe}: {answer}")

    def patch_input(self, device: str, universe: int) -> None:
        """Patch the first input port of the device whose name starts with `device` to OLA `universe`."""
        self.patch(universe, self.port(device, output=False))

    def dmx(self, universe: int) -> list[int]:
        return list(self._get(f"/get_dmx?u={universe}")["dmx"])

    def version(self) -> str:
        return str(self._get("/json/server_stats").get("version", "?"))

    def post_dmx(self, universe: int, levels: Iterable[int]) -> None:
        """OLA `universe` to `levels` over the HTTP API (for an olad its command-line clients cannot reach)."""
        data = urllib.parse.urlencode({"u": universe, "d": ",".join(map(str, levels))}).encode()
        with urllib.request.urlopen(self.url + "/set_dmx", data=data, timeout=5) as resp:
            resp.read()

    def stream(self, universe: int, levels: Iterable[int], priority: int | None = None) -> None:
        """`ola_streaming_client`: OLA `universe` to `levels` (out of the ports patched to it), at `priority`."""
        extra = [] if priority is None else ["--priority", str(priority)]
        subprocess.run(["ola_streaming_client", "-u", str(universe), "-d", ",".join(map(str, levels)), *extra],
                       check=True, capture_output=True, timeout=10)

    def set_dmx(self, universe: int, levels: Iterable[int]) -> None:
        """`ola_set_dmx`: OLA `universe` to `levels`."""
        subprocess.run(["ola_set_dmx", "-u", str(universe), "-d", ",".join(map(str, levels))], check=True,
                       capture_output=True, timeout=10)

    def timecode(self, timecode: str, rate: str) -> None:
        """`ola_timecode`: one timecode frame ("HH:MM:SS:FF", rate FILM, EBU, DF or SMPTE), out as ArtTimeCode."""
        subprocess.run(["ola_timecode", "-f", rate, timecode], check=True, capture_output=True, timeout=10)


class Olad:
    """olad's configuration in `directory`/ola: `plugins` (name -> its ola-NAME.conf) on, every other plugin off,
    free HTTP and RPC ports. `argv` runs it as `user`: nobody when this process is root (olad refuses to run as
    root; `directory` and the configuration are then open to all), else None, this process's own user."""

    def __init__(self, directory: Path, plugins: Mapping[str, str], rpc_port: int | None = None) -> None:
        if shutil.which("olad") is None:
            raise PeerMissing("OLA (Debian package ola)")
        self.config = directory / "ola"
        self.config.mkdir()
        for plugin, conf in {**dict.fromkeys(PLUGINS, "enabled = false\n"), **plugins}.items():
            (self.config / f"ola-{plugin}.conf").write_text(conf)
        self.http_port, self.rpc_port = free_port(), rpc_port or free_port()
        self.argv = ["olad", "--config-dir", str(self.config), "--http-port", str(self.http_port), "--rpc-port",
                     str(self.rpc_port), "--no-register-with-dns-sd", "--log-level", "1"]
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user is not None:
            for path in (directory, self.config, *self.config.iterdir()):
                path.chmod(0o777 if path.is_dir() else 0o666)
            # Our directories on the way (pytest's and tempfile's are 0700) are opened to be passed through, not
            # listed: olad that cannot reach its configuration runs on its defaults and says so only in its log.
            for parent in directory.parents:
                info = parent.stat()
                if info.st_uid == os.geteuid() and not info.st_mode & 0o001:
                    parent.chmod(info.st_mode & 0o7777 | 0o011)


@contextlib.contextmanager
def running_olad(directory: Path, ip: str = LOOPBACK, netns: str | None = None,
                 plugins: Mapping[str, str] | None = None, rpc_port: int | None = None) -> Iterator[Ola]:
    """olad with its Art-Net and E1.31 plugins on `ip` (loopback by default, or inside network namespace
    `netns`), or the `plugins` given, every other plugin off; its log in `directory`/olad.log. Its command-line
    clients need `rpc_port` CLIENT_RPC_PORT."""
    olad = Olad(directory, plugins or artnet_sacn_receiver(ip), rpc_port)
    cmd = olad.argv if olad.user is None else ["runuser", "-u", olad.user, "--", *olad.argv]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    log = (directory / "olad.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    peer = Ola(olad.http_port, LOOPBACK if netns is None else ip)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if len(peer.ports()) >= 2:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"olad exited: {(directory / 'olad.log').read_text()}")
            if time.monotonic() >= deadline:
                raise RuntimeError("olad did not start")
            time.sleep(0.1)
        yield peer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
