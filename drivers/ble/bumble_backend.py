"""The `ble` driver's `backend = "bumble"`: a bleak scanner backend on a Bumble host, so the driver's bleak code runs
unchanged against any HCI controller Bumble can open: a UART/USB dongle taken from bluetoothd, or the virtual
air's on a pseudo-terminal. Bumble is an extra (`sim`): this module is imported only when the backend is chosen.

Use it as bleak's own backends are used: `BleakScanner(callback, scanning_mode=..., bluez={"adapter": SPEC},
backend=BumbleScanner)`, where SPEC is a Bumble transport ("serial:/dev/ttyACM0", "pty:/tmp/x", "usb:0").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import uuid
from typing import Any, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_16, normalize_uuid_32
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Device
from bumble.hci import Address, HCI_Event, HCI_Packet
from bumble.host import Host
from bumble.transport import open_transport
from bumble.transport.common import Transport

log = logging.getLogger(__name__)
_bumble_host_log = logging.getLogger("bumble.host")


def _modem_lines(record: logging.LogRecord) -> bool:
    """Bumble asserts DTR on every serial port it opens; a pseudo-terminal (the virtual air's controllers) has no
    modem lines and refuses with ENOTTY, which says nothing wrong. Other failures to assert DTR are still logged."""
    message = record.getMessage()
    return not (message.startswith("could not assert DTR") and "Inappropriate ioctl" in message)


logging.getLogger("bumble.transport.serial").addFilter(_modem_lines)

HOST_ADDRESS = "F0:F0:F0:00:00:01"  # a random static address: sent only in active scanning's SCAN_REQ
PRUNE_EVERY_S = 10.0  # Bumble's per-address accumulators pair an advertisement with its scan response, ms apart
CLOSE_TIMEOUT_S = 2.0
READ_BYTES = 128

AD = AdvertisingData
_UUID16_LISTS = (AD.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, AD.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS)
_UUID32_LISTS = (AD.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS, AD.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS)
_UUID128_LISTS = (AD.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, AD.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS)


def _uuid128(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw[::-1]))  # little-endian on the air


def advertisement_data(adv: Advertisement) -> AdvertisementData:
    """What bleak's BlueZ backend would have made of the same advertisement: every manufacturer and service-data
    entry, service-data keys as full 128-bit UUID strings, and the TX power level only when the advertiser sent one."""
    data = adv.data
    manufacturer: dict[int, bytes] = {}
    service: dict[str, bytes] = {}
    uuids: list[str] = []
    tx_power: int | None = None
    name: str | None = None
    for kind, raw in data.ad_structures:
        if kind == AD.MANUFACTURER_SPECIFIC_DATA and len(raw) >= 2:
            manufacturer[raw[0] | raw[1] << 8] = raw[2:]
        elif kind == AD.SERVICE_DATA_16_BIT_UUID and len(raw) >= 2:
            service[normalize_uuid_16(raw[0] | raw[1] << 8)] = raw[2:]
        elif kind == AD.SERVICE_DATA_32_BIT_UUID and len(raw) >= 4:
            service[normalize_uuid_32(struct.unpack_from("<I", raw)[0])] = raw[4:]
        elif kind == AD.SERVICE_DATA_128_BIT_UUID and len(raw) >= 16:
            service[_uuid128(raw[:16])] = raw[16:]
        elif kind in _UUID16_LISTS:
            uuids += [normalize_uuid_16(u) for (u,) in struct.iter_unpack("<H", raw[: len(raw) // 2 * 2])]
        elif kind in _UUID32_LISTS:
            uuids += [normalize_uuid_32(u) for (u,) in struct.iter_unpack("<I", raw[: len(raw) // 4 * 4])]
        elif kind in _UUID128_LISTS:
            uuids += [_uuid128(raw[i:i + 16]) for i in range(0, len(raw) - 15, 16)]
        elif kind == AD.TX_POWER_LEVEL and len(raw) == 1:
            tx_power = struct.unpack("b", raw)[0]
        elif kind in (AD.COMPLETE_LOCAL_NAME, AD.SHORTENED_LOCAL_NAME) and (name is None or
                                                                            kind == AD.COMPLETE_LOCAL_NAME):
            name = raw.decode("utf-8", "replace")
    return AdvertisementData(local_name=name, manufacturer_data=manufacturer, service_data=service,
                             service_uuids=list(dict.fromkeys(uuids)), tx_power=tx_power, rssi=adv.rssi,
                             platform_data=(adv,))


class _Host(Host):
    """Bumble's host formats every HCI packet into an f-string for a debug log line before the logger decides to
    drop it: half the CPU an advertisement costs (measured in bench/ble.py). Events skip that when debug logging
    is off and no snooper listens; everything else goes Bumble's own way."""

    def on_hci_packet(self, packet: HCI_Packet) -> None:
        if isinstance(packet, HCI_Event) and self.snooper is None and not _bumble_host_log.isEnabledFor(logging.DEBUG):
            self.on_hci_event_packet(packet)
        else:
            super().on_hci_packet(packet)


def _small_reads(transport: Transport) -> None:
    """pyserial-asyncio reads up to 1 KB a wake-up: some 25 advertising reports, which Bumble then parses in one
    loop callback (5-15 ms under load, measured in bench/ble.py). 128 bytes keep a wake-up to about three, so the
    loop's other work runs in between. Private attributes: where they are not, nothing changes."""
    serial = getattr(transport.sink, "transport", None)
    if isinstance(getattr(serial, "_max_read_size", None), int):
        serial._max_read_size = READ_BYTES  # type: ignore[union-attr]


class BumbleScanner(BaseBleakScanner):
    """One Bumble host on one HCI transport. `stop()` stops scanning and keeps the controller, as BlueZ keeps its
    adapter; `close()` lets the transport go, and the next `start()` opens it again and resets the controller."""

    def __init__(self, detection_callback: AdvertisementDataCallback | None, service_uuids: list[str] | None,
                 scanning_mode: Literal["active", "passive"], *, bluez: dict[str, Any] | None = None,
                 transport: str | None = None, **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        spec = transport or (bluez or {}).get("adapter")
        if not spec:
            raise BleakError("the bumble backend needs a transport: bluez={'adapter': 'serial:/dev/ttyACM0'}")
        self.spec: str = spec
        self.active = scanning_mode == "active"
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._prune: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self.seen_devices = {}
        if self._device is None:
            await self._open()
        assert self._device is not None
        await self._device.start_scanning(active=self.active, filter_duplicates=False)
        self._schedule_prune()

    async def stop(self) -> None:
        if self._prune is not None:
            self._prune.cancel()
            self._prune = None
        if self._device is not None and self._device.is_scanning:
            await self._device.stop_scanning()

    async def close(self) -> None:
        """Release the transport (the pty or the dongle); never raises, the controller may be gone already."""
        device, transport = self._device, self._transport
        self._device = self._transport = None
        if self._prune is not None:
            self._prune.cancel()
            self._prune = None
        if device is not None:
            device.remove_listener("advertisement", self._on_advertisement)
        if transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.close(), CLOSE_TIMEOUT_S)

    async def _open(self) -> None:
        transport = await open_transport(self.spec)
        try:
            host = _Host(controller_source=transport.source, controller_sink=transport.sink)
            device = Device(name="venue-gateway", address=Address(HOST_ADDRESS), host=host)
            device.on("advertisement", self._on_advertisement)
            await device.power_on()  # HCI_Reset first: a controller left scanning by a crashed run starts clean
        except BaseException:
            with contextlib.suppress(Exception):
                await transport.close()
            raise
        self._transport, self._device = transport, device
        _small_reads(transport)

    def _schedule_prune(self) -> None:
        self._prune = asyncio.get_running_loop().call_later(PRUNE_EVERY_S, self._prune_accumulators)

    def _prune_accumulators(self) -> None:
        # Bumble keeps one accumulator per address ever heard: a night of phones' rotating addresses, in memory.
        if self._device is not None:
            self._device.advertisement_accumulators = {}
            self._schedule_prune()

    def _on_advertisement(self, adv: Advertisement) -> None:
        if adv.is_scan_response and self._fake_scan_response(adv):
            return
        address = adv.address.to_string(with_type_qualifier=False)
        data = advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        device = self.create_or_update_device(address, address, data.local_name, adv, data)
        self.call_detection_callbacks(device, data)

    def _fake_scan_response(self, adv: Advertisement) -> bool:
        """Bumble's emulated controller reports every advertisement a second time as a scan response, even to a
        passive scanner. A passive scanner never asks for one, and a real one repeats nothing of the advertisement."""
        if not self.active:
            return True
        seen = self.seen_devices.get(adv.address.to_string(with_type_qualifier=False))
        return seen is not None and isinstance(first := seen[1].platform_data[0], Advertisement) and \
            first.data_bytes == adv.data_bytes
