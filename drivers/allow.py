"""A network input's allow list: which source addresses are obeyed (the OSC driver, the console inputs). UDP's source
address is not authenticated, so the list keeps out mistakes and strangers, not an attacker on the lighting network.
Each source's answer is remembered, in a bounded table (a flood of spoofed sources cannot grow it for ever)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.driver import Problem

REMEMBERED = 4096  # source addresses whose answer is kept


def problems(networks: Iterable[str], key: str = "allow") -> list[Problem]:
    """Each entry that is not a network or an address, by its key."""
    out = []
    for i, net in enumerate(networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            out.append(Problem(f"{key}[{i}]", f"{net!r} is not a network (allowed: e.g. 10.0.0.0/8, 192.168.1.20)"))
    return out


class AllowList:
    __slots__ = ("_answers", "_networks")

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._answers: dict[str, bool] = {}

    def allows(self, source: str) -> bool:
        """Whether `source` (an address as a socket gives it; an IPv4 address seen through an IPv6 socket too) is on
        the list."""
        allowed = self._answers.get(source)
        if allowed is None:
            try:
                address = ipaddress.ip_address(source.partition("%")[0])
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped
                allowed = any(address in net for net in self._networks)
            except ValueError:
                allowed = False
            if len(self._answers) < REMEMBERED:
                self._answers[source] = allowed
        return allowed
