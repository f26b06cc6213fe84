"""The box's clock against the show's bound (a Unit): every second, the kernel's word on the clock (adjtimex, read
only: STA_UNSYNC, and the estimated and maximum errors chronyd keeps there) or, where the kernel will not tell,
chrony's own (`chronyc tracking`, asked every few seconds from a worker thread), and, in a shared show, the other
boxes' clocks (`SharedShow.clocks()`: each one's offset from this box's, by the exchange of least round trip). Past the
bound it sets `engine.clock_gate` to the reason (every radio then sends nothing and answers an effect "not sent:
<reason>"), raises the standing alert `clock_off`, and says so in the twin's `clock` asset; back within it, with some
margin and for some time (so it does not flap), the gate and the alert clear.

The rules, in a shared show (`bound_ms` is `[show.shared] clock_bound_ms`):
- the kernel says the clock is not synchronised, or chrony's estimated error (adjtimex `esterror`) is over the bound;
  where adjtimex is refused (the installed unit's ProtectClock filters it, even a read), chronyd's tracking in its
  place (gateway/chrony.py): its leap status "Not synchronised", or its error bound (|offset| + root dispersion +
  root delay / 2, chronyc(1)) over the bound;
- the show clock has left the wall clock by more than the bound (the wall clock was stepped after the gateway
  started: the show clock, anchored once, did not follow);
- chronyd answered once, where the kernel will not tell, and has not for CHRONY_STALE_S: with the installed unit's
  ProtectClock chronyd is the box's only word on its clock, and a clock nobody disciplines drifts (at 50 ppm past a
  2 ms bound in 40 s), so its silence closes the gate ("off") rather than leaving the peers alone to open it; it
  reopens once chronyd answers again within the bound (CLEAR_HOLD_S later, as any gate);
- this box's offset from the median of the show's clocks (its own counted as 0) is over the bound plus the
  uncertainty of the exchanges that decide that median: each peer's clock is known within half its exchange's round
  trip, so the median lies between the median of the clocks' lower ends and that of their upper ends, and a peer
  slow to answer (one loaded box) widens that range only if its exchange decides the median. An exchange whose half
  round trip is itself over the bound cannot place a clock within it and is left out (the twin's `peers` lists the
  boxes counted). With two boxes the
  median is their midpoint
  and neither is the majority: their disagreement is reported (state "disagree", the alert) but does not silence
  both radios, since each box's kernel rule still holds its own clock to the bound.
A clock the kernel never saw synchronised during this run (a machine with no time daemon: a test bench) has no
kernel word, nor has a process the kernel will not tell; chronyd is then asked, and a box with neither word (no
chronyd answering since the start: the twin's `source` "none") has the peers' exchange and the step as its measures.
(`venue-gateway doctor` still calls a kernel that says "not synchronised" a problem, and says the watch does not
go by it.) The installed box starts only once chrony
has synchronised (time-sync.target), and `venue-gateway doctor` reads the same words.

A single box (no shared show) runs no clock watch: its bands all hear its one clock, so an offset does not spread
their starts, its radio refuses by itself to start on a clock the kernel says is not synchronised
(drivers/wristband/freshness.py), and `venue-gateway doctor` shows the kernel's word.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway.alerts import Alerts
from gateway.chrony import Chronyc, Tracking
from gateway.kernel_clock import Timex, kernel_clock
from gateway.show.engine import ShowEngine
from gateway.supervisor import Unit
from gateway.twin import Twin, TwinFrozen

log = logging.getLogger(__name__)

ASSET = "clock"
ALERT = "clock_off"
OWNER = "clock_watch"
INTERVAL_S = 1.0
CHRONY_S = 5.0  # chronyd is asked this often while the kernel has no word ...
CHRONY_STALE_S = 3 * CHRONY_S  # ... and its last answer counts for this long
CLEAR_SHARE = 0.8  # a gate clears once the clock is back within this share of the bound ...
CLEAR_HOLD_S = 10.0  # ... for this long
REPORT_S = 10.0  # the twin's figures are refreshed this often (a change of state or synchronisation at once)
# At the start the radios wait for the show's clocks: until every other box online has answered an exchange, at
# most this long (a box alone on the show then goes by its own clock's word).
FIRST_WORD_S = 10.0
FIX = ("check the box's time source: `chronyc sources` on the box (its NTP server on the venue LAN, the same for "
       "every box of the show), `venue-gateway doctor`; the radio transmits again by itself once the clock is back")

State = Literal["ok", "off", "disagree", "unknown"]
Source = Literal["kernel", "chrony"]
SEVERITY: dict[State, int] = {"ok": 0, "disagree": 1, "off": 2}


class PeerClock(Protocol):
    """What `SharedShow.clocks()` gives for each other box (gateway/show/shared.py)."""

    @property
    def offset_ms(self) -> float: ...  # its clock minus this box's

    @property
    def delay_ms(self) -> float: ...  # the round trip of the exchange it comes from

    @property
    def age_s(self) -> float: ...


Clocks = Callable[[], Mapping[str, PeerClock]]
Unclocked = Callable[[], Collection[str]]  # the other boxes online whose clock is not known yet


@dataclass(frozen=True)
class Reading:
    """One second's word on the box's clock."""

    synchronised: bool | None  # None: neither the kernel (a filter, or never synchronised) nor chronyd has a word
    est_error_ms: float | None  # the kernel's estimated error, or chrony's error bound
    max_error_ms: float | None
    step_ms: float  # the show clock minus the wall clock
    offset_ms: float | None  # this box's clock minus the show's median (None: no other box heard)
    uncertainty_ms: float
    peers: Mapping[str, float]  # each other box heard: its clock minus this one's
    source: Source | None = "kernel"  # whose word `synchronised` and `est_error_ms` are
    chrony: Tracking | None = None  # chronyd's tracking, when it is the source
    silent: bool = False  # chronyd answered once, and not for CHRONY_STALE_S since (the kernel will not tell)


def show_offset(clocks: Mapping[str, PeerClock]) -> tuple[float, float] | None:
    """This box's offset from the median of the show's clocks (its own counted as 0), and its uncertainty; None
    with no other box heard. Each other box's clock is known within half its exchange's round trip, its own exactly:
    the true median lies between the median of the lower ends and that of the upper ends (an order statistic moves
    with the values), so the uncertainty is how far that range reaches from the median measured. Only the
    exchanges that decide the median count: one slow peer among others does not widen the bound for all."""
    if not clocks:
        return None
    offsets = [0.0, *(c.offset_ms for c in clocks.values())]
    errors = [0.0, *(c.delay_ms / 2 for c in clocks.values())]
    median = statistics.median(offsets)
    low = statistics.median([o - e for o, e in zip(offsets, errors, strict=True)])
    high = statistics.median([o + e for o, e in zip(offsets, errors, strict=True)])
    return -median, max(median - low, high - median)


def judge(reading: Reading, bound_ms: float) -> tuple[State, str | None]:
    """The state of the clock against `bound_ms` and what is wrong with it (None: nothing). The radios must not
    transmit in state "off", for that reason."""
    if reading.silent:
        return "off", (f"chronyd stopped answering (no answer for more than {CHRONY_STALE_S:g} s): it is this box's "
                       "only word on its clock, which nothing may be disciplining now")
    if reading.synchronised is False:
        if reading.source == "chrony":
            return "off", "chrony says this box's clock is not synchronised (chronyc tracking: no source it trusts)"
        return "off", "the kernel says this box's clock is not synchronised (adjtimex: STA_UNSYNC)"
    if reading.est_error_ms is not None and reading.est_error_ms > bound_ms:
        said = ("chrony's error bound: |offset| + root dispersion + root delay / 2" if reading.source == "chrony"
                else "chrony's estimated error")
        return "off", (f"this box's clock may be off by {reading.est_error_ms:.2f} ms ({said}), "
                       f"more than the show's bound of {bound_ms:g} ms")
    if abs(reading.step_ms) > bound_ms:
        return "off", (f"the show clock is {reading.step_ms:+.1f} ms from the wall clock (the clock was stepped after "
                       f"the gateway started), more than the show's bound of {bound_ms:g} ms: restart the gateway")
    if reading.offset_ms is not None and abs(reading.offset_ms) > bound_ms + reading.uncertainty_ms:
        boxes = len(reading.peers) + 1
        said = (f"this box's clock is {reading.offset_ms:+.2f} ms from the show's (the median of {boxes} boxes' "
                f"clocks, within {reading.uncertainty_ms:.2f} ms), more than the bound of {bound_ms:g} ms")
        if boxes < 3:
            return "disagree", said + ": with two boxes neither is the majority, so neither is silenced"
        return "off", said
    return "ok", None


class ClockWatch(Unit):
    """Watches the clock every second (see the module's doc): `bound_ms` is the shared show's, `clocks` its other
    boxes' clocks; `kernel` reads adjtimex and `chrony` asks chronyd (blocking: called from a worker thread), the
    seams a test points elsewhere."""

    def __init__(self, engine: ShowEngine, twin: Twin, alerts: Alerts, *, bound_ms: float, clocks: Clocks,
                 unclocked: Unclocked = tuple, kernel: Callable[[], Timex | None] = kernel_clock,
                 chrony: Callable[[], Tracking | None] | None = None) -> None:
        self._engine = engine
        self._twin = twin
        self._alerts = alerts
        self._bound_ms = bound_ms
        self._clocks = clocks
        self._unclocked = unclocked
        self._began: float | None = None  # the first tick (monotonic): the show's clocks are waited for from there
        self._kernel = kernel
        self._chrony = chrony or Chronyc().tracking
        self._tracking: tuple[float, Tracking] | None = None  # chronyd's last answer, and when (monotonic)
        self._asked = -CHRONY_S
        self._ever_synced = False
        self._failed = False  # run() ended on an error (the supervisor restarts the unit)
        self.state: State = "unknown"
        self.message: str | None = None  # what is wrong with the clock
        self.reason: str | None = None  # why the radios must not transmit (the message when "off"; engine.clock_gate)
        self.last: Reading | None = None
        self._within_since: float | None = None  # since when the clock has been back within the clearing margin
        self._reported: tuple[float, tuple[State, bool | None] | None] = (-REPORT_S, None)  # when, and what

    async def start(self) -> None:
        self._twin.declare(ASSET, "clock", None, OWNER)
        if self._engine.clock_gate is not None:  # left closed by the watch before this one, which failed: kept,
            self.state = "off"  # and cleared as any closed gate is, once the clock holds within the margin
            self.message = self.reason = self._engine.clock_gate

    async def run(self) -> None:
        try:
            while True:
                mono = time.monotonic()
                if (self.last is None or self.last.source != "kernel") and mono - self._asked >= CHRONY_S:
                    await self.ask_chrony()
                self.tick(time.monotonic())
                await asyncio.sleep(INTERVAL_S)
        except asyncio.CancelledError:  # the gateway stops
            raise
        except BaseException:
            self._failed = True
            raise

    async def ask_chrony(self) -> None:
        """chronyd's tracking, asked from a worker thread (chronyc waits for its answer), kept for the next reads."""
        self._asked = time.monotonic()
        tracking = await asyncio.to_thread(self._chrony)
        if tracking is not None:
            self._tracking = (time.monotonic(), tracking)

    async def stop(self) -> None:
        # A gate this unit set is not left behind a clean stop (the gateway's). After a failure it stays closed
        # through the restart's backoff: nothing watches the clock meanwhile, and the next watch takes it over.
        if self.reason is not None and not self._failed:
            self._engine.clock_gate = None

    def health(self) -> dict[str, Any]:
        return self.document()

    def read(self) -> Reading:
        timex = self._kernel()
        synchronised: bool | None = None
        silent = False
        est = top = None
        source: Source | None = None
        chrony: Tracking | None = None
        if timex is not None:
            self._ever_synced = self._ever_synced or timex.synchronised
        if timex is not None and self._ever_synced:
            source, synchronised = "kernel", timex.synchronised
            est, top = timex.est_error_us / 1000, timex.max_error_us / 1000
        elif self._tracking is not None and time.monotonic() - self._tracking[0] <= CHRONY_STALE_S:
            chrony = self._tracking[1]
            source, synchronised, est = "chrony", chrony.synchronised, chrony.error_bound_ms
        elif self._tracking is not None:  # chronyd answered once, and no longer: see the module's doc
            source, silent = "chrony", True
        step_ms = (self._engine.wall(time.monotonic()) - time.time()) * 1000
        peers = {name: c for name, c in self._clocks().items() if c.delay_ms / 2 <= self._bound_ms}
        offset = show_offset(peers)
        return Reading(synchronised, est, top, step_ms, offset[0] if offset else None, offset[1] if offset else 0.0,
                       {name: c.offset_ms for name, c in peers.items()}, source, chrony, silent)

    def tick(self, mono: float) -> None:
        """One second's watch: read, judge, gate or clear, report."""
        reading = self.last = self.read()
        state, message = judge(reading, self._bound_ms)
        if self._began is None:
            self._began = mono
        if self.state == "unknown" and state != "off" and mono - self._began < FIRST_WORD_S \
                and (not reading.peers or self._unclocked()):
            # A box whose clock is off would otherwise send copies before it knows: bands that heard them follow
            # its clock for their window (10 s).
            self.message = self.reason = self._engine.clock_gate = (
                "waiting for the show's clocks (the other boxes' first clock exchanges, at most "
                f"{FIRST_WORD_S:g} s after the start)")
            self._report(mono)
            return
        if self.state in SEVERITY and SEVERITY[state] < SEVERITY[self.state]:
            # Better: taken once it holds within the margin for CLEAR_HOLD_S, the worse state kept until then.
            if judge(reading, self._bound_ms * CLEAR_SHARE)[0] != state:
                self._within_since = None
            elif self._within_since is None:
                self._within_since = mono
            if self._within_since is None or mono - self._within_since < CLEAR_HOLD_S:
                self._report(mono)
                return
        self._within_since = None
        self._set(state, message, mono)

    def _set(self, state: State, message: str | None, mono: float) -> None:
        was = self.state
        self.state, self.message = state, message
        self.reason = message if state == "off" else None
        self._engine.clock_gate = self.reason
        if message is not None and was != state:  # raised on a change of state, not every second
            log.warning("clock: %s; %s", message, "the radios send nothing" if self.reason else "the radios go on")
            self._alerts.raise_alert(ALERT, f"clock off: {message}", self._alert_doc(), key=ALERT)
        elif message is None and was in ("off", "disagree"):
            log.info("clock: back within the show's bound; the radios transmit again")
            self._alerts.raise_alert(ALERT, "clock back within the show's bound", self._alert_doc(), key=ALERT,
                                     standing=False)
        self._report(mono)

    def _alert_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"alert": ALERT, "state": self.state, "transmitting": self.reason is None}
        if self.message is not None:
            doc.update(message=self.message, fix=FIX)
        return doc | {k: v for k, v in self.document().items() if k in ("est_error_ms", "offset_ms")}

    def _report(self, mono: float) -> None:
        at, said = self._reported
        now = (self.state, self.last.synchronised if self.last is not None else None)
        if said == now and mono - at < REPORT_S:
            return
        try:
            self._twin.report(ASSET, self.document(), OWNER)
        except TwinFrozen:
            return  # the store cannot write: the next report says it all
        self._reported = (mono, now)

    def document(self) -> dict[str, Any]:
        """The `clock` asset's reported state."""
        r = self.last
        doc: dict[str, Any] = {"state": self.state, "message": self.message, "transmitting": self.reason is None,
                               "bound_ms": self._bound_ms}
        if r is not None:
            doc.update(synchronised=r.synchronised,
                       est_error_ms=None if r.est_error_ms is None else round(r.est_error_ms, 3),
                       max_error_ms=None if r.max_error_ms is None else round(r.max_error_ms, 3),
                       step_ms=round(r.step_ms, 3),
                       offset_ms=None if r.offset_ms is None else round(r.offset_ms, 3),
                       uncertainty_ms=round(r.uncertainty_ms, 3),
                       peers={k: round(v, 3) for k, v in r.peers.items()}, source=r.source or "none",
                       chrony=None if r.chrony is None else r.chrony.document())
        return doc
