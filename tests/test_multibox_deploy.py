"""docs/multi-box.md's deployment as a new user follows it, against the shipped config/multibox files: the venue
broker made by the doc's commands (its openssl certificates, its mosquitto_passwd lines) runs the shipped
mosquitto.conf and ACL in a real Mosquitto, with no warning, verifies for the broker's name, and holds each box to
writing its own topics while it reads every box's; the venue key the doc makes is one the radio takes; the
one-machine try makes three valid boxes, each with its own data, port and virtual air; the doc names the
`shared_show` fields it speaks of."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import ssl
import subprocess
from collections.abc import Awaitable
from pathlib import Path

import aiomqtt
import pytest

from drivers.wristband.radio import RadioOptions
from gateway import config as configuration
from gateway.cloud.client import Client, PublishRefused
from peers.mosquitto import Mosquitto
from tests.conftest import ROOT, free_port

DOC = ROOT / "docs" / "multi-box.md"
MULTIBOX = ROOT / "config" / "multibox"
BOXES = ("box-a", "box-b", "box-c")
KINDS = ("presence", "effect", "live", "clock")


def shell_blocks(section: str) -> list[list[str]]:
    """The ```sh blocks of the doc's section that starts with `section`, each as its commands (a line ending in a
    backslash joined to the next)."""
    text = DOC.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```sh\n(.*?)```", text[start:None if end < 0 else end], re.S)
    return [[line for line in re.sub(r"\\\n\s*", "", block).splitlines() if line.strip()] for block in blocks]


def commands(lines: list[str], program: str) -> list[str]:
    return [line.split("#")[0].strip() for line in lines if line.strip().startswith(program + " ")]


def test_the_shipped_files_agree_with_each_other_and_the_doc() -> None:
    conf = dict(line.split(None, 1) for line in (MULTIBOX / "mosquitto.conf").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    broker = shell_blocks("1. **The broker.**")[0]
    installed = {args[-1]: args[-2] for args in map(shlex.split, commands(broker, "install"))}
    assert installed[conf["acl_file"]] == "config/multibox/mosquitto.acl", (conf["acl_file"], installed)
    assert installed["/etc/mosquitto/mosquitto.conf"] == "config/multibox/mosquitto.conf"
    made = commands(broker, "mosquitto_passwd")
    assert [shlex.split(c)[1] == "-c" for c in made] == [True] + [False] * (len(BOXES) - 1), made
    assert {shlex.split(c)[-1] for c in made} == {f"arena/show/{box}" for box in BOXES}
    assert all(shlex.split(c)[-2] == conf["password_file"] for c in made)
    text = DOC.read_text()
    assert "openssl rand -hex 16" in text and "mode 0640, `root:venue-gateway`" in text
    for box in BOXES:
        cfg = configuration.load(MULTIBOX / f"{box}.toml")
        assert cfg.show.shared is not None
        assert f"install -m 0644 venue-ca.pem {cfg.show.shared.ca_file}" in text
        [radio] = cfg.drivers
        assert (radio.options.key_file, radio.options.show_id) == ("/etc/venue-gateway/venue.key", 1)
    # the fields of shared_show's boxes, as the doc names them
    for field in ("`offset_ms`", "`delay_ms`", "`effects_carried`", "`malformed`"):
        assert field in text


def test_the_venue_key_the_doc_makes_is_one_the_radio_takes(tmp_path: Path) -> None:
    [make, install] = [line.split("#")[0].strip() for line in shell_blocks("3. **The radios.**")[0]]
    subprocess.run(make, shell=True, cwd=tmp_path, check=True)
    args = shlex.split(install)
    assert args[:5] == ["install", "-m", "0640", "-o", "root"] and args[-1] == "/etc/venue-gateway/venue.key"
    key = tmp_path / "etc" / "venue.key"
    key.parent.mkdir()
    subprocess.run(["install", "-m", "0640", args[-2], str(key)], cwd=tmp_path, check=True)
    assert len(RadioOptions(port="/dev/ttyACM0", key_file=str(key)).key()) == 16


async def test_the_venue_broker_as_the_doc_makes_it(tmp_path: Path) -> None:
    """The shipped mosquitto.conf and ACL, the doc's certificates and password file, in a real Mosquitto (the
    /etc paths moved under tmp_path, the TLS listener on loopback, and a plain listener beside it for the ACL's
    checks). The ACL draws no warning; the broker's certificate verifies for its name; each box reads every box's
    four topics and may write only its own."""
    broker_steps = shell_blocks("1. **The broker.**")[0]
    certs = tmp_path / "certs"
    certs.mkdir()
    def run(argv: list[str], cwd: Path | None = None) -> Awaitable[subprocess.CompletedProcess[bytes]]:
        return asyncio.to_thread(subprocess.run, argv, cwd=cwd, check=True, capture_output=True)

    for command in commands(broker_steps, "openssl"):
        await run(shlex.split(command), cwd=certs)
    passwords = tmp_path / "venue.passwd"
    for command in commands(broker_steps, "mosquitto_passwd"):
        args = shlex.split(command)
        user = args[-1]
        await run([args[0], "-b", *args[1:-2], str(passwords), user, user + "-secret"])
    plain = free_port()
    text = (MULTIBOX / "mosquitto.conf").read_text()
    text = text.replace("/etc/mosquitto/certs/", f"{certs}/").replace("/etc/mosquitto/mosquitto.acl",
                                                                       str(MULTIBOX / "mosquitto.acl"))
    text = text.replace("/etc/mosquitto/", f"{tmp_path}/").replace("/var/lib/mosquitto/", f"{tmp_path}/")
    broker = Mosquitto(tmp_path / "broker")
    text = text.replace("listener 8883", f"listener {broker.port} 127.0.0.1")
    text += f"listener {plain} 127.0.0.1\n" + ("user root\n" if os.geteuid() == 0 else "")
    broker.conf.write_text(text)
    await asyncio.to_thread(broker.start)
    try:
        assert "ACL pattern" not in broker.log() and "Error" not in broker.log(), broker.log()
        strict = ssl.create_default_context(cafile=str(certs / "venue-ca.pem"))
        strict.verify_flags |= ssl.VERIFY_X509_STRICT
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw, \
                strict.wrap_socket(raw, server_hostname="broker.arena.lan") as tls:
            assert tls.version() is not None
        await boxes_read_all_and_write_their_own(plain)
        assert "ACL pattern" not in broker.log(), broker.log()
    finally:
        await asyncio.to_thread(broker.stop)


async def boxes_read_all_and_write_their_own(port: int) -> None:
    v5 = aiomqtt.ProtocolVersion.V5
    clients = {box: Client("127.0.0.1", port, username=f"arena/show/{box}", password=f"arena/show/{box}-secret",
                           protocol=v5) for box in BOXES}
    heard: dict[str, set[str]] = {box: set() for box in BOXES}
    everything = {f"venues/arena/show/{box}/{kind}" for box in BOXES for kind in KINDS}
    all_heard = asyncio.Event()

    async def listen(box: str, client: Client) -> None:
        async for message in client.messages:
            heard[box].add(str(message.topic))
            if all(got == everything for got in heard.values()):
                all_heard.set()

    for client in clients.values():
        await client.__aenter__()
    listeners = []
    try:
        for box, client in clients.items():
            await client.subscribe("venues/arena/show/+/+", qos=1)
            listeners.append(asyncio.create_task(listen(box, client)))
        for box, client in clients.items():
            for kind in KINDS:
                await client.publish(f"venues/arena/show/{box}/{kind}", box.encode(), qos=1)
        try:
            await asyncio.wait_for(all_heard.wait(), 5)
        except TimeoutError:
            pytest.fail(f"each box should hear every box's topics: {heard}")
        for box, client in clients.items():  # last: a refused publish may end the connection
            other = BOXES[(BOXES.index(box) + 1) % len(BOXES)]
            with pytest.raises(PublishRefused):
                await client.publish(f"venues/arena/show/{other}/effect", b"as if another", qos=1)
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for client in clients.values():
            await client.__aexit__(None, None, None)


def test_trying_it_on_one_machine_makes_three_boxes_each_its_own(tmp_path: Path) -> None:
    """The doc's one-machine steps (the broker and the gateways' start left out, /tmp/multibox moved under tmp_path)
    make three configurations that check-config takes, each box with its own data, API port and virtual air."""
    [steps, _] = shell_blocks("## Try it on one machine")
    script = "\n".join(line for line in steps if not line.lstrip().startswith(("mosquitto ", ".venv/bin/")))
    subprocess.run(["sh", "-e", "-c", script.replace("/tmp/multibox", str(tmp_path))], cwd=ROOT, check=True)
    seen: dict[str, set[object]] = {"data": set(), "listen": set(), "pty": set()}
    for box in BOXES:
        cfg = configuration.load(tmp_path / f"{box}.toml")
        assert cfg.gateway.id == box and cfg.show.shared is not None
        assert cfg.show.shared.boxes == list(BOXES) and cfg.show.shared.brokers[0].startswith("mqtt://127.0.0.1:")
        drivers = {d.name: d for d in cfg.drivers}
        assert drivers["air"].options.pty == drivers["radio"].options.port
        assert drivers["air"].options.demo_key == drivers["radio"].options.demo_key
        seen["data"].add(cfg.gateway.data_dir)
        seen["listen"].add(cfg.api.listen)
        seen["pty"].add(drivers["air"].options.pty)
    assert all(len(values) == len(BOXES) for values in seen.values()), seen
