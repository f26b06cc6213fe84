"""The `artnet-in` driver: Art-Net 4 from lighting consoles. ArtDmx (the gateway's universe N is Port-Address N,
as for the `artnet` output), its merge, ArtSync, ArtTimeCode to the cue list, and an ArtPollReply to ArtPoll.

Art-Net 4's merge: a universe takes two sources (by IP address), merged HTP (the default) or LTP (`merge =
"ltp"`: each channel takes the level of the source that changed it last); a third is refused and counted; a source
silent for 10 s leaves the merge. The sequence number (1..255; 0 switches it off) drops packets out of order.
ArtSync, per sender: a sender that is a source of a universe and sent an ArtSync in the last 4 s has each of its
ArtDmx held until its next ArtSync, then applied together; an ArtSync from any other address is ignored (Art-Net
4: a node ignores an ArtSync from an address other than the one sending it ArtDmx), and a universe being merged
is not held (Art-Net 4 ignores ArtSync while merging). ArtTimeCode frames go to `ctx.show.cues.timecode` with the
time they were read.

The socket is bound to UDP 6454 with SO_REUSEADDR. On Linux, of two sockets bound to 0.0.0.0:6454 (this one and
the `artnet` output's discovery socket), broadcasts reach both but unicast reaches only the one bound last:
check-config refuses an `artnet-in` beside an `artnet` output with `discover` set.
"""

from __future__ import annotations

import socket
from typing import Any

from drivers.console.merge import Merge
from drivers.console.options import ARTNET_PORT, ArtNetInOptions
from drivers.console.receiver import ConsoleInput, Levels
from drivers.dmx.artnet_codec import (
    ID,
    OP_DMX,
    ArtDmx,
    ArtNetError,
    ArtPoll,
    ArtPollReply,
    ArtSync,
    ArtTimeCode,
    UnreadOpcode,
    decode,
)
from drivers.throttle import Throttle
from gateway.driver import DriverContext, Rate, Timecode

LOSS_S = 10.0  # Art-Net 4: a source not heard for 10 s leaves the merge
SYNC_MODE_S = 4.0  # Art-Net 4: with no ArtSync for 4 s a node goes back to applying ArtDmx at once
POLLS_ANSWERED, POLL_WINDOW_S = 10, 1.0  # ArtPolls answered a second (a reply outweighs its poll); the rest counted
RATES = (Rate.FILM, Rate.EBU, Rate.DF, Rate.SMPTE)  # ArtTimeCode's type 0..3
_DMX_HEADER = ID + OP_DMX.to_bytes(2, "little")  # an ArtDmx's first 10 bytes


class ArtNetInput(ConsoleInput[ArtNetInOptions]):
    Options = ArtNetInOptions
    PROTOCOL = "Art-Net"
    LOSS_S = LOSS_S

    def __init__(self, ctx: DriverContext, options: ArtNetInOptions) -> None:
        super().__init__(ctx, options)
        self._synced_until: dict[str, float] = {}  # sender -> in synchronous mode until then (sources only)
        self._held: dict[tuple[int, str], Levels] = {}  # (universe, sender in synchronous mode) -> take's arguments
        self.timecode: ArtTimeCode | None = None
        self._answered = Throttle(POLLS_ANSWERED, POLL_WINDOW_S)

    @property
    def port(self) -> int:
        return self.options.port

    def merge_rule(self) -> Merge:
        return self.options.merge

    async def stop(self) -> None:
        self._held.clear()
        self._synced_until.clear()
        await super().stop()

    def universe_of(self, data: bytes) -> int | None:
        if len(data) >= 18 and data[:10] == _DMX_HEADER:
            return (data[15] & 0x7F) << 8 | data[14]
        return None

    def datagram(self, data: bytes, ip: str, arrival: float) -> None:
        try:
            packet = decode(data)
        except UnreadOpcode:
            self.counts["ignored"] += 1  # other Art-Net traffic (ArtAddress, ArtTodData, ...)
            return
        except ArtNetError as exc:
            self.refuse("malformed", f"Art-Net: malformed packet of {len(data)} bytes from {ip}: {exc}")
            return
        if isinstance(packet, ArtDmx):
            self._dmx(packet, ip, arrival)
        elif isinstance(packet, ArtSync):
            self._sync(ip, arrival)
        elif isinstance(packet, ArtTimeCode):
            if packet.stream != self.options.timecode_stream:  # another show's clock: two would look like jumps
                self.counts["other_timecode_stream"] += 1
                return
            self.counts["timecodes"] += 1
            self.timecode = packet
            self.ctx.show.cues.timecode(Timecode(packet.hours, packet.minutes, packet.seconds, packet.frames,
                                                 RATES[packet.kind]), arrival)
        elif isinstance(packet, ArtPoll) and self.options.poll_reply:
            if self._answered(arrival) is None:  # a reply is many times the poll: not a reflector for a flood
                self.counts["polls_unanswered"] += 1
                return
            self._reply(ip)
        else:
            self.counts["ignored"] += 1  # ArtPollReply from other nodes, ArtPoll with replies off

    def _dmx(self, packet: ArtDmx, ip: str, arrival: float) -> None:
        universe = packet.port_address
        if universe not in self.listened:
            self.counts["other_universe"] += 1
            return
        sequence = packet.sequence or None
        if sequence is not None and not self.check_sequence(universe, ip, sequence):
            return
        take: Levels = (universe, ip, ip, ip, 0, packet.data, sequence)
        sources = self.universes.get(universe)
        merging = sources is not None and len(sources.sources) > 1
        if arrival < self._synced_until.get(ip, float("-inf")) and not merging:
            self.counts["held"] += 1
            known = self.source(universe, ip)
            if known is not None:
                known.heard, known.sequence = arrival, sequence
            self._held[(universe, ip)] = take
            return
        self.take(*take, arrival)

    def _sync(self, ip: str, arrival: float) -> None:
        if not self._is_source(ip):
            self.counts["syncs_ignored"] += 1  # not from a sender of ArtDmx here
            return
        self.counts["syncs"] += 1
        self._synced_until[ip] = arrival + SYNC_MODE_S
        self._release(ip, arrival)  # an ArtSync applies its own sender's ArtDmx only

    def _release(self, ip: str, now: float) -> None:
        for key in [k for k in self._held if k[1] == ip]:
            self.take(*self._held.pop(key), now)

    def tick(self, now: float) -> None:
        super().tick(now)
        for ip in [ip for ip, until in self._synced_until.items() if now >= until or not self._is_source(ip)]:
            del self._synced_until[ip]  # no ArtSync from it for 4 s, or its sources gone: what was held is applied,
            self._release(ip, now)  # and its ArtDmx at once

    def _is_source(self, ip: str) -> bool:
        """Whether `ip` is a source of a universe (its held ArtDmx keep it one): only those are in synchronous
        mode, so that mode and what is held for it stay within the sources of the universes listened to."""
        return any(ip in universe.sources for universe in self.universes.values())

    def _reply(self, ip: str) -> None:
        """ArtPollReply, one per Net and Sub-Net of the universes listened to (four a reply, by bind index), sent to
        the poller on Art-Net's port, so that a console sends those universes here."""
        self.counts["polls"] += 1
        own = self.options.bind if self.options.bind != "0.0.0.0" else _address_towards(ip)
        groups: dict[int, list[int]] = {}
        for universe in sorted(self.listened):
            groups.setdefault(universe >> 4, []).append(universe & 0x0F)
        bind_index = 0
        for high, lows in groups.items():
            for i in range(0, len(lows), 4):
                bind_index += 1
                ports = lows[i:i + 4]
                reply = ArtPollReply(ip=own, net=high >> 4, sub_net=high & 0x0F, short_name=self.options.short_name,
                                     long_name=f"venue-gateway {self.ctx.name}: Art-Net in",
                                     port_types=tuple(0x80 for _ in ports), sw_out=tuple(ports),
                                     bind_index=bind_index)
                self.sendto(reply.encode(), (ip, self.port))  # Art-Net's port, where a console hears replies

    def health(self) -> dict[str, Any]:
        doc = super().health()
        if self.timecode is not None:
            tc = self.timecode
            doc["timecode"] = f"{tc.hours:02}:{tc.minutes:02}:{tc.seconds:02}:{tc.frames:02} {RATES[tc.kind].value}"
        return doc


def _address_towards(ip: str) -> str:
    """This box's address on the route to `ip` (a connected UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((ip, ARTNET_PORT))
            return str(probe.getsockname()[0])
        except OSError:
            return "0.0.0.0"
