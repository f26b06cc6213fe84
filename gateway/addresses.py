"""Network addresses as the configuration gives them: `host:port` listeners and loopback hosts."""

from __future__ import annotations

import ipaddress


def parse_listen(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:port`); raise ValueError with what is allowed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (allowed: e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080)")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
