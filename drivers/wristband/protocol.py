"""The wristband packets (docs/wristband-protocol.md): one legacy BLE advertisement each, authenticated with the
show's key. Version 1, the effect packet, tells every band in the selected zones which effect to start, and in how
many milliseconds; version 2, the live frame, carries the current look of up to two sets of zones (the console's
live control) and the instant every band shows them. Both share the show's sequence numbers.

Pure: bytes <-> WristbandPacket, no radio, no clock. AES-128-CMAC (from `cryptography`) is the tag because a
band's BLE chip has an AES block in hardware; the tag is truncated to 48 bits as BLE's own MICs are. Each show
has a key of its own, derived from the venue key and the show id (`show_key`): a band holds its show's key only.
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1  # the effect packet's
LIVE_VERSION = 2  # the live frame's
LIVE_KIND = 0  # the live frame's kind (the header's low nibble); the others are kept for later kinds
AD_TYPE_MANUFACTURER = 0xFF
COMPANY_ID = 0xFFFF  # the Bluetooth SIG's value for tests and internal use; a product takes its own
ADV_SIZE = 31  # a legacy advertisement's data
TAG_SIZE = 6
KEY_SIZE = 16
ALL_ZONES = 0xFFFF
MAX_SEQUENCE = 0xFFFF_FFFF  # ms from the show's start: 49.7 days, then the show needs a new id (and key)
SHOW_KEY_INFO = b"venue-gateway wristband show key v1"  # HKDF's info, followed by the show id (2 bytes, LE)

# AD length, AD type, company id, then the 21 bytes of the body and the 6 of the tag.
_BODY = struct.Struct("<BHIBHBBBBHHBH")
_PREFIX = struct.Struct("<BBH")
assert _PREFIX.size + _BODY.size + TAG_SIZE == ADV_SIZE
# The live frame: version and kind, show id, sequence, countdown (ms), fade (10 ms), then two looks.
_LIVE_HEAD = struct.Struct("<BHIBB")
_LOOK = struct.Struct("<HBBBB")  # zone mask, red, green, blue, strobe period (10 ms, 0: steady)
LOOKS_PER_FRAME = 2
MAX_LIVE_COUNTDOWN_MS = 0xFF
MAX_FADE_MS = 2550
MAX_STROBE_MS = 2550
assert _PREFIX.size + _LIVE_HEAD.size + LOOKS_PER_FRAME * _LOOK.size + TAG_SIZE == ADV_SIZE


class Effect(enum.IntEnum):
    HEARTBEAT = 0  # nothing to show: keeps the bands' estimate of the show clock fresh
    SOLID = 1
    STROBE = 2
    PULSE = 3
    CHASE = 4
    WAVE = 5
    TWINKLE = 6
    RAINBOW = 7
    BLACKOUT = 8  # stop whatever runs, lights off


class WristbandError(ValueError):
    """Bytes that are not a wristband packet of this version (malformed, foreign, or too short)."""


class AuthenticationError(WristbandError):
    """A well-formed packet whose tag does not verify with the show's key: a stranger's transmitter."""


@dataclass(frozen=True)
class WristbandPacket:
    show_id: int  # 0..65535: which show (and so which key) the packet belongs to
    sequence: int  # ms from the show's start when this copy was sent: grows with every copy, never wraps
    serial: int  # 0..255: the effect's number, one more for each effect fired (modulo 256)
    effect: Effect
    countdown_ms: int  # 0..65535: the effect starts this long after this copy was sent
    zones: int = ALL_ZONES  # bit n: bands of zone n take part
    colour: tuple[int, int, int] = (255, 255, 255)
    intensity: int = 255
    period_ms: int = 500  # one beat of the effect, sent rounded to 10 ms
    duration_ms: int = 0  # 0: until the next effect; sent rounded to 100 ms (a shorter one as 100 ms)
    param: int = 0  # per effect: twinkle chance /255, chase width, wave step per zone in 10 ms

    def body(self) -> bytes:
        r, g, b = self.colour
        if not 0 <= int(self.effect) <= 15:
            raise WristbandError(f"effect {self.effect} does not fit its 4 bits")
        try:
            return _BODY.pack(VERSION << 4 | int(self.effect), self.show_id, self.sequence, self.serial, self.zones,
                              r, g, b, self.intensity, round(self.period_ms / 10),
                              max(1, round(self.duration_ms / 100)) if self.duration_ms else 0, self.param,
                              self.countdown_ms)
        except struct.error as exc:
            raise WristbandError(f"a field is out of range: {exc}") from None

    def encode(self, key: bytes) -> bytes:
        """The 31 bytes of advertising data."""
        head = _PREFIX.pack(ADV_SIZE - 1, AD_TYPE_MANUFACTURER, COMPANY_ID)
        body = self.body()
        return head + body + tag(key, head + body)


@dataclass(frozen=True)
class LiveLook:
    """One look of a live frame: the zones that show it, its colour (already scaled by intensity) and strobe."""

    zones: int  # bit n: bands of zone n show it; 0: no look (a frame with one look pads the second)
    rgb: tuple[int, int, int]
    strobe_ms: int = 0  # the strobe's period, sent in 10 ms steps; 0: steady


@dataclass(frozen=True)
class LiveFrame:
    """The live frame: the looks show at sequence + countdown on the show clock, on every band at once, each band
    fading to them over `fade_ms`."""

    show_id: int
    sequence: int  # the show's sequence numbers, shared with the effect packets
    countdown_ms: int  # 0..255
    fade_ms: int  # sent in 10 ms steps, 0..2550
    looks: tuple[LiveLook, ...]  # one or two

    def body(self) -> bytes:
        if not 1 <= len(self.looks) <= LOOKS_PER_FRAME:
            raise WristbandError(f"a live frame carries 1 or {LOOKS_PER_FRAME} looks, not {len(self.looks)}")
        looks = [*self.looks, LiveLook(0, (0, 0, 0))][:LOOKS_PER_FRAME]
        try:
            return _LIVE_HEAD.pack(LIVE_VERSION << 4 | LIVE_KIND, self.show_id, self.sequence, self.countdown_ms,
                                   round(self.fade_ms / 10)) + b"".join(
                _LOOK.pack(look.zones, *look.rgb, round(look.strobe_ms / 10)) for look in looks)
        except struct.error as exc:
            raise WristbandError(f"a field is out of range: {exc}") from None

    def encode(self, key: bytes) -> bytes:
        """The 31 bytes of advertising data."""
        head = _PREFIX.pack(ADV_SIZE - 1, AD_TYPE_MANUFACTURER, COMPANY_ID)
        body = self.body()
        return head + body + tag(key, head + body)


def show_key(venue_key: bytes, show_id: int) -> bytes:
    """The show's key: HKDF-SHA256 of the venue key with the show id. What the bands of that show are given
    (never the venue key), and what signs that show's packets and no other's."""
    if len(venue_key) != KEY_SIZE:
        raise ValueError(f"a venue key is {KEY_SIZE} bytes, not {len(venue_key)}")
    if not 0 <= show_id <= 0xFFFF:
        raise ValueError(f"show id {show_id} is out of range (allowed: 0 to 65535)")
    return HKDF(hashes.SHA256(), KEY_SIZE, salt=None, info=SHOW_KEY_INFO + show_id.to_bytes(2, "little")
                ).derive(venue_key)


def tag(key: bytes, data: bytes) -> bytes:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a show key is {KEY_SIZE} bytes, not {len(key)}")
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()[:TAG_SIZE]


def _verified(adv: bytes, key: bytes, versions: tuple[int, ...]) -> int:
    """The version of authentic advertising data; WristbandError if malformed or another version,
    AuthenticationError if forged."""
    if len(adv) < ADV_SIZE:
        raise WristbandError(f"{len(adv)} bytes, a wristband packet is {ADV_SIZE}")
    length, ad_type, company = _PREFIX.unpack_from(adv)
    if (length, ad_type, company) != (ADV_SIZE - 1, AD_TYPE_MANUFACTURER, COMPANY_ID):
        raise WristbandError("not a wristband advertisement (AD structure or company id)")
    version = adv[_PREFIX.size] >> 4
    if version not in versions:
        raise WristbandError(f"wristband protocol version {version}, this is "
                             f"{' or '.join(str(v) for v in versions)}")
    signed, received = adv[:ADV_SIZE - TAG_SIZE], adv[ADV_SIZE - TAG_SIZE:ADV_SIZE]
    if not hmac.compare_digest(tag(key, signed), received):
        raise AuthenticationError("tag does not verify with this show's key")
    return version


def decode(adv: bytes, key: bytes) -> WristbandPacket:
    """Advertising data to an effect packet (what a version 1 band hears: a live frame is another version to it);
    WristbandError if malformed, AuthenticationError if forged."""
    _verified(adv, key, (VERSION,))
    return _effect(adv)


def decode_any(adv: bytes, key: bytes) -> WristbandPacket | LiveFrame:
    """Advertising data to an effect packet or a live frame (what a version 2 band hears); WristbandError if
    malformed, AuthenticationError if forged."""
    if _verified(adv, key, (VERSION, LIVE_VERSION)) == VERSION:
        return _effect(adv)
    head, show_id, sequence, countdown, fade = _LIVE_HEAD.unpack_from(adv, _PREFIX.size)
    if head & 0x0F != LIVE_KIND:
        raise WristbandError(f"unknown live frame kind {head & 0x0F}")
    looks = []
    for i in range(LOOKS_PER_FRAME):
        zones, r, g, b, strobe = _LOOK.unpack_from(adv, _PREFIX.size + _LIVE_HEAD.size + i * _LOOK.size)
        if zones or i == 0:
            looks.append(LiveLook(zones, (r, g, b), strobe * 10))
    return LiveFrame(show_id, sequence, countdown, fade * 10, tuple(looks))


def _effect(adv: bytes) -> WristbandPacket:
    (head, show_id, sequence, serial, zones, r, g, b, intensity, period, duration, param,
     countdown) = _BODY.unpack_from(adv, _PREFIX.size)
    try:
        kind = Effect(head & 0x0F)
    except ValueError:
        raise WristbandError(f"unknown effect {head & 0x0F}") from None
    return WristbandPacket(show_id, sequence, serial, kind, countdown, zones, (r, g, b), intensity, period * 10,
                           duration * 100, param)
