"""The fuzz targets' fixtures."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def on_loop() -> Iterator[Callable[[Callable[[], Any]], Any]]:
    """Call an entry point (a datagram handler, a parser) inside a running event loop, as the daemon does, and
    await what it returns if that is awaitable; the loop lives as long as the module's tests."""
    with asyncio.Runner() as runner:
        async def call(fn: Callable[[], Any]) -> Any:
            result = fn()
            return await result if inspect.isawaitable(result) else result

        def run(fn: Callable[[], Any]) -> Any:
            return runner.run(call(fn))
        yield run
