"""The cue list: effects that start at timecodes, fired ahead by the radio's lead.

Each cue names a timecode label; its effect starts exactly at the instant the timecode reaches that label. The
link (`gateway.show.timecode.Link`) puts that instant on the monotonic clock, and the cue is fired through the
engine's one fire path `show.lead_ms` (plus a few ms) before it, with the lead worked out from the link, so the
radio counts down to the label's instant; a cue the list learns of later than that (the timecode starts or jumps
just before it) is fired with the time that is left. A cue is fired only while the timecode runs: within
`FRESH_FRAMES` frame periods of the last frame heard.

A pass is the timecode running through the list. Each cue, in a pass, is pending, `fired` (at its timecode or by
hand), `skipped` (by hand before it came, or passed without firing: the timecode started or jumped beyond it, or
was not running at its instant) or `refused` (the show refused its effect: the flash cap, a preset gone). A jump
forward skips the pending cues it passes over; a jump back makes the cues between the new position and the old
pending again (a rehearsal runs them again). Timecode that stops (no frame for `show.cues.stop_frames` periods)
freezes the list: nothing fires until frames come again, and where they resume is a jump from where they stopped.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.schema import Problem
from gateway.show import cue_settings
from gateway.show.cue_settings import Cue
from gateway.show.effects import EffectError
from gateway.show.timecode import Link, Rate, Timecode
from gateway.twin import TwinFrozen, rfc3339

if TYPE_CHECKING:
    from gateway.show.engine import Fired, ShowEngine

log = logging.getLogger(__name__)

ASSET = "cue_list"
FRESH_FRAMES = 2.5  # a cue fires only while the last frame is this recent (in frame periods)
EARLY_S = 0.010  # fired this much before its lead, so the lead is at least show.lead_ms
REPORT_S = 0.25  # the twin asset at most 4 times a second
LOOK_BACK_S = 1.0  # a frame looks at the cues from this far behind it (a long list is not walked from its start)
LOG_EVERY_S = 10.0  # a bad frame logged at most this often


class UnknownCue(LookupError):
    pass


class CueConflict(EffectError):
    """What was asked cannot be done to the cue as it stands (a skip of a cue already fired in this pass)."""


@dataclass
class _State:
    cue: Cue
    position: float | None  # seconds from 00:00:00:00 at the list's rate; None: its label is not one at that rate
    armed: bool
    done: str | None = None  # in this pass: None (pending), "fired", "skipped", "refused"
    why: str = ""
    fired: Fired | None = None

    def state(self) -> str:
        if self.done is not None:
            return self.done
        return "armed" if self.armed else "disarmed"


class CueList:
    def __init__(self, engine: ShowEngine) -> None:
        self.engine = engine
        self.section = engine.settings.cues
        self.configured = cue_settings.rate_of(self.section)
        self.rate: Rate | None = None  # of the timecode received
        self.link = Link(self.section.jump_frames)
        self.last: Timecode | None = None  # the last frame taken
        self.not_loaded: str | None = None  # why the list is not loaded
        self.mismatch: str | None = None  # the timecode's rate is not the list's
        self.counts = {"frames": 0, "dropped": 0, "outliers": 0, "jumps": 0, "starts": 0}
        self._cues: list[_State] = []
        self._by_id: dict[str, _State] = {}
        self._floors: list[float] = []  # each cue's position, or the one before it when it has none
        self._timer: asyncio.TimerHandle | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._report_timer: asyncio.TimerHandle | None = None
        self._reported_at = 0.0
        self._logged_at = -LOG_EVERY_S
        self._not_logged = 0
        self._stopped_at: float | None = None  # the position where the timecode stopped

    # -- loading ---------------------------------------------------------------------------------------
    def load(self, base: Path) -> list[Problem]:
        """Read `show.cues.file` (relative to `base`, the configuration's directory). A file with problems leaves
        the list empty, saying why (log, twin, HTTP); the rest of the show runs on."""
        if self.section.file is None:
            return []
        cues, problems = cue_settings.load(base, self.engine.settings)
        if problems:
            self.not_loaded = "the cue list is not loaded: " + "; ".join(str(p) for p in problems)
            log.warning("%s", self.not_loaded)
        else:
            log.info("cue list %s: %d cues", self.section.file, len(cues))
        self._cues = [_State(c, None, c.armed) for c in cues]
        self._by_id = {s.cue.id: s for s in self._cues}
        self._place(self.configured or Rate.SMPTE)
        self._report()
        return problems

    def _place(self, rate: Rate) -> None:
        """Each cue's position with its label read at `rate`; a label that is not one at that rate is refused."""
        floor = -math.inf
        self._floors = []
        for s in self._cues:
            try:
                position = Timecode.parse(s.cue.timecode, rate).position()
                if s.position is None and s.done == "refused":  # its label was not one at the rate before
                    s.done, s.why = None, ""
                s.position = floor = position
            except ValueError as exc:
                s.position, s.done, s.why = None, "refused", str(exc)
            self._floors.append(floor)  # non-decreasing: the list is in label order

    # -- timecode --------------------------------------------------------------------------------------
    def timecode(self, tc: Timecode, arrival_mono: float) -> None:
        """A timecode frame from a console, received at `arrival_mono` (time.monotonic()). A frame that is not a
        timecode (a field out of range, a dropped drop-frame label) is dropped and counted, never raised. Without a
        cue list configured, frames are not looked at."""
        if self.section.file is None:
            return
        problem = tc.problem() if isinstance(tc, Timecode) and isinstance(tc.rate, Rate) else "not a timecode"
        if problem is not None:
            self.counts["dropped"] += 1
            self._log_bad(f"timecode dropped: {problem}")
            return
        self.counts["frames"] += 1
        if tc.rate is not self.rate:
            self._rate(tc.rate)
        link = self.link
        if link.arrival is not None and arrival_mono - link.arrival > self._stop_s():
            self._stop()
        before = link.position if link.offset is not None else self._stopped_at
        event = link.frame(tc.position(), arrival_mono, tc.rate)
        if event == "outlier":
            self.counts["outliers"] += 1
            return
        self.last = tc
        if event in ("start", "jump"):
            self.counts["starts" if event == "start" else "jumps"] += 1
            self._stopped_at = None
            assert link.origin is not None
            self._passed(before, link.origin)
            log.info("timecode %s at %s (%s fps)", "runs" if event == "start" else "jumped", tc.label(),
                     tc.rate.value)
            self._tick_soon()
        self._schedule()

    def _rate(self, rate: Rate) -> None:
        self.rate = rate
        if self.configured is None:
            self._place(rate)
        elif rate is not self.configured:
            self.mismatch = (f"the timecode arrives at {rate.value} fps but show.cues.rate is "
                             f"{self.configured.value}: the cues' labels are read at {self.configured.value} fps")
            log.warning("%s", self.mismatch)
        else:
            self.mismatch = None
        self._report_soon()

    def _stop_s(self) -> float:
        return self.section.stop_frames * (self.rate or Rate.SMPTE).frame_s

    def _stop(self) -> None:
        """No frame for stop_frames periods: the list is frozen where the timecode stopped."""
        if self.link.offset is None:
            return
        self._stopped_at = self.link.position
        self.link.reset()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info("timecode stopped at %s", self.last.label() if self.last else "?")
        self._report_soon()

    def _passed(self, before: float | None, now: float) -> None:
        """The timecode went from `before` (None: nowhere yet) to `now`: forward, the pending cues it passed over
        are skipped; back, the cues between are pending again, and so are those ahead that the show refused (a cue
        fired ahead of its instant is on the air: it stays fired)."""
        for s in self._cues:
            if s.position is None:
                continue
            if before is not None and now < before and s.position >= now and (s.position <= before
                                                                              or s.done == "refused"):
                s.done, s.why, s.fired = None, "", None
            elif s.done is None and s.armed and s.position < now and (before is None or s.position >= before):
                s.done, s.why = "skipped", "passed: the timecode " + ("started" if before is None else "jumped") + \
                    " beyond it"
        self._report_soon()

    def _schedule(self) -> None:
        """Fire the cues due within the lead while the timecode runs; set a timer for the next one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        link = self.link
        if link.offset is None or link.arrival is None or self.rate is None:
            return
        now = time.monotonic()
        fresh = now - link.arrival <= FRESH_FRAMES * self.rate.frame_s
        lead_s = self.engine.settings.lead_ms / 1000 + EARLY_S
        behind = bisect.bisect_left(self._floors, (link.position or 0.0) - LOOK_BACK_S)
        for s in itertools.islice(self._cues, behind, None):
            if s.done is not None or not s.armed or s.position is None:
                continue
            target = link.mono(s.position)
            if target < now:
                s.done, s.why = "skipped", "passed: the timecode was not running at its instant"
                self._report_soon()
            elif target - now <= lead_s:
                if fresh:
                    self._fire(s, target)
            else:
                with contextlib.suppress(RuntimeError):  # (no loop: a caller without one only asks)
                    self._timer = asyncio.get_running_loop().call_later(target - lead_s - now, self._schedule)
                return

    def _fire(self, s: _State, target: float) -> Fired | None:
        lead_ms = max(0, round((target - time.monotonic()) * 1000))
        try:
            fired = self.engine.fire(s.cue.preset, s.cue.effect, list(s.cue.zones) or None, lead_ms=lead_ms)
        except (EffectError, LookupError) as exc:
            s.done, s.why = "refused", str(exc)
            log.warning("cue %s refused: %s", s.cue.id, exc)
            self._report_soon()
            return None
        s.done, s.why, s.fired = "fired", "at its timecode", fired
        self._report_soon()
        return fired

    def _log_bad(self, message: str) -> None:
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._not_logged += 1
            return
        more = f" ({self._not_logged} more not logged)" if self._not_logged else ""
        log.warning("%s%s", message, more)
        self._logged_at, self._not_logged = now, 0

    # -- commands (HTTP, OSC /vg/cue/..., the dashboard) --------------------------------------------------
    def _cue(self, cue_id: str) -> _State:
        found = self._by_id.get(cue_id) if isinstance(cue_id, str) else None
        if found is None:
            ids = ", ".join(self._by_id) or "none: no cue list is loaded"
            raise UnknownCue(f"no cue {cue_id!r} (allowed: {ids[:400]})")
        return found

    def arm(self, cue_id: str) -> None:
        """Arm a cue: it fires at its timecode. A cue skipped or refused in this pass is pending again (if its
        instant has passed, it waits for a pass that reaches it: after a jump back). Arming an armed cue changes
        nothing. Raises UnknownCue."""
        s = self._cue(cue_id)
        s.armed = True
        if s.done in ("skipped", "refused") and s.position is not None:
            s.done, s.why = None, ""
        self._report_soon()
        self._schedule()

    def fire(self, cue_id: str) -> Fired:
        """Fire a cue by hand now (armed or not, whatever the timecode does), with the show's lead, through the
        engine's fire path: it counts as fired in this pass, so it does not fire again at its timecode. Raises
        UnknownCue, and EffectError (TooSoon among them) when the show refuses it."""
        s = self._cue(cue_id)
        fired = self.engine.fire(s.cue.preset, s.cue.effect, list(s.cue.zones) or None)
        s.done, s.why, s.fired = "fired", "by hand", fired
        self._report_soon()
        self._schedule()
        return fired

    def skip(self, cue_id: str) -> None:
        """Skip a cue in this pass: it does not fire when the timecode reaches it (a jump back before it, or arm,
        makes it pending again). Raises UnknownCue, and CueConflict (an EffectError) when it has already been
        fired in this pass."""
        s = self._cue(cue_id)
        if s.done == "fired":
            raise CueConflict(f"cue {cue_id} has already been fired ({s.why}); it can no longer be skipped")
        s.done, s.why = "skipped", "by hand"
        self._report_soon()
        self._schedule()

    # -- state -----------------------------------------------------------------------------------------
    def state(self, now: float | None = None) -> str:
        """off (no cue list), waiting (no timecode yet), running, or stopped."""
        if self.section.file is None:
            return "off"
        if self.last is None:
            return "waiting"
        now = time.monotonic() if now is None else now
        arrival = self.link.arrival
        running = self.link.offset is not None and arrival is not None and now - arrival <= self._stop_s()
        return "running" if running else "stopped"

    def next(self) -> str | None:
        """The first armed, pending cue after the timecode's position (from the start before any timecode)."""
        at = self.link.position if self.link.position is not None else self._stopped_at
        for s in self._cues:
            if s.done is None and s.armed and s.position is not None and (at is None or s.position >= at):
                return s.cue.id
        return None

    def document(self) -> dict[str, Any]:
        """The list's state for HTTP, the twin and the dashboard."""
        nxt = self.next()
        cues = []
        for s in self._cues:
            fired = s.fired
            cues.append({"id": s.cue.id, "timecode": s.cue.timecode, "preset": s.cue.preset, "effect": s.cue.effect,
                         "zones": list(s.cue.zones), "armed": s.armed,
                         "state": "next" if s.cue.id == nxt else s.state(), "why": s.why,
                         "effect_id": fired.effect_id if fired else None,
                         "starts_at": rfc3339(fired.starts_at) if fired else None})
        rate = self.configured or self.rate
        return {"file": self.section.file, "state": self.state(), "rate": rate.value if rate else None,
                "timecode_rate": self.rate.value if self.rate else None,
                "timecode": self.last.label() if self.last else None, "next": nxt,
                "lead_ms": self.engine.settings.lead_ms, "problem": self.not_loaded or self.mismatch, **self.counts,
                "cues": cues}

    # -- the twin asset, at most every REPORT_S --------------------------------------------------------
    def _tick_soon(self) -> None:
        if self._ticker is None:
            with contextlib.suppress(RuntimeError):
                self._ticker = asyncio.get_running_loop().call_later(REPORT_S, self._tick)

    def _tick(self) -> None:
        """While the timecode runs: the twin every REPORT_S, and the stop seen when frames cease."""
        self._ticker = None
        arrival = self.link.arrival
        if self.link.offset is not None and arrival is not None and time.monotonic() - arrival > self._stop_s():
            self._stop()
        self._report()
        if self.link.offset is not None:
            self._tick_soon()

    def _report_soon(self) -> None:
        if self._report_timer is not None:
            return
        wait = self._reported_at + REPORT_S - time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._report()
            return
        self._report_timer = loop.call_later(max(0.0, wait), self._report)

    def _report(self) -> None:
        self._report_timer = None
        if self.section.file is None:
            return
        self._reported_at = time.monotonic()
        doc = self.document()
        twin = self.engine._twin
        with contextlib.suppress(TwinFrozen):
            twin.declare(ASSET, "cue_list")
            twin.report(ASSET, {"timecode": doc["timecode"], "rate": doc["rate"], "timecode_rate": doc["timecode_rate"],
                                "state": doc["state"], "next": doc["next"], "problem": doc["problem"],
                                "cues": {c["id"]: c["state"] for c in doc["cues"]}})
