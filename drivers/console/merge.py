"""The sources of one input universe and their merge (no I/O): E1.31's priorities with HTP among the sources at
the highest priority, and Art-Net's merge of two sources, HTP or LTP. Levels are always 512 bytes here (a source
sending fewer slots has the rest at 0)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CHANNELS = 512
SEQUENCE_WINDOW = 20  # E1.31 6.7.2: a packet up to 19 behind the last one (or equal to it) is out of order

Merge = Literal["priority", "htp", "ltp"]


def out_of_order(last: int | None, sequence: int) -> bool:
    """E1.31 6.7.2's rule (Art-Net's sequence is read the same way, 0 switching it off there): the packet is
    discarded when it is no newer than the last one, within a window of 20 (past that, a source that restarted)."""
    if last is None:
        return False
    behind = (last - sequence) % 256
    return behind < SEQUENCE_WINDOW


def padded(data: bytes) -> bytes:
    return data[:CHANNELS] + bytes(CHANNELS - min(len(data), CHANNELS))


@dataclass
class Source:
    """One sender of a universe: an sACN CID or an Art-Net sender's address."""

    key: str
    name: str  # sACN's source name, or the address
    address: str
    priority: int
    levels: bytes
    heard: float  # monotonic time of its last packet taken
    sequence: int | None = None
    packets: int = 0

    def document(self) -> dict[str, object]:
        return {"source": self.key, "name": self.name, "address": self.address, "priority": self.priority,
                "packets": self.packets}


@dataclass
class UniverseSources:
    """The sources of one universe and what they merge to. `take` a source's levels, `drop` one (terminated or
    silent); `merged()` is recomputed only when something it depends on changed."""

    merge: Merge
    sources: dict[str, Source] = field(default_factory=dict)
    levels: bytes | None = None  # the merged levels last given out; None before the first source
    _ltp: bytearray = field(default_factory=lambda: bytearray(CHANNELS))

    def take(self, source: Source, levels: bytes) -> None:
        """A source's new levels (already padded); a source not among `sources` joins."""
        if self.merge == "ltp":
            if source.key not in self.sources or len(self.sources) == 1:
                self._ltp[:] = levels  # the latest source (or the only one) holds every channel
            else:  # per channel: the channels this source changed take its level
                old = source.levels
                for i in range(CHANNELS):
                    if levels[i] != old[i]:
                        self._ltp[i] = levels[i]
        source.levels = levels
        self.sources[source.key] = source

    def drop(self, key: str) -> Source | None:
        gone = self.sources.pop(key, None)
        if gone is not None and self.merge == "ltp" and len(self.sources) == 1:
            self._ltp[:] = next(iter(self.sources.values())).levels  # the one left holds every channel again
        return gone

    def merged(self) -> bytes:
        """The universe's levels from its sources now (call with at least one source)."""
        sources = list(self.sources.values())
        if self.merge == "ltp":
            return bytes(self._ltp)
        if self.merge == "priority":
            top = max(s.priority for s in sources)
            sources = [s for s in sources if s.priority == top]
        if len(sources) == 1:
            return sources[0].levels
        return bytes(map(max, *(s.levels for s in sources)))

    def winners(self) -> list[str]:
        """The sources whose levels are in the merge (sACN: those at the highest priority)."""
        if not self.sources:
            return []
        if self.merge != "priority":
            return list(self.sources)
        top = max(s.priority for s in self.sources.values())
        return [k for k, s in self.sources.items() if s.priority == top]
