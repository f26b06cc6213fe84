"""The `sacn` driver: sACN (ANSI E1.31-2018) output of the box's DMX universes, sent on change (or per clock tick).
(The module is named for the standard so as not to shadow the `sacn` package.)

E1.31 allows a source to suppress non-changing data (6.6.2: three packets of the new levels, then a keep-alive
every 800 to 1000 ms) and caps a universe at DMX's own refresh rate unless the receiver takes more (6.6.1), so
`on-change` at 44 Hz at most is the default: a change goes out at once, its two repeats at the rate's interval.

Packets are built by the `sacn` package's E1.31 codec (its own sender runs a thread per socket, so only its
packet classes are used); the transport, scheduling and the stream-terminated goodbye are ours. Multicast to
239.255.hi.lo or unicast; a stable CID per box and driver; universe synchronisation when `sync_universe` is set.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from sacn.messages.data_packet import DataPacket
from sacn.messages.sync_packet import SyncPacket

from drivers.dmx.output import DmxOutput, Mode
from gateway.driver import DriverContext, NotReady, Problem, setting

PORT = 5568
TERMINATION_COPIES = 3  # E1.31 6.2.6: three packets with Stream_Terminated set end a stream


def multicast_group(universe: int) -> str:
    return f"239.255.{universe >> 8}.{universe & 0xFF}"


@dataclass(frozen=True)
class SacnOptions:
    universes: list[int] = field(default_factory=list)  # empty: every universe of [dmx]
    multicast: bool = True
    targets: list[str] = field(default_factory=list)  # unicast receivers' IPv4 addresses
    priority: int = setting(100, min=0, max=200)
    source_name: str = "venue-gateway"
    sync_universe: int = setting(0, min=0, max=63999)  # 0: no synchronisation
    mode: Mode = "on-change"  # or "frames": with the frame clock's ticks
    max_rate_hz: float = setting(44.0, min=1, max=1000)  # on change: packets a second per universe, at most
    keepalive_s: float = setting(1.0, min=0.1, max=1.0)  # E1.31 6.6.2 asks 0.8 to 1; receivers drop 2.5 s
    bind: str = "0.0.0.0"
    ttl: int = setting(8, min=1, max=255)

    def problems(self) -> list[Problem]:
        out = []
        for i, target in enumerate(self.targets):
            try:
                ipaddress.IPv4Address(target)
            except ValueError:
                out.append(Problem(f"targets[{i}]", f"{target!r} is not an IPv4 address"))
        if not self.multicast and not self.targets:
            out.append(Problem("targets", "with multicast = false, at least one unicast target is needed"))
        return out


class SacnOutput(DmxOutput[SacnOptions]):
    Options = SacnOptions
    COPIES = 3  # E1.31 6.6.2: non-changing data is sent three times before it is suppressed

    def __init__(self, ctx: DriverContext, options: SacnOptions) -> None:
        super().__init__(ctx, options)
        # Stable across restarts of this box and driver, different between boxes: receivers track sources by CID.
        self.cid = tuple(uuid.uuid5(uuid.NAMESPACE_DNS, f"{ctx.name}.{socket.gethostname()}.venue-gateway").bytes)
        self.syncs = 0
        self._sock: socket.socket | None = None
        self._sequence: dict[int, int] = {}
        self._sync_sequence = 0

    async def start(self) -> None:
        self.check_universes()
        outside = [u for u in self.universes if not 1 <= u <= 63999]
        if outside:
            raise ValueError(f"universe {outside[0]} cannot be sent over sACN (allowed: 1 to 63999)")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.options.bind, 0))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.options.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if self.options.bind != "0.0.0.0":
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.options.bind))
        except OSError as exc:
            sock.close()
            raise NotReady(f"cannot open sACN on {self.options.bind}: {exc.strerror or exc}") from None
        self._sock = sock

    async def stop(self) -> None:
        """Say goodbye: receivers drop this source at once instead of holding its last look for 2.5 s."""
        if self._sock is None:
            return
        try:
            for u in self.universes:
                for _ in range(TERMINATION_COPIES):
                    self._send_data(u, bytes(self.ctx.dmx.universes[u].levels), terminated=True)
        finally:
            self._sock.close()
            self._sock = None

    def _destinations(self, universe: int) -> list[str]:
        return ([multicast_group(universe)] if self.options.multicast else []) + list(self.options.targets)

    def _send(self, payload: bytes, destinations: list[str]) -> None:
        assert self._sock is not None
        for host in destinations:
            try:
                self._sock.sendto(payload, (host, PORT))
            except OSError:  # a full buffer drops this frame's copy; the next one follows
                continue
            self.sent += 1

    def _send_data(self, universe: int, levels: bytes, terminated: bool = False) -> None:
        sequence = self._sequence[universe] = (self._sequence.get(universe, -1) + 1) % 256
        packet = DataPacket(self.cid, self.options.source_name, universe, tuple(levels), self.options.priority,
                            sequence, streamTerminated=terminated, sync_universe=self.options.sync_universe)
        self._send(bytes(packet.getBytes()), self._destinations(universe))

    def send(self, universe: int, levels: bytes) -> bool:
        if self._sock is None:
            return False
        self._send_data(universe, levels)
        return True

    def frame_sent(self) -> None:
        if self.options.sync_universe and self._sock is not None:
            self._sync_sequence = (self._sync_sequence + 1) % 256
            packet = SyncPacket(self.cid, self.options.sync_universe, self._sync_sequence)
            self._send(bytes(packet.getBytes()), self._destinations(self.options.sync_universe))
            self.syncs += 1

    def health(self) -> dict[str, Any]:
        return {"universes": self.universes, "packets_sent": self.sent, "syncs_sent": self.syncs,
                "cid": str(uuid.UUID(bytes=bytes(self.cid)))}
