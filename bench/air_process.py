"""The virtual air (drivers/sim/air.py) in a process of its own, real-time when the system allows it, for the
benchmarks that load the box: a radio is a chip of its own that answers the gateway within a millisecond
whatever the host's cores are doing, so its stand-in does not queue behind the load under test (a drain, the
broker) or behind the benchmark's own work. The air's bands start effects on the air's clock (the monotonic
clock, the same in every process), so what they report is comparable with the parent's times.

The parent talks to it over its stdin and stdout, a line each way: `serials` (the effects any band has
started), `close` (the air's record, with every band's effect starts and live looks, written to a JSON file, then
it exits)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, die_with_parent
from drivers.sim.air import VirtualAir
from drivers.sim.crowd import LiveShown
from gateway.realtime import make_realtime

READY_S = 30.0  # for the bands to power on and scan
ANSWER_S = 30.0  # for any request: the air answers in milliseconds; a stuck one is killed, not waited for


@dataclass
class HeardBand:
    """A virtual band as the parent sees it: its zone, its starts (effect serial -> monotonic time) and the live
    looks it showed (each from when it began to show, monotonic time)."""
    zone: int
    starts: dict[int, float] = field(default_factory=dict)
    looks: list[LiveShown] = field(default_factory=list)


@dataclass
class Record:
    """What the air carried (when, data), its bands, and the HCI commands the radio took (opcode, read,
    answered)."""
    on_air: list[tuple[float, bytes]]
    bands: list[HeardBand]
    commands: list[tuple[int, float, float]]


class AirChild:
    """An air in a process of its own, spoken to a line each way: the part every kind of air shares."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.scheduling = "not started"
        self._proc: asyncio.subprocess.Process | None = None
        self._out: Path | None = None

    async def _start(self, module: str, out: Path, *args: str) -> None:
        """`python -m module` writing its record to `out`; on any failure it is stopped before the error is raised."""
        self._out = out
        self._proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", module, *self.args, *args, "--out", str(out), "--parent", str(os.getpid()), cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            ready = await self._line(READY_S, "start")
        except BaseException:
            await self.stop()
            raise
        self.scheduling = ready["scheduling"]

    async def serials(self) -> set[int]:
        """The effects that any band has started so far."""
        return set(await self._ask("serials"))

    async def _record(self) -> Any:
        """The record it wrote, once asked to close and exited."""
        assert self._proc is not None and self._out is not None
        await self._ask("close")
        try:
            await asyncio.wait_for(self._proc.wait(), ANSWER_S)
        except TimeoutError:
            raise RuntimeError(f"the virtual air did not exit within {ANSWER_S:g} s of closing") from None
        return json.loads(await asyncio.to_thread(self._out.read_text))

    async def stop(self) -> None:
        """Killed, if it still runs (after an error), and waited for."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def _ask(self, request: str) -> Any:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(request.encode() + b"\n")
        await self._proc.stdin.drain()
        return await self._line(ANSWER_S, f"answer {request!r}")

    async def _line(self, seconds: float, what: str) -> Any:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), seconds)
        except TimeoutError:
            raise RuntimeError(f"the virtual air did not {what} within {seconds:g} s (see its log)") from None
        if not line:
            raise RuntimeError(f"the virtual air exited with {await self._proc.wait()} (see its log)")
        return json.loads(line)


class AirProcess(AirChild):
    """`python -m bench.air_process`, started by `open` and ended by `close`."""

    def __init__(self, key: bytes, show_id: int, loss: float, seed: int, priority: int) -> None:
        super().__init__(["--key", key.hex(), "--show-id", str(show_id), "--loss", str(loss), "--seed", str(seed),
                          "--priority", str(priority)])

    async def open(self, pty: Path, zones: list[int], log: Path) -> None:
        """Start it; on any failure it is stopped before the error is raised."""
        await self._start("bench.air_process", pty.with_suffix(".air.json"), "--pty", str(pty), "--log", str(log),
                          "--zones", ",".join(map(str, zones)))

    async def close(self) -> Record:
        """Its record, once it has written it and exited."""
        doc = await self._record()
        return Record([(t, bytes.fromhex(data)) for t, data in doc["on_air"]],
                      [HeardBand(zone, {int(s): t for s, t in starts.items()}, [LiveShown.from_json(x) for x in looks])
                       for zone, starts, looks in doc["bands"]],
                      [(opcode, read, answered) for opcode, read, answered in doc["commands"]])


async def _serve(args: argparse.Namespace) -> dict[str, Any] | None:
    """The air until the parent asks to close it (its record) or goes away (None)."""
    scheduling = make_realtime(args.priority, "the virtual air")
    air = VirtualAir(bytes.fromhex(args.key), args.show_id, loss=args.loss, seed=args.seed)
    await air.open(args.pty, [int(z) for z in args.zones.split(",")], record=True)
    loop = asyncio.get_running_loop()
    requests = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)

    _answer({"scheduling": scheduling})
    try:
        while line := await requests.readline():  # until the parent goes away (end of input)
            request = line.strip()
            if request == b"serials":
                _answer(sorted({s for band in air.bands for s in band.starts}))
            elif request == b"close":
                now = time.monotonic()
                for band in air.bands:  # what was due by now has begun to show
                    band.settle(now)
                return {"on_air": [(t, data.hex()) for t, data in air.on_air],
                        "bands": [(band.zone, band.starts, [x.json() for x in band.looks]) for band in air.bands],
                        "commands": air.commands}
            else:
                raise ValueError(f"unknown request {request!r} (allowed: serials, close)")
        return None
    finally:
        await air.close()


def _answer(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.air_process", description=__doc__)
    parser.add_argument("--pty", required=True, help="where to link the radio's pty")
    parser.add_argument("--out", required=True, help="the JSON file the record is written to on close")
    parser.add_argument("--log", required=True, help="the file its standard error goes to")
    parser.add_argument("--key", required=True, help="the show key, in hexadecimal")
    parser.add_argument("--show-id", type=int, default=1)
    parser.add_argument("--zones", required=True, help="one band per entry: its zone, comma-separated")
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--priority", type=int, default=0, help="SCHED_FIFO priority, 0: ordinary")
    parser.add_argument("--parent", type=int, default=None, help="exit if this process is gone (killed with it)")
    args = parser.parse_args()
    if args.parent is not None:  # set here, not before exec: the parent has threads by then
        die_with_parent()
        if os.getppid() != args.parent:
            sys.exit("the parent process has gone")
    with open(args.log, "wb") as log:
        os.dup2(log.fileno(), sys.stderr.fileno())
    record = asyncio.run(_serve(args))
    if record is not None:
        Path(args.out).write_text(json.dumps(record))
        _answer("closed")


if __name__ == "__main__":
    main()
