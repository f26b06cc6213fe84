"""The `artnet` driver: Art-Net 4 output of the box's DMX universes, one frame per tick of the frame clock.

ArtDmx goes unicast to the configured targets and, with `discover`, to every node found by ArtPoll whose
ArtPollReply lists an output port on that universe; broadcast only where the configuration asks for it.
Unchanged universes are sent again about once a second (keep-alive), never faster than the frame rate; ArtSync
follows each frame when asked for. The gateway's universe N is Art-Net Port-Address N (universe 1 is 0:0:1).

Discovery polls the `discover` (directed broadcast) address every `poll_interval_s` from UDP port 6454, where
nodes send their replies (usually broadcast), so the socket is bound to 0.0.0.0:6454 with SO_REUSEADDR. Other
Art-Net software on the box can share the port only if it sets SO_REUSEADDR too, and then a unicast reply
reaches only one of the two: run discovery on a box where the gateway is the only Art-Net controller. A node
not heard for `node_timeout_s` is forgotten.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

from drivers.dmx.artnet_codec import PORT, ArtDmx, ArtNetError, ArtPoll, ArtPollReply, ArtSync, UnreadOpcode, decode
from drivers.dmx.output import DmxOutput
from gateway.driver import DriverContext, NotReady, Problem, setting


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    ipaddress.IPv4Address(host)
    number = int(port) if port else PORT
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is out of range")
    return host, number


@dataclass(frozen=True)
class ArtNetOptions:
    universes: list[int] = field(default_factory=list)  # empty: every universe of [dmx]
    targets: list[str] = field(default_factory=list)  # "ip" or "ip:port", each takes every universe
    broadcast: str | None = None  # e.g. "2.255.255.255": only when set
    discover: str | None = None  # poll this (directed broadcast) address for nodes, e.g. "2.255.255.255"
    bind: str = "0.0.0.0"
    sync: bool = False  # ArtSync after every frame, so nodes change all their universes together
    keepalive_s: float = setting(1.0, min=0.1, max=4)
    poll_interval_s: float = setting(3.0, min=1, max=60)  # the specification asks for 2.5 to 3 s
    node_timeout_s: float = setting(10.0, min=3, max=600)

    def problems(self) -> list[Problem]:
        out = []
        for i, target in enumerate(self.targets):
            try:
                _address(target)
            except ValueError:
                out.append(Problem(f"targets[{i}]", f"{target!r} is not an IPv4 address with an optional port "
                                                    "(allowed: ip or ip:port, port 1 to 65535)"))
        if not self.targets and self.broadcast is None and self.discover is None:
            out.append(Problem("targets", "Art-Net needs somewhere to go (allowed: targets, broadcast, discover)"))
        if self.node_timeout_s <= 2 * self.poll_interval_s:
            out.append(Problem("node_timeout_s", f"{self.node_timeout_s} s would forget nodes between polls "
                                                 f"(allowed: more than twice poll_interval_s)"))
        if self.discover is not None and self.bind != "0.0.0.0":
            out.append(Problem("bind", "discovery hears broadcast replies only on 0.0.0.0 (allowed: leave bind "
                                       "unset with discover)"))
        for key in ("broadcast", "discover", "bind"):
            value = getattr(self, key)
            try:
                if value is not None:
                    ipaddress.IPv4Address(value)
            except ValueError:
                out.append(Problem(key, f"{value!r} is not an IPv4 address"))
        return out


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, driver: ArtNetOutput) -> None:
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.driver.received(data, addr[0])

    def error_received(self, exc: Exception) -> None:
        self.driver.send_errors += 1


class ArtNetOutput(DmxOutput[ArtNetOptions]):
    Options = ArtNetOptions

    def __init__(self, ctx: DriverContext, options: ArtNetOptions) -> None:
        super().__init__(ctx, options)
        self.destinations = [_address(t) for t in options.targets]
        if options.broadcast:
            self.destinations.append((options.broadcast, PORT))
        self.syncs = self.malformed = self.send_errors = self.polls = self.ignored = 0
        self.nodes: dict[tuple[str, int], tuple[ArtPollReply, float]] = {}  # (ip, bind index) -> reply, heard at
        self._subscribers: dict[int, list[tuple[str, int]]] = {}  # universe -> discovered nodes' addresses
        self._transport: asyncio.DatagramTransport | None = None
        self._sequence: dict[int, int] = {}

    async def start(self) -> None:
        self.check_universes()
        loop = asyncio.get_running_loop()
        discovering = self.options.discover is not None
        try:
            if discovering:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                try:
                    sock.bind((self.options.bind, PORT))
                except OSError:
                    sock.close()
                    raise
                self._transport, _ = await loop.create_datagram_endpoint(lambda: _Socket(self), sock=sock)
            else:
                self._transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Socket(self), local_addr=(self.options.bind, 0),
                    allow_broadcast=self.options.broadcast is not None)
        except OSError as exc:
            port = PORT if discovering else "any port"
            raise NotReady(f"cannot open Art-Net on {self.options.bind} ({port}): {exc.strerror or exc}") from None

    async def run(self) -> None:
        """Frames go out from the frame clock; this polls for nodes and forgets the silent ones."""
        if self.options.discover is None:
            await asyncio.Future()
        while True:
            self.poll()
            await asyncio.sleep(self.options.poll_interval_s)
            self._forget(time.monotonic() - self.options.node_timeout_s)

    def poll(self) -> None:
        if self._transport is not None and self.options.discover is not None:
            self._transport.sendto(ArtPoll().encode(), (self.options.discover, PORT))
            self.polls += 1

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def received(self, data: bytes, ip: str) -> None:
        """ArtPollReply is taken in; anything else that comes back (our own broadcasts, other controllers) is
        ignored, and what does not parse is counted."""
        try:
            packet = decode(data)
        except UnreadOpcode:
            self.ignored += 1  # other Art-Net traffic on the shared port
            return
        except ArtNetError:
            self.malformed += 1
            return
        if isinstance(packet, ArtPollReply) and self.options.discover is not None:
            # Sent where the reply came from: the address a node writes into its reply may be stale or 0.0.0.0.
            packet = replace(packet, ip=ip)
            key = (packet.ip, packet.bind_index)
            known = self.nodes.get(key)
            self.nodes[key] = (packet, time.monotonic())
            if known is None or known[0] != packet:
                self.ctx.log.info("Art-Net node %s (%s) outputs %s", packet.ip, packet.short_name,
                                  sorted(packet.output_universes()) or "nothing")
                self._nodes_changed()

    def _forget(self, before: float) -> None:
        gone = [key for key, (_, heard) in self.nodes.items() if heard < before]
        for key in gone:
            self.ctx.log.warning("Art-Net node %s stopped answering polls; no longer sent to", key[0])
            del self.nodes[key]
        if gone:
            self._nodes_changed()

    def _nodes_changed(self) -> None:
        subscribers: dict[int, set[tuple[str, int]]] = {}
        for reply, _ in self.nodes.values():
            for universe in reply.output_universes():
                subscribers.setdefault(universe, set()).add((reply.ip, reply.port or PORT))
        self._subscribers = {u: sorted(addresses) for u, addresses in subscribers.items()}
        self.ctx.declare(f"artnet:{self.ctx.name}", "artnet_network")
        self.ctx.report(f"artnet:{self.ctx.name}", {"nodes": self._node_documents()})

    def _node_documents(self) -> list[dict[str, Any]]:
        return [{"ip": reply.ip, "bind_index": reply.bind_index, "short_name": reply.short_name,
                 "long_name": reply.long_name, "universes": sorted(reply.output_universes())}
                for reply, _ in self.nodes.values()]

    def send(self, universe: int, levels: bytes) -> bool:
        if self._transport is None:
            return False
        sequence = self._sequence[universe] = self._sequence.get(universe, 0) % 255 + 1
        payload = ArtDmx(universe, levels, sequence).encode()
        for destination in self.destinations:
            self._transport.sendto(payload, destination)
            self.sent += 1
        for destination in () if self.options.broadcast else self._subscribers.get(universe, ()):
            if destination not in self.destinations:  # (a broadcast already reaches every node)
                self._transport.sendto(payload, destination)
                self.sent += 1
        return True

    def frame_sent(self) -> None:
        """ArtSync after the frame, so nodes change all their universes together."""
        if self.options.sync and self._transport is not None:
            sync = ArtSync().encode()
            nodes = set() if self.options.broadcast else \
                {d for addresses in self._subscribers.values() for d in addresses} - set(self.destinations)
            for destination in [*self.destinations, *sorted(nodes)]:
                self._transport.sendto(sync, destination)
            self.syncs += 1

    def health(self) -> dict[str, Any]:
        doc = {"universes": self.universes, "packets_sent": self.sent, "syncs_sent": self.syncs,
               "malformed_received": self.malformed, "ignored_received": self.ignored, "send_errors": self.send_errors}
        if self.options.discover is not None:
            doc |= {"polls_sent": self.polls, "nodes": self._node_documents()}
        return doc
