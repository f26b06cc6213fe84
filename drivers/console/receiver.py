"""What the console-in drivers share: a UDP socket read on the loop (a batch of datagrams a wake-up), the allow
list, level packets of universes not listened to counted and dropped, a rate limit per source address on the rest,
refusals counted by reason and logged at a bounded rate, the sources of each universe and their merge, the loss of
a source and of a universe, and where merged levels go: the show's patch (`ctx.show.patch.levels`, `.lost`), DMX
thru to the box's own universes, and the twin (`console:<driver>`).

A protocol's driver decodes its packets and calls `take` with a source's levels for a universe (or `drop` when a
source says goodbye); everything after that is here."""

from __future__ import annotations

import asyncio
import socket
import time
from abc import abstractmethod
from collections import Counter
from typing import Any, ClassVar, Generic, TypeVar

from drivers.allow import REMEMBERED, AllowList
from drivers.console.merge import Merge, Source, UniverseSources, out_of_order, padded
from drivers.console.options import ConsoleOptions
from drivers.throttle import Throttle
from gateway.driver import Driver, DriverContext, NotReady

READ_BATCH = 64
RECEIVE_BUFFER = 4 * 1024 * 1024  # a console's burst of universes while the loop is busy
REFUSED_LOG_S = 10.0  # refused packets: a line per reason at most this often, with the number not logged
CHECK_EVERY_S = 0.1  # how often silent sources are looked for
REPORT_EVERY_S = 1.0  # the twin hears of source changes at most this often

OptionsT = TypeVar("OptionsT", bound=ConsoleOptions)
# A source's levels for a universe, as `take` is given them: universe, key, name, address, priority, data, sequence.
Levels = tuple[int, str, str, str, int, bytes, int | None]


class _Bucket:
    """A token bucket: `rate` packets a second, bursts of up to a second's worth."""

    __slots__ = ("at", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.tokens, self.at = rate, now

    def take(self, rate: float, now: float) -> bool:
        self.tokens = min(rate, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ConsoleInput(Driver[OptionsT], Generic[OptionsT]):
    PROTOCOL: ClassVar[str]
    LOSS_S: ClassVar[float]  # a source silent this long has left its universe

    def __init__(self, ctx: DriverContext, options: OptionsT) -> None:
        super().__init__(ctx, options)
        self.counts: Counter[str] = Counter()
        self.universes: dict[int, UniverseSources] = {}
        self.listened: set[int] = set()
        self.thru = {int(k): v for k, v in options.thru.items()}
        self._allow = AllowList(options.allow)
        self._buckets: dict[str, _Bucket] = {}
        self._lines: dict[str, Throttle] = {}
        self._sock: socket.socket | None = None
        self._report_due: asyncio.TimerHandle | None = None
        self._reported_at = float("-inf")

    # -- the socket ------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def port(self) -> int: ...

    def open(self) -> socket.socket:
        """The bound, non-blocking socket (a protocol adds its own options: multicast groups)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((self.options.bind, self.port))
        except OSError:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        for out in self.thru.values():
            self.ctx.dmx.get(out)  # a thru universe missing from [dmx]: said plainly (KeyError)
        self.listened = set(self.options.listen_universes) or self.ctx.show.patch.universes() | set(self.thru)
        try:
            self._sock = self.open()
        except OSError as exc:
            raise NotReady(f"cannot listen for {self.PROTOCOL} on {self.options.bind}:{self.port}: "
                           f"{exc.strerror or exc}") from None
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)
        self.ctx.declare(self.asset, "console_input")
        self.ctx.log.info("%s in on %s:%d, universes %s", self.PROTOCOL, self.options.bind, self.port,
                          sorted(self.listened) or "none")

    async def stop(self) -> None:
        if self._report_due is not None:
            self._report_due.cancel()
            self._report_due = None
        for number in list(self.universes):  # an input stopped is the console lost: nothing of it fires later
            del self.universes[number]
            self.ctx.show.patch.lost(number)
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    async def run(self) -> None:
        while True:  # sources that fell silent leave their universes
            await asyncio.sleep(CHECK_EVERY_S)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        for number, universe in list(self.universes.items()):
            for key, source in list(universe.sources.items()):
                if now - source.heard >= self.LOSS_S:
                    self.counts["sources_lost"] += 1
                    self.log("source_lost", f"{self.PROTOCOL} universe {number}: source {source.name} "
                                            f"({source.address}) silent for {self.LOSS_S:g} s; dropped")
                    self.drop(number, key)

    def sendto(self, payload: bytes, address: tuple[str, int]) -> None:
        if self._sock is not None:
            try:
                self._sock.sendto(payload, address)
            except OSError:
                self.counts["send_errors"] += 1

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            for _ in range(READ_BATCH):
                try:
                    data, addr = sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                now = time.monotonic()
                ip = addr[0]
                if not self._allow.allows(ip):
                    self.refuse("not_allowed", f"{self.PROTOCOL} packet from {ip} refused: not on the allow list")
                    continue
                universe = self.universe_of(data)
                if universe is not None and universe not in self.listened:  # before the rate limit: a console
                    self.counts["received"] += 1  # sending more universes than listened to loses none of ours
                    self.counts["other_universe"] += 1
                    continue
                bucket = self._buckets.get(ip)
                if bucket is None:
                    if len(self._buckets) >= REMEMBERED:
                        self._buckets.clear()
                    bucket = self._buckets[ip] = _Bucket(self.options.rate_limit_pps, now)
                if not bucket.take(self.options.rate_limit_pps, now):
                    self.refuse("rate_limited", f"{self.PROTOCOL} packets from {ip} beyond "
                                                f"{self.options.rate_limit_pps:g} a second dropped")
                    continue
                self.counts["received"] += 1
                self.datagram(data, ip, now)
        finally:  # the DMX outputs send what the batch set (thru) now, before what the loop has queued behind it
            self.ctx.dmx.tell_now()

    @abstractmethod
    def universe_of(self, data: bytes) -> int | None:
        """The universe of a level packet, read cheaply from its fixed offset (not checked further); None for any
        other datagram."""

    @abstractmethod
    def datagram(self, data: bytes, ip: str, arrival: float) -> None:
        """One datagram from an allowed source, within its rate."""

    # -- refusals and lines ----------------------------------------------------------------------------
    def refuse(self, reason: str, text: str) -> None:
        """A packet dropped: counted under `reason`, and told in the log at most once per REFUSED_LOG_S a reason."""
        self.counts[reason] += 1
        self.log(reason, text)

    def log(self, kind: str, text: str) -> None:
        throttle = self._lines.get(kind) or self._lines.setdefault(kind, Throttle(1, REFUSED_LOG_S))
        held = throttle(time.monotonic())
        if held is not None:
            self.ctx.log.info("%s%s", text, f" ({held} more not logged)" if held else "")

    # -- sources and their merge -----------------------------------------------------------------------
    @abstractmethod
    def merge_rule(self) -> Merge: ...

    def max_sources(self) -> int:
        return 2

    def source(self, number: int, key: str) -> Source | None:
        universe = self.universes.get(number)
        return universe.sources.get(key) if universe is not None else None

    def check_sequence(self, number: int, key: str, sequence: int) -> bool:
        """False (counted) for a packet out of order from a known source."""
        known = self.source(number, key)
        if known is not None and out_of_order(known.sequence, sequence):
            self.refuse("out_of_order", f"{self.PROTOCOL} universe {number}: packet {sequence} from {known.name} "
                                        f"after {known.sequence}; dropped as out of order")
            return False
        return True

    def take(self, number: int, key: str, name: str, address: str, priority: int, data: bytes,
             sequence: int | None, arrival: float) -> None:
        """A source's levels for a universe (its sequence already checked): merged, and given out on a change."""
        universe = self.universes.get(number)
        if universe is None:
            universe = self.universes[number] = UniverseSources(self.merge_rule())
        known = universe.sources.get(key)
        if known is None:
            if len(universe.sources) >= self.max_sources():
                self.refuse("too_many_sources", f"{self.PROTOCOL} universe {number}: source {name} ({address}) "
                                                f"refused: {self.max_sources()} sources already")
                return
            known = Source(key, name, address, priority, padded(b""), arrival)
            self.log("source_new", f"{self.PROTOCOL} universe {number}: source {name} ({address}), priority "
                                   f"{priority}")
            self._sources_changed()
        elif known.priority != priority or known.name != name:
            self._sources_changed()
        known.name, known.address, known.priority, known.heard, known.sequence = name, address, priority, arrival, \
            sequence
        universe.take(known, padded(data))
        known.packets += 1
        self._give(number, universe)

    def drop(self, number: int, key: str) -> None:
        universe = self.universes.get(number)
        if universe is None or universe.drop(key) is None:
            return
        self._sources_changed()
        if universe.sources:
            self._give(number, universe)
            return
        del self.universes[number]
        self.counts["universes_lost"] += 1
        self.log("universe_lost", f"{self.PROTOCOL} universe {number}: every source gone")
        self.ctx.show.patch.lost(number)

    def _give(self, number: int, universe: UniverseSources) -> None:
        merged = universe.merged()
        if merged == universe.levels:
            return
        universe.levels = merged
        self.counts["changes"] += 1
        self.ctx.show.patch.levels(number, merged)
        out = self.thru.get(number)
        if out is not None:
            self.ctx.dmx.set_levels(out, merged)

    # -- health and the twin ---------------------------------------------------------------------------
    @property
    def asset(self) -> str:
        return f"console:{self.ctx.name}"

    def _sources_changed(self) -> None:
        if self._report_due is None:
            loop = asyncio.get_running_loop()
            self._report_due = loop.call_at(max(loop.time(), self._reported_at + REPORT_EVERY_S), self._report)

    def _report(self) -> None:
        self._report_due = None
        self._reported_at = asyncio.get_running_loop().time()
        self.ctx.report(self.asset, {"universes": self.documents()})

    def documents(self) -> dict[str, Any]:
        """Per universe listened to: its sources, those in the merge, and whether the console's signal is lost."""
        out: dict[str, Any] = {}
        for number in sorted(self.listened | set(self.universes)):
            universe = self.universes.get(number)
            if universe is None:
                out[str(number)] = {"sources": [], "merged": [], "lost": True}
                continue
            out[str(number)] = {"sources": [s.document() for s in universe.sources.values()],
                                "merged": universe.winners(), "lost": False}
        return out

    def health(self) -> dict[str, Any]:
        return {"listen": f"{self.options.bind}:{self.port}", "universes": self.documents(), **self.counts}
