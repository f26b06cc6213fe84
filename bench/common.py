"""Shared helpers of the benchmarks: figures and tables, percentiles, /proc memory, and child processes that are
always stopped (on errors, SIGTERM, and via PDEATHSIG if the bench is killed). Free loopback ports: peers.ports."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Literal

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REALTIME_PRIORITY = 10  # gateway.realtime_priority as config/venue.example.toml, under the systemd unit's LimitRTPRIO


# -- figures --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """One measured figure, its target (if any) and a peer measured in the same run (if any)."""

    name: str
    value: float
    unit: str  # "ms", "/s", "MB", "%"
    target: float | None = None
    better: Literal["lower", "higher"] = "lower"
    peer: float | None = None
    peer_label: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.peer if self.peer else None

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        ok = self.value < self.target if self.better == "lower" else self.value >= self.target
        return "pass" if ok else "SHORT"

    def row(self) -> list[str]:
        sign = "<" if self.better == "lower" else ">="
        target = "-" if self.target is None else f"{sign} {fmt(self.target, self.unit)}"
        peer = "-" if self.peer is None else f"{fmt(self.peer, self.unit)} {self.peer_label}".strip()
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        return [self.name, fmt(self.value, self.unit), target, peer, ratio, self.verdict]


HEADERS = ["figure", "measured", "target/limit", "peer (same run)", "ratio", "result"]


def fmt(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f} /s"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:,.1f} {unit}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                             strict=True)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def figures_table(figures: Sequence[Figure]) -> str:
    return table(HEADERS, [f.row() for f in figures])


def title(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values; nan when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def latency_line(label: str, seconds: Sequence[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{label}: p50 {percentile(ms, 50):.3f} ms, p99 {percentile(ms, 99):.3f} ms, "
            f"max {max(ms):.3f} ms  (n={len(ms)})")


# -- the machine ----------------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM etc. of a process, in kB, from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") and rest.strip().endswith("kB"):
            out[key] = int(rest.split()[0])
    return out


def wait_until(check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None,
               what: str = "the condition") -> None:
    """Poll `check` every 50 ms; raise if it is not true within `timeout` or `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if check():
                return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


# -- child processes ------------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child (before exec, or first thing in its own code): get SIGKILL when the bench process dies, however
    it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so `finally` blocks (and child cleanup) run."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def child(args: Sequence[str], log: Path, *, stdout: int | IO[bytes] | None = None,
          env: dict[str, str] | None = None, user: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `args` in its own session with stderr (and stdout unless given) to `log`; always stopped on exit.
    `user` (when root) runs it as that user; the parent-death signal is set after the switch, so it holds."""
    group = pwd.getpwnam(user).pw_gid if user else None
    groups: list[int] | None = [] if user else None  # its own group, none of ours
    with open(log, "wb") as out:  # (the benchmarks start children from their main thread: preexec_fn is safe)
        proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=out if stdout is None else stdout,
                                stderr=out, cwd=ROOT, env=env, start_new_session=True, user=user, group=group,
                                extra_groups=groups, preexec_fn=die_with_parent)
        try:
            yield proc
        except Exception:
            stop(proc)
            sys.stderr.write(f"--- last lines of {log} ({' '.join(args)}):\n{tail(log)}\n")
            raise
        finally:
            stop(proc)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
