"""Real-time scheduling for the show's threads (gateway.realtime): whether the running gateway's event loop got
the SCHED_FIFO priority it asks for, and that the kernel's real-time throttling is left on."""

from __future__ import annotations

from gateway.box.check import Box, Finding, ok, skipped, warn
from gateway.box.health import health as running


def check(box: Box) -> list[Finding]:
    assert box.config is not None
    findings = []
    try:
        runtime = int(box.path("/proc/sys/kernel/sched_rt_runtime_us").read_text().strip())
    except (OSError, ValueError):
        runtime = None
    if runtime == -1:
        findings.append(warn("kernel.sched_rt_runtime_us is -1: a real-time thread kept busy could hold a core "
                             "from everything else on it", "sysctl -w kernel.sched_rt_runtime_us=950000 (the "
                             "default), and remove the setting that changed it", "kernel"))
    priority = box.config.gateway.realtime_priority
    if priority == 0:
        return [*findings, skipped("gateway.realtime_priority is 0: the loop runs at ordinary priority")]
    health = running(box)
    if not health.detailed or health.doc is None:
        why = "needs a token (run doctor as root)" if health.doc is not None else "the gateway is not running"
        return [*findings, skipped(f"how the running gateway's loop is scheduled is in its health: {why}")]
    scheduling = str(health.doc.get("scheduling"))
    if scheduling.startswith("fifo"):
        return [*findings, ok(f"the gateway's event loop runs {scheduling.replace('fifo', 'SCHED_FIFO')}")]
    return [*findings, warn(f"the gateway's event loop runs at ordinary priority, not SCHED_FIFO {priority}: "
                            f"{scheduling}", "the reason above says what refused it (the unit's LimitRTPRIO, the "
                            "cgroup's real-time budget); the box runs on, its DMX and OSC timing less sure under load")]
