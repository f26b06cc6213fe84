"""The console-in drivers' options: what both take (where they listen, who may send, how fast, which universes,
DMX thru), and each protocol's own."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from drivers import allow
from gateway.driver import Problem, setting

SACN_PORT = 5568
ARTNET_PORT = 6454


@dataclass(frozen=True)
class ConsoleOptions:
    bind: str = "0.0.0.0"  # the address the socket is bound to (0.0.0.0: every interface)
    allow: list[str] = field(default_factory=lambda: ["127.0.0.0/8"])  # networks whose packets are taken
    rate_limit_pps: float = setting(2000.0, min=1, max=100000)  # packets a second from one source address
    # The universes listened to; empty: the patch's universes and thru's inputs.
    listen_universes: list[int] = field(default_factory=list)
    # DMX thru: input universe ("1") -> output universe of [dmx], set to the merged levels.
    thru: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[Problem]:
        out = []
        try:
            ipaddress.IPv4Address(self.bind)
        except ValueError:
            out.append(Problem("bind", f"{self.bind!r} is not an IPv4 address (allowed: e.g. 0.0.0.0, 10.0.0.5)"))
        out.extend(allow.problems(self.allow))
        low, high = self.universe_range()
        for i, number in enumerate(self.listen_universes):
            if not low <= number <= high:
                out.append(Problem(f"listen_universes[{i}]", f"universe {number} is out of range (allowed: {low} to "
                                                             f"{high})"))
        for key, number in self.thru.items():
            if not key.isdigit() or not low <= int(key) <= high:
                out.append(Problem(f"thru.{key}", f"{key!r} is not an input universe (allowed: {low} to {high})"))
            elif self.listen_universes and int(key) not in self.listen_universes:
                out.append(Problem(f"thru.{key}", f"universe {key} is not listened to (allowed: one of "
                                                  f"listen_universes, or leave listen_universes empty)"))
            if not 0 <= number <= 65535:
                out.append(Problem(f"thru.{key}", f"output universe {number} is out of range (allowed: a universe "
                                                  "of dmx.universes)"))
        return out

    def universe_range(self) -> tuple[int, int]:
        return 1, 63999


@dataclass(frozen=True)
class SacnInOptions(ConsoleOptions):
    port: int = setting(SACN_PORT, min=1, max=65535)
    multicast: bool = True  # join each universe's group, 239.255.hi.lo; unicast is taken either way
    interface: str = "0.0.0.0"  # the address of the interface the groups are joined on (0.0.0.0: the kernel's)
    max_sources: int = setting(4, min=1, max=64)  # sources (CIDs) of one universe; one more is refused

    def problems(self) -> list[Problem]:
        out = super().problems()
        try:
            ipaddress.IPv4Address(self.interface)
        except ValueError:
            out.append(Problem("interface", f"{self.interface!r} is not an IPv4 address (allowed: the address of "
                                            "the lighting network's interface, or 0.0.0.0)"))
        return out


@dataclass(frozen=True)
class ArtNetInOptions(ConsoleOptions):
    port: int = setting(ARTNET_PORT, min=1, max=65535)
    merge: Literal["htp", "ltp"] = "htp"  # how two sources of a universe merge (Art-Net's default: HTP)
    poll_reply: bool = True  # answer ArtPoll with an ArtPollReply naming the universes listened to
    timecode_stream: int = setting(0, min=0, max=255)  # the ArtTimeCode stream taken (Art-Net 4: 0, the master)
    short_name: str = setting("venue-gateway", check=lambda v: None if len(v) <= 17 and v.isascii() else
                              f"{v!r} (allowed: up to 17 ASCII characters)")

    def universe_range(self) -> tuple[int, int]:
        return 0, 32767
