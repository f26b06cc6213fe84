"""Real-time scheduling for the threads the show's timing runs on (the event loop and the frame clock's pacer),
when the configuration asks for it and the system allows it: a frame or an OSC message then runs as soon as it is
due, whatever else keeps the box's cores busy (the store's writer, a broker on the same box, a drain)."""

from __future__ import annotations

import logging
import os
import resource
import sys

log = logging.getLogger(__name__)


def make_realtime(priority: int, thread: str) -> str:
    """Put the calling thread in SCHED_FIFO at `priority` (1-99); the threads it starts afterwards are ordinary
    ones (SCHED_RESET_ON_FORK), so only the threads that ask run real-time. Returns how the thread now runs, for
    health: "fifo N", "normal", or "normal: why" when the system refused."""
    if priority <= 0:
        return "normal"
    if sys.platform != "linux":
        return "normal: real-time scheduling is only used on Linux"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except OSError as exc:
        allowed = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
        if allowed != resource.RLIM_INFINITY and allowed < priority:  # no CAP_SYS_NICE and too low a limit
            fix = f"this process may use up to {allowed}: allow it with LimitRTPRIO={priority} in the service's unit"
        else:  # the limit allows it: real-time group scheduling (a cgroup's cpu.rt_runtime_us of 0), a
            # container without CAP_SYS_NICE or a security module refused
            fix = ("RLIMIT_RTPRIO allows it, so the refusal is the cgroup's real-time budget (cpu.rt_runtime_us) "
                   "or a container or security policy")
        why = f"the system refused SCHED_FIFO {priority} ({exc.strerror}; {fix})"
        log.warning("%s runs at normal priority: %s", thread, why)
        return f"normal: {why}"
    log.info("%s runs SCHED_FIFO at priority %d", thread, priority)
    return f"fifo {priority}"
