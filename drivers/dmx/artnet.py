"""The `artnet` driver: Art-Net 4 output of the box's DMX universes, sent on change (or on the frame clock).

ArtDmx goes unicast to the configured targets and, with `discover`, to every node found by ArtPoll whose
ArtPollReply lists an output port on that universe; broadcast only where the configuration asks for it.
A universe goes out as soon as it changes, at most `max_rate_hz` a second (Art-Net 4 asks controllers to send
ArtDmx only on change, with a keep-alive; nodes refresh their DMX port on their own), or with every frame of the
frame clock (`mode = "frames"`). Unchanged universes are sent again about once a second (keep-alive); ArtSync
follows each frame when asked for. The gateway's universe N is Art-Net Port-Address N (universe 1 is 0:0:1).

Discovery polls the `discover` (directed broadcast) address every `poll_interval_s` from UDP port 6454, where
nodes send their replies (usually broadcast), so the socket is bound to 0.0.0.0:6454 with SO_REUSEADDR. Other
Art-Net software on the box can share the port only if it sets SO_REUSEADDR too, and then a unicast reply
reaches only one of the two: run discovery on a box where the gateway is the only Art-Net controller. A node
not heard for `node_timeout_s` is forgotten.

An ArtPollReply is a UDP datagram whose source anyone on the network can forge, so a reply makes a node only
within bounds: from an address of the discover network (the network whose broadcast address `discover` is),
while the table has fewer than `max_nodes` nodes, and it is sent to on UDP 6454 whatever port it names. What is
refused is counted; node changes reach the log and the twin at a bounded rate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

from drivers.dmx.artnet_codec import PORT, ArtDmx, ArtNetError, ArtPoll, ArtPollReply, ArtSync, UnreadOpcode, decode
from drivers.dmx.output import DmxOutput, Mode
from drivers.throttle import Throttle
from gateway.driver import DriverContext, NotReady, Problem, setting

REPORT_EVERY_S = 1.0  # the twin hears of node changes at most this often (a burst of replies is one update)
NODE_LINES, NODE_LINES_WINDOW_S = 20, 60.0  # node changes logged one by one; beyond this many a minute, counted
REFUSED_LOG_S = 60.0  # refused replies: a line at most this often, with the number not logged


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    ipaddress.IPv4Address(host)
    number = int(port) if port else PORT
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is out of range")
    return host, number


def discover_network(broadcast: str) -> ipaddress.IPv4Network:
    """The widest network whose broadcast address `broadcast` is: its host bits are the address's trailing one
    bits (10.77.0.255 is 10.77.0.0/24, 2.255.255.255 is 2.0.0.0/8; a node's own address is that address alone)."""
    value = int(ipaddress.IPv4Address(broadcast))
    host_bits = (value ^ (value + 1)).bit_length() - 1
    return ipaddress.IPv4Network((value, 32 - host_bits), strict=False)


@dataclass(frozen=True)
class ArtNetOptions:
    universes: list[int] = field(default_factory=list)  # empty: every universe of [dmx]
    targets: list[str] = field(default_factory=list)  # "ip" or "ip:port", each takes every universe
    broadcast: str | None = None  # e.g. "2.255.255.255": only when set
    discover: str | None = None  # poll this (directed broadcast) address for nodes, e.g. "2.255.255.255"
    bind: str = "0.0.0.0"
    sync: bool = False  # ArtSync after every frame, so nodes change all their universes together
    mode: Mode = "on-change"  # or "frames": with the frame clock's ticks
    max_rate_hz: float = setting(44.0, min=1, max=1000)  # on change: ArtDmx a second per universe, at most
    keepalive_s: float = setting(1.0, min=0.1, max=4)
    poll_interval_s: float = setting(3.0, min=1, max=60)  # the specification asks for 2.5 to 3 s
    node_timeout_s: float = setting(10.0, min=3, max=600)
    max_nodes: int = setting(128, min=1, max=4096)  # (IP, bind index) pairs; a reply beyond this is refused

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
            if value is None:
                continue
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                out.append(Problem(key, f"{value!r} is not an IPv4 address"))
                continue
            if key == "discover" and (network := discover_network(value)).prefixlen < 8:
                out.append(Problem(key, f"{value} would take replies from {network} (allowed: the directed "
                                        "broadcast address of the lighting network, e.g. 2.255.255.255 or "
                                        "10.77.0.255)"))
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
        self.off_network = self.over_max_nodes = 0  # ArtPollReplies refused
        self.nodes: dict[tuple[str, int], tuple[ArtPollReply, float]] = {}  # (ip, bind index) -> reply, heard at
        self._subscribers: dict[int, list[tuple[str, int]]] = {}  # universe -> discovered nodes' addresses
        self._network = discover_network(options.discover) if options.discover is not None else None
        self._node_lines = Throttle(NODE_LINES, NODE_LINES_WINDOW_S)
        self._refused_lines = Throttle(1, REFUSED_LOG_S)
        self._report_due: asyncio.TimerHandle | None = None  # the twin's next node update, when one is pending
        self._reported_at = float("-inf")
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
        if self._report_due is not None:  # the twin gets the last change now
            self._report_due.cancel()
            self._report_nodes()
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
        if isinstance(packet, ArtPollReply) and self._network is not None:
            self._reply(packet, ip, self._network)

    def _reply(self, packet: ArtPollReply, ip: str, network: ipaddress.IPv4Network) -> None:
        """A node from its ArtPollReply, if it may be one. Sent where the reply came from (the address a node
        writes into its reply may be stale or 0.0.0.0), and only to UDP 6454 (the port it names is not taken)."""
        now = time.monotonic()
        address = ipaddress.IPv4Address(ip)
        if address not in network or (network.prefixlen < 31 and address in (network.network_address,
                                                                              network.broadcast_address)):
            self.off_network += 1
            self._refused(now, "Art-Net reply from %s refused: not a node of the discover network %s%s", ip,
                          network)
            return
        packet = replace(packet, ip=ip)
        key = (ip, packet.bind_index)
        known = self.nodes.get(key)
        if known is None and len(self.nodes) >= self.options.max_nodes:
            self.over_max_nodes += 1
            self._refused(now, "Art-Net reply from %s refused: max_nodes (%d) are known%s", ip, self.options.max_nodes)
            return
        self.nodes[key] = (packet, now)
        if known is None or known[0] != packet:
            if (held := self._node_lines(now)) is not None:
                self.ctx.log.info("Art-Net node %s (%s) outputs %s%s", packet.ip, packet.short_name,
                                  sorted(packet.output_universes()) or "nothing", _more(held, "node changes"))
            self._nodes_changed()

    def _refused(self, now: float, text: str, *args: object) -> None:
        if (held := self._refused_lines(now)) is not None:
            self.ctx.log.warning(text, *args, _more(held, "replies refused"))

    def _forget(self, before: float) -> None:
        gone = [key for key, (_, heard) in self.nodes.items() if heard < before]
        now = time.monotonic()
        for key in gone:
            if (held := self._node_lines(now)) is not None:
                self.ctx.log.warning("Art-Net node %s stopped answering polls; no longer sent to%s", key[0],
                                     _more(held, "node changes"))
            del self.nodes[key]
        if gone:
            self._nodes_changed()

    def _nodes_changed(self) -> None:
        """The frames go to the nodes as they are now; the twin hears of it within REPORT_EVERY_S."""
        subscribers: dict[int, set[tuple[str, int]]] = {}
        for reply, _ in self.nodes.values():
            for universe in reply.output_universes():
                subscribers.setdefault(universe, set()).add((reply.ip, PORT))
        self._subscribers = {u: sorted(addresses) for u, addresses in subscribers.items()}
        if self._report_due is None:
            loop = asyncio.get_running_loop()
            self._report_due = loop.call_at(max(loop.time(), self._reported_at + REPORT_EVERY_S), self._report_nodes)

    def _report_nodes(self) -> None:
        self._report_due = None
        self._reported_at = asyncio.get_running_loop().time()
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
            doc |= {"polls_sent": self.polls, "nodes": self._node_documents(),
                    "replies_off_network": self.off_network, "replies_over_max_nodes": self.over_max_nodes}
        return doc


def _more(held: int, what: str) -> str:
    return f" ({held} more {what} not logged)" if held else ""
