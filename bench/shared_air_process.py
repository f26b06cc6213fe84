"""Several radios on one air (drivers/sim/shared_air.py) in a process of its own, real-time when asked and the
system allows it, as bench/air_process.py runs the one-radio air: each box's radio is a chip that answers within a
millisecond whatever the host's cores are doing, so its stand-in does not queue behind the daemons under test. Its
bands start effects on the monotonic clock, the same in every process, so what they report is comparable with the
parent's times. A test or a benchmark starts it, gives each box's `wristband` driver one of its ptys, and asks.

The parent talks to it over its stdin and stdout, a line each way: `serials` (the effects any band has started),
`off N` (radio N goes dark: its box is lost), `close` (the air's record written to a JSON file: what each radio put
on the air, and every band's radios heard, effect starts and live looks; then it exits)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.air_process import AirChild
from bench.common import die_with_parent
from drivers.sim.crowd import LiveShown
from drivers.sim.shared_air import SharedAir
from gateway.realtime import make_realtime


@dataclass
class PlacedHeard:
    """A band of the shared air as the parent sees it: its zone, the radios it hears, its effect starts (serial ->
    monotonic time), the live looks it showed, and how many copies it heard and lost."""
    zone: int
    radios: tuple[int, ...]
    starts: dict[int, float] = field(default_factory=dict)
    looks: list[LiveShown] = field(default_factory=list)
    heard: int = 0
    lost: int = 0


@dataclass
class SharedRecord:
    """What the air carried (when, data, radio) and its bands."""
    on_air: list[tuple[float, bytes, int]]
    bands: list[PlacedHeard]


class SharedAirProcess(AirChild):
    """`python -m bench.shared_air_process`, started by `open` and ended by `close`."""

    def __init__(self, key: bytes, show_id: int, losses: Sequence[float], seed: int, priority: int) -> None:
        super().__init__(["--key", key.hex(), "--show-id", str(show_id), "--losses", ",".join(map(str, losses)),
                          "--seed", str(seed), "--priority", str(priority)])

    async def open(self, ptys: Sequence[Path], bands: Sequence[tuple[int, Sequence[int]]], log: Path) -> None:
        """Start it with radio i on `ptys[i]` and a band per (zone, radios heard); on any failure it is stopped
        before the error is raised."""
        await self._start("bench.shared_air_process", log.with_suffix(".air.json"), "--ptys",
                          ",".join(map(str, ptys)), "--log", str(log),
                          "--bands", json.dumps([[z, list(r)] for z, r in bands]))

    async def power_off(self, radio: int) -> None:
        """Radio `radio` goes dark, as the dongle of a box that lost power."""
        await self._ask(f"off {radio}")

    async def close(self) -> SharedRecord:
        """Its record, once it has written it and exited."""
        doc = await self._record()
        return SharedRecord([(t, bytes.fromhex(data), radio) for t, data, radio in doc["on_air"]],
                            [PlacedHeard(zone, tuple(radios), {int(s): t for s, t in starts.items()},
                                         [LiveShown.from_json(x) for x in looks], heard, lost)
                             for zone, radios, starts, looks, heard, lost in doc["bands"]])


async def _serve(args: argparse.Namespace) -> dict[str, Any] | None:
    """The air until the parent asks to close it (its record) or goes away (None)."""
    scheduling = make_realtime(args.priority, "the virtual air")
    air = SharedAir(bytes.fromhex(args.key), args.show_id, [float(x) for x in args.losses.split(",")], args.seed)
    await air.open(args.ptys.split(","), [(zone, radios) for zone, radios in json.loads(args.bands)], record=True)
    loop = asyncio.get_running_loop()
    requests = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
    _answer({"scheduling": scheduling})
    try:
        while line := await requests.readline():  # until the parent goes away (end of input)
            request = line.strip()
            if request == b"serials":
                _answer(sorted({s for band in air.bands for s in band.starts}))
            elif request.startswith(b"off "):
                air.power_off(int(request[4:]))
                _answer("off")
            elif request == b"close":
                now = time.monotonic()
                for band in air.bands:  # what was due by now has begun to show
                    band.settle(now)
                return {"on_air": [(t, data.hex(), radio) for t, data, radio in air.on_air],
                        "bands": [(band.zone, sorted(band.radios), band.starts, [x.json() for x in band.looks],
                                   band.heard, band.lost) for band in air.bands]}
            else:
                raise ValueError(f"unknown request {request!r} (allowed: serials, off N, close)")
        return None
    finally:
        await air.close()


def _answer(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_air_process", description=__doc__)
    parser.add_argument("--ptys", required=True, help="where to link each radio's pty, comma-separated")
    parser.add_argument("--losses", required=True, help="each radio's loss (0..1), comma-separated")
    parser.add_argument("--bands", required=True, help="JSON: [[zone, [radios heard]], ...], one per band")
    parser.add_argument("--out", required=True, help="the JSON file the record is written to on close")
    parser.add_argument("--log", required=True, help="the file its standard error goes to")
    parser.add_argument("--key", required=True, help="the show key, in hexadecimal")
    parser.add_argument("--show-id", type=int, default=1)
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
