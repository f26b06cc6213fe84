"""The virtual air: BLE without a radio, built on Bumble (the `sim` extra).

A Bumble controller, the gateway's radio, is exposed on a pseudo-terminal: the `wristband` driver opens it with
pyserial and speaks HCI H4 to it exactly as to a USB dongle. Virtual wristbands are Bumble hosts scanning on the
same virtual link; each runs the reference band (drivers/wristband/band.py), effect packets and live frames alike,
on its own clock (an offset and a crystal's drift) and loses a configurable share of what is on the air. Bumble
delivers the gateway's extended advertising sets to scanners; a real controller puts the same bytes on the air as
ADV_NONCONN_IND.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable

from bumble.controller import Controller
from bumble.device import Advertisement, Device
from bumble.hci import (
    HCI_LE_1M_PHY,
    Address,
    HCI_Command,
    HCI_Command_Complete_Event,
    HCI_Command_Status_Event,
    HCI_Packet,
)
from bumble.host import Host
from bumble.link import LocalLink
from bumble.ll import AdvertisingPdu
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from drivers.sim.crowd import VirtualBand, make_bands

SCAN_MS = 10.0  # scan interval = window: the bands listen all the time, losses are modelled separately


def _remove_stale_link(path: str) -> None:
    """Bumble links the pty at `path`; a link left by an earlier run that did not exit cleanly is removed."""
    if os.path.islink(path):
        os.unlink(path)


async def scanning(controller: Controller, address: str, heard: Callable[[Advertisement], None]) -> Device:
    """A band's host on `controller`, scanning all the time (what it misses is modelled apart) and telling `heard`
    each advertisement."""
    device = Device(address=Address(address), host=Host(controller, AsyncPipeSink(controller)))
    device.on("advertisement", heard)
    await device.power_on()
    await device.start_scanning(legacy=False, active=False, scan_interval=SCAN_MS, scan_window=SCAN_MS,
                                filter_duplicates=False, scanning_phys=(HCI_LE_1M_PHY,))
    return device


async def stop_scanning(devices: list[Device]) -> None:
    """Every band's host stops scanning (whatever state it is in), and the list is emptied."""
    for device in devices:
        with contextlib.suppress(Exception):
            await device.stop_scanning()
    devices.clear()


class _Receiver(Controller):
    """A band's controller, with the air time of every advertisement sent while it listens."""

    def __init__(self, name: str, link: LocalLink, address: str) -> None:
        super().__init__(name, link=link, public_address=address)
        self.air_times: deque[tuple[bytes, float]] = deque(maxlen=1024)

    def air_time(self, data: bytes) -> float:
        """When the advertisement reported with `data` was on the air (reports come in the order sent)."""
        while self.air_times:
            sent, t = self.air_times.popleft()
            if sent == data:
                return t
        return time.monotonic()


class _Radio(Controller):
    """The gateway's controller, with when it read each HCI command from the pty and wrote its answer:
    (opcode, read, answered) on the monotonic clock, `answered` NaN until then."""

    def __init__(self, transport: Transport, link: LocalLink) -> None:
        super().__init__("gateway-radio", host_source=transport.source, host_sink=transport.sink, link=link)
        self.commands: list[tuple[int, float, float]] | None = None

    def on_hci_command_packet(self, command: HCI_Command) -> None:
        if self.commands is not None:
            self.commands.append((command.op_code, time.monotonic(), math.nan))
        super().on_hci_command_packet(command)

    def send_hci_packet(self, packet: HCI_Packet) -> None:
        if self.commands is not None and isinstance(packet, HCI_Command_Complete_Event | HCI_Command_Status_Event):
            # Bumble answers from inside the command's handler: the answer is the last command read's. It is
            # written on the loop's next pass, as Bumble writes it; that is when it is stamped.
            asyncio.get_running_loop().call_soon(self._answer, len(self.commands) - 1, bytes(packet))
        else:
            super().send_hci_packet(packet)

    def _answer(self, index: int, packet: bytes) -> None:
        if self.host and self.commands is not None:
            self.host.on_packet(packet)
            opcode, read, _ = self.commands[index]
            self.commands[index] = (opcode, read, time.monotonic())


class _Air(LocalLink):
    """The link, stamping each advertisement as it goes on the air. A band's radio timestamps what it receives
    in hardware, so a band hears a copy when the air carries it, not when its simulated host gets to it."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.record: list[tuple[float, bytes]] | None = None

    def send_advertising_pdu(self, sender: Controller, packet: AdvertisingPdu) -> None:
        t, data = time.monotonic(), bytes(getattr(packet, "data", b""))
        if self.record is not None:
            self.record.append((t, data))
        for controller in self.controllers:
            if isinstance(controller, _Receiver):
                controller.air_times.append((data, t))
        super().send_advertising_pdu(sender, packet)


class VirtualAir:
    """A radio controller on a pty and `bands` virtual wristbands, on one virtual link."""

    def __init__(self, key: bytes, show_id: int, loss: float = 0.0, seed: int | None = None) -> None:
        self.key = key  # the show's key (protocol.show_key), as its bands were given it
        self.show_id = show_id
        self.loss = loss
        self.rng = random.Random(seed)
        self.link = _Air()
        self.bands: list[VirtualBand] = []
        self.radio: _Radio | None = None
        self.listeners: list[Callable[[VirtualBand], None]] = []
        self._transport: Transport | None = None
        self._devices: list[Device] = []
        self._pty_path: str | None = None

    async def open(self, pty_path: str, zones: list[int], record: bool = False) -> None:
        """Expose the radio at `pty_path` (a symlink to the pty) and power on one band per entry of `zones`."""
        _remove_stale_link(pty_path)
        self._transport = await open_transport(f"pty:{pty_path}")
        self._pty_path = pty_path
        self.radio = _Radio(self._transport, self.link)
        if record:
            self.link.record = []
            self.radio.commands = []
        for band in make_bands(self.key, self.show_id, zones, self.loss, self.rng):
            self.bands.append(band)
            await self._listen(band)

    @property
    def on_air(self) -> list[tuple[float, bytes]]:
        """Every advertisement on the air since `open(record=True)`: (when, data)."""
        return self.link.record or []

    @property
    def commands(self) -> list[tuple[int, float, float]]:
        """Every HCI command the radio read since `open(record=True)`: (opcode, read, answered)."""
        return (self.radio.commands if self.radio else None) or []

    async def _listen(self, band: VirtualBand) -> None:
        address = f"C0:00:00:00:{band.index >> 8:02X}:{band.index & 0xFF:02X}"
        controller = _Receiver(f"band-{band.index}", self.link, address)

        def heard(adv: Advertisement) -> None:
            if adv.is_scan_response:  # Bumble's controller reports every advertisement a second time as one
                return
            data = adv.data_bytes
            if band.hear(data, controller.air_time(data)):
                for listener in self.listeners:
                    listener(band)

        self._devices.append(await scanning(controller, address, heard))

    async def close(self) -> None:
        await stop_scanning(self._devices)
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
