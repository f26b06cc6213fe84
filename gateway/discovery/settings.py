"""The `[discovery]` section: whether the box announces itself on the network over mDNS/DNS-SD, on which interfaces,
and under which name."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.schema import Problem, setting

# A Linux interface name (IFNAMSIZ: 15 bytes): no slash, colon, space or control character.
_INTERFACE = re.compile(r"[A-Za-z0-9_.@+-]{1,15}", re.ASCII)
MAX_NAME_BYTES = 63  # a DNS label: the service instance's name is one


def check_name(value: str) -> str | None:
    """For `setting(check=...)`: a DNS-SD instance name, as people read it in a browser of services."""
    size = len(value.encode("utf-8"))
    if not value.strip() or size > MAX_NAME_BYTES or "." in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return (f"{value!r} is not a service name (allowed: 1-{MAX_NAME_BYTES} bytes of UTF-8 text, without '.' or "
                "control characters)")
    return None


@dataclass(frozen=True)
class DiscoverySection:
    # false: nothing is announced. A box whose API listens on loopback only is never announced.
    enabled: bool = True
    # The network interfaces announced on, by name (eth0, wlan0); none: every interface with an IPv4 address but
    # loopback. An interface named here that the box lacks is waited for, the rest of the box running on.
    interfaces: list[str] = setting(factory=list)
    # The service's name on the network; default "<venue> <id>" (e.g. "demo-hall demo-01").
    name: str | None = setting(None, check=check_name)

    def problems(self) -> list[Problem]:
        out = []
        for i, interface in enumerate(self.interfaces):
            if not _INTERFACE.fullmatch(interface) or interface in (".", ".."):
                out.append(Problem(f"interfaces[{i}]", f"{interface!r} is not a network interface's name (allowed: "
                                                       "1-15 of A-Z a-z 0-9 _ . @ + -, e.g. eth0)"))
            elif interface in self.interfaces[:i]:
                out.append(Problem(f"interfaces[{i}]", f"{interface!r} is named twice (allowed: each interface "
                                                       "once)"))
        return out
