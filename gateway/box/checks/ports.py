"""The serial ports the drivers open, there and named by their stable paths. A USB adapter's /dev/ttyUSB0 or
/dev/ttyACM0 is its place in the order the kernel found the adapters: another adapter plugged in, or this one
replugged, can give it another number. /dev/serial/by-id/... names the adapter itself."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from gateway import config as configuration
from gateway.box.check import Box, Finding, ok, problem, skipped, warn

BY_ID = "/dev/serial/by-id"
STABLE = ("/dev/serial/by-id/", "/dev/serial/by-path/")
_ENUMERATED = re.compile(r"tty(USB|ACM)\d+")


def ports(cfg: configuration.Config) -> Iterator[tuple[str, str]]:
    """(key, path) of every serial port an enabled driver opens: its `port`, and BLE scanners on a serial
    controller (`serial:PATH[,BAUD]`)."""
    for d in cfg.drivers:
        if not d.enabled:
            continue
        port = getattr(d.options, "port", None)
        if isinstance(port, str):
            yield f"drivers.{d.name}.port", port
        for i, scanner in enumerate(getattr(d.options, "scanners", None) or []):
            adapter = getattr(scanner, "adapter", "")
            if isinstance(adapter, str) and adapter.startswith("serial:"):
                yield f"drivers.{d.name}.scanners[{i}].adapter", adapter.removeprefix("serial:").split(",")[0]


def _by_id(box: Box) -> dict[str, str]:
    """The adapters plugged in: each /dev/serial/by-id name, by the device it points to (ttyUSB0, ...)."""
    directory = box.path(BY_ID)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return {}
    return {os.path.basename(os.readlink(directory / name)): f"{BY_ID}/{name}" for name in names
            if (directory / name).is_symlink()}


def check(box: Box) -> list[Finding]:
    assert box.config is not None
    found = list(ports(box.config))
    if not found:
        return [skipped("no serial port configured")]
    plugged = _by_id(box)
    there = ", ".join(sorted(plugged.values())) or "none"
    findings = []
    for key, port in found:
        if "://" in port:
            findings.append(skipped(f"{port} is a network port (a pyserial URL): not looked at here", key))
            continue
        path = box.path(port) if port.startswith("/dev/") else Path(port)
        # the device a stable name points to: its link's target (by-id/x -> ../../ttyUSB0)
        name = os.path.basename(os.readlink(path)) if path.is_symlink() else os.path.basename(port)
        if not path.exists():
            findings.append(problem(f"{port} is not there", f"plug the adapter in, or name one that is in the "
                                    f"configuration (in {BY_ID}: {there})", key))
        elif _ENUMERATED.fullmatch(os.path.basename(port)):
            stable = plugged.get(os.path.basename(port))
            findings.append(warn(f"{port} is named by the order the adapters were found: a replug or another "
                                 "adapter can give it another number",
                                 f"name it {stable} in the configuration" if stable else
                                 f"name it by its {BY_ID} path in the configuration (there: {there})", key))
        elif port.startswith(STABLE):
            findings.append(ok(f"{port} is there ({name})", key))
        else:
            findings.append(ok(f"{port} is there", key))
    return findings
