"""The `artnet` driver: Art-Net 4 output of the box's DMX universes, one frame per tick of the frame clock.

ArtDmx goes unicast to the configured targets and to the nodes that ArtPoll discovery found subscribing to
each universe; broadcast only where the configuration asks for it. Unchanged universes are sent again about
once a second (keep-alive), never faster than the frame rate; ArtSync follows each frame when asked for.
The gateway's universe N is Art-Net Port-Address N (universe 1 is 0:0:1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from drivers.dmx.artnet_codec import PORT, ArtDmx, ArtNetError, ArtPoll, ArtPollReply, ArtSync, decode
from gateway.driver import Driver, DriverContext, NotReady
from gateway.schema import Problem, setting

NODE_TIMEOUT_S = 10.0  # a node that stopped answering polls gets no more unicast


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    ipaddress.IPv4Address(host)
    return host, int(port) if port else PORT


@dataclass(frozen=True)
class ArtNetOptions:
    universes: list[int] = field(default_factory=list)  # empty: every universe of [dmx]
    targets: list[str] = field(default_factory=list)  # "ip" or "ip:port", each takes every universe
    broadcast: str | None = None  # e.g. "2.255.255.255": only when set
    bind: str = "0.0.0.0"
    discovery: bool = False  # ArtPoll every poll_interval_s; needs UDP port 6454 on `bind`
    poll_interval_s: float = setting(3.0, min=1, max=60)
    sync: bool = False  # ArtSync after every frame, so nodes change all their universes together
    keepalive_s: float = setting(1.0, min=0.1, max=4)

    def problems(self) -> list[Problem]:
        out = []
        for i, target in enumerate(self.targets):
            try:
                _address(target)
            except ValueError:
                out.append(Problem(f"targets[{i}]", f"{target!r} is not an IPv4 address (allowed: ip or ip:port)"))
        for key in ("broadcast", "bind"):
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


@dataclass
class _Node:
    reply: ArtPollReply
    seen: float
    universes: set[int] = field(default_factory=set)


class ArtNetOutput(Driver[ArtNetOptions]):
    Options = ArtNetOptions

    def __init__(self, ctx: DriverContext, options: ArtNetOptions) -> None:
        super().__init__(ctx, options)
        self.universes = options.universes or list(ctx.dmx.universes)
        self.targets = [_address(t) for t in options.targets]
        self.nodes: dict[str, _Node] = {}
        self.sent = self.syncs = self.malformed = self.send_errors = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._last: dict[int, tuple[int, float]] = {}  # universe -> (changes sent, when)
        self._sequence: dict[int, int] = {}
        self._undo_frames: Any = None

    async def start(self) -> None:
        for u in self.universes:
            self.ctx.dmx.get(u)  # a universe missing from [dmx] is a configuration error, said plainly
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Socket(self), local_addr=(self.options.bind, PORT if self.options.discovery else 0),
                allow_broadcast=self.options.broadcast is not None or self.options.discovery)
        except OSError as exc:
            raise NotReady(f"cannot open Art-Net on {self.options.bind}: {exc.strerror or exc}") from None

    def attach(self) -> None:
        super().attach()
        self._undo_frames = self.ctx.frames.subscribe(self.frame)

    def detach(self) -> None:
        if self._undo_frames is not None:
            self._undo_frames()
        super().detach()

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def run(self) -> None:
        if not self.options.discovery:
            await asyncio.Future()
        poll = ArtPoll().encode()
        broadcast = self.options.broadcast or "255.255.255.255"
        while True:
            assert self._transport is not None
            self._transport.sendto(poll, (broadcast, PORT))
            now = time.monotonic()
            for ip in [ip for ip, node in self.nodes.items() if now - node.seen > NODE_TIMEOUT_S]:
                del self.nodes[ip]
                self.ctx.log.info("Art-Net node %s stopped answering", ip)
            await asyncio.sleep(self.options.poll_interval_s)

    def received(self, data: bytes, ip: str) -> None:
        try:
            packet = decode(data)
        except ArtNetError:
            self.malformed += 1
            return
        if isinstance(packet, ArtPollReply):
            ports = packet.output_universes() & set(self.universes)
            if ip not in self.nodes:
                self.ctx.log.info("Art-Net node %s (%s) takes universes %s", ip, packet.short_name,
                                  sorted(ports) or "none of ours")
            self.nodes[ip] = _Node(packet, time.monotonic(), ports)

    def _destinations(self, universe: int) -> list[tuple[str, int]]:
        out = list(self.targets)
        out += [(ip, PORT) for ip, node in self.nodes.items() if universe in node.universes]
        if self.options.broadcast:
            out.append((self.options.broadcast, PORT))
        return out

    def frame(self, number: int) -> None:
        """Send what changed since the last frame, and keep-alives; then ArtSync if asked for."""
        transport = self._transport
        if transport is None:
            return
        now = time.monotonic()
        synced: set[tuple[str, int]] = set()
        for u in self.universes:
            universe = self.ctx.dmx.universes[u]
            changes, sent_at = self._last.get(u, (-1, 0.0))
            if changes == universe.changes and now - sent_at < self.options.keepalive_s:
                continue
            sequence = self._sequence[u] = self._sequence.get(u, 0) % 255 + 1
            payload = ArtDmx(u, bytes(universe.levels), sequence).encode()
            for destination in self._destinations(u):
                transport.sendto(payload, destination)
                synced.add(destination)
                self.sent += 1
            self._last[u] = (universe.changes, now)
        if self.options.sync and synced:
            sync = ArtSync().encode()
            for destination in synced:
                transport.sendto(sync, destination)
            self.syncs += 1

    def health(self) -> dict[str, Any]:
        return {"universes": self.universes, "packets_sent": self.sent, "syncs_sent": self.syncs,
                "nodes": {ip: sorted(n.universes) for ip, n in self.nodes.items()},
                "malformed_received": self.malformed, "send_errors": self.send_errors}
