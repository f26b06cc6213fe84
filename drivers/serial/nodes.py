"""The `nodes` driver: small microcontroller sensor nodes that print reading sets on a serial line (drivers/serial/
lines.py), mapped to twin assets and metrics by the configuration, with physical ranges.

Values outside their range are flagged on the node's asset (`out_of_range`), counted, and not published. Unknown
nodes and fields are counted, not published. The bus itself is the asset `bus:<driver name>` (kind serial_bus):
connected, lines, and every kind of bad input, counted since the port was opened.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from drivers.serial.lines import MAX_LINE, NODE_KEY, Checksum, LineDecoder, NodeLine
from drivers.serial.port import SerialPort
from gateway.driver import Driver, DriverContext, Problem, Reading, setting

TICK_S = 1.0  # staleness, the bus report and the port's presence are looked at this often
REMEMBER_UNKNOWN = 16  # unknown node ids and field names kept for the twin, to help commissioning


@dataclass(frozen=True)
class FieldOptions:
    metric: str
    range: list[float] | None = None  # [lowest, highest] physically possible; outside it a value is flagged

    def problems(self) -> list[Problem]:
        out = []
        if not self.metric:
            out.append(Problem("metric", "must not be empty"))
        if self.range is not None and not (len(self.range) == 2 and self.range[0] < self.range[1]):
            out.append(Problem("range", f"{self.range} is not [lowest, highest] (allowed: two numbers, rising)"))
        return out

    def believable(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return self.range is None or self.range[0] <= value <= self.range[1]


@dataclass(frozen=True)
class NodeOptions:
    id: str  # what the node prints in its `node` field
    asset: str
    kind: str = "environment"
    zone: str | None = None
    fields: dict[str, FieldOptions] = field(default_factory=dict)

    def problems(self) -> list[Problem]:
        if NODE_KEY in self.fields:
            return [Problem(f"fields.{NODE_KEY}", "names the node; it is not a measurement")]
        return []


@dataclass(frozen=True)
class NodesOptions:
    port: str  # a stable path, /dev/serial/by-id/...; any pyserial URL works too
    baudrate: int = setting(115200, min=50, max=4_000_000)
    checksum: Checksum = "optional"
    stale_s: float = setting(10.0, min=0.5, max=86_400)  # a node not heard this long is reported offline
    max_line: int = setting(MAX_LINE, min=32, max=8192)
    report_s: float = setting(5.0, min=0.5, max=3600)  # the bus's counters go to the twin at most this often
    nodes: list[NodeOptions] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        out = []
        for key, values in (("id", [n.id for n in self.nodes]), ("asset", [n.asset for n in self.nodes])):
            seen: set[str] = set()
            for i, value in enumerate(values):
                if value in seen:
                    out.append(Problem(f"nodes[{i}].{key}", f"{value!r} is used twice (allowed: each once)"))
                seen.add(value)
        return out


@dataclass
class NodeState:
    options: NodeOptions
    online: bool | None = None
    last_heard: float = -math.inf  # loop time
    out_of_range: set[str] = field(default_factory=set)
    lines: int = 0


class SensorNodes(Driver[NodesOptions]):
    Options = NodesOptions

    def __init__(self, ctx: DriverContext, options: NodesOptions) -> None:
        super().__init__(ctx, options)
        self.port = SerialPort(options.port, options.baudrate)
        self.decoder = LineDecoder(options.checksum, options.max_line)
        self.bus = f"bus:{ctx.name}"
        self.nodes = {n.id: NodeState(n) for n in options.nodes}
        self.unknown_nodes = 0
        self.unknown_fields = 0
        self.out_of_range = 0
        self.readings = 0
        self.unknown_ids: dict[str, None] = {}
        self.unknown_names: dict[str, None] = {}
        self._reported: dict[str, Any] = {}
        self._reported_at = -math.inf

    async def start(self) -> None:
        self.ctx.declare(self.bus, "serial_bus")
        for state in self.nodes.values():
            self.ctx.declare(state.options.asset, state.options.kind, state.options.zone)
        try:
            await self.port.open()
        except BaseException:
            self.ctx.report(self.bus, {"port": self.options.port, "connected": False})
            raise
        self.ctx.log.info("sensor nodes on %s, %d configured", self.options.port, len(self.nodes))
        self._report_bus()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + TICK_S
        while True:
            data = await self.port.read(max(0.0, next_tick - loop.time()))
            if data:
                self._received(self.decoder.feed(data), time.time(), loop.time())
            if loop.time() >= next_tick:
                next_tick = loop.time() + TICK_S
                self._tick(loop.time())

    async def stop(self) -> None:
        self.port.close()
        for state in self.nodes.values():  # unheard while the bus is down, whatever they may be doing
            if state.online:
                state.online = False
                self.ctx.report(state.options.asset, {"online": False})
        self._report_bus(connected=False)

    def _received(self, lines: list[NodeLine], now: float, mono: float) -> None:
        readings: list[Reading] = []
        for line in lines:
            state = self.nodes.get(line.node)
            if state is None:
                self.unknown_nodes += 1
                if len(self.unknown_ids) < REMEMBER_UNKNOWN:
                    self.unknown_ids.setdefault(line.node[:64])
                continue
            readings += self._readings(state, line, now)
            state.lines += 1
            state.last_heard = mono
            if state.online is not True:
                state.online = True
                self.ctx.report(state.options.asset, {"online": True})
        if readings:
            self.readings += len(readings)
            self.ctx.publish(readings)

    def _readings(self, state: NodeState, line: NodeLine, now: float) -> list[Reading]:
        fields = state.options.fields
        flagged = set(state.out_of_range)
        out = []
        for name, value in line.values.items():
            spec = fields.get(name)
            if spec is None:
                self._unknown_field(line.node, name)
            elif spec.believable(value):
                flagged.discard(spec.metric)
                out.append(Reading(now, state.options.asset, spec.metric, value))
            else:
                self.out_of_range += 1
                if spec.metric not in flagged:
                    self.ctx.log.warning("node %s: %s = %r is outside %s; not believed", line.node, name, value,
                                         spec.range)
                flagged.add(spec.metric)
        for name in line.other:  # a mapped field that is not a number (a node's "err") is not believed either
            spec = fields.get(name)
            if spec is None:
                self._unknown_field(line.node, name)
            else:
                self.out_of_range += 1
                flagged.add(spec.metric)
        if flagged != state.out_of_range:
            state.out_of_range = flagged
            self.ctx.report(state.options.asset, {"out_of_range": sorted(flagged)})
        return out

    def _unknown_field(self, node: str, name: str) -> None:
        self.unknown_fields += 1
        if len(self.unknown_names) < REMEMBER_UNKNOWN:
            self.unknown_names.setdefault(f"{node}.{name}"[:96])

    def _tick(self, mono: float) -> None:
        for state in self.nodes.values():
            if state.online is not False and mono - state.last_heard > self.options.stale_s:
                state.online = False
                self.ctx.report(state.options.asset, {"online": False})
                if state.lines:
                    self.ctx.log.warning("node %s not heard for %.0f s", state.options.id, self.options.stale_s)
        self._report_bus()

    def _report_bus(self, connected: bool = True) -> None:
        """The bus's health in the twin when it changed: its state at once, its counters every report_s."""
        state = {"port": self.options.port, "connected": connected,
                 "nodes_online": sum(1 for s in self.nodes.values() if s.online)}
        doc = {**state, **self._counters(), "unknown_node_ids": list(self.unknown_ids),
               "unknown_field_names": list(self.unknown_names)}
        now = time.monotonic()
        urgent = any(self._reported.get(k) != v for k, v in state.items())
        if doc != self._reported and (urgent or now - self._reported_at >= self.options.report_s):
            self._reported, self._reported_at = doc, now
            self.ctx.report(self.bus, doc)

    def _counters(self) -> dict[str, Any]:
        d = self.decoder
        return {"lines": d.lines, "bad_lines": d.bad_lines, "bad_checksum": d.rejected["checksum"],
                "missing_checksum": d.rejected["no_checksum"], "overlong": d.overlong,
                "garbage_bytes": d.garbage_bytes, "unknown_nodes": self.unknown_nodes,
                "unknown_fields": self.unknown_fields, "out_of_range": self.out_of_range, "readings": self.readings}

    def health(self) -> dict[str, Any]:
        return {"port": self.options.port, **self._counters(), "rejected": dict(self.decoder.rejected),
                "nodes": {s.options.id: {"online": bool(s.online), "lines": s.lines} for s in self.nodes.values()}}
