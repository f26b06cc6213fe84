"""tshark as an independent dissector: payloads written to a pcap as UDP on loopback (or H4 packets as Bluetooth
HCI), read back with -V. A malformed frame is an AssertionError: the bytes dissected are the gateway's own."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

from peers import PeerMissing

LINKTYPE_RAW = 101  # the packet starts with its IPv4 header


def _ipv4_udp(payload: bytes, src_port: int, dst_port: int) -> bytes:
    udp = struct.pack(">HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, bytes([127, 0, 0, 1]),
                         bytes([127, 0, 0, 1]))
    checksum = sum(struct.unpack(">10H", header))
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    header = header[:10] + struct.pack(">H", ~checksum & 0xFFFF) + header[12:]
    return header + udp


def _require_tshark() -> None:
    if shutil.which("tshark") is None:
        raise PeerMissing("tshark (Debian package tshark)")


def dissect(tmp: Path, payloads: list[bytes], port: int, decode_as: str | None = None,
            options: list[str] | None = None) -> str:
    """tshark's verbose dissection of `payloads` sent to UDP `port` (with tshark's `options`, e.g. a heuristic
    dissector enabled); fails on a malformed frame."""
    _require_tshark()
    pcap = tmp / "capture.pcap"
    with pcap.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for i, payload in enumerate(payloads):
            frame = _ipv4_udp(payload, 40000, port)
            out.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    return read(pcap, (["-d", f"udp.port=={port},{decode_as}"] if decode_as else []) + (options or []))


def read(pcap: Path, options: list[str] | None = None) -> str:
    """tshark's verbose dissection of a capture file; fails on a malformed frame."""
    result = subprocess.run(["tshark", "-r", str(pcap), "-V", *(options or [])], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Malformed" not in result.stdout, result.stdout
    return result.stdout


LINKTYPE_BLUETOOTH_HCI_H4_WITH_PHDR = 201  # a 4-byte direction (0: host to controller), then the H4 packet


def dissect_hci(tmp: Path, packets: list[tuple[bool, bytes]]) -> str:
    """tshark's verbose dissection of H4 packets, each (sent by the host?, bytes); fails on a malformed frame."""
    _require_tshark()
    pcap = tmp / "hci.pcap"
    with pcap.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_BLUETOOTH_HCI_H4_WITH_PHDR))
        for i, (sent, packet) in enumerate(packets):
            frame = struct.pack(">I", 0 if sent else 1) + packet
            out.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    return read(pcap)
