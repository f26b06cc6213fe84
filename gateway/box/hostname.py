"""The box's host name, made from the box itself: `vg-` and the last six hexadecimal digits of the Raspberry Pi's
serial number (from the device tree, or /proc/cpuinfo), else of the machine id that systemd made at first boot. Two
boxes in a venue then have two names, and the label on a Pi's board (its serial) says which is which."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

from gateway.box import files

PREFIX = "vg-"
SOURCES = (Path("/proc/device-tree/serial-number"), Path("/proc/cpuinfo"), Path("/etc/machine-id"))
SYSTEM_BUS = Path("/run/dbus/system_bus_socket")
_CPUINFO_SERIAL = re.compile(r"^Serial\s*:\s*([0-9a-fA-F]+)\s*$", re.MULTILINE)
_HEX = re.compile(r"[0-9a-fA-F]{6,}")


def identity(text: str) -> str | None:
    """The hexadecimal identity in a source's text (a serial number, /proc/cpuinfo's `Serial` line, a machine id),
    or None when it holds none (no such line, all zeros as under emulation, `uninitialized`)."""
    found = _CPUINFO_SERIAL.search(text)
    value = found.group(1) if found else text.replace("\0", "").strip()
    if not _HEX.fullmatch(value) or not value.strip("0"):
        return None
    return value.lower()


def derive(sources: tuple[Path, ...] | list[Path] = SOURCES) -> tuple[str, Path]:
    """The host name from the first source that holds an identity, and that source; OSError when none does."""
    for source in sources:
        try:
            found = identity(source.read_text(encoding="ascii", errors="replace"))
        except OSError:
            continue
        if found is not None:
            return PREFIX + found[-6:], source
    raise OSError(f"no serial number or machine id in {', '.join(map(str, sources))}")


def set_hostname(name: str, hostname_file: Path | None = None) -> str:
    """Make `name` the host name, and say how: written to `hostname_file` alone when one is given (an image being
    made, a test); through systemd-hostnamed where a system bus runs; else /etc/hostname and the kernel's."""
    if hostname_file is not None:
        files.replace(hostname_file, f"{name}\n".encode(), 0o644)
        return f"written to {hostname_file}"
    refused = ""
    if SYSTEM_BUS.exists() and shutil.which("hostnamectl"):
        done = subprocess.run(["hostnamectl", "set-hostname", name], capture_output=True, text=True, timeout=20)
        if done.returncode == 0:
            return "set with hostnamectl"
        refused = f"hostnamectl failed ({done.stderr.strip()}): "
    files.replace(Path("/etc/hostname"), f"{name}\n".encode(), 0o644)
    socket.sethostname(name)
    return f"{refused}written to /etc/hostname and set in the kernel"


def current(hostname_file: Path | None = None) -> str:
    if hostname_file is not None:
        try:
            return hostname_file.read_text(encoding="utf-8").strip()
        except OSError:
            return ""
    return os.uname().nodename
