"""Free ports on the loopback address, for the daemons and peers that the tests and the benchmarks start."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
PORTS_FROM = 10_000  # free ports are taken from here up to the kernel's ephemeral range
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port free on the loopback address right now, never the same twice in a process, and below the
    kernel's ephemeral range: a client retrying a port nobody listens on yet (a daemon waiting for its broker)
    can be given that very port as its own and connect to itself, and the broker then cannot bind it."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768  # Linux's default
    while True:
        port = random.randrange(PORTS_FROM, max(ephemeral, PORTS_FROM + 10_000))
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def free_udp_port(tcp_too: bool = False) -> int:
    """A UDP port free on loopback now (and TCP too when asked: the OSC driver listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((LOOPBACK, 0))
            port: int = u.getsockname()[1]
            if not tcp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port on loopback")
