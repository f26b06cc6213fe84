"""On a Raspberry Pi: the SoC's temperature, and whether the firmware has throttled it (under-voltage, a capped
clock, heat), now or since boot. Elsewhere: skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from gateway.box.check import Box, Finding, ok, problem, skipped, warn

WARM_C, HOT_C = 70.0, 80.0  # the firmware caps the clock from 80 °C (a Pi 4 and 5), more from 85 °C
# get_throttled's bits: the low four are now, the same four from bit 16 are since boot.
CONDITIONS = {0: "under-voltage", 1: "the ARM clock capped", 2: "throttled", 3: "at the soft temperature limit"}
FIX_POWER = ("use the Pi's own power supply (5.1 V 3 A for a Pi 4, 5 V 5 A for a Pi 5) on a short cable, and give "
             "USB devices that draw much (a DMX widget, a hub) a supply of their own; keep it cool (a case with a "
             "heatsink or fan, out of the sun and of amplifiers' exhaust)")


def check(box: Box) -> list[Finding]:
    try:
        model = box.path("/proc/device-tree/model").read_text(errors="replace").strip("\0\n ")
    except OSError:
        model = ""
    if "Raspberry Pi" not in model:
        return [skipped(f"not a Raspberry Pi ({model or 'no device-tree model'})")]
    return [_temperature(box), _throttled(box)]


def _temperature(box: Box) -> Finding:
    zones = sorted(box.path("/sys/class/thermal").glob("thermal_zone*"))
    chosen = next((z for z in zones if _text(z / "type") == "cpu-thermal"), zones[0] if zones else None)
    try:
        celsius = int(_text(chosen / "temp") if chosen else "") / 1000
    except ValueError:
        return skipped("no SoC temperature in /sys/class/thermal", "temperature")
    if celsius >= HOT_C:
        return problem(f"the SoC is at {celsius:.1f} °C: the firmware slows it from {HOT_C:g} °C",
                       "cool it: a case with a heatsink or fan, out of the sun and of amplifiers' exhaust",
                       "temperature", celsius=celsius)
    if celsius >= WARM_C:
        return warn(f"the SoC is at {celsius:.1f} °C ({HOT_C:g} °C slows it)", "give it more air before the room "
                    "fills", "temperature", celsius=celsius)
    return ok(f"the SoC is at {celsius:.1f} °C", "temperature", celsius=celsius)


def _throttled(box: Box) -> Finding:
    text = _text(box.path("/sys/devices/platform/soc/soc:firmware/get_throttled"))
    if not text and shutil.which("vcgencmd"):
        try:
            answer = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=3)
            text = answer.stdout.strip().removeprefix("throttled=")
        except subprocess.TimeoutExpired:
            text = ""
    try:
        bits = int(text, 16)
    except ValueError:
        return skipped("the firmware's throttling state cannot be read (no get_throttled, no vcgencmd)", "throttling")
    now = [what for bit, what in CONDITIONS.items() if bits & (1 << bit)]
    before = [what for bit, what in CONDITIONS.items() if bits & (1 << (bit + 16))]
    if now:
        return problem(f"now {', '.join(now)} (get_throttled 0x{bits:x})", FIX_POWER, "throttling", bits=bits)
    if before:
        return warn(f"since boot: {', '.join(before)}, not now (get_throttled 0x{bits:x})", FIX_POWER, "throttling",
                    bits=bits)
    return ok("never throttled since boot", "throttling", bits=bits)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""
