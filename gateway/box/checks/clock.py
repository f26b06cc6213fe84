"""The kernel's clock synchronised to a time source (adjtimex; where that is refused, chronyd's tracking through
chronyc, then systemd's timedatectl): the show clock is the wall clock (wristband packets and
effects start at absolute times, compliance minutes are stamped by it), and the unit starts the gateway only once
the clock is synchronised (time-sync.target: chrony-wait on the image). In a shared show, the running gateway's
clock watch too (gateway/show/clock_watch.py): whether its radios are silenced because this box's clock is off the
show's, read from its health (with a token)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from gateway.box.check import Box, Finding, ok, problem, skipped, warn
from gateway.box.health import health

FIX = ("give the box a time source it can reach, one on the venue LAN or the internet's: on the image chrony "
       "(`chronyc sources` shows what it hears; the venue's NTP server from timesyncd.conf on the card, in "
       "/etc/chrony/sources.d/), elsewhere chrony or systemd-timesyncd (timedatectl set-ntp true; the server in NTP= "
       "of /etc/systemd/timesyncd.conf). The gateway waits for it at start (time-sync.target)")
FIX_SHOW = ("every box of the show on the same NTP server on the venue LAN: `chronyc sources` and `chronyc tracking` "
            "on each box; the radios transmit again by themselves once the clock is back within the bound")


def check(box: Box) -> list[Finding]:
    watch = _watch(box) if box.config is not None else None
    return [*kernel(box, watch), *watched(watch)]


def kernel(box: Box, watch: dict[str, Any] | None = None) -> list[Finding]:
    """The kernel's word (or chronyd's, or systemd's); `watch`: the running clock watch's health document, whose
    word may differ from the kernel's, and the finding then says why."""
    state = box.clock()
    if state is None:  # adjtimex refused (a filter) or not there: ask chronyd, then systemd
        return _chrony(box) or _timedatectl()
    if not state.synchronised:
        told = ""
        if watch is not None and watch.get("source") != "kernel":
            # The watch ignores a kernel never synchronised since the gateway started (a machine with no time
            # daemon): the box is still not on a time source, which the show's clock and the compliance log need.
            by = ("chronyd's word and the other boxes' clocks" if watch.get("source") == "chrony"
                  else "the other boxes' clocks alone")
            told = (f"; the running gateway's clock watch does not go by this word (the kernel has not been "
                    f"synchronised since the gateway started) but by {by}: see `show clock`")
        return [problem(f"the kernel says the clock is not synchronised to a time source (adjtimex: STA_UNSYNC, "
                        f"maximum error {state.max_error_us / 1e6:g} s){told}", FIX)]
    return [ok(f"synchronised (the kernel's estimated error {state.est_error_us / 1000:g} ms, at most "
               f"{state.max_error_us / 1000:g} ms)", est_error_us=state.est_error_us,
               max_error_us=state.max_error_us)]


def _chrony(box: Box) -> list[Finding]:
    """chronyd's word (none when it does not answer)."""
    tracking = box.chrony()
    if tracking is None:
        return []
    figures = tracking.document()
    if not tracking.synchronised:
        return [problem("chrony says the clock is not synchronised to a time source (chronyc tracking: leap status "
                        "Not synchronised)", FIX, "", **figures)]
    return [ok(f"synchronised to {tracking.reference} (chrony's error bound {tracking.error_bound_ms:.3g} ms: "
               f"|offset| + root dispersion + root delay / 2)", "", **figures)]


def _watch(box: Box) -> dict[str, Any] | None:
    """The running gateway's clock watch as its health says it (None: no shared show, or not told without a
    token; the api check says why the gateway does not answer)."""
    h = health(box)
    unit = (h.doc or {}).get("services", {}).get("clock")
    detail = unit.get("detail") if isinstance(unit, dict) else None
    return detail if isinstance(detail, dict) else None


def watched(doc: dict[str, Any] | None) -> list[Finding]:
    """The clock watch's state (its health document) as the doctor shows it."""
    if doc is None:
        return []
    state, message, bound = doc.get("state"), doc.get("message"), doc.get("bound_ms")
    figures = {k: doc.get(k) for k in ("offset_ms", "uncertainty_ms", "est_error_ms", "peers")}
    if state == "off":
        return [problem(f"the radios send nothing: {message}", FIX_SHOW, "show clock", **figures)]
    if state == "disagree":
        return [warn(str(message), FIX_SHOW, "show clock", **figures)]
    if state == "ok":
        offset = doc.get("offset_ms")
        against = ("no other box heard" if offset is None else
                   f"{offset:+.2f} ms from the show's clocks, within {doc.get('uncertainty_ms')} ms")
        return [ok(f"within the show's bound of {bound:g} ms ({against})", "show clock", **figures)]
    return [skipped("the gateway's clock watch has not read the clock yet", "show clock")]


def _timedatectl() -> list[Finding]:
    if shutil.which("timedatectl") is None:
        return [skipped("the kernel cannot be asked (adjtimex) and there is no timedatectl")]
    try:
        done = subprocess.run(["timedatectl", "show", "--property=NTPSynchronized", "--value"], capture_output=True,
                              text=True, timeout=3)
    except subprocess.TimeoutExpired:
        return [skipped("the kernel cannot be asked (adjtimex) and timedatectl did not answer within 3 s")]
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in ("yes", "no"):
        return [skipped(f"the kernel cannot be asked (adjtimex) nor systemd ({done.stderr.strip() or answer})")]
    if answer == "no":
        return [problem("systemd says the clock is not synchronised (timedatectl: NTPSynchronized=no)", FIX)]
    return [ok("synchronised (timedatectl: NTPSynchronized=yes)")]
