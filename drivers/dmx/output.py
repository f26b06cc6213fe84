"""What every DMX output shares: the universes it carries, one call per frame of the frame clock, and the
rule of what to send in a frame (a universe that changed, or one unchanged for `keepalive_s`)."""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from gateway.driver import Driver, DriverContext


class OutputOptions(Protocol):
    @property
    def universes(self) -> list[int]: ...

    @property
    def keepalive_s(self) -> float: ...


OptionsT = TypeVar("OptionsT", bound=OutputOptions)


class DmxOutput(Driver[OptionsT]):
    def __init__(self, ctx: DriverContext, options: OptionsT) -> None:
        super().__init__(ctx, options)
        self.universes = options.universes or list(ctx.dmx.universes)
        self.sent = 0
        self._last: dict[int, tuple[int, float]] = {}  # universe -> (its change count when sent, when)
        self._undo_frames: Callable[[], Any] | None = None

    def check_universes(self) -> None:
        """A universe missing from [dmx] is a configuration error, said plainly (call from `start`)."""
        for u in self.universes:
            self.ctx.dmx.get(u)

    def attach(self) -> None:
        super().attach()
        self._undo_frames = self.ctx.frames.subscribe(self._frame)

    def detach(self) -> None:
        if self._undo_frames is not None:
            self._undo_frames()
            self._undo_frames = None
        super().detach()

    async def run(self) -> None:
        await asyncio.Future()  # the frames are sent from the frame clock

    def _frame(self, number: int) -> None:
        now = time.monotonic()
        sent_any = False
        for u in self.universes:
            universe = self.ctx.dmx.universes[u]
            changes, sent_at = self._last.get(u, (-1, 0.0))
            if changes == universe.changes and now - sent_at < self.options.keepalive_s:
                continue
            if self.send(u, bytes(universe.levels)):
                self._last[u] = (universe.changes, now)
                sent_any = True
        if sent_any:
            self.frame_sent()

    @abstractmethod
    def send(self, universe: int, levels: bytes) -> bool:
        """Put one universe on the wire; False when it could not be sent (retried next frame)."""

    def frame_sent(self) -> None:
        """After a frame that sent anything (synchronisation packets)."""
