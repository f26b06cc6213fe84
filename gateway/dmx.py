"""DMX universes and the frame clock. The levels of every universe live here, set by desired state, OSC, a
console passed through and the show's feedback; outputs hear of a change once per turn of the loop (send on
change), and the frame clock hands the levels to outputs at one rate, on time (frames, and keep-alives).

Each universe is a twin asset `universe:N`: desired `{"levels": {"CHANNEL": VALUE, ...}}` (a merge patch of
1-based channels) or `{"levels": [v1, v2, ...]}` sets levels; reported `levels` follows, a few times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.looplag import summarize
from gateway.realtime import make_realtime
from gateway.twin import Twin, TwinFrozen

log = logging.getLogger(__name__)

OWNER = "dmx"
CHANNELS = 512
REPORT_EVERY_S = 0.25  # reported levels in the twin: fresh enough for a person, cheap for the store

FrameHandler = Callable[[int], None]
ChangeListener = Callable[[list[int]], None]


class Universe:
    __slots__ = ("changes", "levels", "number", "told")

    def __init__(self, number: int) -> None:
        self.number = number
        self.levels = bytearray(CHANNELS)
        self.changes = 0  # grows on every change: outputs compare it with what they last sent
        self.told = False  # a change is waiting to be told to the change listeners at the end of this loop turn


class DmxUniverses:
    def __init__(self, twin: Twin, numbers: Iterable[int]) -> None:
        self._twin = twin
        self.universes = {n: Universe(n) for n in sorted(set(numbers))}
        self._reported: dict[int, int] = {}
        self._applied: dict[int, dict[int, Any]] = {}  # the desired levels last applied, per universe
        self._listeners: list[ChangeListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: list[int] = []  # universes changed this turn of the loop, told once it ends
        self._telling: asyncio.Handle | None = None

    def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        """`listener(universes)` once per turn of the loop in which levels changed, with the universes that did
        (call from the loop). Everything one OSC bundle, one console packet or one desired patch sets is told
        at once: an output sends it in one frame. A change costs one flag test while nobody listens."""
        self._loop = asyncio.get_running_loop()
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _touched(self, universe: Universe) -> None:
        """A universe changed: tell the listeners when this turn of the loop is over (once, whatever else
        changes meanwhile)."""
        universe.changes += 1
        if universe.told or not self._listeners or self._loop is None:
            return
        universe.told = True
        if not self._changed:
            self._telling = self._loop.call_soon(self._tell)
        self._changed.append(universe.number)

    def tell_now(self) -> None:
        """Tell the listeners of the changes made so far at once, not at the end of the loop's turn: an input calls
        it after a batch of packets, so that the callbacks queued behind it do not hold the change back."""
        if self._telling is not None:
            self._telling.cancel()
            self._tell()

    def _tell(self) -> None:
        self._telling = None
        changed, self._changed = self._changed, []
        for n in changed:
            self.universes[n].told = False
        for listener in list(self._listeners):
            try:
                listener(changed)
            except Exception:  # one output's bug must not keep the change from the others
                log.exception("DMX change listener failed")

    def __contains__(self, number: int) -> bool:
        return number in self.universes

    def get(self, number: int) -> Universe:
        try:
            return self.universes[number]
        except KeyError:
            raise KeyError(f"universe {number} is not configured (allowed: "
                           f"{', '.join(map(str, self.universes)) or 'none'})") from None

    def set_channel(self, number: int, channel: int, value: int) -> None:
        """Channel 1..512 to 0..255; anything else is refused (ValueError), never clamped: a level out of range
        is a mistake in what sent it, and the sender is told."""
        if not 1 <= channel <= CHANNELS:
            raise ValueError(f"channel {channel} is out of range (allowed: 1 to {CHANNELS})")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise ValueError(f"level {value!r} of channel {channel} is out of range (allowed: 0 to 255)")
        universe = self.get(number)
        if universe.levels[channel - 1] != value:
            universe.levels[channel - 1] = value
            self._touched(universe)

    def set_levels(self, number: int, levels: bytes, first: int = 1) -> None:
        """Channels from `first` on to `levels` (each byte a level): a console universe passed through, in one
        change. More than the universe holds is refused (ValueError)."""
        if not 1 <= first <= CHANNELS or first - 1 + len(levels) > CHANNELS:
            raise ValueError(f"{len(levels)} levels from channel {first} do not fit (allowed: channels 1 to "
                             f"{CHANNELS})")
        universe = self.get(number)
        end = first - 1 + len(levels)
        if universe.levels[first - 1:end] != levels:
            universe.levels[first - 1:end] = levels
            self._touched(universe)

    def blackout(self) -> None:
        """Every channel of every universe to 0, and the universes' desired levels cleared: a blackout holds until
        someone raises a level again, across a restart too (desired levels are applied again at start)."""
        for n, universe in self.universes.items():
            if any(universe.levels):
                universe.levels[:] = bytes(CHANNELS)
                self._touched(universe)
            asset = self._twin.get(f"universe:{n}")
            if asset is not None and asset.desired.get("levels"):
                try:
                    self._twin.patch_desired(asset.id, {"levels": None})
                except TwinFrozen:
                    log.warning("blackout: the desired levels of %s could not be cleared (the store cannot write); "
                                "they come back on restart", asset.id)

    # -- the twin's side -------------------------------------------------------------------------------
    def declare(self) -> None:
        """Make every universe a twin asset and take its desired state, now and whenever it changes."""
        for n in self.universes:
            with contextlib.suppress(TwinFrozen):
                self._twin.declare(f"universe:{n}", "dmx_universe", None, OWNER)
            asset = self._twin.get(f"universe:{n}")
            if asset is not None and asset.desired:
                self._desired(asset.id, asset.desired)
        self._twin.on_desired(OWNER, self._desired, self._check)

    @staticmethod
    def _levels(desired: Mapping[str, Any]) -> dict[int, int | None]:
        """The desired `levels` (a list from channel 1, or an object of channel: level; null leaves a channel as
        it is), or ValueError saying what is allowed."""
        unknown = sorted(set(desired) - {"levels"})
        if unknown:
            raise ValueError(f"no key {unknown[0]!r} (allowed: levels)")
        levels = desired.get("levels", {})
        if not isinstance(levels, dict | list):
            raise ValueError("levels must be a list or an object of channel: value")
        try:
            wanted = dict(enumerate(levels, 1)) if isinstance(levels, list) else {int(k): v for k, v in levels.items()}
        except ValueError:
            raise ValueError("levels' keys must be channel numbers (allowed: 1 to 512)") from None
        for channel, value in wanted.items():
            if not 1 <= channel <= CHANNELS:
                raise ValueError(f"channel {channel} is out of range (allowed: 1 to {CHANNELS})")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255):
                raise ValueError(f"level {value!r} of channel {channel} is out of range (allowed: 0 to 255, or null)")
        return wanted

    def _check(self, asset_id: str, desired: Mapping[str, Any]) -> str | None:
        try:
            self._levels(desired)
        except ValueError as exc:
            return str(exc)
        return None

    def _desired(self, asset_id: str, desired: Mapping[str, Any]) -> None:
        """Apply the channels whose desired level changed since the last desired state: a PATCH of one channel
        must not undo what OSC set on the others since."""
        number = int(asset_id.partition(":")[2])
        try:
            wanted = self._levels(desired)
            before = self._applied.get(number, {})
            self._applied[number] = wanted
            for channel, value in wanted.items():
                if value is not None and before.get(channel) != value:
                    self.set_channel(number, channel, value)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("desired levels of %s refused: %s", asset_id, exc)
            with contextlib.suppress(TwinFrozen):
                self._twin.report(asset_id, {"desired_error": str(exc)})

    async def report(self) -> None:
        """Report changed levels into the twin a few times a second, until cancelled."""
        while True:
            for n, universe in self.universes.items():
                if self._reported.get(n) != universe.changes:
                    self._reported[n] = universe.changes
                    with contextlib.suppress(TwinFrozen):
                        self._twin.report(f"universe:{n}", {"levels": list(universe.levels)})
            await asyncio.sleep(REPORT_EVERY_S)


class FrameClock:
    """Calls every subscriber once per frame at `rate_hz`, on the loop, at slots of monotonic time.

    A small pacing thread sleeps to each slot and wakes the loop with `call_soon_threadsafe`, which runs the
    frame at once. (`loop.call_at` alone was measured late by up to 2 ms at p99, the whole budget of a frame
    slot: the selector rounds every timer wait up to a whole millisecond.) A frame the loop could only run a
    whole period late is skipped and counted: frames are never sent in a burst to catch up. How late each frame
    ran is kept for health (jitter)."""

    def __init__(self, rate_hz: float) -> None:
        self.period = 1.0 / rate_hz
        self.realtime_priority = 0  # the pacing thread's SCHED_FIFO priority (gateway.realtime), 0: ordinary
        self.frame = 0
        self.skipped = 0
        self._handlers: list[FrameHandler] = []
        self._inputs: list[Callable[[], None]] = []
        self.lateness: deque[float] = deque(maxlen=2400)
        self.next_slot: float | None = None  # monotonic time of the next frame; None while the clock is stopped
        self._passed: asyncio.Future[None] | None = None  # done when the next frame has gone out (see clear)

    def subscribe(self, handler: FrameHandler) -> Callable[[], None]:
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def poll_before(self, read: Callable[[], None]) -> Callable[[], None]:
        """Call `read` (a non-blocking read of an input) at the start of every frame, before its handlers: what
        arrived before the slot is in the frame even when the loop was busy when it arrived (the slot's
        wake-up is queued ahead of the socket's readiness)."""
        self._inputs.append(read)
        return lambda: self._inputs.remove(read) if read in self._inputs else None

    async def clear(self, margin_s: float) -> None:
        """For work that can wait (a drain): return at once, or, within `margin_s` of the next frame slot, once
        that frame has gone out, so that none of the work is running when a frame is due."""
        slot = self.next_slot
        if slot is None or slot - time.monotonic() >= margin_s:
            return
        if self._passed is None:
            self._passed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._passed)  # one waiter cancelled does not cancel the others

    def _pass(self) -> None:
        passed, self._passed = self._passed, None
        if passed is not None and not passed.done():
            passed.set_result(None)

    def _tick(self, due: float) -> None:
        self.next_slot = due + self.period
        late = time.monotonic() - due
        if late >= self.period:  # the loop was held up for a whole frame: a newer slot is already queued
            self.skipped += 1
            self._pass()
            return
        self.lateness.append(late)
        self.frame += 1
        for read in list(self._inputs):
            try:
                read()
            except Exception:
                log.exception("reading an input before the frame failed")
        for handler in list(self._handlers):
            try:
                handler(self.frame)
            except Exception:  # one output's bug must not stop the others' frames
                log.exception("frame handler failed")
        self._pass()

    def _pace(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        make_realtime(self.realtime_priority, "the frame clock")
        slot = time.monotonic() + self.period
        while not stop.wait(max(0.0, slot - time.monotonic())):
            try:
                loop.call_soon_threadsafe(self._tick, slot)
            except RuntimeError:  # the loop is closing
                return
            slot += self.period
            now = time.monotonic()
            if slot <= now:  # this thread itself was held up (a loaded box): keep to the grid
                slot += (int((now - slot) / self.period) + 1) * self.period

    async def run(self) -> None:
        stop = threading.Event()
        pacer = threading.Thread(target=self._pace, args=(asyncio.get_running_loop(), stop), name="frame-clock",
                                 daemon=True)
        pacer.start()
        try:
            await asyncio.Future()
        finally:  # a cancelled clock stops ticking
            stop.set()
            self.next_slot = None
            self._pass()

    def jitter(self) -> dict[str, float]:
        """How late frames fired over the recent window (p50, p99, max in ms)."""
        return summarize(self.lateness)
