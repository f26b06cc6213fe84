"""Modbus register maps: what a device model keeps where (type, word order, scaling, physical range), the few
block reads that cover a map, and decoding (and, for the simulated devices, encoding) of values.

Registers are 16-bit words, each sent high byte first; a 32- or 64-bit value spans 2 or 4 of them, most
significant first ("big" word order) or least significant first ("little", as many meters do).
"""

from __future__ import annotations

import decimal
import functools
import itertools
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from drivers.serial.modbus_codec import MAX_READ, READ_HOLDING, READ_INPUT
from gateway.driver import Problem, setting

RegisterType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
Table = Literal["holding", "input"]
TABLES: tuple[Table, ...] = ("holding", "input")
FUNCTION: dict[str, int] = {"holding": READ_HOLDING, "input": READ_INPUT}
# struct format and number of registers of each type
LAYOUT: dict[str, tuple[str, int]] = {
    "int16": (">h", 1), "uint16": (">H", 1), "int32": (">i", 2), "uint32": (">I", 2),
    "int64": (">q", 4), "uint64": (">Q", 4), "float32": (">f", 2), "float64": (">d", 4),
}
FLOAT32_MAX = 3.4028234663852886e38
_METRIC = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _metric_name(value: str) -> str | None:
    if _METRIC.fullmatch(value):
        return None
    return f"{value!r} is not a metric name (allowed: lower case letters, digits and _, starting with a letter)"


def _decimals(x: float) -> int:
    exponent = decimal.Decimal(repr(x)).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _shortest_float32(value: float, packed: bytes) -> float:
    """The shortest decimal that is the same float32 (230.1, not 230.10000610351562)."""
    for digits in range(6, 9):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == packed:
            return candidate
    return value


@dataclass(frozen=True)
class Register:
    """One value of a device model. `range` is the physical range: a value outside it is flagged, not believed."""

    metric: str = setting(check=_metric_name)
    address: int = setting(min=0, max=65535)  # protocol address (the 0-based one on the wire)
    type: RegisterType = "uint16"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    table: Table = "holding"
    range: list[float] | None = None

    @property
    def words(self) -> int:
        return LAYOUT[self.type][1]

    @property
    def end(self) -> int:
        """The address after this register's last word."""
        return self.address + self.words

    def problems(self) -> list[Problem]:
        out = []
        if self.end > 0x10000:
            out.append(Problem("address", f"{self.type} at {self.address} runs past register 65535"))
        if self.scale == 0 or not math.isfinite(self.scale):
            out.append(Problem("scale", f"{self.scale} (allowed: a finite number other than 0)"))
        if not math.isfinite(self.offset):
            out.append(Problem("offset", f"{self.offset} (allowed: a finite number)"))
        if self.word_order != "big" and self.words == 1:
            out.append(Problem("word_order", f"a {self.type} is one register: word order applies to 32- and "
                                             "64-bit types only"))
        if self.range is not None and (len(self.range) != 2 or not self.range[0] < self.range[1]):
            out.append(Problem("range", f"{self.range} (allowed: [low, high] with low < high)"))
        return out

    def decode(self, words: Sequence[int]) -> float:
        """The scaled value of this register's words (NaN or an infinity if the device sent one)."""
        fmt, n = LAYOUT[self.type]
        ordered = words[:n] if self.word_order == "big" else list(reversed(words[:n]))
        packed = b"".join(w.to_bytes(2, "big") for w in ordered)
        (raw,) = struct.unpack(fmt, packed)
        if self.type == "float32" and math.isfinite(raw):
            raw = _shortest_float32(raw, packed)
        if self.scale == 1 and self.offset == 0:
            return float(raw)
        value = float(raw) * self.scale + self.offset
        if self.type.startswith("float"):
            return float(f"{value:.{9 if self.type == 'float32' else 15}g}") if math.isfinite(value) else value
        # A scaled integer has no more decimals than its scale and offset: 230.50000000000003 is 230.5.
        return round(value, self._decimals)

    @functools.cached_property
    def _decimals(self) -> int:
        return max(_decimals(self.scale), _decimals(self.offset))

    def encode(self, value: float) -> list[int]:
        """The words a device holds for `value`, saturating at the type's limits as a device's ADC would."""
        fmt, n = LAYOUT[self.type]
        raw = (value - self.offset) / self.scale
        packed: bytes
        if self.type.startswith("float"):
            limit = FLOAT32_MAX if self.type == "float32" else math.inf
            packed = struct.pack(fmt, max(-limit, min(limit, raw)) if math.isfinite(raw) else raw)
        else:
            bits = 16 * n
            lo, hi = (0, 2 ** bits - 1) if self.type.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            packed = struct.pack(fmt, max(lo, min(hi, round(raw))) if math.isfinite(raw) else 0)
        words = [int.from_bytes(packed[2 * i:2 * i + 2], "big") for i in range(n)]
        return words if self.word_order == "big" else list(reversed(words))

    def believable(self, value: float) -> bool:
        """A real number inside the physical range (when one is given)."""
        if not math.isfinite(value):
            return False
        return self.range is None or self.range[0] <= value <= self.range[1]


@dataclass(frozen=True)
class RegisterMap:
    """A named register map, shared by all the devices of one model."""

    name: str
    registers: list[Register]
    # Registers this far apart are still read in one request: a new request costs its own 8 bytes, 5 bytes of
    # answer overhead and two 3.5-character silences, about 10 registers' worth. 0 for devices that refuse reads
    # across unmapped registers.
    max_gap: int = setting(10, min=0, max=MAX_READ - 1)

    def problems(self) -> list[Problem]:
        out = []
        if not self.registers:
            out.append(Problem("registers", "a map needs at least one register"))
        seen: dict[str, int] = {}
        for i, r in enumerate(self.registers):
            if r.metric in seen:
                out.append(Problem(f"registers[{i}].metric", f"{r.metric!r} is already registers[{seen[r.metric]}]"))
            seen.setdefault(r.metric, i)
        for table in TABLES:
            placed = sorted((r.address, r.end, i) for i, r in enumerate(self.registers) if r.table == table)
            for (_, end, i), (start, _, j) in itertools.pairwise(placed):
                if start < end:
                    out.append(Problem(f"registers[{j}].address", f"{start} overlaps registers[{i}] "
                                       f"({self.registers[i].type} at {self.registers[i].address}, {table} table)"))
        return out

    def blocks(self) -> list[Block]:
        return plan_blocks(self.registers, self.max_gap)


@dataclass(frozen=True)
class Block:
    """One read request's worth of a map: `count` registers of `table` from `address`."""

    table: Table
    address: int
    count: int
    registers: tuple[Register, ...]

    @property
    def function(self) -> int:
        return FUNCTION[self.table]

    def decode(self, words: Sequence[int]) -> list[tuple[Register, float]]:
        """Each register's scaled value from the block's words (as many as were asked for)."""
        if len(words) != self.count:
            raise ValueError(f"{len(words)} registers for a block of {self.count}")
        return [(r, r.decode(words[r.address - self.address:r.end - self.address])) for r in self.registers]


def plan_blocks(registers: Sequence[Register], max_gap: int, max_count: int = MAX_READ) -> list[Block]:
    """As few reads as the gaps allow: registers of one table sorted by address, joined while the gap between
    them is at most `max_gap` registers and the read stays within `max_count`."""
    out: list[Block] = []
    for table in TABLES:
        group: list[Register] = []
        start = end = 0
        for r in sorted((r for r in registers if r.table == table), key=lambda r: (r.address, r.end)):
            if group and r.address - end <= max_gap and max(end, r.end) - start <= max_count:
                group.append(r)
                end = max(end, r.end)
                continue
            if group:
                out.append(Block(table, start, end - start, tuple(group)))
            group, start, end = [r], r.address, r.end
        if group:
            out.append(Block(table, start, end - start, tuple(group)))
    return out
