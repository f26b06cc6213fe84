"""The box announces itself on the venue network over mDNS/DNS-SD (python-zeroconf, on the gateway's loop): its API
as `_venue-gateway._tcp` with TXT records a client needs to talk to it safely (gateway id, venue, version, API path,
scheme and the certificate's SHA-256 fingerprint to pin), and each OSC input as `_osc._udp` (and `_osc._tcp` where
it takes SLIP over TCP), so that a console's OSC browser lists it.

The announcer is a unit like the others: a box with no multicast (no address yet, an interface missing) logs it and
is retried with backoff while everything else runs. What it announces follows what serves: every second it
compares what runs (the API, each OSC driver) and the interfaces' addresses with what it has announced, and
announces, updates or withdraws (a goodbye) what changed. A box whose API listens on loopback only is not announced.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ifaddr

from gateway import __version__
from gateway.addresses import is_loopback, parse_listen
from gateway.api.app import BASE, ApiService
from gateway.discovery.records import DOMAIN, GATEWAY_TYPE, OSC_TCP_TYPE, OSC_UDP_TYPE, TXT_VERSION
from gateway.supervisor import NotReady, Unit, UnitStatus

if TYPE_CHECKING:
    from zeroconf import ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

    from gateway.config import Config
    from gateway.daemon import Gateway

log = logging.getLogger(__name__)

# The drivers whose `listen` option is an OSC input (`tcp`: SLIP over TCP on the same port too), by their type.
OSC_DRIVER_TYPES = ("osc",)
RECHECK_S = 1.0  # how often what runs and the addresses are compared with what is announced
FIRST_RECHECK_S = 0.2  # while nothing is announced yet (the API starting beside the announcer): sooner
UNIT_NAME = "discovery"


@dataclass(frozen=True)
class Service:
    """One DNS-SD service as announced: its type, instance name, port, TXT records and addresses."""

    type: str
    name: str
    port: int
    txt: tuple[tuple[str, str], ...]
    addresses: tuple[str, ...]


def announcer(gw: Gateway) -> Callable[[], Unit] | None:
    """The announcer's factory for the supervisor, or None (said in the log) when the box is not to be announced."""
    config = gw.config
    if not config.discovery.enabled:
        log.info("discovery: off ([discovery] enabled = false): the box is not announced on the network")
        return None
    host, _ = parse_listen(config.api.listen)
    if is_loopback(host):
        log.info("discovery: the API listens on loopback only (%s): the box is not announced on the network",
                 config.api.listen)
        return None
    return lambda: Announcer(config, gw.supervisor.units)


def host_label(venue: str, gateway_id: str) -> str:
    """The box's mDNS host name (before `.local.`): the venue and the id, so that boxes on one network differ, in
    one DNS label of letters, digits and hyphens."""
    label = re.sub(r"[^a-z0-9-]", "-", f"{venue}-{gateway_id}".lower())[:63]
    return label.strip("-") or "venue-gateway"


def instance_name(config: Config) -> str:
    return config.discovery.name or f"{config.gateway.venue} {config.gateway.id}"


def interface_addresses(names: list[str]) -> dict[str, list[str]]:
    """IPv4 addresses by interface: those named, or every one but loopback when none is. NotReady names an
    interface the box lacks (a USB adapter not plugged in yet)."""
    found: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        ips = [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
        if ips:
            found.setdefault(adapter.name, []).extend(ips)
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise NotReady(f"no interface {', '.join(missing)} with an IPv4 address on this box (present: "
                           f"{', '.join(sorted(found)) or 'none'})")
        return {n: found[n] for n in names}
    return {n: ips for n, ips in found.items() if not all(ipaddress.ip_address(ip).is_loopback for ip in ips)}


def listened(host: str, addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses among `addresses` a listener on `host` answers on: all of them for a wildcard (or a name),
    the one it is bound to for an address of this box, none for loopback or an address not announced."""
    if is_loopback(host):
        return ()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return addresses
    if ip.is_unspecified:
        return addresses
    return tuple(a for a in addresses if a == str(ip))


def services(config: Config, units: Mapping[str, UnitStatus], addresses: tuple[str, ...]) -> list[Service]:
    """What the box offers now, on `addresses`: the API while it serves, and each running OSC input."""
    name, gateway = instance_name(config), config.gateway
    ids = (("txtvers", TXT_VERSION), ("id", gateway.id), ("venue", gateway.venue))
    out = []
    api = units.get("api")
    host, port = parse_listen(config.api.listen)
    on = listened(host, addresses)
    if api is not None and api.state == "running" and isinstance(api.unit, ApiService) and on:
        https = config.api.https()
        txt: tuple[tuple[str, str], ...] = (*ids, ("version", __version__), ("path", BASE),
                                            ("scheme", "https" if https else "http"))
        if https and api.unit.fingerprint is not None:
            txt = (*txt, ("fingerprint", api.unit.fingerprint))
        out.append(Service(GATEWAY_TYPE, name, port, txt, on))
    for driver in config.drivers:
        status = units.get(driver.name)
        listen = getattr(driver.options, "listen", None)
        if driver.type not in OSC_DRIVER_TYPES or status is None or status.state != "running" or \
                not isinstance(listen, str):
            continue
        host, port = parse_listen(listen)
        if not (on := listened(host, addresses)):
            continue
        # One OSC input per name on the network: a second one (a rare box) is told apart by its driver's name.
        label = name if not any(s.type == OSC_UDP_TYPE for s in out) else f"{name} {driver.name}"[:63]
        out.append(Service(OSC_UDP_TYPE, label, port, ids, on))
        if getattr(driver.options, "tcp", False):
            out.append(Service(OSC_TCP_TYPE, label, port, ids, on))
    return out


def _info(service: Service, server: str, name: str) -> ServiceInfo:
    from zeroconf import ServiceInfo

    return ServiceInfo(service.type, name, port=service.port,
                       properties=dict(service.txt), server=server, parsed_addresses=list(service.addresses))


def _short(service_type: str) -> str:
    return service_type.removesuffix("." + DOMAIN)


class Announcer(Unit):
    """The `discovery` service: announces what `services` says, on the interfaces' addresses, until stopped."""

    def __init__(self, config: Config, units: Mapping[str, UnitStatus]) -> None:
        self._config = config
        self._units = units
        self._server = f"{host_label(config.gateway.venue, config.gateway.id)}.{DOMAIN}"
        self._zc: AsyncZeroconf | None = None
        self._addresses: tuple[str, ...] = ()
        self._announced: dict[tuple[str, str], tuple[Service, ServiceInfo]] = {}
        self._repeats: set[asyncio.Future[Any]] = set()  # announcements' repeats still to go out

    def _current_addresses(self) -> tuple[str, ...]:
        by_interface = interface_addresses(self._config.discovery.interfaces)
        addresses = tuple(sorted({ip for ips in by_interface.values() for ip in ips}))
        if not addresses:
            raise NotReady("no network interface with an IPv4 address but loopback: nothing to announce on yet")
        return addresses

    async def start(self) -> None:
        await self._open(self._current_addresses())

    async def _open(self, addresses: tuple[str, ...]) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncZeroconf

        try:
            self._zc = AsyncZeroconf(interfaces=list(addresses), ip_version=IPVersion.V4Only)
        except OSError as exc:  # no multicast on these interfaces: retried with backoff
            raise NotReady(f"mDNS on {', '.join(addresses)}: {exc.strerror or exc}") from None
        self._addresses = addresses

    async def run(self) -> None:
        while True:
            await self._reconcile()
            await asyncio.sleep(RECHECK_S if self._announced else FIRST_RECHECK_S)

    async def _reconcile(self) -> None:
        addresses = self._current_addresses()
        if addresses != self._addresses:  # an address came or went (DHCP, a cable): announce anew on the new ones
            log.info("discovery: the addresses are now %s (were %s)", ", ".join(addresses),
                     ", ".join(self._addresses))
            await self._close()
            await self._open(addresses)
        assert self._zc is not None
        wanted = {(s.type, s.name): s for s in services(self._config, self._units, self._addresses)}
        for key in [k for k in self._announced if k not in wanted]:
            service, info = self._announced.pop(key)
            await (await self._zc.async_unregister_service(info))
            log.info("discovery: withdrew %r (%s)", service.name, _short(service.type))
        # Each new or changed service in turn would wait out the others' probing: together, they take one's time.
        await asyncio.gather(*(self._announce(s) for key, s in wanted.items()
                               if key not in self._announced or self._announced[key][0] != s))

    async def _announce(self, service: Service) -> None:
        """Announce a service, or its changed records under the name it was announced with (a renamed one too);
        back once probing is done and the first announcement is out, the repeats following on their own."""
        assert self._zc is not None
        key = (service.type, service.name)
        before = self._announced.get(key)
        if before is None:
            info = _info(service, self._server, f"{service.name}.{service.type}")
            # Another box with this name: DNS-SD's rule renames this one ("name (2)") rather than fail.
            repeats = await self._zc.async_register_service(info, allow_name_change=True)
        else:
            info = _info(service, self._server, before[1].name)
            repeats = await self._zc.async_update_service(info)
        task = asyncio.ensure_future(repeats)
        self._repeats.add(task)
        task.add_done_callback(self._repeated)
        self._announced[key] = (service, info)
        renamed = "" if info.name == f"{service.name}.{service.type}" else \
            f", renamed {info.name.removesuffix('.' + service.type)!r}: the name is another's on the network"
        log.info("discovery: %s %r (%s) on %s port %d%s", "updated" if before else "announced", service.name,
                 _short(service.type), ", ".join(service.addresses), service.port, renamed)

    def _repeated(self, task: asyncio.Future[Any]) -> None:
        self._repeats.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("discovery: an announcement's repeat was not sent: %s", exc)

    async def _close(self) -> None:
        """Withdraw everything (goodbye packets, so browsers drop the box at once) and close the sockets."""
        zc, self._zc = self._zc, None
        self._announced.clear()
        for task in self._repeats:
            task.cancel()
        if zc is not None:
            await zc.async_close()

    async def stop(self) -> None:
        await self._close()

    def health(self) -> dict[str, Any]:
        return {"addresses": list(self._addresses),
                "announced": sorted(f"{s.name} ({_short(s.type)})" for s, _ in self._announced.values())}
