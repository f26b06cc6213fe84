"""`venue-gateway doctor`: every check of gateway.box.checks run at once, each in a thread of its own and bounded
in time (a dead broker or a silent dongle costs its few seconds, never the whole run), then what they found: as
lines for a tech, or as JSON. The exit status is 1 when any check found a problem."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from gateway import config as configuration
from gateway.box.check import STATUSES, Box, Finding, problem, skipped
from gateway.box.checklist import CHECKS, Entry
from gateway.kernel_clock import Timex, kernel_clock

BUDGET_S = 8.0  # the longest a check may take: its network exchanges are bounded by Box.timeout_s within it
DEFAULT_CONFIG = "/etc/venue-gateway/gateway.toml"
EXIT_OK, EXIT_PROBLEM = 0, 1


def load(config_path: str | os.PathLike[str], *, clock: Callable[[], Timex | None] = kernel_clock,
         root: Path = Path("/")) -> Box:
    """The box as its configuration describes it: the problems `check-config` would list, and the configuration
    itself whenever the file alone loads, so that the other checks run even while the box lacks something."""
    path = Path(config_path)
    problems: list[str] = []
    try:
        cfg: configuration.Config | None = configuration.load(path, box=True)
    except configuration.ConfigError as exc:
        problems = exc.lines()
        try:
            cfg = configuration.load(path)
        except configuration.ConfigError:
            cfg = None
    return Box(cfg.path if cfg is not None else path, cfg, problems, clock=clock, root=root)


def run(box: Box, checks: Sequence[Entry] = CHECKS, budget_s: float = BUDGET_S) -> list[tuple[str, Finding]]:
    """Every check's findings, in the order of `checks`."""
    found: dict[str, list[Finding]] = {}

    def one(entry: Entry) -> None:
        try:
            found[entry.name] = entry.check(box)
        except Exception as exc:  # a check that breaks is one finding, never the whole run
            found[entry.name] = [problem(f"the check itself failed: {type(exc).__name__}: {exc}",
                                         "a fault of the doctor: report this line with the box's configuration")]

    threads = []
    for entry in checks:
        if entry.needs_config and box.config is None:
            found[entry.name] = [skipped("the configuration does not load (see configuration)")]
            continue
        # Daemon threads: one stuck past its budget is left behind, and does not keep the command from ending.
        thread = threading.Thread(target=one, args=(entry,), name=f"doctor-{entry.name}", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + budget_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    late = [problem(f"did not finish within {budget_s:g} s", "what it waits for is not answering: run doctor again, "
                    "and look at that part of the box by hand")]
    done = dict(found)  # as it stands at the deadline: a check left behind may still write to `found`
    return [(entry.name, finding) for entry in checks for finding in done.get(entry.name, late)]


def verdict(results: Sequence[tuple[str, Finding]]) -> str:
    statuses = {f.status for _, f in results}
    return "problem" if "problem" in statuses else "warn" if "warn" in statuses else "ok"


def text(box: Box, results: Sequence[tuple[str, Finding]]) -> str:
    cfg = box.config
    head = f"venue-gateway doctor: {box.config_path}" + \
        (f" (gateway {cfg.gateway.id}, venue {cfg.gateway.venue})" if cfg is not None else "")
    lines = [head]
    for name, f in results:
        label = f"{name} {f.subject}" if f.subject else name
        lines.append(f"  {f.status:<8} {label}: {f.message}")
        if f.fix:
            lines.append(f"  {'':<8} fix: {f.fix}")
    count = {s: sum(1 for _, f in results if f.status == s) for s in STATUSES}
    said = {"ok": "ready for doors", "warn": "ready, with warnings to read",
            "problem": "not ready: fix the problems above"}[verdict(results)]
    lines.append(f"{count['problem']} problem{'s' * (count['problem'] != 1)}, {count['warn']} "
                 f"warning{'s' * (count['warn'] != 1)}, {count['ok']} ok, {count['skipped']} skipped: {said}")
    return "\n".join(lines) + "\n"


def document(box: Box, results: Sequence[tuple[str, Finding]]) -> dict[str, Any]:
    cfg = box.config
    return {"config": str(box.config_path), "gateway_id": cfg.gateway.id if cfg else None,
            "venue": cfg.gateway.venue if cfg else None, "status": verdict(results),
            "checks": [{"check": name, "subject": f.subject, "status": f.status, "message": f.message,
                        **({"fix": f.fix} if f.fix else {}), **({"details": f.details} if f.details else {})}
                       for name, f in results]}


def report(config_path: str | os.PathLike[str], out: TextIO, *, as_json: bool = False,
           clock: Callable[[], Timex | None] = kernel_clock, root: Path = Path("/"),
           budget_s: float = BUDGET_S) -> int:
    """Check the box of `config_path` and write what was found to `out`; the exit status."""
    box = load(config_path, clock=clock, root=root)
    results = run(box, budget_s=budget_s)
    out.write(json.dumps(document(box, results), indent=2) + "\n" if as_json else text(box, results))
    return EXIT_PROBLEM if verdict(results) == "problem" else EXIT_OK
