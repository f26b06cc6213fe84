"""What a doctor check is: a function of the box (`Box`) that says how one subject stands (`Finding`s), each
`ok`, `warn` (the box runs, a tech should know), `problem` (fix it before doors: the fix is given) or `skipped`
(with why). `Box` is where the checks read the box: the configuration, and the few places a test may point
elsewhere at the same seams (the kernel's clock state, chronyd's, the file system's root for /proc, /sys and /dev)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway import config as configuration
from gateway.chrony import Chronyc, Tracking
from gateway.kernel_clock import Timex, kernel_clock

Status = Literal["ok", "warn", "problem", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "problem", "skipped")


@dataclass(frozen=True)
class Finding:
    status: Status
    message: str
    fix: str | None = None  # what to do: every problem has one
    subject: str = ""  # what it is about, when a check looks at several (a driver's port, a token)
    details: dict[str, Any] = field(default_factory=dict)  # for --json: figures, paths


def ok(message: str, subject: str = "", /, **details: Any) -> Finding:
    return Finding("ok", message, None, subject, details)


def warn(message: str, fix: str | None = None, subject: str = "", /, **details: Any) -> Finding:
    return Finding("warn", message, fix, subject, details)


def problem(message: str, fix: str, subject: str = "", /, **details: Any) -> Finding:
    return Finding("problem", message, fix, subject, details)


def skipped(why: str, subject: str = "") -> Finding:
    return Finding("skipped", why, None, subject)


@dataclass
class Box:
    """The box the checks look at: its configuration (`config` None when the file does not load: `problems`
    says why) and where its state is read."""

    config_path: Path
    config: configuration.Config | None
    problems: list[str]  # the configuration's, as check-config prints them
    clock: Callable[[], Timex | None] = kernel_clock
    chrony: Callable[[], Tracking | None] = field(default_factory=lambda: Chronyc().tracking)  # chronyd's tracking
    root: Path = Path("/")  # /proc, /sys and /dev are read under it
    timeout_s: float = 3.0  # what one network exchange of a check may take
    _shared: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def path(self, absolute: str) -> Path:
        """A path of the system (/proc/..., /sys/..., /dev/...) under `root`."""
        return self.root / absolute.lstrip("/")

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """What `make` returns, made once for every check that asks (the running gateway's health)."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = make()
            return self._shared[key]


Check = Callable[[Box], list[Finding]]
