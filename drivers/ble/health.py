"""Scanner health for the `ble` driver: the silence watchdog, recovering a stuck adapter (BlueZ over D-Bus, or a
Bumble transport reopened), and the BlueZ passive-scanning patterns with the fallback to active scanning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from bleak import BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.scanner import BaseBleakScanner

log = logging.getLogger(__name__)

RESTARTS_BEFORE_RECOVERY = 3  # restarts in a row without an advertisement, then the adapter is recovered
POWER_CYCLE_PAUSE_S = 1.0  # between Powered false and true: bluetoothd lets the controller settle
DBUS_TIMEOUT_S = 5.0

_MANUFACTURER = AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA
_SERVICE_DATA = AdvertisementDataType.SERVICE_DATA_UUID16
# Passive scanning in BlueZ hears only advertisements matching one of these (an AdvertisementMonitor). Beacons
# and tags are all here; phones only through the companies and services they commonly advertise, so passive
# mode may hear fewer phones than active: people_per_device calibrates for it.
PASSIVE_PATTERNS = [
    OrPattern(0, _MANUFACTURER, b"\x4c\x00"),  # Apple: iBeacon, and iPhones' continuity messages
    OrPattern(0, _MANUFACTURER, b"\x99\x04"),  # Ruuvi
    OrPattern(0, _MANUFACTURER, b"\x75\x00"),  # Samsung
    OrPattern(0, _MANUFACTURER, b"\x06\x00"),  # Microsoft (Swift Pair, Windows phones and laptops)
    OrPattern(0, _MANUFACTURER, b"\xe0\x00"),  # Google
    OrPattern(0, _SERVICE_DATA, b"\xaa\xfe"),  # Eddystone
    OrPattern(0, _SERVICE_DATA, b"\xd2\xfc"),  # BTHome
    OrPattern(0, _SERVICE_DATA, b"\x2c\xfe"),  # Google Fast Pair (Android phones, earbuds)
]


def backend_of(scanner: BleakScanner) -> BaseBleakScanner:
    """The platform backend behind a BleakScanner. bleak does not expose it; the driver needs it to bound the
    map of raw addresses the backend keeps (`seen_devices`) and to release a Bumble transport."""
    backend: BaseBleakScanner = scanner._backend
    return backend


@dataclass
class ScannerWatch:
    """One scanner's silence: when it last heard anything, and how many restarts in a row found nothing."""

    zone: str
    adapter: str
    started_at: float = 0.0
    heard_at: float = float("-inf")
    restarts_in_a_row: int = 0

    def silent_for(self, now: float) -> float:
        return now - max(self.started_at, self.heard_at)

    def verdict(self, now: float, silence_s: float) -> str:
        """"ok", "restart" the scanner, or "recover" the adapter (after too many restarts in a row)."""
        if self.silent_for(now) < silence_s:
            return "ok"
        return "recover" if self.restarts_in_a_row >= RESTARTS_BEFORE_RECOVERY else "restart"

    def document(self, now: float) -> dict[str, Any]:
        heard = None if self.heard_at == float("-inf") else round(now - self.heard_at, 1)
        return {"adapter": self.adapter, "last_heard_s": heard, "restarts_in_a_row": self.restarts_in_a_row}


async def recover_adapter(backend: str, adapter: str, scanner: BleakScanner) -> None:
    """Bring a stuck adapter back. BlueZ: power it off and on over D-Bus (what `bluetoothctl power off/on` does,
    allowed to the service user by bluetoothd's D-Bus policy). Bumble: let the transport go; the next start opens
    it again and resets the controller."""
    if backend == "bumble":
        close = getattr(backend_of(scanner), "close", None)
        if close is not None:
            await close()
        return
    await power_cycle_bluez(adapter)


async def power_cycle_bluez(adapter: str) -> None:
    """org.bluez.Adapter1.Powered false, then true, on /org/bluez/<adapter>. Untested here: no bluetoothd."""
    from dbus_fast import BusType, Message, MessageType, Variant  # bleak's own dependency on Linux
    from dbus_fast.aio import MessageBus

    bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM).connect(), DBUS_TIMEOUT_S)
    try:
        for powered in (False, True):
            reply = await asyncio.wait_for(bus.call(Message(
                destination="org.bluez", path=f"/org/bluez/{adapter}", interface="org.freedesktop.DBus.Properties",
                member="Set", signature="ssv", body=["org.bluez.Adapter1", "Powered", Variant("b", powered)])),
                DBUS_TIMEOUT_S)
            if reply is not None and reply.message_type == MessageType.ERROR:
                raise OSError(f"bluetoothd refused to power {adapter} {'on' if powered else 'off'}: "
                              f"{reply.error_name} {reply.body}")
            if not powered:
                await asyncio.sleep(POWER_CYCLE_PAUSE_S)
    finally:
        bus.disconnect()


async def stop_quietly(scanner: BleakScanner, timeout_s: float) -> None:
    """Stop a scanner whose adapter may be gone: an error here must not hide the reason we are stopping."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(scanner.stop(), timeout_s)
