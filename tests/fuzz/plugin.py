"""The long run's pytest plugin (`python -m tests.fuzz` loads it with `-p tests.fuzz.plugin`): the FUZZ_EXAMPLES
budget for every hypothesis test in the run, the decoders' properties (which have no settings of their own)
included, and each test's count of inputs and time, written as JSON into the directory FUZZ_COUNTS when the
session ends (one file per process: pytest-xdist's workers each write their own)."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.budget import long_budget

settings.register_profile("fuzz", max_examples=long_budget() or 100, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.load_profile("fuzz")

_inputs: Counter[str] = Counter()
_seconds: defaultdict[str, float] = defaultdict(float)
_failed: set[str] = set()
_targets: set[str] = set()  # the hypothesis tests: the others in the run are not fuzz targets
_xfailed: set[str] = set()  # a known failure, marked: it stops at that failure, whatever the budget


def _counting(name: str, inner: Any) -> Any:
    def counted(*args: Any, **kwargs: Any) -> Any:
        _inputs[name] += 1
        return inner(*args, **kwargs)
    return counted


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Count every input each hypothesis test runs: hypothesis calls `inner_test` once per input."""
    for item in items:
        handle = getattr(getattr(item, "obj", None), "hypothesis", None)
        if handle is not None:
            handle.inner_test = _counting(item.nodeid, handle.inner_test)
            _targets.add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _seconds[report.nodeid] += report.duration
    if report.failed:
        _failed.add(report.nodeid)
    if hasattr(report, "wasxfail"):
        _xfailed.add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    directory = os.environ.get("FUZZ_COUNTS")
    if not directory:
        return
    doc = {name: {"inputs": _inputs[name], "seconds": _seconds[name], "failed": name in _failed,
                  "xfailed": name in _xfailed}
           for name in _targets | _failed}
    (Path(directory) / f"{os.getpid()}.json").write_text(json.dumps(doc))
