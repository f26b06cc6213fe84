"""The kernel's clock synchronised to a time source: the show clock is the wall clock (wristband packets and
effects start at absolute times, compliance minutes are stamped by it), and the unit starts the gateway only once
systemd-time-wait-sync says the clock is synchronised."""

from __future__ import annotations

import shutil
import subprocess

from gateway.box.check import Box, Finding, ok, problem, skipped

STA_UNSYNC = 0x0040  # the kernel's clock status: not synchronised to a time source
FIX = ("give the box a time source it can reach: systemd-timesyncd (timedatectl set-ntp true; the server in NTP= of "
       "/etc/systemd/timesyncd.conf, one on the venue LAN or the internet's) or chrony; `timedatectl timesync-status` "
       "shows what it hears. The gateway waits for it at start (systemd-time-wait-sync)")


def check(box: Box) -> list[Finding]:
    state = box.clock()
    if state is None:  # adjtimex refused (a filter) or not there: ask systemd
        return _timedatectl()
    if state.status & STA_UNSYNC:
        return [problem(f"the kernel says the clock is not synchronised to a time source (adjtimex: STA_UNSYNC, "
                        f"maximum error {state.max_error_us / 1e6:g} s)", FIX)]
    return [ok(f"synchronised (the kernel's estimated error {state.est_error_us / 1000:g} ms, at most "
               f"{state.max_error_us / 1000:g} ms)", est_error_us=state.est_error_us,
               max_error_us=state.max_error_us)]


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
