"""A real NATS cluster (Debian's `nats-server`) with JetStream and its MQTT gateway: a broker cluster whose nodes
share MQTT sessions and retained messages, each node on loopback ports of its own and its data in a directory of its
own. NATS's MQTT speaks 3.1.1 only (it refuses an MQTT 5 CONNECT, so a client's `auto` falls back), keeps QoS 1
sessions in JetStream streams replicated across the nodes, and goes on with a node killed while a majority is up."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from peers import PeerMissing
from peers.ports import LOOPBACK, free_port

CLUSTER = "vg"
READY_S = 30.0


@dataclass
class NatsNode:
    name: str
    directory: Path
    client_port: int
    cluster_port: int
    mqtt_port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its MQTT address, as the gateway's `[cloud] brokers` takes it."""
        return f"mqtt://{LOOPBACK}:{self.mqtt_port}"

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex((LOOPBACK, self.mqtt_port)) == 0

    def healthy(self, server_only: bool = False) -> bool:
        """Up, and its JetStream current with the cluster (what its MQTT sessions need): every stream and consumer
        it holds a copy of, or (`server_only`) the cluster's metadata alone."""
        query = "?js-server-only=true" if server_only else ""
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}/healthz{query}", timeout=1) as answer:
                return bool(json.loads(answer.read()).get("status") == "ok")
        except (OSError, ValueError):
            return False

    def warm(self) -> bool:
        """Connect one MQTT client and leave: the node sets up its MQTT streams and consumers for the account at
        its first client (which needs the cluster's JetStream leader), as a node in service has long since done.
        True once the node has accepted it."""
        client_id = f"warm-{self.name}".encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
        try:
            with socket.create_connection((LOOPBACK, self.mqtt_port), timeout=10) as s:
                s.sendall(bytes([0x10, len(body)]) + body)
                accepted = s.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
                s.sendall(b"\xe0\x00")  # DISCONNECT
                return accepted
        except OSError:
            return False

    def log(self) -> str:
        path = self.directory / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""


class NatsCluster:
    """`nodes` NATS servers routed to one another, JetStream and MQTT on each; `start` and `stop` (or a `with`
    block) run them, `kill(i)` ends one at once (SIGKILL, as a node lost to a power cut) and `restart(i)` brings it
    back with its data. `nice`: run the servers under nice(1) at that niceness."""

    def __init__(self, directory: Path, *, nodes: int = 3, nice: int | None = None) -> None:
        if shutil.which("nats-server") is None:
            raise PeerMissing("the Debian package nats-server (a NATS server with JetStream and MQTT)")
        self.directory = directory
        self.nice = nice
        self.nodes = [NatsNode(f"n{i + 1}", directory / f"n{i + 1}", free_port(), free_port(), free_port(),
                               free_port()) for i in range(nodes)]
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            routes = ", ".join(f"nats-route://{LOOPBACK}:{n.cluster_port}" for n in self.nodes if n is not node)
            (node.directory / "nats.conf").write_text(
                f"server_name: {node.name}\n"
                f"listen: {LOOPBACK}:{node.client_port}\n"
                f"http: {LOOPBACK}:{node.http_port}\n"
                f"jetstream {{ store_dir: \"{node.directory / 'jetstream'}\" }}\n"
                f"cluster {{ name: {CLUSTER}, listen: {LOOPBACK}:{node.cluster_port}, routes: [{routes}] }}\n"
                # sessions, retained and QoS 1 messages on every node: any one may go
                f"mqtt {{ listen: {LOOPBACK}:{node.mqtt_port}, stream_replicas: {min(3, nodes)} }}\n")

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def _run(self, node: NatsNode) -> None:
        argv = [*([] if self.nice is None else ["nice", "-n", str(self.nice)]), "nats-server", "-c",
                str(node.directory / "nats.conf")]
        with (node.directory / "nats.log").open("ab") as log:
            node.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _wait(self, nodes: list[NatsNode], server_only: bool = False) -> None:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"nats-server {node.name} exited: {node.log()[-2000:]}")
            if all(n.listening() and n.healthy(server_only) for n in nodes) and all(n.warm() for n in nodes):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the NATS cluster was not ready within {READY_S:.0f} s: "
                           + " | ".join(f"{n.name}: {n.log()[-500:]}" for n in nodes))

    def start(self) -> NatsCluster:
        for node in self.nodes:
            self._run(node)
        try:
            self._wait(self.nodes)
        except RuntimeError:
            self.stop()
            raise
        return self

    def leader(self) -> int | None:
        """The index of the node that leads the cluster's JetStream (its meta leader), as a node up says; None when
        none is known. Losing the leader holds every node's new MQTT sessions until another is elected."""
        names = [n.name for n in self.nodes]
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                with urllib.request.urlopen(f"http://{LOOPBACK}:{node.http_port}/jsz", timeout=1) as answer:
                    name = json.loads(answer.read()).get("meta_cluster", {}).get("leader")
            except (OSError, ValueError):
                continue
            if name in names:
                return names.index(name)
        return None

    def kill(self, index: int) -> None:
        node = self.nodes[index]
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait(5)
            node.proc = None

    def restart(self, index: int) -> None:
        """Start a node killed, and wait until it is back in the cluster's JetStream and takes MQTT clients. (Under
        load, the copies of the streams and consumers it holds may take minutes more to be current: nats-server
        2.9's full health check can stay failed that long.)"""
        node = self.nodes[index]
        self._run(node)
        self._wait([node], server_only=True)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(5)
                node.proc = None

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
