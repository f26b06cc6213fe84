"""Finding boxes on the network: browse for `_venue-gateway._tcp` and `_osc._udp` over mDNS for a while, resolve
each instance, and join a box's OSC input to it by the gateway id and venue both announce."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from gateway.discovery.records import GATEWAY_TYPE, OSC_UDP_TYPE

RESOLVE_MS = 1500  # for one instance's records, once its name is seen


@dataclass
class Box:
    """A gateway as it announces itself."""

    name: str
    addresses: list[str]
    port: int
    gateway_id: str
    venue: str
    version: str
    scheme: str
    path: str
    fingerprint: str | None
    host: str
    osc_port: int | None = None
    txt: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The API's URL, on the first address (the one `status --url` takes)."""
        address = self.addresses[0] if self.addresses else self.host.rstrip(".")
        return f"{self.scheme}://{address}:{self.port}"

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "addresses": self.addresses, "port": self.port, "gateway_id": self.gateway_id,
                "venue": self.venue, "version": self.version, "scheme": self.scheme, "path": self.path,
                "fingerprint": self.fingerprint, "osc_port": self.osc_port, "host": self.host, "url": self.url,
                "txt": self.txt}


def _text(properties: dict[bytes, bytes | None]) -> dict[str, str]:
    """TXT records as text; a key without a value is empty, bytes that are not UTF-8 are replaced."""
    return {k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace") for k, v in properties.items()}


def _sorted_addresses(addresses: list[str]) -> list[str]:
    return sorted(set(addresses), key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


async def browse(listen_s: float) -> list[Box]:
    """Every box that answers within `listen_s` seconds, sorted by venue, gateway id and name. OSError when mDNS
    cannot run here (no interface with multicast)."""
    from zeroconf import IPVersion, ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    seen: dict[tuple[str, str], None] = {}
    resolved: dict[tuple[str, str], AsyncServiceInfo] = {}
    pending: set[asyncio.Task[None]] = set()
    azc = AsyncZeroconf(ip_version=IPVersion.V4Only)

    async def resolve(service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if await info.async_request(azc.zeroconf, RESOLVE_MS):
            resolved[(service_type, name)] = info

    def changed(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        key = (service_type, name)
        if state_change is ServiceStateChange.Removed:
            seen.pop(key, None)
            resolved.pop(key, None)
        elif key not in seen:
            seen[key] = None
            task = asyncio.get_running_loop().create_task(resolve(service_type, name))
            pending.add(task)
            task.add_done_callback(pending.discard)

    # python-zeroconf's schedule of questions: the first asks for unicast answers (QU), which a responder sends at
    # once even for a record it has just multicast; the later ones (after 1 s, then 2, 4...) for multicast answers
    # (QM), which reach this host's every mDNS socket, so an answer that another stack here took (a desktop's Avahi
    # on port 5353) comes again.
    browser = AsyncServiceBrowser(azc.zeroconf, [GATEWAY_TYPE, OSC_UDP_TYPE], handlers=[changed])
    try:
        await asyncio.sleep(listen_s)
        if pending:  # those seen late get their resolution's time
            await asyncio.wait(list(pending), timeout=RESOLVE_MS / 1000)
    finally:
        for task in pending:
            task.cancel()
        await browser.async_cancel()
        await azc.async_close()
    return _boxes(resolved)


def _boxes(resolved: dict[tuple[str, str], Any]) -> list[Box]:
    boxes: dict[tuple[str, str], Box] = {}
    osc: dict[tuple[str, str], int] = {}
    for (service_type, name), info in resolved.items():
        txt = _text(info.properties)
        key = (txt.get("venue", ""), txt.get("id", ""))
        if service_type == OSC_UDP_TYPE:
            if info.port is not None and key != ("", ""):
                osc.setdefault(key, info.port)
            continue
        boxes[(key[0], key[1] + "\0" + name)] = Box(
            name=name.removesuffix("." + service_type), addresses=_sorted_addresses(info.parsed_addresses()),
            port=info.port or 0, gateway_id=txt.get("id", ""), venue=txt.get("venue", ""),
            version=txt.get("version", ""), scheme=txt.get("scheme", "https"), path=txt.get("path", ""),
            fingerprint=txt.get("fingerprint") or None, host=info.server or "", txt=txt)
    for box in boxes.values():
        box.osc_port = osc.get((box.venue, box.gateway_id))
    return [boxes[k] for k in sorted(boxes)]
