"""Real-time scheduling of the show's threads (gateway.realtime_priority), against the kernel itself: the daemon's
loop and frame clock in SCHED_FIFO and nothing else, and a refusal said plainly, naming the fix. (The unit's
LimitRTPRIO, which lets its ordinary user ask, is not tested here: raising a hard limit needs CAP_SYS_RESOURCE,
which this machine's root does not have.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import ROOT, Daemon

PROBE = "from gateway.realtime import make_realtime; print(make_realtime(5, 'the event loop'))"


def _probe(*wrapper: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*wrapper, sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=30,
                          cwd="/", env={**os.environ, "PYTHONPATH": str(ROOT)})


allowed = pytest.mark.skipif(_probe().stdout.strip() != "fifo 5",
                             reason="this machine does not allow this user SCHED_FIFO 5")


def _realtime_threads(pid: int) -> dict[int, tuple[int, int]]:
    """The process's threads in any real-time policy: (policy with its flags, priority); threads come and go:
    those still there."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        try:
            policy = os.sched_getscheduler(int(name))
            if policy & ~os.SCHED_RESET_ON_FORK in (os.SCHED_FIFO, os.SCHED_RR):
                out[int(name)] = (policy, os.sched_getparam(int(name)).sched_priority)
        except OSError:
            pass
    return out


@allowed
def test_the_loop_and_the_frame_clock_run_sched_fifo_and_no_other_thread(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(extra="\n[gateway]\nrealtime_priority = 5\n")
    health = d.start().wait_healthy()
    assert health["scheduling"] == "fifo 5"
    assert d.proc is not None
    deadline = time.monotonic() + 5
    while len(realtime := _realtime_threads(d.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The main thread runs the loop; the other is the frame clock's pacer. The store's threads, the default
    # executor's and every other thread the loop started are ordinary (SCHED_RESET_ON_FORK).
    assert len(realtime) == 2 and d.proc.pid in realtime, realtime
    assert set(realtime.values()) == {(os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, 5)}
    assert len(os.listdir(f"/proc/{d.proc.pid}/task")) > 3
    assert d.get("/api/v1/health")["dmx"]["frames"] > 0
    assert d.terminate() == 0


def test_a_refused_priority_is_said_plainly_and_names_the_fix() -> None:
    # Without CAP_SYS_NICE and with RLIMIT_RTPRIO 0 the kernel refuses (root keeps no capability it has dropped).
    wrapper = ("prlimit", "--rtprio=0", "setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", "--") \
        if os.geteuid() == 0 else ("prlimit", "--rtprio=0")
    done = _probe(*wrapper)
    assert done.stdout.startswith("normal: the system refused SCHED_FIFO 5 (Operation not permitted"), done.stderr
    assert "may use up to 0: allow it with LimitRTPRIO=5 in the service's unit" in done.stdout
    assert "the event loop runs at normal priority" in done.stderr
