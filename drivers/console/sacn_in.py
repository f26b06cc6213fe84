"""The `sacn-in` driver: sACN (ANSI E1.31-2018) from lighting consoles, multicast and unicast.

The packets are read by `e131_codec` (ours: the `sacn` package's reader checks every slot in Python, 20 times the
cost); the `sacn` package's receiver is not used either: it reads on a thread of its own, keeps one source per
universe (the highest priority's last packet, no merge) and does not hold data for synchronisation. The socket,
the sources and their merge are ours (drivers.console.receiver, merge).

Per universe and per source (CID): the highest priority's sources win and several at that priority merge HTP
(the standard leaves the merge to the receiver: HTP is our choice, what consoles and nodes do); a packet out of
order (E1.31 6.7.2) is dropped; preview data is ignored; a stream-terminated packet drops its source at once and a
source silent for 2.5 s (E1.31's network data loss) is dropped; start codes other than 0 (per-address priority,
0xDD, among them) are ignored. Data naming a synchronisation address is held until that address's
synchronisation packet and then applied together; with no synchronisation packet for 2.5 s the data is applied
as it comes (E1.31 6.3.3.1), unless its Force_Synchronization bit asks to hold it. What is held is bounded: per
synchronisation address (64 at most) and universe listened to, the universe's known sources and new ones up to
max_sources.
"""

from __future__ import annotations

import socket
from typing import Any

from drivers.console import e131_codec
from drivers.console.e131_codec import Data, E131Error, Sync
from drivers.console.merge import Merge
from drivers.console.options import SacnInOptions
from drivers.console.receiver import ConsoleInput, Levels
from gateway.driver import DriverContext

LOSS_S = 2.5  # E1.31_NETWORK_DATA_LOSS_TIMEOUT
MAX_SYNC_GROUPS = 64  # synchronisation addresses whose multicast group is joined
_ROOT_DATA = e131_codec.VECTOR_ROOT_DATA.to_bytes(4, "big")


def multicast_group(universe: int) -> str:
    return f"239.255.{universe >> 8}.{universe & 0xFF}"


class SacnInput(ConsoleInput[SacnInOptions]):
    Options = SacnInOptions
    PROTOCOL = "sACN"
    LOSS_S = LOSS_S

    def __init__(self, ctx: DriverContext, options: SacnInOptions) -> None:
        super().__init__(ctx, options)
        self._joined: set[int] = set()  # universes and synchronisation addresses whose group is joined
        self._sync_seen: dict[int, float] = {}  # synchronisation address -> its last packet
        # synchronisation address -> universe -> CID -> the data held for it (take's arguments): addresses only
        # those whose synchronisation packets are seen, universes those listened to, CIDs up to max_sources
        self._held: dict[int, dict[int, dict[str, Levels]]] = {}

    @property
    def port(self) -> int:
        return self.options.port

    def merge_rule(self) -> Merge:
        return "priority"

    def max_sources(self) -> int:
        return self.options.max_sources

    def open(self) -> socket.socket:
        sock = super().open()
        if self.options.multicast:
            for universe in sorted(self.listened):
                self._join(sock, universe)
        return sock

    def _join(self, sock: socket.socket, universe: int) -> None:
        request = socket.inet_aton(multicast_group(universe)) + socket.inet_aton(self.options.interface)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, request)
        except OSError as exc:
            self.counts["join_errors"] += 1
            self.log("join_error", f"sACN: cannot join {multicast_group(universe)} on {self.options.interface}: "
                                   f"{exc.strerror or exc}")
            return
        self._joined.add(universe)

    async def stop(self) -> None:
        self._joined.clear()
        self._held.clear()
        await super().stop()

    def universe_of(self, data: bytes) -> int | None:
        if len(data) >= 126 and data[18:22] == _ROOT_DATA and data[:16] == e131_codec.ROOT_PREAMBLE:
            return int.from_bytes(data[113:115], "big")
        return None

    def datagram(self, data: bytes, ip: str, arrival: float) -> None:
        try:
            kind = e131_codec.kind(data)
            if kind == "data":
                self._data(e131_codec.data(data), ip, arrival)
            elif kind == "sync":
                self._sync(e131_codec.sync(data), arrival)
            elif kind == "discovery":
                self.counts["discovery"] += 1  # universe discovery: nothing to take
            else:
                self.refuse("malformed", f"sACN: a packet of vector {data[18:22].hex()} from {ip}; dropped")
        except E131Error as exc:
            self.refuse("malformed", f"sACN: malformed packet from {ip}: {exc}")

    def _data(self, packet: Data, ip: str, arrival: float) -> None:
        universe = packet.universe
        if universe not in self.listened:
            self.counts["other_universe"] += 1
            return
        cid = packet.cid.hex()
        if packet.terminated:  # E1.31 6.2.6: the source is gone now, and the rest ignored
            if self.source(universe, cid) is not None:
                self.counts["terminated"] += 1
                self.log("terminated", f"sACN universe {universe}: source {packet.source_name} ({ip}) terminated")
                self.drop(universe, cid)
            return
        if packet.preview:
            self.counts["preview"] += 1
            return
        if packet.start_code != 0:
            self.counts["start_code"] += 1
            return
        if not self.check_sequence(universe, cid, packet.sequence):
            return
        take: Levels = (universe, cid, packet.source_name or ip, ip, packet.priority, packet.slots, packet.sequence)
        sync = packet.sync_address
        if sync:
            if self.options.multicast and sync not in self._joined and len(self._joined) < MAX_SYNC_GROUPS \
                    and self._sock is not None:
                self._join(self._sock, sync)
            seen = self._sync_seen.get(sync)
            if seen is not None and (arrival - seen < LOSS_S or packet.force_sync):
                self._hold(sync, take, arrival)
                return
            self._held.pop(sync, None)  # synchronisation lost: what was held for it is stale
        self.take(*take, arrival)

    def _hold(self, sync: int, take: Levels, arrival: float) -> None:
        """Data held for its synchronisation address: a universe's known sources always, and new ones while the
        universe's sources and the new ones held for it stay within max_sources (the rest refused)."""
        universe, cid, name, ip = take[:4]
        known = self.source(universe, cid)
        held = self._held.setdefault(sync, {}).setdefault(universe, {})
        if known is None and cid not in held:
            sources = self.universes.get(universe)
            new = sum(1 for key in held if self.source(universe, key) is None)
            if (len(sources.sources) if sources is not None else 0) + new >= self.max_sources():
                self.refuse("too_many_sources", f"sACN universe {universe}: source {name} ({ip}) refused: "
                                                f"{self.max_sources()} sources already")
                return
        self.counts["held"] += 1
        if known is not None:  # heard: a source held for synchronisation is not silent
            known.heard, known.sequence = arrival, take[6]
        held[cid] = take

    def _sync(self, packet: Sync, arrival: float) -> None:
        self.counts["syncs"] += 1
        if packet.sync_address in self._sync_seen or len(self._sync_seen) < MAX_SYNC_GROUPS:
            self._sync_seen[packet.sync_address] = arrival
        for held in self._held.pop(packet.sync_address, {}).values():
            for take in held.values():
                self.take(*take, arrival)

    def health(self) -> dict[str, Any]:
        return {**super().health(), "multicast_groups": sorted(multicast_group(u) for u in self._joined)}
