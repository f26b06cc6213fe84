"""HCI over H4 (Bluetooth Core 5.4, Vol 4 Part A and Part E): the commands the wristband radio sends and the
events it reads, as bytes. Pure: no port, no clock.

Written here rather than taken from Bumble's `hci` module: the radio needs a dozen fixed-layout commands and
three events, and Bumble as a runtime dependency would bring a USB stack, a CLI framework and a terminal UI to
the box for them. This codec is checked against an independent implementation (Bumble's controller, on the
virtual air) and dissected by tshark in the tests.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass

COMMAND, ACL, SCO, EVENT, ISO = 0x01, 0x02, 0x03, 0x04, 0x05

# Opcodes (OGF << 10 | OCF)
RESET = 0x0C03
READ_LOCAL_VERSION = 0x1001
LE_READ_LOCAL_FEATURES = 0x2003
LE_SET_RANDOM_ADDRESS = 0x2005
LE_SET_ADV_PARAMETERS = 0x2006
LE_SET_ADV_DATA = 0x2008
LE_SET_ADV_ENABLE = 0x200A
LE_SET_ADV_SET_RANDOM_ADDRESS = 0x2035
LE_SET_EXT_ADV_PARAMETERS = 0x2036
LE_SET_EXT_ADV_DATA = 0x2037
LE_SET_EXT_ADV_ENABLE = 0x2039

# Events
EVT_COMMAND_COMPLETE = 0x0E
EVT_COMMAND_STATUS = 0x0F
EVT_HARDWARE_ERROR = 0x10

LE_FEATURE_EXTENDED_ADVERTISING = 1 << 12
ADV_NONCONN_IND = 0x03  # legacy advertising type: non-connectable, non-scannable, undirected
EXT_PROPS_LEGACY_NONCONN = 0x0010  # extended parameters: legacy PDUs, not connectable, not scannable
OWN_ADDRESS_RANDOM = 0x01
ALL_CHANNELS = 0x07
ADV_HANDLE = 0x00


def command(opcode: int, params: bytes = b"") -> bytes:
    """One H4 command packet."""
    if len(params) > 255:
        raise ValueError(f"HCI command parameters are at most 255 bytes, not {len(params)}")
    return struct.pack("<BHB", COMMAND, opcode, len(params)) + params


def interval_units(ms: float) -> int:
    """An advertising interval in 0.625 ms units, within what the core spec allows (20 ms to 10.24 s)."""
    return max(0x20, min(0x4000, round(ms / 0.625)))


def legacy_parameters(interval_ms: float) -> bytes:
    units = interval_units(interval_ms)
    return struct.pack("<HHBBB6sBB", units, units, ADV_NONCONN_IND, OWN_ADDRESS_RANDOM, 0, bytes(6), ALL_CHANNELS, 0)


def extended_parameters(interval_ms: float) -> bytes:
    units = interval_units(interval_ms)
    # handle, properties, primary interval min/max (3 bytes each), channels, own and peer address, filter policy,
    # tx power (0x7F: no preference), primary PHY 1M, secondary max skip, secondary PHY 1M, SID, no scan notify
    return (struct.pack("<BH", ADV_HANDLE, EXT_PROPS_LEGACY_NONCONN) + units.to_bytes(3, "little") * 2
            + struct.pack("<BBB6sBbBBBBB", ALL_CHANNELS, OWN_ADDRESS_RANDOM, 0, bytes(6), 0, 0x7F, 1, 0, 1, 0, 0))


def legacy_data(adv: bytes) -> bytes:
    if len(adv) > 31:
        raise ValueError(f"legacy advertising data is at most 31 bytes, not {len(adv)}")
    return bytes([len(adv)]) + adv.ljust(31, b"\0")


def extended_data(adv: bytes) -> bytes:
    # handle, operation 3 (complete data), fragment preference 1 (do not fragment), length, data
    return struct.pack("<BBBB", ADV_HANDLE, 0x03, 0x01, len(adv)) + adv


def extended_enable(enable: bool, max_events: int = 0) -> bytes:
    if not enable:
        return struct.pack("<BB", 0, 0)  # no sets listed: every set is disabled
    # one set: handle, duration 0 (until disabled or max events), max events
    return struct.pack("<BBBHB", 1, 1, ADV_HANDLE, 0, max_events)


@dataclass(frozen=True)
class CommandComplete:
    opcode: int
    status: int
    credits: int  # how many commands the host may now send
    returned: bytes  # the return parameters after the status


@dataclass(frozen=True)
class CommandStatus:
    opcode: int
    status: int
    credits: int


@dataclass(frozen=True)
class HardwareError:
    code: int


Event = CommandComplete | CommandStatus | HardwareError

_HEADERS = {EVENT: (2, 1, 1), ACL: (4, 2, 2), SCO: (3, 2, 1), ISO: (4, 2, 2)}  # header size, length at, bytes
MAX_DATA = 2048  # no controller's data packets are larger: a bigger length is a stray byte, not a packet


class H4Reader:
    """Frames the byte stream from the controller into events. A byte that starts no known packet type is
    dropped (and counted) so the reader finds the next packet boundary; data packets are skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.dropped: Counter[str] = Counter()
        self.ignored = 0  # well-formed events the radio has no use for

    def feed(self, data: bytes) -> list[Event]:
        buffer = self._buffer
        buffer += data
        events: list[Event] = []
        while buffer:
            kind = buffer[0]
            header = _HEADERS.get(kind)
            if header is None:
                del buffer[0]
                self.dropped["garbage_bytes"] += 1
                continue
            size, at, width = header
            if len(buffer) < 1 + size:
                break
            length = int.from_bytes(buffer[1 + at:1 + at + width], "little") & (0x3FFF if kind == ISO else 0xFFFF)
            if kind != EVENT and length > MAX_DATA:
                del buffer[0]
                self.dropped["garbage_bytes"] += 1
                continue
            end = 1 + size + length
            if len(buffer) < end:
                break
            packet = bytes(buffer[1:end])
            del buffer[:end]
            if kind != EVENT:
                self.dropped["data_packets"] += 1
                continue
            event = self._event(packet)
            if event is not None:
                events.append(event)
        return events

    def _event(self, packet: bytes) -> Event | None:
        code, params = packet[0], packet[2:]
        if code == EVT_COMMAND_COMPLETE and len(params) >= 4:
            credits, opcode, status = struct.unpack_from("<BHB", params)
            return CommandComplete(opcode, status, credits, params[4:])
        if code == EVT_COMMAND_COMPLETE and len(params) == 3:  # a NOP completion carries no status
            credits, opcode = struct.unpack_from("<BH", params)
            return CommandComplete(opcode, 0, credits, b"")
        if code == EVT_COMMAND_STATUS and len(params) == 4:
            status, credits, opcode = struct.unpack_from("<BBH", params)
            return CommandStatus(opcode, status, credits)
        if code == EVT_HARDWARE_ERROR and len(params) == 1:
            return HardwareError(params[0])
        if code in (EVT_COMMAND_COMPLETE, EVT_COMMAND_STATUS, EVT_HARDWARE_ERROR):
            self.dropped["malformed_events"] += 1
        else:
            self.ignored += 1
        return None
