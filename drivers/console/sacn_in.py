"""The `sacn-in` driver: sACN (ANSI E1.31-2018) from lighting consoles, multicast and unicast.

The `sacn` package decodes the data and synchronisation packets (`DataPacket.make_data_packet`,
`SyncPacket.make_sync_packet`); its receiver is not used: it reads on a thread of its own, keeps one source per
universe (the highest priority's last packet, no merge) and does not hold data for synchronisation. The socket,
the sources and their merge are ours (drivers.console.receiver, merge).

Per universe and per source (CID): the highest priority's sources win and several at that priority merge HTP
(the standard leaves the merge to the receiver: HTP is our choice, what consoles and nodes do); a packet out of
order (E1.31 6.7.2) is dropped; preview data is ignored; a stream-terminated packet drops its source at once and a
source silent for 2.5 s (E1.31's network data loss) is dropped; start codes other than 0 (per-address priority,
0xDD, among them) are ignored. Data naming a synchronisation address is held until that address's
synchronisation packet and then applied together; with no synchronisation packet for 2.5 s the data is applied
as it comes (E1.31 6.3.3.1), unless its Force_Synchronization bit asks to hold it.
"""

from __future__ import annotations

import socket
from typing import Any

from sacn.messages.data_packet import DataPacket
from sacn.messages.sync_packet import SyncPacket

from drivers.console.merge import Merge
from drivers.console.options import SacnInOptions
from drivers.console.receiver import ConsoleInput, Levels
from gateway.driver import DriverContext

LOSS_S = 2.5  # E1.31_NETWORK_DATA_LOSS_TIMEOUT
MAX_SYNC_GROUPS = 64  # synchronisation addresses whose multicast group is joined
ROOT_PREAMBLE = b"\x00\x10\x00\x00ASC-E1.17\x00\x00\x00"
VECTOR_ROOT_DATA = b"\x00\x00\x00\x04"
VECTOR_ROOT_EXTENDED = b"\x00\x00\x00\x08"
VECTOR_EXTENDED_SYNC = b"\x00\x00\x00\x01"
VECTOR_EXTENDED_DISCOVERY = b"\x00\x00\x00\x02"


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
        # synchronisation address -> (universe, CID) -> the data held for it (take's arguments)
        self._held: dict[int, dict[tuple[int, str], Levels]] = {}

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

    def datagram(self, data: bytes, ip: str, arrival: float) -> None:
        if len(data) < 44 or data[:16] != ROOT_PREAMBLE:
            self.refuse("malformed", f"sACN: {len(data)} bytes from {ip} are not an E1.31 packet")
            return
        vector = data[18:22]
        try:
            if vector == VECTOR_ROOT_DATA:
                self._data(DataPacket.make_data_packet(data), data, ip, arrival)
            elif vector == VECTOR_ROOT_EXTENDED and data[40:44] == VECTOR_EXTENDED_SYNC:
                self._sync(SyncPacket.make_sync_packet(data), arrival)
            elif vector == VECTOR_ROOT_EXTENDED and data[40:44] == VECTOR_EXTENDED_DISCOVERY:
                self.counts["discovery"] += 1  # universe discovery: nothing to take
            else:
                self.refuse("malformed", f"sACN: a packet of vector {vector.hex()} from {ip}; dropped")
        except (TypeError, ValueError) as exc:  # the codec's word for a packet it cannot read
            self.refuse("malformed", f"sACN: malformed packet from {ip}: {exc}")

    def _data(self, packet: DataPacket, data: bytes, ip: str, arrival: float) -> None:
        universe = packet.universe
        if universe not in self.listened:
            self.counts["other_universe"] += 1
            return
        cid = bytes(packet.cid).hex()
        if packet.option_StreamTerminated:  # E1.31 6.2.6: the source is gone now, and the rest ignored
            if self.source(universe, cid) is not None:
                self.counts["terminated"] += 1
                self.log("terminated", f"sACN universe {universe}: source {packet.sourceName} ({ip}) terminated")
                self.drop(universe, cid)
            return
        if packet.option_PreviewData:
            self.counts["preview"] += 1
            return
        count = int.from_bytes(data[123:125], "big")  # property values: the start code and the slots
        if not 1 <= count <= 513 or len(data) < 125 + count:
            self.refuse("malformed", f"sACN: {count} property values do not fit {len(data)} bytes from {ip}")
            return
        if packet.dmxStartCode != 0:
            self.counts["start_code"] += 1
            return
        if not self.check_sequence(universe, cid, packet.sequence):
            return
        take: Levels = (universe, cid, packet.sourceName or ip, ip, packet.priority, data[126:125 + count],
                        packet.sequence)
        sync = packet.syncAddr
        if sync:
            if self.options.multicast and sync not in self._joined and len(self._joined) < MAX_SYNC_GROUPS \
                    and self._sock is not None:
                self._join(self._sock, sync)
            seen = self._sync_seen.get(sync)
            if seen is not None and (arrival - seen < LOSS_S or packet.option_ForceSync):
                self.counts["held"] += 1
                known = self.source(universe, cid)
                if known is not None:  # heard: a source held for synchronisation is not silent
                    known.heard, known.sequence = arrival, packet.sequence
                held = self._held.setdefault(sync, {})
                held[(universe, cid)] = take
                return
            self._held.pop(sync, None)  # synchronisation lost: what was held for it is stale
        self.take(*take, arrival)

    def _sync(self, packet: SyncPacket, arrival: float) -> None:
        self.counts["syncs"] += 1
        if packet.syncAddr in self._sync_seen or len(self._sync_seen) < MAX_SYNC_GROUPS:
            self._sync_seen[packet.syncAddr] = arrival
        for take in self._held.pop(packet.syncAddr, {}).values():
            self.take(*take, arrival)

    def health(self) -> dict[str, Any]:
        return {**super().health(), "multicast_groups": sorted(multicast_group(u) for u in self._joined)}
