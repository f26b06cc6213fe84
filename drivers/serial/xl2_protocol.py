"""The NTi Audio XL2's remote measurement commands (text lines on its USB serial port) that live compliance
logging needs, and the parsing of their answers. Pure: no I/O. Source and subset: docs/serial-protocols.md.

The cycle: `MEAS:INIT` closes a measurement interval (the dt interval is the time between the last two), then
`MEAS:SLM:123:dt? LAEQ` and friends ask for that interval's results, each answered with one line ("94.2 dB,OK").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# Commands, in the short forms of the manual's SCPI-like notation (long forms in capitals + lower case letters).
IDENTIFY = "*IDN?"
RESET = "*RST"
FUNCTION_SLM = "MEAS:FUNC SLM"
START = "INIT START"
STOP = "INIT STOP"
STATE = "INIT:STATE?"
TRIGGER = "MEAS:INIT"
EOL = "\n"

# Metric -> the 123 (broadband) parameter asked for each interval.
DT_PARAMETERS = {"laeq_db": "LAEQ", "lafmax_db": "LAFMAX", "lcpeak_db": "LCPKMAX"}
STATES = ("STOPPED", "FROZEN", "SETTLING", "RUNNING", "PAUSED")
RUNNING_STATES = ("SETTLING", "RUNNING")

Status = Literal["ok", "overload", "underrange"]
STATUS_WORDS: dict[str, Status] = {
    "OK": "ok", "OVR": "overload", "OVER": "overload", "OVERLOAD": "overload", "OVL": "overload",
    "UND": "underrange", "UNDER": "underrange", "UNDERRANGE": "underrange", "UNR": "underrange"}
WORD_OF_STATUS: dict[Status, str] = {"ok": "OK", "overload": "OVR", "underrange": "UND"}

_LEVEL = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*dB", re.ASCII)
_DASHES = re.compile(r"-+(?:\.-*)?\s*dB", re.ASCII)  # the XL2 shows dashes where it has no value yet

# Every command this module knows, in long form: what the simulated meter recognises (drivers/sim).
LONG_FORMS = ("*IDN?", "*RST", "MEASure:FUNCtion", "MEASure:FUNCtion?", "INITiate", "INITiate:STATe?",
              "MEASure:INITiate", "MEASure:SLMeter:123?", "MEASure:SLMeter:123:dt?", "MEASure:DTTIme?",
              "SYSTem:ERRor?")


class Xl2Error(ValueError):
    """An answer that is not what the query asks for (garbage, a late answer to another query, a cut line)."""


@dataclass(frozen=True)
class Identity:
    manufacturer: str
    model: str
    serial: str
    firmware: str

    def __str__(self) -> str:
        return f"{self.manufacturer},{self.model},{self.serial},{self.firmware}"


@dataclass(frozen=True)
class Level:
    """A level in dB, None when the meter shows dashes (no value for the interval), and its status."""

    value: float | None
    status: Status = "ok"


def command(text: str) -> bytes:
    return (text + EOL).encode("ascii")


def dt_query(parameter: str) -> bytes:
    """The query for one result of the interval closed by the last MEAS:INIT."""
    return command(f"MEAS:SLM:123:dt? {parameter}")


def _text(line: bytes | str) -> str:
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            raise Xl2Error("not ASCII") from None
    return line.strip()


def parse_identity(line: bytes | str) -> Identity:
    """*IDN? -> "NTiAudio,XL2,A2A-05955-E0,V4.71": manufacturer, model, serial number, firmware."""
    parts = [p.strip() for p in _text(line).split(",")]
    if len(parts) != 4 or not all(parts):
        raise Xl2Error(f"{_text(line)[:60]!r} is not an identity (manufacturer,model,serial,firmware)")
    if not parts[1].upper().startswith("XL2"):
        raise Xl2Error(f"{parts[1][:20]!r} is not an XL2")
    return Identity(*parts)


def parse_state(line: bytes | str) -> str:
    state = _text(line).upper()
    if state not in STATES:
        raise Xl2Error(f"{state[:40]!r} is not a measurement state (allowed: {', '.join(STATES)})")
    return state


def parse_level(line: bytes | str) -> Level:
    """"94.2 dB,OK" (or "94.2 dB"), "-.- dB,OK" when there is no value, with OVR/UND for overload/underrange."""
    text = _text(line)
    value_part, comma, status_part = text.partition(",")
    status: Status = "ok"
    if comma:
        word = status_part.strip().upper()
        if word not in STATUS_WORDS:
            raise Xl2Error(f"{status_part.strip()[:20]!r} is not a status (allowed: {', '.join(STATUS_WORDS)})")
        status = STATUS_WORDS[word]
    value_part = value_part.strip()
    if _DASHES.fullmatch(value_part):
        return Level(None, status)
    found = _LEVEL.fullmatch(value_part)
    if found is None:
        raise Xl2Error(f"{text[:40]!r} is not a level in dB")
    return Level(float(found.group(1)), status)


def format_level(level: Level) -> str:
    """An answer as the meter gives it (for the simulated meter and tests)."""
    value = "-.-" if level.value is None else f"{level.value:.1f}"
    return f"{value} dB,{WORD_OF_STATUS[level.status]}"


def _short(mnemonic: str) -> str:
    core, query = (mnemonic[:-1], "?") if mnemonic.endswith("?") else (mnemonic, "")
    return ("".join(c for c in core if not c.islower()) or core) + query


def canonical(header: str) -> str | None:
    """The long form of a command header given in any mix of long and short forms and case, or None."""
    words = header.lstrip(":").split(":")
    for long_form in LONG_FORMS:
        mnemonics = long_form.split(":")
        if len(mnemonics) == len(words) and all(
                w.upper() in (m.upper(), _short(m).upper()) for w, m in zip(words, mnemonics, strict=True)):
            return long_form
    return None
