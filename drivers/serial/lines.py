"""The line protocol of small sensor nodes (bytes <-> reading sets, no I/O): one line per reading set, a JSON
object or key=value pairs, an optional NMEA 0183 style checksum, a maximum length, resynchronisation after garbage.

    {"node":"stage-env","t":23.4,"rh":41.5}*2C
    node=stage-env t=23.4 rh=41.5

The checksum, as in NMEA 0183, is the XOR of every byte before the `*`, written as two hex digits (NMEA starts
after its `$`; these lines have no start character, so it covers the whole line). docs/serial-protocols.md has
the full description.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Literal

Checksum = Literal["none", "optional", "required"]
NODE_KEY = "node"
MAX_LINE = 512
LIMIT = 8192  # no line is ever parsed beyond this, whatever the configuration: bounds json's recursion too
KEY = re.compile(r"[A-Za-z0-9_.\-]+")
SEPARATORS = re.compile(r"[\s,;]+")
# Bytes a line can never start with: control characters and what is not ASCII. A node that boots prints
# such noise (0x00, 0xFF, half a UTF-8 sequence) before its first line.
NOISE = bytes(b for b in range(256) if b < 0x20 or b >= 0x7F)


class LineError(ValueError):
    """A line that is not a reading set; `reason` names the kind, for counting."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class NodeLine:
    """One reading set: the node that sent it, its numeric fields, and the names of fields that were not numbers."""

    node: str
    values: dict[str, float]
    other: tuple[str, ...] = ()
    checksummed: bool = False


def xor_checksum(body: bytes) -> int:
    return reduce(lambda a, b: a ^ b, body, 0)


def encode_line(node: str, values: Mapping[str, float], *, form: Literal["json", "kv"] = "json",
                checksum: bool = False) -> bytes:
    """The line a node sends (with its newline)."""
    if form == "json":
        body = json.dumps({NODE_KEY: node, **{k: v for k, v in values.items() if k != NODE_KEY}},
                          separators=(",", ":"), ensure_ascii=False).encode()
    else:
        tokens = [(NODE_KEY, node), *((k, repr(float(v))) for k, v in values.items() if k != NODE_KEY)]
        for key, value in tokens:
            if not KEY.fullmatch(key) or not value or SEPARATORS.search(value) or "*" in value or "=" in value:
                raise LineError("syntax", f"{key}={value!r} cannot be written as key=value")
        body = " ".join(f"{k}={v}" for k, v in tokens).encode()
    if checksum:
        body += b"*%02X" % xor_checksum(body)
    return body + b"\n"


def _verified(line: bytes, mode: Checksum) -> tuple[bytes, bool]:
    """The line without its checksum suffix, and whether it had one (which then matched)."""
    stripped = line.rstrip()
    has_sum = (len(stripped) >= 3 and stripped[-3] == 0x2A
               and all(c in b"0123456789ABCDEFabcdef" for c in stripped[-2:]))
    if mode == "none" or not has_sum:
        if mode == "required":
            raise LineError("no_checksum", "a checksum is required (*HH at the end of the line)")
        return line, False
    body = stripped[:-3]
    given, computed = int(stripped[-2:], 16), xor_checksum(body)
    if given != computed:
        raise LineError("checksum", f"checksum {given:02X} does not match the line's {computed:02X}")
    return body, True


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float: a value that will be flagged, not a crash
        return math.inf if value > 0 else -math.inf


def _from_json(text: str) -> tuple[str, dict[str, float], list[str]]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise LineError("syntax", "not a JSON object") from None
    if not isinstance(obj, dict):
        raise LineError("syntax", "not a JSON object")
    node = obj.get(NODE_KEY)
    if isinstance(node, int) and not isinstance(node, bool):
        node = str(node)
    if not isinstance(node, str) or not node:
        raise LineError("no_node", f"no {NODE_KEY!r} naming the node")
    values: dict[str, float] = {}
    other: list[str] = []
    for key, raw in obj.items():
        if key == NODE_KEY:
            continue
        number = _number(raw)
        if number is None:
            other.append(key)
        else:
            values[key] = number
    return node, values, other


def _from_pairs(text: str) -> tuple[str, dict[str, float], list[str]]:
    node: str | None = None
    values: dict[str, float] = {}
    other: list[str] = []
    for token in SEPARATORS.split(text):
        if not token:
            continue
        key, eq, raw = token.partition("=")
        if not eq or not KEY.fullmatch(key):
            raise LineError("syntax", f"{token[:40]!r} is not key=value")
        if key == NODE_KEY:
            node = raw
            continue
        try:
            values[key] = float(raw)
        except ValueError:
            other.append(key)
    if not node:
        raise LineError("no_node", f"no {NODE_KEY}=... naming the node")
    return node, values, other


def parse_line(line: bytes, mode: Checksum = "optional") -> NodeLine:
    """One line (without its newline) as a reading set; LineError says why not."""
    if len(line) > LIMIT:
        raise LineError("overlong", f"{len(line)} bytes, more than any line may have")
    body, checksummed = _verified(line, mode)
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise LineError("encoding", "not UTF-8") from None
    if not text:
        raise LineError("empty", "an empty line")
    node, values, other = _from_json(text) if text.startswith("{") else _from_pairs(text)
    for key in other:
        values.pop(key, None)  # a later duplicate that was not a number replaces an earlier number
    return NodeLine(node, values, tuple(dict.fromkeys(other)), checksummed)


class LineFramer:
    """Bytes in, lines out (without `\\n` or a `\\r` before it). A line longer than `max_line` is garbage: it is
    dropped, counted, and reading starts again after the next newline."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.overlong = 0  # lines dropped for their length
        self.dropped = 0  # bytes dropped with them
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        while True:
            end = buf.find(b"\n")
            if end < 0:
                if self._discarding or len(buf) > self.max_line:  # cannot become a good line: drop it as it comes
                    self.overlong += 0 if self._discarding else 1
                    self.dropped += len(buf)
                    self._discarding = True
                    buf.clear()
                return out
            line = bytes(buf[:end])
            del buf[:end + 1]
            if self._discarding or len(line) > self.max_line:
                self.overlong += 0 if self._discarding else 1
                self.dropped += len(line) + 1
                self._discarding = False
                continue
            out.append(line[:-1] if line.endswith(b"\r") else line)


@dataclass
class LineDecoder:
    """The node stream: framing, then each line parsed. Whatever is not a reading set is dropped and counted."""

    mode: Checksum = "optional"
    max_line: int = MAX_LINE
    lines: int = 0  # good reading sets
    bad_lines: int = 0
    noise_bytes: int = 0  # skipped before the start of a line (boot noise, the tail of a cut-off line)
    rejected: Counter[str] = field(default_factory=Counter)  # bad lines by reason
    _framer: LineFramer = field(init=False)

    def __post_init__(self) -> None:
        self._framer = LineFramer(self.max_line)

    @property
    def overlong(self) -> int:
        return self._framer.overlong

    @property
    def garbage_bytes(self) -> int:
        """Every byte that was not part of a good line."""
        return self._framer.dropped + self.noise_bytes

    def feed(self, data: bytes) -> list[NodeLine]:
        out: list[NodeLine] = []
        for raw in self._framer.feed(data):
            line = raw.lstrip(NOISE)
            if not line.strip():
                self.noise_bytes += len(raw) - len(line)
                continue  # blank lines between reading sets are harmless
            try:
                out.append(self._parse(line))
                self.noise_bytes += len(raw) - len(line)
            except LineError as exc:
                self.bad_lines += 1
                self.rejected[exc.reason] += 1
                self.noise_bytes += len(raw) + 1
                continue
            self.lines += 1
        return out

    def _parse(self, line: bytes) -> NodeLine:
        try:
            return parse_line(line, self.mode)
        except LineError:
            # Garbage glued to the front of a JSON line (no newline between): try again from its brace.
            start = line.find(b"{", 1)
            if start < 0:
                raise
            found = parse_line(line[start:], self.mode)
            self.noise_bytes += start
            return found
