"""The supervisor: runs every driver and service as a unit, restarts a failing one with exponential backoff
and jitter, and shows each one's state in health and in the twin. One failure degrades the box, never stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.settings import SupervisorSection
from gateway.twin import Twin, TwinFrozen

log = logging.getLogger(__name__)

State = Literal["starting", "running", "backoff", "stopped"]
START_TIMEOUT_S = 30.0  # a start that hangs longer counts as a failure
STOP_TIMEOUT_S = 2.0


class NotReady(Exception):
    """The device is not there yet (unplugged, not answering): retried with backoff, logged without a trace."""


class Unit:
    """Anything the supervisor runs: start -> run -> stop, with stop called whenever start succeeded."""

    async def start(self) -> None:
        """Open what the unit needs; raise NotReady to be retried later."""

    async def run(self) -> None:
        """Do the work until cancelled; raising or returning gets the unit restarted."""
        await asyncio.Future()

    async def stop(self) -> None:
        """Release what start opened."""

    def attach(self) -> None:
        """Called once the unit runs (a driver starts taking desired state here)."""

    def detach(self) -> None:
        """Called before stop."""

    def health(self) -> dict[str, Any]:
        return {}


@dataclass
class UnitStatus:
    kind: str
    state: State = "starting"
    restarts: int = 0
    last_error: str | None = None
    retry_in_s: float | None = None
    unit: Unit | None = None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "state": self.state, "restarts": self.restarts}
        if self.last_error is not None:
            doc["last_error"] = self.last_error
        if self.retry_in_s is not None:
            doc["retry_in_s"] = round(self.retry_in_s, 3)
        if self.unit is not None and self.state == "running":
            try:
                detail = self.unit.health()
            except Exception as exc:  # a driver's bug must not take the health document down
                detail = {"error": f"health() failed: {exc}"}
            if detail:
                doc["detail"] = detail
        return doc


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, so restarts never synchronise."""
    delay = min(maximum, initial * 2 ** min(attempt, 30))
    return float(delay / 2 + rng.uniform(0, delay / 2))


@dataclass(frozen=True)
class NextTry:
    """What to do after an attempt on one of several addresses ended (`Rounds.ended`)."""
    delay_s: float  # 0: the next address at once; otherwise the round failed and this is its backoff
    connected: bool  # the attempt had a session (short-lived or not)
    settled: bool  # the session lasted: the round and the backoff started again
    log_quiet: int | None  # not None: log this move now (the number of moves left unlogged since the last one)


class Rounds:
    """Several addresses tried in turn, for a client that holds one connection at a time (the cloud link, the
    mirror). A lost session moves on to the next address at once; once every address of a round has failed, the
    next round waits the exponential backoff. A session counts as good, and starts a fresh round and the backoff
    from its first step, only once it has lasted `settled_s`: one accepted and then dropped at once (a broker that
    refuses what is sent, a peer that takes the same client id over) is a failed attempt of its round, so a client
    never reconnects faster than the backoff allows. Moves are logged at most once every `log_every_s`."""

    def __init__(self, count: int, initial_s: float, maximum_s: float, settled_s: float,
                 rng: random.Random | None = None, *, log_every_s: float = 10.0) -> None:
        if count < 1:
            raise ValueError("no address to try")
        self.count, self.initial_s, self.maximum_s, self.settled_s = count, initial_s, maximum_s, settled_s
        self._rng = rng or random.Random()
        self.index = 0  # the address in use, or being tried
        self.attempt = 0  # rounds failed in a row: the backoff's step
        self.tried = 0  # addresses tried in this round
        self._since: float | None = None  # when the session of this attempt began (monotonic)
        self._log_every_s = log_every_s
        self._logged = -float("inf")
        self._quiet = 0

    def connected(self) -> None:
        """The attempt has a session (the address took the connection)."""
        self._since = time.monotonic()

    def ended(self) -> NextTry:
        """The attempt is over: move to the next address, and say whether to wait first."""
        connected = self._since is not None
        settled = connected and time.monotonic() - (self._since or 0.0) >= self.settled_s
        self._since = None
        if settled:
            self.attempt = self.tried = 0
        self.tried += 1
        self.index = (self.index + 1) % self.count
        delay = 0.0
        if self.tried >= self.count:
            self.tried = 0
            delay = backoff_delay(self.attempt, self.initial_s, self.maximum_s, self._rng)
            self.attempt += 1
        quiet = None
        if connected:
            now = time.monotonic()
            if now - self._logged >= self._log_every_s:
                quiet, self._quiet, self._logged = self._quiet, 0, now
            else:
                self._quiet += 1
        return NextTry(delay, connected, settled, quiet)


class Supervisor:
    def __init__(self, settings: SupervisorSection, twin: Twin, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._twin = twin
        self._rng = rng or random.Random()
        self._factories: dict[str, Callable[[], Unit]] = {}
        self._after: dict[str, tuple[str, ...]] = {}
        self._tried: dict[str, asyncio.Event] = {}  # set once a unit has run, or failed, for the first time
        self.units: dict[str, UnitStatus] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._settled: set[str] = set()  # units that have run, or failed, at least once
        self._stopping = False
        self.settled = asyncio.Event()
        self.on_failure: Callable[[str, str, str], None] | None = None  # (unit, kind, error): an alert

    def add(self, name: str, kind: str, factory: Callable[[], Unit], after: Sequence[str] = ()) -> None:
        """`after`: units this one starts after, once each has run or failed once (a driver that opens what
        another makes: the virtual air's controllers)."""
        self._factories[name] = factory
        self._after[name] = tuple(after)
        self._tried[name] = asyncio.Event()
        self.units[name] = UnitStatus(kind)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._supervise(name), name=f"unit:{name}") for name in self._factories]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for status in self.units.values():
            status.state = "stopped"

    def status(self) -> Literal["ok", "degraded", "starting"]:
        units = self.units.values()
        if all(u.state == "running" for u in units):
            return "ok"
        if any(u.restarts for u in units if u.state != "running"):
            return "degraded"
        return "starting"

    def _settle(self, name: str) -> None:
        self._tried[name].set()
        self._settled.add(name)
        if len(self._settled) == len(self._factories):
            self.settled.set()

    def _show(self, name: str, status: UnitStatus) -> None:
        with contextlib.suppress(TwinFrozen):  # health still shows it
            self._twin.declare(f"{status.kind}:{name}", status.kind)
            self._twin.report(f"{status.kind}:{name}", {"state": status.state, "restarts": status.restarts,
                                                         "error": status.last_error})

    async def _supervise(self, name: str) -> None:
        status = self.units[name]
        attempt = 0
        for first in self._after[name]:
            if first in self._tried:
                await self._tried[first].wait()
        while not self._stopping:
            status.state, status.retry_in_s = "starting", None
            self._show(name, status)
            began = time.monotonic()
            unit: Unit | None = None
            started = False
            try:
                unit = status.unit = self._factories[name]()
                try:
                    async with asyncio.timeout(START_TIMEOUT_S):
                        await unit.start()
                except TimeoutError:
                    raise NotReady(f"start did not finish within {START_TIMEOUT_S:.0f} s") from None
                started = True
                unit.attach()
                status.state = "running"
                self._settle(name)
                self._show(name, status)
                log.info("%s %s running", status.kind, name)
                await unit.run()
                raise RuntimeError("stopped by itself")
            except asyncio.CancelledError:
                raise
            except NotReady as exc:
                status.last_error = f"not ready: {exc}"
                log.warning("%s %s not ready: %s", status.kind, name, exc)
            except (ImportError, OSError) as exc:  # what the box lacks (a library, a file, a device): one line each try
                status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s %s failed: %s", status.kind, name, status.last_error)
            except Exception as exc:
                status.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s %s failed", status.kind, name)
            finally:
                if started and unit is not None:
                    unit.detach()
                    try:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                        # arrives as the inner call finishes, and the supervisor would then never stop.
                        async with asyncio.timeout(STOP_TIMEOUT_S):
                            await unit.stop()
                    except Exception:
                        log.exception("%s %s did not stop cleanly", status.kind, name)
            if self.on_failure is not None and (started or attempt == 0):  # once per outage, not per retry
                self.on_failure(name, status.kind, status.last_error or "")
            if time.monotonic() - began >= self.settings.stable_after_s:
                attempt = 0
            delay = backoff_delay(attempt, self.settings.backoff_initial_s, self.settings.backoff_max_s, self._rng)
            attempt += 1
            status.restarts += 1
            status.state, status.retry_in_s = "backoff", delay
            self._settle(name)
            self._show(name, status)
            log.info("%s %s restarts in %.2f s", status.kind, name, delay)
            await asyncio.sleep(delay)
