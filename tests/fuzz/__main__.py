"""`make fuzz`: every fuzz target and the decoders' any-bytes properties with a long budget, run in rounds (each a
fresh pytest run with its own random seeds, so hypothesis's memory of a round stays small), until each has run
--examples inputs in total; after each round, how many inputs each has run so far, in how long.

    python -m tests.fuzz [--examples N] [--round N] [--workers N] [pytest node ids or paths]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from tests.fuzz.budget import DECODER_PROPERTIES, EXAMPLES

ROOT = Path(__file__).resolve().parents[2]


def _round(targets: list[str], examples: int, workers: int) -> tuple[dict[str, dict[str, float]], int]:
    """One pytest run of `targets` at `examples` inputs each: per test, its inputs, seconds and failure."""
    with tempfile.TemporaryDirectory(prefix="fuzz-counts-") as counts:
        env = {**os.environ, EXAMPLES: str(examples), "FUZZ_COUNTS": counts}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.fuzz.plugin", "--timeout=0",
                   "-p", "no:cacheprovider", *(["-n", str(workers)] if workers > 1 else []), *targets]
        code = subprocess.run(command, cwd=ROOT, env=env).returncode
        merged: dict[str, dict[str, float]] = {}
        for file in Path(counts).glob("*.json"):  # a worker's inputs; its time and failures also in the controller's
            for name, doc in json.loads(file.read_text()).items():
                into = merged.setdefault(name, {"inputs": 0, "seconds": 0.0, "failed": 0, "xfailed": 0})
                into["inputs"] += doc["inputs"]
                into["seconds"] = max(into["seconds"], doc["seconds"])
                into["failed"] = max(into["failed"], int(doc["failed"]))
                into["xfailed"] = max(into["xfailed"], int(doc["xfailed"]))
    return merged, code


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1_000_000, help="inputs per target in total")
    parser.add_argument("--round", type=int, default=50_000, help="inputs per target in one pytest run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pytest-xdist workers")
    parser.add_argument("targets", nargs="*", default=["tests/fuzz", *DECODER_PROPERTIES])
    args = parser.parse_args()
    inputs: Counter[str] = Counter()
    seconds: defaultdict[str, float] = defaultdict(float)
    failed: set[str] = set()
    xfailed: set[str] = set()
    exhausted: set[str] = set()  # ran fewer than asked in a round: hypothesis found no more distinct inputs
    targets, short, code, started, rounds = list(args.targets), set[str](), 0, time.monotonic(), 0
    while targets:
        asked = min(args.round, max((args.examples - inputs[n] for n in short), default=args.examples))
        ran, round_code = _round(targets, asked, args.workers)
        code = code or round_code
        for name, doc in ran.items():
            inputs[name] += int(doc["inputs"])
            seconds[name] += doc["seconds"]
            if doc["failed"]:
                failed.add(name)
            elif doc["xfailed"]:
                xfailed.add(name)
            elif doc["inputs"] < asked:
                exhausted.add(name)
        short = {n for n in ran if inputs[n] < args.examples and n not in failed | xfailed | exhausted}
        # A target named by a path stands for the tests it holds: it runs again while any of them is short.
        targets = [t for t in targets if any(n == t or n.startswith((t + "::", t.rstrip("/") + "/")) for n in short)]
        rounds += 1
        # After every round, so that a run stopped early (a long one often is) still says what it did.
        print(f"\nfuzz: round {rounds} done{'' if targets else ', the last'}: {len(inputs)} targets, "
              f"{time.monotonic() - started:.0f} s in all (asked {args.examples:,} inputs each, rounds of "
              f"{args.round:,}), {sum(inputs.values()):,} inputs so far", flush=True)
        print(f"{'inputs':>12} {'seconds':>9} {'inputs/s':>9}  target")
        for name in sorted(inputs, key=lambda n: n.split("::")):
            note = (" FAILED" if name in failed else " (xfail: stops at its known failure)" if name in xfailed
                    else " (every distinct input tried)" if name in exhausted else "")
            rate = inputs[name] / seconds[name] if seconds[name] else 0.0
            print(f"{inputs[name]:>12,} {seconds[name]:>9.1f} {rate:>9.0f}  {name}{note}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
