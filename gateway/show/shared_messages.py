"""The shared show's messages on the venue's broker (docs/multi-box.md): their topics, and each payload encoded and
checked. Topics are `venues/{venue}/show/{box}/{kind}`, a box writing only its own (the broker's ACL holds it to
them); payloads are JSON objects with the format version `v` and the `box` that sent them:

- `presence` (retained; the box's will says `online: false`): the epoch it sends each show id from, the effects
  still counting down and the live looks it holds, so a box that joins mid-show takes them.
- `effect`: an effect fired on the box, with its id, serial, zone groups and their absolute starts (show_ms).
- `live`: a console's look applied on the box, with its instant (show_ms).
- `clock`: an NTP-style exchange: a request (t1) to every box, and each box's answer to one (`to`, t1, t2, t3).

Anything else, or anything out of its bounds, raises Malformed saying what.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson

from gateway.show.effects import KINDS, Effect, EffectError, parse_colour
from gateway.show.engine import MAX_LEAD_MS, Fired, Group
from gateway.show.live import LiveChange, Look

VERSION = 1
KINDS_OF_MESSAGE = ("presence", "effect", "live", "clock")
MAX_PAYLOAD = 64 * 1024
MAX_LISTED = 64  # effects or live looks in one presence
MAX_SHOW_MS = 2**53  # the show clock in ms fits a double exactly
_EFFECT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SHOW_ID = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


class Malformed(ValueError):
    """A message that is not what a box of the show sends; the message says what is wrong."""


def topic(venue: str, box: str, kind: str) -> str:
    return f"venues/{venue}/show/{box}/{kind}"


def subscription(venue: str) -> str:
    return f"venues/{venue}/show/+/+"


def parse_topic(venue: str, name: str) -> tuple[str, str]:
    """The box and kind of a topic of the venue's show; Malformed otherwise."""
    parts = name.split("/")
    if len(parts) != 5 or parts[:3] != ["venues", venue, "show"] or parts[4] not in KINDS_OF_MESSAGE:
        raise Malformed(f"topic {name!r} is not a shared show's (allowed: venues/{venue}/show/BOX/"
                        f"{'|'.join(KINDS_OF_MESSAGE)})")
    return parts[3], parts[4]


def encode(box: str, body: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": VERSION, "box": box, **body})


def decode(payload: bytes, box: str) -> dict[str, Any]:
    """The JSON object sent by `box` (its topic's); Malformed if it is not one of this version from that box."""
    if len(payload) > MAX_PAYLOAD:
        raise Malformed(f"{len(payload)} bytes (allowed: up to {MAX_PAYLOAD})")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise Malformed("not JSON") from None
    if not isinstance(doc, dict):
        raise Malformed("not a JSON object")
    if doc.get("v") != VERSION:
        raise Malformed(f"format version {doc.get('v')!r} (allowed: {VERSION})")
    if doc.get("box") != box:
        raise Malformed(f"box {doc.get('box')!r} sent on {box!r}'s topic")
    return doc


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], lo: float | None = None,
         hi: float | None = None) -> Any:
    value: Any = doc.get(key)
    numeric = kind in (int, float) or kind == (int, float)
    if not isinstance(value, kind) or (numeric and isinstance(value, bool)):
        raise Malformed(f"{key}: {value!r} is not what it should be")
    number = float(cast(float, value)) if numeric else 0.0
    if numeric and not ((lo is None or number >= lo) and (hi is None or number <= hi)):
        raise Malformed(f"{key}: {value!r} is out of range ({lo} to {hi})")
    return value


def _names(doc: dict[str, Any], key: str) -> tuple[str, ...]:
    names = _get(doc, key, list)
    if len(names) > 16 or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names):
        raise Malformed(f"{key}: not a list of zone names")
    return tuple(names)


# -- effects ------------------------------------------------------------------------------------------------------
def effect_body(fired: Fired, origin: str) -> dict[str, Any]:
    e = fired.effect
    r, g, b = e.colour
    return {"origin": origin, "effect_id": fired.effect_id, "serial": fired.serial, "preset": fired.preset,
            "effect": {"kind": e.kind, "colour": f"#{r:02x}{g:02x}{b:02x}", "intensity": e.intensity,
                       "period_ms": e.period_ms, "duration_ms": e.duration_ms, "param": e.param},
            "zones": list(fired.zones), "lead_ms": fired.lead_ms,
            "groups": [{"zones": list(gr.zones), "mask": gr.mask, "delay_ms": gr.delay_ms, "show_ms": gr.show_ms}
                       for gr in fired.groups]}


def effect_of(doc: dict[str, Any], mono_of: Callable[[float], float], max_flash_hz: float) -> Fired:
    """The effect a message (or a presence's entry) carries, as this box's engine takes it: `mono_of(show_ms)` is
    the engine's monotonic time of a show time. An effect over this box's flash cap is Malformed too."""
    origin = _get(doc, "origin", str)
    if not _NAME.fullmatch(origin):
        raise Malformed(f"origin {origin!r} is not a gateway id")
    effect_id = _get(doc, "effect_id", str)
    if not _EFFECT_ID.fullmatch(effect_id):
        raise Malformed(f"effect_id {effect_id!r} (allowed: 1-64 letters, digits, _ and -)")
    preset = doc.get("preset")
    if preset is not None and not (isinstance(preset, str) and _NAME.fullmatch(preset)):
        raise Malformed(f"preset {preset!r} is not a preset name")
    e = _get(doc, "effect", dict)
    kind = e.get("kind")
    if kind not in KINDS:
        raise Malformed(f"effect kind {kind!r} (allowed: {', '.join(KINDS)})")
    try:
        colour = parse_colour(_get(e, "colour", str))
        effect = Effect(kind, colour, float(_get(e, "intensity", (int, float), 0, 1)),
                        _get(e, "period_ms", int, 20, 600_000), _get(e, "duration_ms", int, 0, 6_553_500),
                        _get(e, "param", int, 0, 255))
        effect.check_flash(max_flash_hz)
    except EffectError as exc:
        raise Malformed(f"effect: {exc}") from None
    groups = []
    for raw in _get(doc, "groups", list)[:16]:
        if not isinstance(raw, dict):
            raise Malformed("groups: not a list of objects")
        groups.append(Group(_names(raw, "zones"), _get(raw, "mask", int, 1, 0xFFFF),
                            _get(raw, "delay_ms", int, 0, 600_000), _get(raw, "show_ms", int, 0, MAX_SHOW_MS)))
    if not groups:
        raise Malformed("groups: none")
    start_ms = groups[0].show_ms - groups[0].delay_ms
    return Fired(effect_id, _get(doc, "serial", int, 0, 255), preset, effect, _names(doc, "zones"), tuple(groups),
                 mono_of(start_ms), start_ms / 1000, lead_ms=_get(doc, "lead_ms", int, 0, MAX_LEAD_MS), origin=origin)


# -- live looks ---------------------------------------------------------------------------------------------------
def live_body(change: LiveChange) -> dict[str, Any]:
    r, g, b = change.look.colour
    return {"zone": change.zone, "colour": f"#{r:02x}{g:02x}{b:02x}", "intensity": change.look.intensity,
            "strobe_hz": change.look.strobe_hz, "show_ms": change.show_ms, "fade_ms": change.fade_ms}


@dataclass(frozen=True)
class CarriedLook:
    zone: str
    look: Look
    show_ms: int
    fade_ms: int


def look_of(doc: dict[str, Any], max_flash_hz: float) -> CarriedLook:
    zone = _get(doc, "zone", str)
    if not _NAME.fullmatch(zone):
        raise Malformed(f"zone {zone!r} is not a zone name")
    try:
        colour = parse_colour(_get(doc, "colour", str))
    except EffectError as exc:
        raise Malformed(f"colour: {exc}") from None
    look = Look(colour, float(_get(doc, "intensity", (int, float), 0, 1)),
                float(_get(doc, "strobe_hz", (int, float), 0, max_flash_hz)))
    return CarriedLook(zone, look, _get(doc, "show_ms", int, 0, MAX_SHOW_MS), _get(doc, "fade_ms", int, 0, 60_000))


# -- presence -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Presence:
    online: bool
    reason: str | None
    epochs: dict[int, int]
    effects: list[dict[str, Any]]  # each checked when taken (effect_of)
    looks: list[dict[str, Any]]  # each checked when taken (look_of)


def presence_of(doc: dict[str, Any]) -> Presence:
    online = _get(doc, "online", bool)
    reason = doc.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise Malformed(f"reason {reason!r} is not text")
    epochs: dict[int, int] = {}
    for key, value in _get(doc, "epochs", dict).items() if online else ():
        if not (_SHOW_ID.fullmatch(key) and int(key) <= 0xFFFF) or isinstance(value, bool) \
                or not isinstance(value, int) or not 0 <= value <= MAX_SHOW_MS:
            raise Malformed(f"epochs: {key!r}: {value!r} is not a show id and its epoch")
        epochs[int(key)] = value
    effects = _get(doc, "effects", list) if online else []
    looks = _get(doc, "live", list) if online else []
    if len(effects) > MAX_LISTED or len(looks) > MAX_LISTED or \
            not all(isinstance(x, dict) for x in (*effects, *looks)):
        raise Malformed(f"effects and live: lists of up to {MAX_LISTED} objects")
    return Presence(online, reason, epochs, effects, looks)


# -- clock exchanges ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClockMessage:
    to: str | None  # None: a request to every box; else the box an answer is for
    t1: float  # the request's sending, on the asker's show clock (ms)
    t2: float | None  # its arrival at the answering box, on that box's show clock
    t3: float | None  # the answer's sending, on that box's show clock


def clock_of(doc: dict[str, Any]) -> ClockMessage:
    t1 = float(_get(doc, "t1", (int, float), 0, MAX_SHOW_MS))
    if doc.get("to") is None:
        return ClockMessage(None, t1, None, None)
    to = _get(doc, "to", str)
    return ClockMessage(to, t1, float(_get(doc, "t2", (int, float), 0, MAX_SHOW_MS)),
                        float(_get(doc, "t3", (int, float), 0, MAX_SHOW_MS)))
