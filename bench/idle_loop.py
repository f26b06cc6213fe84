"""The machine's own loop-lag floor, shared by the benchmarks that measure a daemon's loop lag: an asyncio loop that
runs nothing but the daemon's lag timer (gateway.looplag, 50 ms), in a process of its own so that nothing of the
benchmark's runs beside it. `python -m bench.idle_loop SECONDS` prints its summary as JSON."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.common import PYTHON, child
from gateway.looplag import LoopLag


async def run(seconds: float) -> dict[str, float]:
    """Nothing but the daemon's own 50 ms lag timer on an otherwise idle loop, for `seconds`."""
    lag = LoopLag(CollectorRegistry(), 0.05, window=100_000)
    task = asyncio.get_running_loop().create_task(lag.run())
    await asyncio.sleep(seconds)
    task.cancel()
    return lag.summary()


def floor(seconds: float, tmp: Path) -> dict[str, float]:
    """The lag of an idle loop in a process of its own: what this machine gives any asyncio timer now."""
    with child([PYTHON, "-m", "bench.idle_loop", str(seconds)], tmp / "idle.log", stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=seconds + 30)
    summary: dict[str, float] = json.loads(out)
    return summary


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(float(sys.argv[1])))))
