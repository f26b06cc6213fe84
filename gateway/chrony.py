"""chronyd's own word on the box's clock, through chrony's maintained client: `chronyc -c -n tracking` over
chronyd's command port (UDP, 127.0.0.1:323 unless told otherwise), which answers monitoring requests from localhost
without authentication. The clock watch and the doctor read it where the kernel's word (adjtimex) cannot be had: the
installed unit's ProtectClock refuses adjtimex even as a read, and chronyc needs none of what the unit takes away
(it is a plain program talking UDP to 127.0.0.1).

The error bound is chrony's own, from chronyc(1) under `tracking` (Root dispersion): "An absolute bound on the
computer's clock accuracy (assuming the stratum-1 computer is correct) is given by: clock_error <=
|system_time_offset| + root_dispersion + (0.5 * root_delay)"."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

HOST, PORT = "127.0.0.1", 323  # chronyd's command port (its `cmdport`, bound to localhost by `bindcmdaddress`)
NOT_SYNCHRONISED = "Not synchronised"  # the leap status chronyd gives while it has no source it trusts
FIELDS = 14  # chronyc -c tracking: reference id, name, stratum, reference time, system time, last and RMS offsets,
#              frequency, residual frequency, skew, root delay, root dispersion, update interval, leap status


@dataclass(frozen=True)
class Tracking:
    """chronyd's tracking report: its reference, how far the system clock is from the time it keeps, and how far
    that time may be from its stratum-1 source (root delay and dispersion)."""

    reference: str  # the source's address (chronyc -n), "" with none
    stratum: int
    offset_ms: float  # the system clock minus chrony's time (chronyc: "System time ... fast/slow of NTP time")
    root_delay_ms: float
    root_dispersion_ms: float
    leap: str  # "Normal", "Insert second", "Delete second" or "Not synchronised"

    @property
    def synchronised(self) -> bool:
        return self.leap != NOT_SYNCHRONISED

    @property
    def error_bound_ms(self) -> float:
        """chrony's bound on the clock's error: |offset| + root dispersion + root delay / 2 (see the module's doc)."""
        return abs(self.offset_ms) + self.root_dispersion_ms + self.root_delay_ms / 2

    def document(self) -> dict[str, Any]:
        return {"reference": self.reference, "stratum": self.stratum, "leap": self.leap,
                "offset_ms": round(self.offset_ms, 3), "root_delay_ms": round(self.root_delay_ms, 3),
                "root_dispersion_ms": round(self.root_dispersion_ms, 3),
                "error_bound_ms": round(self.error_bound_ms, 3)}


def parse(line: str) -> Tracking:
    """One line of `chronyc -c tracking`; ValueError when it is not one."""
    fields = line.strip().split(",")
    if len(fields) != FIELDS:
        raise ValueError(f"{len(fields)} fields, not {FIELDS}")
    # chronyc's "System time" is the correction chronyd is making: positive while the system clock is slow.
    return Tracking(reference=fields[1], stratum=int(fields[2]), offset_ms=-float(fields[4]) * 1000,
                    root_delay_ms=float(fields[10]) * 1000, root_dispersion_ms=float(fields[11]) * 1000,
                    leap=fields[13])


class Chronyc:
    """Asks chronyd at `host`:`port` for its tracking, with chronyc, waiting at most `timeout_s`. Blocking: the
    event loop calls it from a worker thread."""

    def __init__(self, host: str = HOST, port: int = PORT, *, timeout_s: float = 2.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.error: str | None = None  # why the last question had no answer (logged when it changes)

    def tracking(self) -> Tracking | None:
        """chronyd's tracking; None when chronyc is not installed, chronyd does not answer in time, or its answer
        is not understood (`error` says which, logged when it changes)."""
        found = self._ask()
        if isinstance(found, str):
            if found != self.error:
                log.warning("chrony: %s", found)
            self.error = found
            return None
        if self.error is not None:
            log.info("chrony: chronyd at %s:%d answers again", self.host, self.port)
        self.error = None
        return found

    def _ask(self) -> Tracking | str:
        program = shutil.which("chronyc")
        if program is None:
            return "chronyc is not installed (Debian's chrony)"
        try:
            done = subprocess.run([program, "-c", "-n", "-h", self.host, "-p", str(self.port), "tracking"],
                                  capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            return f"chronyd at {self.host}:{self.port} did not answer within {self.timeout_s:g} s"
        except OSError as e:
            return f"chronyc cannot run: {e}"
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[-1]
            return f"chronyd at {self.host}:{self.port} does not answer ({said})"
        try:
            return parse(done.stdout.splitlines()[0] if done.stdout else "")
        except ValueError as e:
            return f"chronyc's tracking is not understood ({e}): {done.stdout.strip()[:200]!r}"
