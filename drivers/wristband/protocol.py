"""The wristband packet (docs/wristband-protocol.md): one legacy BLE advertisement that tells every band in
the selected zones which effect to start, and in how many milliseconds, authenticated with the show's key.

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

VERSION = 1
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


def decode(adv: bytes, key: bytes) -> WristbandPacket:
    """Advertising data to a packet; WristbandError if malformed, AuthenticationError if forged."""
    if len(adv) < ADV_SIZE:
        raise WristbandError(f"{len(adv)} bytes, a wristband packet is {ADV_SIZE}")
    length, ad_type, company = _PREFIX.unpack_from(adv)
    if (length, ad_type, company) != (ADV_SIZE - 1, AD_TYPE_MANUFACTURER, COMPANY_ID):
        raise WristbandError("not a wristband advertisement (AD structure or company id)")
    if adv[_PREFIX.size] >> 4 != VERSION:
        raise WristbandError(f"wristband protocol version {adv[_PREFIX.size] >> 4}, this is {VERSION}")
    signed, received = adv[:ADV_SIZE - TAG_SIZE], adv[ADV_SIZE - TAG_SIZE:ADV_SIZE]
    if not hmac.compare_digest(tag(key, signed), received):
        raise AuthenticationError("tag does not verify with this show's key")
    (head, show_id, sequence, serial, zones, r, g, b, intensity, period, duration, param,
     countdown) = _BODY.unpack_from(adv, _PREFIX.size)
    try:
        kind = Effect(head & 0x0F)
    except ValueError:
        raise WristbandError(f"unknown effect {head & 0x0F}") from None
    return WristbandPacket(show_id, sequence, serial, kind, countdown, zones, (r, g, b), intensity, period * 10,
                           duration * 100, param)
