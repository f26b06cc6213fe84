"""The show engine: presets fired by OSC, HTTP or the cloud become effects with an id and an absolute start
(now plus a lead time), split into zone groups that start later the further they are from the stage, so the
light lands with the sound. Transmitters (the wristband radio) take each effect and say whether it is being
sent; a configured transmitter that is down has the effect reported "not sent". Listeners (OSC feedback) then
hear what was fired and how it went out.

Two clocks: effects are scheduled on monotonic time; the show clock (ms) that names them on the air is anchored
to the wall clock once at start, so it keeps growing across restarts but never jumps with an NTP step.

In a shared show (several boxes, gateway/show/shared.py) an effect fired on another box is `carry`-ed here as it
was fired there (its id, serial and start): it goes to the transmitters, the listeners and the flash cap's
bookkeeping as a local one does, with `origin` naming the box it came from. Each box counts its serials within its
own block of the 256 (`use_serials`), so two boxes never send one serial for two effects.

Two boxes may each fire an effect in one zone within the bus's latency, each passing its own flash cap; so the cap
is kept for carried effects too, and every box reaches the same answer with no message more: of two effects whose
starts in a zone they share are within 1/max_flash_hz, the one ranked first by (start on the show clock, serial)
wins (the serial's block is its box's place in show.shared.boxes, so a tie goes to the box listed first). A carried
effect that loses is refused (not transmitted, not heard by the listeners; counted in show_control's
`refused_carried`); one that wins takes the loser's place in the book, and on the radio its streams take over the
zones they share. A carried effect that loses in some of its zones only is carried in the others (as on a radio
that had it first, the winner's streams take over the zones they share), so the boxes' radios end up sending the
same. A stop is never refused. An effect is carried once: its id is remembered while it counts down and SEEN_S
after (a presence lists it again and again).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.show.cues import CueList
from gateway.show.effects import RGB, Effect, EffectError, TooSoon, number, render
from gateway.show.epochs import ShowEpochs
from gateway.show.live import LiveLooks
from gateway.show.patch import Patch
from gateway.show.settings import PresetSection, ShowSection
from gateway.show.zone_looks import ZoneLooks
from gateway.twin import Twin, TwinFrozen, merge_diff, rfc3339

log = logging.getLogger(__name__)

ASSET = "show_control"
TAP_WINDOW_S = 2.5  # taps further apart than this start a new count
TAP_BOUNCE_S = 0.15  # a tap this soon after the last is the same press bouncing (or sent twice): ignored
STOP_LEAD_MS = 0
MAX_LEAD_MS = 60_000
RECENT = 16  # effects kept for a transmitter that restarts while they still count down
SEEN_S = 300.0  # an effect's id is remembered this long after its start (or its arrival): it is not carried again
MAX_SEEN = 4096  # ids remembered at most (the first remembered forgotten first)
SEEN_PRUNE_S = 10.0  # the ids past their time are forgotten this often
BOOK_SLACK_S = 5.0  # starts kept in the book this long past the flash cap's gap, for effects carried late
REFUSED_LOG_S = 10.0  # carried effects refused are logged at most this often


class UnknownPreset(LookupError):
    pass


@dataclass(frozen=True)
class Group:
    """Zones that start together: the same distance from the stage."""

    zones: tuple[str, ...]
    mask: int  # wristband zone bits
    delay_ms: int
    show_ms: int  # the group's start on the show clock


@dataclass(frozen=True)
class Fired:
    effect_id: str
    serial: int  # one more for each effect fired, modulo 256: on the air, the later effect wins
    preset: str | None
    effect: Effect
    zones: tuple[str, ...]
    groups: tuple[Group, ...]
    start_mono: float
    starts_at: float  # wall clock
    delivery: dict[str, str] = field(default_factory=dict)  # transmitter -> "sending" or "not sent: why"
    lead_ms: int = 0  # how long before its start it was fired
    origin: str | None = None  # the box of a shared show it was fired on, when not this one

    def document(self) -> dict[str, Any]:
        doc = {"effect_id": self.effect_id, "preset": self.preset, "effect": self.effect.document(),
               "zones": list(self.zones), "starts_at": rfc3339(self.starts_at),
               "groups": [{"zones": list(g.zones), "delay_ms": g.delay_ms} for g in self.groups],
               "delivery": dict(self.delivery)}
        if self.origin is not None:
            doc["origin"] = self.origin
        return doc

    def not_sent(self) -> dict[str, str]:
        """The transmitters that did not send it ("not sent: why", or the show's bus: "not shared: why")."""
        return {name: status for name, status in self.delivery.items() if status.startswith("not ")}


Listener = Callable[[Fired], None]
Transmitter = Callable[[Fired], str]  # returns the delivery status


class ShowEngine:
    def __init__(self, settings: ShowSection, twin: Twin) -> None:
        self.settings = settings
        self.tempo_bpm = settings.tempo_bpm
        self.presets = {p.name: p for p in settings.presets}
        self.zones = {z.name: z for z in settings.zones}
        self.last: Fired | None = None
        self._twin = twin
        self._listeners: list[Listener] = []
        self._transmitters: dict[str, Transmitter | None] = {}  # None: configured, but down
        self.recent: deque[Fired] = deque(maxlen=RECENT)
        self._taps: deque[float] = deque(maxlen=8)
        self._anchor = (time.monotonic(), time.time())
        self._serials = (0, 256)  # this box's block of serials: its first and how many (a shared show splits them)
        self._serial = int(time.time()) % 256  # a restarted gateway does not begin where bands last heard it
        # zone ("" with none configured) -> the effects lighting it, those that can still be too near a new one
        # (starting not more than 1/max_flash_hz before now, when a local effect starts at the soonest; BOOK_SLACK_S
        # more for one carried late)
        self._lit: dict[str, list[Fired]] = {}
        self._seen: dict[str, float] = {}  # effect id -> until when (monotonic) it is not carried again
        self._seen_pruned = time.monotonic()
        self.refused_carried = 0  # carried effects refused by the flash cap
        self._refused_since_log = 0
        self._last_refused_log = float("-inf")
        self.live = LiveLooks(self)  # the console's looks, zone by zone
        self.patch = Patch(self)  # console universes to crowd fixtures and macro channels
        self.cues = CueList(self)  # the timecode cue list
        self.looks = ZoneLooks(self)  # what each zone shows now, for feedback
        # Why the radios must not transmit now (the box's clock is off: gateway/show/clock_watch.py), or None
        self.clock_gate: str | None = None
        self.epochs = ShowEpochs()  # each show id's epoch, this box's and the shared show's other boxes'

    # -- clocks ----------------------------------------------------------------------------------------
    def show_ms(self, mono: float) -> int:
        anchor_mono, anchor_wall = self._anchor
        return int((anchor_wall + mono - anchor_mono) * 1000)

    def wall(self, mono: float) -> float:
        anchor_mono, anchor_wall = self._anchor
        return anchor_wall + mono - anchor_mono

    def mono(self, show_ms: float) -> float:
        """The monotonic time at which the show clock reads `show_ms`."""
        anchor_mono, anchor_wall = self._anchor
        return anchor_mono + show_ms / 1000 - anchor_wall

    def use_serials(self, block: int, blocks: int) -> None:
        """Count serials within block `block` of `blocks` equal blocks of the 256 (a shared show: this box's index
        among its boxes), starting from the clock's seconds as at start."""
        size = 256 // blocks
        self._serials = (block * size, size)
        self._serial = block * size + int(time.time()) % size

    # -- commands --------------------------------------------------------------------------------------
    def on_fire(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def expect_transmitter(self, name: str) -> None:
        """A transmitter is configured: until it attaches, what is fired is reported not sent by it."""
        self._transmitters.setdefault(name, None)

    def attach_transmitter(self, name: str, send: Transmitter) -> Callable[[], None]:
        self._transmitters[name] = send

        def detach() -> None:
            if self._transmitters.get(name) is send:
                self._transmitters[name] = None
        return detach

    def effect_of(self, preset: str | None, inline: dict[str, Any] | None) -> tuple[Effect, PresetSection | None]:
        if preset is not None:
            found = self.presets.get(preset)
            if found is None:
                raise UnknownPreset(f"no preset {preset!r} (allowed: {', '.join(sorted(self.presets)) or 'none'})")
            return Effect.from_document(found.effect_document(), self.tempo_bpm), found
        if inline is None:
            raise EffectError("give a preset or an inline effect")
        return Effect.from_document(inline, self.tempo_bpm), None

    def _zones(self, names: list[str] | None) -> tuple[str, ...]:
        if not names:
            return tuple(self.zones)
        unknown = [n for n in names if n not in self.zones]
        if unknown:
            raise EffectError(f"no zone {unknown[0]!r} (allowed: {', '.join(self.zones) or 'none configured'})")
        return tuple(dict.fromkeys(names))  # each zone once, in the order given

    def resolve(self, preset: str | None = None, inline: dict[str, Any] | None = None,
                zones: list[str] | None = None) -> tuple[Effect, tuple[str, ...]]:
        """The effect as it would go out now and its zones (default: the preset's, else all): a preset with
        `intensity_from = "energy"` at the intensity its zones' crowd energy gives it this moment."""
        effect, found = self.effect_of(preset, inline)
        names = self._zones(zones or (list(found.zones) if found is not None and found.zones else None))
        if found is not None and found.intensity_from == "energy":
            effect = self._by_energy(effect, found, names)
        return effect, names

    def fire(self, preset: str | None = None, inline: dict[str, Any] | None = None, zones: list[str] | None = None,
             lead_ms: int | None = None) -> Fired:
        """Fire a preset (or an inline effect) in `zones` (default: the preset's, else all) after `lead_ms`."""
        effect, names = self.resolve(preset, inline, zones)
        return self._fire(effect, preset, names, self.settings.lead_ms if lead_ms is None else lead_ms)

    def fire_request(self, doc: dict[str, Any], extra: tuple[str, ...] = ()) -> Fired:
        """Fire what a request document asks for (HTTP or the cloud): `preset` or `effect`, `zones`, `lead_ms`.
        Raises EffectError (or UnknownPreset) naming what is wrong; keys in `extra` are the caller's own."""
        return self.fire(*self.check_request(doc, extra))

    def check_request(self, doc: dict[str, Any], extra: tuple[str, ...] = ()
                      ) -> tuple[str | None, dict[str, Any] | None, list[str] | None, int | None]:
        """A request document's preset or inline effect, zones and lead time, each checked as it is given (a key
        given as null is wrong, not absent); EffectError names what is wrong."""
        allowed = ("preset", "effect", "zones", "lead_ms", *extra)
        unknown = sorted(set(doc) - set(allowed))
        if unknown:
            raise EffectError(f"unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
        if ("preset" in doc) == ("effect" in doc):
            raise EffectError("give a preset or an inline effect" + (", not both" if "preset" in doc else ""))
        preset, inline, zones, lead = (doc.get(k) for k in ("preset", "effect", "zones", "lead_ms"))
        if "preset" in doc and not isinstance(preset, str):
            raise EffectError("preset must be a preset name")
        if "effect" in doc and not isinstance(inline, dict):
            raise EffectError("effect must be an object")
        if "zones" in doc and not (isinstance(zones, list) and all(isinstance(z, str) for z in zones)):
            raise EffectError("zones must be a list of zone names")
        if "lead_ms" in doc:
            lead = int(number("lead_ms", lead, 0, MAX_LEAD_MS, whole=True))
        return preset, inline, zones, lead

    def _by_energy(self, effect: Effect, preset: PresetSection, names: tuple[str, ...]) -> Effect:
        """The preset's intensity scaled by the mean crowd energy of its zones (the `mood:<zone>` assets); without
        an energy for any of them, the preset's own intensity."""
        energies = []
        for name in names or tuple(self.zones):
            asset = self._twin.get(f"mood:{name}")
            value = asset.reported.get("energy") if asset is not None else None
            if isinstance(value, int | float) and 0 <= value <= 1:
                energies.append(float(value))
        if not energies:
            log.info("preset %s: no crowd energy known for its zones; intensity %.2f", preset.name, effect.intensity)
            return effect
        energy = sum(energies) / len(energies)
        low = min(preset.min_intensity, effect.intensity)
        return replace(effect, intensity=round(low + (effect.intensity - low) * energy, 3))

    def stop(self) -> Fired:
        """Stop every effect: a blackout of the wristbands with no lead time (each zone still by its delay)."""
        self.patch.cancel()  # nor do the console's effects waiting for the flash cap start after it
        return self._fire(Effect("blackout"), None, tuple(self.zones), STOP_LEAD_MS)

    def _fire(self, effect: Effect, preset: str | None, names: tuple[str, ...], lead_ms: int) -> Fired:
        """Every effect goes out through here, whoever fired it: the photosensitivity cap is kept here."""
        if not 0 <= lead_ms <= MAX_LEAD_MS:
            raise EffectError(f"lead_ms {lead_ms} is out of range (allowed: 0 to {MAX_LEAD_MS})")
        effect.check_flash(self.settings.max_flash_hz)
        start = time.monotonic() + lead_ms / 1000
        lit = effect.kind != "blackout"
        if lit:
            self._check_starts(names or ("",), start)
        by_delay: dict[int, list[str]] = {}
        for name in names:
            by_delay.setdefault(self.delay_ms(name), []).append(name)
        if not names:  # no zones configured: one group, every band
            by_delay[0] = []
        groups = []
        for delay, members in sorted(by_delay.items()):
            mask = 0
            for member in members:
                mask |= 1 << self.zones[member].index
            mask = mask or 0xFFFF
            groups.append(Group(tuple(members), mask, delay, self.show_ms(start) + delay))
        first, size = self._serials
        self._serial = first + (self._serial - first + 1) % size
        fired = Fired(uuid.uuid4().hex[:12], self._serial, preset, effect, names, tuple(groups), start,
                      self.wall(start), lead_ms=lead_ms)
        self.last = fired
        self.recent.append(fired)
        self._remember(fired, time.monotonic())
        self.live.release(names)  # the latest wins: the effect, until the console changes these zones again
        if lit:
            self._light(names or ("",), fired)
        log.info("effect %s (%s) fired for %s, starts %s", fired.effect_id, preset or effect.kind,
                 ", ".join(names) or "every zone", rfc3339(fired.starts_at))
        self._deliver(fired)
        return fired

    def carry(self, fired: Fired) -> bool:
        """An effect fired on another box of a shared show (`fired.origin`), with its id, serial and start: to the
        transmitters and listeners as a local one, the zones it lights kept for the flash cap (a local effect too
        near it is refused) and taken from live control. Against the effects in the book it is ranked (`_rank`):
        refused when one within 1/max_flash_hz of it in a zone they share ranks first, else it takes the place of
        those it outranks. False when the effect was here already (carried, refused or fired here), or refused."""
        now = time.monotonic()
        if fired.effect_id in self._seen:
            return False
        self._remember(fired, now)
        names = tuple(name for name in fired.zones if name in self.zones)
        booked = names if fired.zones else ("",)
        if fired.effect.kind != "blackout":
            rank = self._rank(fired)
            ahead = [rival for rival in self._rivals(fired, booked) if self._rank(rival) < rank]
            if ahead:  # it gives way in their zones, as it would on a radio that had it before them
                kept = tuple(name for name in booked if not any(rival in self._lit.get(name, ()) for rival in ahead))
                if not kept:
                    self._refuse(fired, min(ahead, key=self._rank), now)
                    return False
                log.info("effect %s carried from %s only for %s: it starts within the flash cap's gap of %s, which "
                         "starts first, in its other zones", fired.effect_id, fired.origin, ", ".join(kept),
                         ", ".join(rival.effect_id for rival in ahead))
                fired = self._within(fired, kept)
                names = booked = kept
            for loser in self._rivals(fired, booked):  # those it outranks: it takes their place in its zones
                self._give_way(loser, fired)
                log.info("effect %s (from %s) gives way to %s carried from %s: they start within the flash cap's "
                         "gap in a zone, and that one starts first", loser.effect_id, loser.origin or "this box",
                         fired.effect_id, fired.origin)
        self.last = fired
        self.recent.append(fired)
        self.live.release(names)
        if fired.effect.kind != "blackout":
            self._light(booked, fired)
        log.info("effect %s (%s) carried from %s for %s, starts %s", fired.effect_id, fired.preset or
                 fired.effect.kind, fired.origin, ", ".join(fired.zones) or "every zone", rfc3339(fired.starts_at))
        self._deliver(fired)
        return True

    def _remember(self, fired: Fired, now: float) -> None:
        """The effect's id, not carried again while it counts down and SEEN_S after (at most MAX_SEEN ids)."""
        if len(self._seen) >= MAX_SEEN or now - self._seen_pruned >= SEEN_PRUNE_S:
            self._seen = {effect_id: until for effect_id, until in self._seen.items() if until > now}
            self._seen_pruned = now
            while len(self._seen) >= MAX_SEEN:  # the first remembered are forgotten first
                del self._seen[next(iter(self._seen))]
        self._seen[fired.effect_id] = max(fired.start_mono, now) + SEEN_S

    @staticmethod
    def _rank(fired: Fired) -> tuple[int, int]:
        """Which of two effects too near each other wins, the same on every box: the first to start on the show
        clock, then the lower serial (whose block is its box's place among the show's boxes)."""
        start = fired.groups[0].show_ms - fired.groups[0].delay_ms if fired.groups else 0
        return start, fired.serial

    @staticmethod
    def _zone_starts(fired: Fired) -> dict[str, int]:
        """When the effect starts in each of its zones on the bands ("" for every band): its group's start."""
        return {zone: group.show_ms for group in fired.groups for zone in (group.zones or ("",))}

    def _rivals(self, fired: Fired, names: tuple[str, ...]) -> list[Fired]:
        """The effects in the book starting within 1/max_flash_hz of `fired` in a zone of `names`."""
        gap_ms = 1000 / self.settings.max_flash_hz
        starts = self._zone_starts(fired)
        rivals: dict[str, Fired] = {}
        for name in names:
            start = starts.get(name)
            for other in self._lit.get(name, ()):
                at = self._zone_starts(other).get(name)
                if start is not None and at is not None and abs(at - start) < gap_ms:
                    rivals[other.effect_id] = other
        return list(rivals.values())

    def _refuse(self, fired: Fired, winner: Fired, now: float) -> None:
        self.refused_carried += 1
        self._refused_since_log += 1
        if now - self._last_refused_log >= REFUSED_LOG_S:
            log.warning("refused %d carried effect(s) since the last word (the flash cap): the latest, %s from %s, "
                        "starts within %d ms of %s (from %s) in a zone, which starts first",
                        self._refused_since_log, fired.effect_id, fired.origin,
                        math.ceil(1000 / self.settings.max_flash_hz), winner.effect_id,
                        winner.origin or "this box")
            self._refused_since_log, self._last_refused_log = 0, now
        self.report({"refused_carried": self.refused_carried})

    def _within(self, fired: Fired, names: tuple[str, ...]) -> Fired:
        """A carried effect in `names` only (some of its zones)."""
        groups = []
        for group in fired.groups:
            members = tuple(zone for zone in group.zones if zone in names)
            if members:
                mask = 0
                for member in members:
                    mask |= 1 << self.zones[member].index
                groups.append(replace(group, zones=members, mask=mask))
        return replace(fired, zones=names, groups=tuple(groups), delivery={})

    def _give_way(self, loser: Fired, winner: Fired) -> None:
        """An effect outranked by a carried one leaves the book in the winner's zones, as on the radio the winner's
        streams take those zones over from it; in none left, the recent effects too (a presence lists it no more)."""
        for name in winner.zones or ("",):
            if name in self._lit:
                self._lit[name] = [other for other in self._lit[name] if other is not loser]
        if not any(loser in lit for lit in self._lit.values()):
            with contextlib.suppress(ValueError):
                self.recent.remove(loser)

    def _deliver(self, fired: Fired) -> None:
        """A fired or carried effect to every transmitter (each says how it goes out), then to the listeners."""
        for name, send in list(self._transmitters.items()):
            try:
                fired.delivery[name] = "not sent: the transmitter is down" if send is None else send(fired)
            except Exception as exc:
                log.exception("transmitter %s failed", name)
                fired.delivery[name] = f"not sent: {type(exc).__name__}: {exc}"
        for name, status in fired.not_sent().items():
            log.warning("effect %s: %s %s", fired.effect_id, name, status)
        for listener in list(self._listeners):
            try:
                listener(fired)
            except Exception:
                log.exception("an effect listener failed")
        self._report()

    def _check_starts(self, names: tuple[str, ...], start: float) -> None:
        """Effects that change what a zone shows are flashes too (solid and blackout in turn, or two colours): an
        effect that lights a zone starts at least 1/max_flash_hz after the last one there; a stop, at any time."""
        gap_s = 1 / self.settings.max_flash_hz
        # The zones' effect starts, and their live flashes (risen on the bands, less the zone's sound delay: as an
        # effect's start counts here).
        starts = {name: [*self.starts(name), *(rise - self.delay_ms(name) / 1000 for rise in
                                                     self.live.flashes(name) if name in self.zones)]
                  for name in names}
        near = [(name, lit) for name in names for lit in starts[name] if abs(start - lit) < gap_s]
        if near:  # allowed 1/max_flash_hz after the latest start in these zones (which may be still to come)
            name, lit = near[0]
            latest = max(lit for zone in names for lit in starts[zone])
            raise TooSoon(f"{'zone ' + name if name else 'the bands'}: an effect starting "
                          f"{abs(start - lit) * 1000:.0f} ms from the last one there is over "
                          f"show.max_flash_hz {self.settings.max_flash_hz:g} (allowed: one every "
                          f"{math.ceil(gap_s * 1000)} ms in a zone; a stop at any time)",
                          latest + gap_s - start)

    def _light(self, names: tuple[str, ...], fired: Fired) -> None:
        """An effect lighting `names` (from its start, monotonic): kept for `_check_starts` and `_rivals`."""
        since = time.monotonic() - 1 / self.settings.max_flash_hz - BOOK_SLACK_S
        for name in names:
            self._lit[name] = [lit for lit in self._lit.get(name, ()) if lit.start_mono >= since] + [fired]

    def starts(self, zone: str) -> tuple[float, ...]:
        """The starts (monotonic) of the recent effects lighting `zone`, those that may be near a flash now (older
        ones are dropped as later ones are lit)."""
        return tuple(lit.start_mono for lit in self._lit.get(zone, ()))

    def update_delivery(self, fired: Fired, transmitter: str, status: str) -> None:
        """A transmitter's later word on an effect: resumed when it came back in time, or cut short."""
        fired.delivery[transmitter] = status
        log.info("effect %s: %s %s", fired.effect_id, transmitter, status)
        if fired is self.last:
            self._report()

    def delay_ms(self, zone: str) -> int:
        """How much later than the stage the zone starts an effect: the sound's travel to it (delay_by_distance)."""
        if not self.settings.delay_by_distance:
            return 0
        return round(self.zones[zone].distance_m / self.settings.speed_of_sound_m_s * 1000)

    def set_tempo(self, bpm: float) -> None:
        if not 1 <= bpm <= 999:
            raise EffectError(f"tempo {bpm} bpm is out of range (allowed: 1 to 999)")
        self.tempo_bpm = float(bpm)
        self._report()

    def tap(self, at: float | None = None) -> float:
        """Tap tempo: the mean interval of the recent taps sets the tempo."""
        now = time.monotonic() if at is None else at
        if self._taps and now - self._taps[-1] < TAP_BOUNCE_S:
            return self.tempo_bpm
        if self._taps and now - self._taps[-1] > TAP_WINDOW_S:
            self._taps.clear()
        self._taps.append(now)
        if len(self._taps) >= 2:
            self.set_tempo(round(60 * (len(self._taps) - 1) / (self._taps[-1] - self._taps[0]), 1))
        return self.tempo_bpm

    def preview(self, effect: Effect, step_ms: int = 40, duration_ms: int = 4000) -> dict[str, list[RGB]]:
        """What each zone would show, every `step_ms` from the start, without transmitting anything."""
        names = list(self.zones) or ["all"]
        order = {name: i for i, name in enumerate(sorted(names, key=lambda n: self.zones[n].index
                                                         if n in self.zones else 0))}
        out = {}
        for name in names:
            delay = self.delay_ms(name) if name in self.zones else 0
            out[name] = [render(effect, t - delay, order[name], len(names))
                         for t in range(0, duration_ms, step_ms)]
        return out

    def _report(self) -> None:
        """The tempo and the last effect: its document replaces the one before whole (a key that effect had and this
        one has not, its origin or a transmitter's delivery, is not left behind by the merge)."""
        asset = self._twin.get(ASSET)
        before = asset.reported.get("last_effect") if asset is not None else None
        self.report({"tempo_bpm": self.tempo_bpm,
                     "last_effect": merge_diff(before, self.last.document()) if self.last else None})

    def report(self, values: dict[str, Any]) -> None:
        """Merge `values` into the twin asset show_control (the engine's state, and its parts': `live`)."""
        with contextlib.suppress(TwinFrozen):
            self._twin.declare(ASSET, "show_control")
            self._twin.report(ASSET, values)
