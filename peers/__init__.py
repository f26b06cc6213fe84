"""The independent peers that the tests and the benchmarks both start: a Mosquitto broker, OLA, socat's
pseudo-terminal pairs, tshark, and free loopback ports. Neither pytest nor the benchmarks' reporting is imported
here: a peer that this machine lacks raises `PeerMissing`, which the test suite turns into a skip (or, in CI, a
failure) and a benchmark into a clear error."""

from __future__ import annotations


class PeerMissing(RuntimeError):
    """A program this machine lacks; `what` names it and the Debian package that brings it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"needs {what}")
        self.what = what
