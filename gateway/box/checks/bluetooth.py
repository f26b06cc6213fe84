"""Bluetooth: the adapters BLE sensing scans with through BlueZ (there, not blocked by rfkill), and the wristband
radio's controller answering. A radio the running gateway holds is judged by the gateway's health (opening its
port beside it would take bytes from it, and a reset would stop the show's advertising); with no gateway running
the port is opened and the controller sent HCI Reset (Bluetooth Core, Vol 4 Part E 7.3.2), which it must answer."""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

import serial

from gateway.box.check import Box, Finding, ok, problem, skipped, warn
from gateway.box.health import health as running

H4_COMMAND, H4_EVENT = 0x01, 0x04
RESET = bytes([H4_COMMAND, 0x03, 0x0C, 0x00])  # opcode 0x0C03, no parameters
COMMAND_COMPLETE, HARDWARE_ERROR = 0x0E, 0x10


def adapters(box: Box) -> list[Finding]:
    assert box.config is not None
    scanners = [(f"drivers.{d.name}.scanners[{i}].adapter", s.adapter) for d in box.config.drivers
                if d.enabled and d.type == "ble" and getattr(d.options, "backend", "bluez") == "bluez"
                for i, s in enumerate(getattr(d.options, "scanners", []))]
    if not scanners:
        return [skipped("no BLE scanning through BlueZ is configured")]
    known = sorted(p.name for p in box.path("/sys/class/bluetooth").glob("hci*"))
    findings = []
    for key, adapter in scanners:
        directory = box.path(f"/sys/class/bluetooth/{adapter}")
        if not directory.exists():
            findings.append(problem(f"no Bluetooth adapter {adapter} (there: {', '.join(known) or 'none'})",
                                    "plug the adapter in or name one that is there; a Raspberry Pi's own needs "
                                    "bluetooth.service (systemctl status bluetooth hciuart)", key))
            continue
        blocked = [kind for switch in directory.glob("rfkill*") for kind in ("soft", "hard")
                   if _read(switch / kind) == "1"]
        if "soft" in blocked:
            findings.append(problem(f"{adapter} is switched off (rfkill soft block)", "rfkill unblock bluetooth",
                                    key))
        elif blocked:
            findings.append(problem(f"{adapter} is switched off by hardware (rfkill hard block)",
                                    "a switch or the board's firmware turns it off: turn it on there", key))
        else:
            findings.append(ok(f"{adapter} is there", key))
    return findings


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def radio(box: Box) -> list[Finding]:
    assert box.config is not None
    radios = [d for d in box.config.drivers if d.enabled and d.type == "wristband"]
    if not radios:
        return [skipped("no wristband radio configured")]
    health = running(box)
    findings = []
    for d in radios:
        key, port = f"drivers.{d.name}", str(d.options.port)
        fix = (f"is the dongle plugged in ({port}) with its HCI UART firmware at {d.options.baudrate} baud? Unplug "
               "and plug it in again; the gateway resets it and tries again by itself")
        if health.doc is not None:
            unit = health.doc.get("drivers", {}).get(d.name) if health.detailed else None
            if unit is None:
                findings.append(skipped("the running gateway holds its port; its state needs a token (run doctor as "
                                        "root, which reads the token files)", key))
            elif unit.get("state") == "running":
                findings.append(ok(f"the running gateway's radio on {port} is running (its controller answers)", key))
            else:
                findings.append(problem(f"the running gateway's radio on {port} is {unit.get('state')}: "
                                        f"{unit.get('last_error')}", fix, key))
            continue
        try:
            ms = reset(port, d.options.baudrate, d.options.rtscts, box.timeout_s)
        except PortHeld as exc:
            findings.append(warn(f"{exc}: not reset under it, its state is not known here", "the gateway holds its "
                                 "radio's port: read its state with `venue-gateway status`, or run doctor as root",
                                 key))
            continue
        except (OSError, serial.SerialException, TimeoutError) as exc:
            findings.append(problem(f"the controller on {port} does not answer: {exc}", fix, key))
            continue
        findings.append(ok(f"the controller on {port} answered HCI Reset in {ms:.0f} ms", key, reset_ms=round(ms, 1)))
    return findings


class PortHeld(Exception):
    """Another process has the port locked: the gateway's radio (drivers/wristband/hci_port.py locks it)."""


def reset(port: str, baudrate: int, rtscts: bool, timeout_s: float) -> float:
    """Send HCI Reset on `port` and wait for its Command Complete: the ms it took. TimeoutError when none came,
    OSError when the controller refused it or reported a hardware error, PortHeld when a process (a running gateway
    whose health doctor could not read) holds the port's lock: a reset would stop the show's advertising."""
    with serial.serial_for_url(port, baudrate=baudrate, rtscts=rtscts, timeout=0.05) as link:
        try:
            fcntl.flock(link.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PortHeld(f"{port} is held by another process") from None
        link.reset_input_buffer()
        start = time.monotonic()
        link.write(RESET)
        pending = bytearray()
        while time.monotonic() - start < timeout_s:
            pending += link.read(256)
            while pending:
                if pending[0] != H4_EVENT:  # data packets or noise: step over a byte at a time
                    del pending[0]
                    continue
                if len(pending) < 3 or len(pending) < 3 + pending[2]:
                    break
                code, params = pending[1], bytes(pending[3:3 + pending[2]])
                del pending[:3 + len(params)]
                if code == HARDWARE_ERROR:
                    raise OSError(f"it reported hardware error 0x{params[0] if params else 0:02x}")
                if code == COMMAND_COMPLETE and params[1:3] == RESET[1:3] and len(params) >= 4:
                    if params[3]:
                        raise OSError(f"it refused HCI Reset (status 0x{params[3]:02x})")
                    return (time.monotonic() - start) * 1000
    raise TimeoutError(f"no answer to HCI Reset within {timeout_s:g} s")
