"""A small SNTP server (RFC 4330) for the image's boot test: qemu's user network hands the guest's NTP queries to
10.0.2.2 to this machine's loopback, and this answers them with this machine's clock, so that the box's real
chronyd synchronises and time-sync.target (which the gateway's unit waits for) is reached with no NTP server on the
internet."""

from __future__ import annotations

import socket
import struct
import threading
import time

NTP_EPOCH = 2_208_988_800  # seconds from 1900-01-01 (NTP's era 0) to 1970-01-01


def timestamp(t: float) -> bytes:
    return struct.pack("!II", int(t) + NTP_EPOCH, int((t % 1) * 2**32))


def answer(query: bytes, received: float) -> bytes | None:
    """The server's reply to a client's query (mode 3), or None for anything else."""
    if len(query) < 48 or query[0] & 0x07 != 3:
        return None
    version = (query[0] >> 3) & 0x07
    # Leap indicator 0, the client's version, mode 4 (server); stratum 1 with reference "LOCL", precision 2^-20.
    head = struct.pack("!BBbbII4s", (version << 3) | 4, 1, query[2], -20, 0, 1 << 8, b"LOCL")
    return head + timestamp(received) + query[40:48] + timestamp(received) + timestamp(time.time())


class SntpServer:
    """Answers on `address` (UDP) from a thread of its own until closed."""

    def __init__(self, address: tuple[str, int] = ("127.0.0.1", 123)) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.answered = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sntp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            reply = answer(query, time.time())
            if reply is not None:
                self.sock.sendto(reply, peer)
                self.answered += 1

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.sock.close()
