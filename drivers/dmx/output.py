"""What every DMX output shares: the universes it carries, and when a universe goes on the wire.

Two modes. `on-change` (the default): a universe goes out as soon as it changes (the change told at the end of
the loop's turn that made it, so what one OSC bundle or one console packet sets goes in one packet), at most
`max_rate_hz` times a second: a change sooner than that after the last one sent goes at the end of the interval,
with the latest levels (a keep-alive does not hold a change back). `frames`: a universe that changed goes out
with the next tick of the frame clock (`[dmx] frame_rate_hz`), as consoles that stream at a fixed rate do. In
both, a universe unchanged for `keepalive_s` is sent again on a frame tick, and an output that sends several
copies of a new look before going quiet (sACN: three) sends them at the rate's interval (frames: a tick each).
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar

from gateway.driver import Driver, DriverContext

Mode = Literal["on-change", "frames"]
EARLY_S = 1e-4  # a deferred send's timer may wake this much before its instant and still send


class OutputOptions(Protocol):
    @property
    def universes(self) -> list[int]: ...

    @property
    def keepalive_s(self) -> float: ...

    @property
    def mode(self) -> Mode: ...

    @property
    def max_rate_hz(self) -> float: ...


OptionsT = TypeVar("OptionsT", bound=OutputOptions)


class _Sent:
    """What an output last sent of a universe."""

    __slots__ = ("at", "changes", "copies", "fresh_at")

    def __init__(self) -> None:
        self.changes = -1  # the universe's change count then (-1: nothing sent yet)
        self.copies = 0  # copies of those levels sent so far
        self.at = float("-inf")  # when anything was last sent (keep-alives counted)
        self.fresh_at = float("-inf")  # when new levels (or a copy of them) were last sent: what max_rate_hz limits


class DmxOutput(Driver[OptionsT]):
    # Copies of a universe's levels sent before an unchanged universe waits for its keep-alive (E1.31 asks 3).
    COPIES = 1

    def __init__(self, ctx: DriverContext, options: OptionsT) -> None:
        super().__init__(ctx, options)
        self.universes = options.universes or list(ctx.dmx.universes)
        self.sent = 0
        self._carried = set(self.universes)
        self._interval = 1.0 / options.max_rate_hz
        self._sent = {u: _Sent() for u in self.universes}
        self._timer: asyncio.TimerHandle | None = None  # the next deferred send, at monotonic `_timer_at`
        self._timer_at = 0.0
        self._undo: list[Callable[[], Any]] = []

    def check_universes(self) -> None:
        """A universe missing from [dmx] is a configuration error, said plainly (call from `start`)."""
        for u in self.universes:
            self.ctx.dmx.get(u)

    def attach(self) -> None:
        super().attach()
        self._undo = [self.ctx.frames.subscribe(self._frame)]
        if self.options.mode == "on-change":
            self._undo.append(self.ctx.dmx.on_change(self._changed))
            self._send_due(time.monotonic())  # every universe at once, not at the first frame tick

    def detach(self) -> None:
        for undo in self._undo:
            undo()
        self._undo = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().detach()

    async def run(self) -> None:
        await asyncio.Future()  # the frames are sent on change and from the frame clock

    def _changed(self, universes: list[int]) -> None:
        carried = [u for u in universes if u in self._carried]
        if carried:
            self._send_due(time.monotonic(), carried)

    def _deferred_send(self) -> None:
        self._timer = None
        self._send_due(time.monotonic())

    def _frame(self, number: int) -> None:
        now = time.monotonic()
        if self.options.mode == "on-change":
            self._send_due(now)  # keep-alives, and what a failed send left
            return
        sent_any = False
        for u in self.universes:
            if self._wanted(u, now) and self._put(u, now):
                sent_any = True
        if sent_any:
            self.frame_sent()

    def _wanted(self, u: int, now: float) -> bool:
        """The universe has levels not yet sent (or not yet sent COPIES times), or is due a keep-alive."""
        sent = self._sent[u]
        return self._fresh(u, sent) or now - sent.at >= self.options.keepalive_s

    def _fresh(self, u: int, sent: _Sent) -> bool:
        """Levels not yet sent, or not yet sent COPIES times."""
        return sent.changes != self.ctx.dmx.universes[u].changes or sent.copies < self.COPIES

    def _put(self, u: int, now: float) -> bool:
        universe = self.ctx.dmx.universes[u]
        if not self.send(u, bytes(universe.levels)):
            return False
        sent = self._sent[u]
        if self._fresh(u, sent):
            sent.fresh_at = now
        sent.copies = sent.copies + 1 if sent.changes == universe.changes else 1
        sent.changes, sent.at = universe.changes, now
        return True

    def _send_due(self, now: float, universes: list[int] | None = None) -> None:
        """On change: every universe with new levels whose interval since it last sent new levels is over goes
        now, in one frame, with those due a keep-alive; the earliest of the others is timed for the end of its
        interval. (A keep-alive does not hold back the change after it: it is no more than one packet a
        `keepalive_s`.) Only `universes` when given: those that changed."""
        sent_any = False
        due: float | None = None
        for u in self.universes if universes is None else universes:
            if not self._wanted(u, now):
                continue
            sent = self._sent[u]
            at = sent.fresh_at + self._interval if self._fresh(u, sent) else now
            if at - now <= EARLY_S:
                if not self._put(u, now):
                    continue  # retried on the next frame tick
                sent_any = True
                if not self._fresh(u, sent):
                    continue
                at = now + self._interval  # another copy of these levels to send
            if due is None or at < due:
                due = at
        if sent_any:
            self.frame_sent()
        if due is not None and (self._timer is None or due < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = asyncio.get_running_loop().call_at(due, self._deferred_send), due

    @abstractmethod
    def send(self, universe: int, levels: bytes) -> bool:
        """Put one universe on the wire; False when it could not be sent (retried next frame)."""

    def frame_sent(self) -> None:
        """After a frame that sent anything (synchronisation packets)."""
