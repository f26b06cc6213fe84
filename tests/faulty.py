"""A driver that fails, loaded by the daemon under test through `type = "tests.faulty:CrashingDriver"`."""

from __future__ import annotations

import asyncio

from gateway.driver import Driver, NoOptions


class CrashingDriver(Driver[NoOptions]):
    async def start(self) -> None:
        self.ctx.declare("bus:rs485-1", "serial_bus")

    async def run(self) -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("lost the RS-485 adapter")


class HangingDriver(Driver[NoOptions]):
    """A device that never answers its first hello."""

    async def start(self) -> None:
        await asyncio.Event().wait()

    async def run(self) -> None:
        raise AssertionError("never started")
