"""The service around an update: stopped, started and restarted by a command (systemd's by default), and watched
through the API's /health until it is healthy or the bound has passed.

Healthy: /health answers `ok` (or `degraded` when the version before was not `ok` either: a missing adapter or an
unreachable broker is not the new version's fault), and keeps answering so for `settle_s`, which catches a version
that starts and then falls over. The probe sends no token, so it needs no trust in the certificate: over HTTPS it
does not check it."""

from __future__ import annotations

import json
import shlex
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_COMMAND = "systemctl {action} venue-gateway.service"
DEFAULT_BOUND_S = 120.0  # a Raspberry Pi 4 starts the gateway (numpy, onnxruntime, both models) in well under it
DEFAULT_SETTLE_S = 10.0
POLL_S = 0.25


@dataclass(frozen=True)
class Service:
    """How the service is stopped, started and restarted: `template` with {action} in it."""

    template: str = DEFAULT_COMMAND
    timeout_s: float = DEFAULT_BOUND_S

    def run(self, action: str) -> str | None:
        """Run the command for `action`; None when it succeeded, else what went wrong (its exit and last line)."""
        argv = [part.replace("{action}", action) for part in shlex.split(self.template)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return f"`{shlex.join(argv)}` did not finish within {self.timeout_s:g} s"
        except OSError as exc:
            return f"`{shlex.join(argv)}` cannot run: {exc.strerror or exc}"
        if done.returncode == 0:
            return None
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return f"`{shlex.join(argv)}` exited {done.returncode}" + (f": {said[-1]}" if said else "")


def probe(url: str, timeout_s: float = 2.0) -> str | None:
    """The status /health answers at `url` (the API's base, e.g. https://127.0.0.1:8080), None when nothing answers
    (or not with a status)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # no token is sent: nothing to protect, and the box's own certificate
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/v1/health", timeout=timeout_s, context=context) as r:
            doc = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    status = doc.get("status") if isinstance(doc, dict) else None
    return status if isinstance(status, str) else None


def acceptable(baseline: str | None) -> set[str]:
    """The statuses that count as healthy after an update from a version that answered `baseline`."""
    return {"ok"} if baseline == "ok" else {"ok", "degraded"}


def wait_healthy(url: str, accept: set[str], bound_s: float, settle_s: float,
                 say: Callable[[str], None]) -> tuple[bool, str]:
    """Poll /health until it has answered an accepted status for `settle_s` on end, or `bound_s` has passed;
    (healthy, what was seen last)."""
    start = time.monotonic()
    good_since: float | None = None
    last: str | None = None
    polls = 0
    while (now := time.monotonic()) - start < bound_s:
        status = probe(url, timeout_s=min(2.0, max(0.2, bound_s - (now - start))))
        if status != last or polls == 0:
            say(f"  {now - start:5.1f} s  /health: {status or 'no answer'}")
            last = status
        polls += 1
        if status in accept:
            good_since = now if good_since is None else good_since
            if now - good_since >= settle_s:
                return True, status or ""
        else:
            good_since = None
        time.sleep(POLL_S)
    seen = f"/health answered {last!r}" if last else "the API never answered"
    return False, f"not healthy within {bound_s:g} s ({seen}; healthy is {' or '.join(sorted(accept))})"
