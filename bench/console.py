"""A lighting console for the benchmarks: universes streamed as sACN (E1.31) by the `sacn` package's sender, unicast
to the box, at a console's rate (44 Hz, DMX's own); each data packet is stamped (the monotonic clock, which every
process on the machine shares) just before it is handed to the kernel, with its universe and levels, so a
benchmark times a level change from its packet on the wire. It sends to a port of the benchmark's choosing (the
sender's own always sends to 5568, where other daemons on a shared machine may be sending too).

The sender sends a universe at its next pass (every 1/fps) when its levels changed, and once a second otherwise;
universe discovery is off (it is broadcast, which a loopback socket cannot send)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sacn import sACNsender
from sacn.messages.data_packet import DataPacket
from sacn.sending.sender_socket_udp import SenderSocketUDP

from peers.ports import LOOPBACK


@dataclass(frozen=True)
class Sent:
    """One data packet as it left: when (monotonic ns), its universe and its 512 levels."""

    at_ns: int
    universe: int
    levels: bytes


class _Relay:
    """The socket's listener, the sender's handler once the sender exists (the socket is made first)."""

    def __init__(self) -> None:
        self.handler: Any = None

    def on_periodic_callback(self, time: float) -> None:
        if self.handler is not None:
            self.handler.on_periodic_callback(time)


class _StampedSocket(SenderSocketUDP):  # type: ignore[misc]  # (sacn has no types)
    """The sender's own UDP socket, sending to `port`, each data packet stamped as it goes."""

    def __init__(self, listener: _Relay, bind_address: str, fps: int, port: int, console: Console) -> None:
        super().__init__(listener, bind_address, 0, fps)  # an ephemeral port: 5568 is the receivers'
        self.port = port
        self.console = console

    def send_packet(self, data: Iterable[int], destination: str) -> None:
        raw = bytes(data)  # (the sender gives a packet's bytes as a tuple of ints)
        at = time.monotonic_ns()
        self._socket.sendto(raw, (destination, self.port))
        self.console.stamped(at, raw)


class Console:
    """`universes` streamed to `destination`:`port` at `fps`; `record` says which universes' packets are kept."""

    def __init__(self, universes: Iterable[int], port: int, fps: int = 44, destination: str = LOOPBACK,
                 record: Iterable[int] = (), name: str = "venue-gateway bench console") -> None:
        relay = _Relay()
        self._socket = _StampedSocket(relay, LOOPBACK, fps, port, self)
        self.sender = sACNsender(source_name=name, fps=fps, universeDiscovery=False, socket=self._socket)
        relay.handler = self.sender._sender_handler  # the sender made its handler, the socket's real listener
        self.universes = list(universes)
        self.fps = fps
        self.record = set(record)
        self.sent: list[Sent] = []
        self.packets = 0
        self._lock = threading.Lock()
        for universe in self.universes:
            self.sender.activate_output(universe)
            output = self.sender[universe]
            assert output is not None
            output.multicast = False
            output.destination = destination

    def set(self, universe: int, levels: bytes) -> None:
        """The universe's levels from channel 1 (the rest 0), sent at the sender's next pass."""
        output = self.sender[universe]
        assert output is not None
        output.dmx_data = tuple(levels.ljust(512, b"\0"))

    def busy(self) -> Busy:
        """A thread changing every universe at the console's rate (a chase running on it), so each goes out in
        every pass: the console streams all its universes at `fps`. Stopped when the block ends."""
        return Busy(self)

    def stamped(self, at_ns: int, data: bytes) -> None:
        self.packets += 1
        if not self.record:
            return
        packet = DataPacket.make_data_packet(data)
        if packet.universe in self.record:
            with self._lock:
                self.sent.append(Sent(at_ns, packet.universe, bytes(packet.dmxData)))

    def __enter__(self) -> Console:
        self.sender.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sender.stop()


class Busy:
    """Every universe of a console changed once a frame, from a thread of its own, while the block runs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console chase", daemon=True)

    def _run(self) -> None:
        period = 1 / self.console.fps
        ramp = bytes(range(256)) * 4  # a frame's levels are a slice of it: cheap, and every channel changes
        began = time.monotonic()
        while not self._stop.is_set():
            self.frames += 1
            for i, universe in enumerate(self.console.universes):
                at = (self.frames * 3 + i * 31) % 256
                self.console.set(universe, ramp[at:at + 512])
            self._stop.wait(max(0.0, began + self.frames * period - time.monotonic()))

    def __enter__(self) -> Busy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
