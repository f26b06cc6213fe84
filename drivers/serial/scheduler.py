"""Who is polled next on a bus: earliest due first, so a slow or silent device never starves the others; a device
that stops answering goes offline after a few failed polls and is then tried once per backoff period.

Pure bookkeeping on monotonic time (no I/O, no sleeping): the driver asks `next_due`, polls, and says `done`.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from gateway.driver import backoff_delay


@dataclass
class PollState:
    """One device's place in the schedule and its recent record."""

    index: int  # the device's position in the bus's configuration
    interval: float  # seconds between polls; 0: as often as the bus allows
    due: float = 0.0
    online: bool | None = None  # None until the first poll ends
    failures: int = 0  # consecutive failed polls
    backoff_attempt: int = 0
    polls: int = 0
    failed_polls: int = 0
    overruns: int = 0  # poll slots missed because the bus was busy (never queued up: skipped)
    last_start: float | None = None
    gaps: list[float] = field(default_factory=list)  # recent start-to-start intervals, for the spread


class PollSchedule:
    def __init__(self, intervals: list[float], *, offline_after: int, backoff_initial: float, backoff_max: float,
                 now: float, rng: random.Random | None = None) -> None:
        self.offline_after = offline_after
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self.devices = [PollState(i, interval, due=now) for i, interval in enumerate(intervals)]
        # (due, sequence, index): the sequence keeps equal due times in round-robin order
        self._heap = [(now, i, i) for i in range(len(intervals))]
        self._seq = len(intervals)

    def next_due(self) -> tuple[PollState, float]:
        """The device to poll next and when it is due (it may already be late)."""
        due, _, index = self._heap[0]
        return self.devices[index], due

    def start(self, state: PollState, now: float) -> None:
        """The device's poll begins now (it is taken off the schedule until `done`)."""
        heapq.heappop(self._heap)
        if state.last_start is not None:
            state.gaps.append(now - state.last_start)
            del state.gaps[:-64]
        state.last_start = now

    def done(self, state: PollState, ok: bool, now: float) -> bool | None:
        """Record the poll's outcome and schedule the next one; returns the new online state if it changed."""
        state.polls += 1
        before = state.online
        if ok:
            state.failures = state.backoff_attempt = 0
            state.online = True
        else:
            state.failed_polls += 1
            state.failures += 1
            if state.failures >= self.offline_after or state.online is False:
                state.online = False
        if state.online is False:
            # One attempt per backoff period, and nothing else of this device's costs the bus.
            delay = backoff_delay(state.backoff_attempt, max(self.backoff_initial, state.interval),
                                  self.backoff_max, self._rng)
            state.backoff_attempt += 1
            state.due = now + delay
        else:
            state.due += state.interval
            if state.due < now:
                # An oversubscribed bus: late polls are not made up for later, they are skipped and counted.
                if state.interval > 0:
                    state.overruns += int((now - state.due) / state.interval) + 1
                state.due = now
        heapq.heappush(self._heap, (state.due, self._seq, state.index))
        self._seq += 1
        return state.online if state.online != before else None
