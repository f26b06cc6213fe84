"""The `artnet` driver: Art-Net 4 output of the box's DMX universes, one frame per tick of the frame clock.

ArtDmx goes unicast to the configured targets; broadcast only where the configuration asks for it. Unchanged
universes are sent again about once a second (keep-alive), never faster than the frame rate; ArtSync follows
each frame when asked for. The gateway's universe N is Art-Net Port-Address N (universe 1 is 0:0:1).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from drivers.dmx.artnet_codec import PORT, ArtDmx, ArtNetError, ArtSync, decode
from drivers.dmx.output import DmxOutput
from gateway.driver import DriverContext, NotReady
from gateway.schema import Problem, setting


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
    bind: str = "0.0.0.0"
    sync: bool = False  # ArtSync after every frame, so nodes change all their universes together
    keepalive_s: float = setting(1.0, min=0.1, max=4)

    def problems(self) -> list[Problem]:
        out = []
        for i, target in enumerate(self.targets):
            try:
                _address(target)
            except ValueError:
                out.append(Problem(f"targets[{i}]", f"{target!r} is not an IPv4 address with an optional port "
                                                    "(allowed: ip or ip:port, port 1 to 65535)"))
        if not self.targets and self.broadcast is None:
            out.append(Problem("targets", "Art-Net needs somewhere to go (allowed: targets, or broadcast)"))
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


class ArtNetOutput(DmxOutput[ArtNetOptions]):
    Options = ArtNetOptions

    def __init__(self, ctx: DriverContext, options: ArtNetOptions) -> None:
        super().__init__(ctx, options)
        self.destinations = [_address(t) for t in options.targets]
        if options.broadcast:
            self.destinations.append((options.broadcast, PORT))
        self.syncs = self.malformed = self.send_errors = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._sequence: dict[int, int] = {}

    async def start(self) -> None:
        self.check_universes()
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Socket(self), local_addr=(self.options.bind, 0),
                allow_broadcast=self.options.broadcast is not None)
        except OSError as exc:
            raise NotReady(f"cannot open Art-Net on {self.options.bind}: {exc.strerror or exc}") from None

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def received(self, data: bytes, ip: str) -> None:
        """Whatever comes back to the sending port is only counted (malformed or not): nothing is expected."""
        try:
            decode(data)
        except ArtNetError:
            self.malformed += 1

    def send(self, universe: int, levels: bytes) -> bool:
        if self._transport is None:
            return False
        sequence = self._sequence[universe] = self._sequence.get(universe, 0) % 255 + 1
        payload = ArtDmx(universe, levels, sequence).encode()
        for destination in self.destinations:
            self._transport.sendto(payload, destination)
            self.sent += 1
        return True

    def frame_sent(self) -> None:
        """ArtSync after the frame, so nodes change all their universes together."""
        if self.options.sync and self._transport is not None:
            sync = ArtSync().encode()
            for destination in self.destinations:
                self._transport.sendto(sync, destination)
            self.syncs += 1

    def health(self) -> dict[str, Any]:
        return {"universes": self.universes, "packets_sent": self.sent, "syncs_sent": self.syncs,
                "malformed_received": self.malformed, "send_errors": self.send_errors}
