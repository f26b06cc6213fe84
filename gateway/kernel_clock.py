"""The kernel's word on its clock: adjtimex(2) with no modes, a read that needs no privilege (though a seccomp
filter may refuse it: systemd's ProtectClock does). The time daemon (chronyd) keeps its state there: STA_UNSYNC
while the clock is not synchronised to a source, and its estimated and maximum errors. libc is found once, at the
first read (`ctypes.util.find_library` runs ldconfig in a subprocess: not something to do every second)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass

STA_UNSYNC = 0x0040  # the kernel's clock status: not synchronised to a time source


@dataclass(frozen=True)
class Timex:
    """The kernel's clock state as adjtimex(2) reads it: `status` bits (STA_UNSYNC: not synchronised), and the
    maximum and estimated errors in microseconds."""

    status: int
    max_error_us: int
    est_error_us: int

    @property
    def synchronised(self) -> bool:
        return not self.status & STA_UNSYNC


class _Timex(ctypes.Structure):
    """The head of the kernel's `struct timex` (its fields up to `status`), then room for the rest."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("rest", ctypes.c_byte * 256)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


def kernel_clock() -> Timex | None:
    """The kernel's clock state; None where it cannot be asked (not Linux, or the call is filtered)."""
    libc = _libc()
    if libc is None:
        return None
    timex = _Timex()  # modes 0: read only
    if libc.adjtimex(ctypes.byref(timex)) < 0:
        return None
    return Timex(timex.status, timex.maxerror, timex.esterror)
