"""Zone occupancy from attendees' advertisements: smoothed RSSI, log-distance path loss per zone, the nearest
scanner, and device addresses kept only as salted hashes that change with every show.

Pure and synchronous: the driver feeds it and reads the counts. Time is given by the caller (monotonic s).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

SALT_BYTES = 16  # BLAKE2b takes a key of up to 64 bytes; 128 bits is beyond guessing
DIGEST_BYTES = 8  # 2**64 hashes: no two of a night's few thousand devices collide in practice


@dataclass(frozen=True, slots=True)
class Calibration:
    """One scanner: the zone it covers and how its zone attenuates (the log-distance path-loss model)."""

    zone: str
    rssi_at_1m_dbm: float = -59.0
    path_loss_exponent: float = 2.2
    radius_m: float = 30.0
    smoothing: float = 0.3  # EMA weight of a new RSSI sample

    def distance_m(self, rssi_dbm: float) -> float:
        return distance_m(rssi_dbm, self.rssi_at_1m_dbm, self.path_loss_exponent)


def distance_m(rssi_dbm: float, rssi_at_1m_dbm: float, path_loss_exponent: float) -> float:
    """d = 10 ** ((RSSI@1m - RSSI) / (10 n)): the log-distance model solved for distance, in metres."""
    return float(10.0 ** ((rssi_at_1m_dbm - rssi_dbm) / (10.0 * path_loss_exponent)))


def rssi_at(distance: float, rssi_at_1m_dbm: float, path_loss_exponent: float) -> float:
    """The inverse: the RSSI the model expects at `distance` metres (the virtual air uses it)."""
    return rssi_at_1m_dbm - 10.0 * path_loss_exponent * math.log10(max(distance, 0.1))


class AddressHasher:
    """Keyed BLAKE2b of a device address with a random salt held in memory only. Nothing outside this object
    can turn a hash back into an address, and after `rotate()` nobody can link tonight's hashes to yesterday's."""

    def __init__(self) -> None:
        self._salt = b""
        self.rotations = -1
        self.rotate()

    def rotate(self) -> None:
        self._salt = os.urandom(SALT_BYTES)
        self.rotations += 1

    def __call__(self, address: str) -> bytes:
        return hashlib.blake2b(address.upper().encode(), key=self._salt, digest_size=DIGEST_BYTES).digest()


class _Track:
    """One device (by hash): the smoothed RSSI and last-heard time per scanner, and the zone it is counted in."""

    __slots__ = ("heard", "rssi", "zone")

    def __init__(self, scanners: int) -> None:
        self.rssi = [0.0] * scanners
        self.heard = [-math.inf] * scanners
        self.zone = -1  # index into Occupancy.zones, -1 when beyond every scanner's radius


class Occupancy:
    """Devices heard within `window_s`, each counted in the zone of the scanner it seems nearest to.

    Counts are kept incrementally (a device moves between zones as it is observed), and tracks are kept in the
    order last heard, so `sweep` touches only the expired ones: the per-second work does not grow with the crowd.
    At most `max_devices` are tracked: a new one past the bound evicts the one heard longest ago (counted), so a
    flood of random addresses costs a bounded table, whatever its rate.
    """

    def __init__(self, scanners: list[Calibration], window_s: float, max_devices: int = 20_000) -> None:
        self.scanners = scanners
        self.window_s = window_s
        self.max_devices = max_devices
        self.zones = sorted({s.zone for s in scanners})
        self._zone_of = [self.zones.index(s.zone) for s in scanners]
        self._tracks: OrderedDict[bytes, _Track] = OrderedDict()
        self._last: dict[bytes, float] = {}
        self._counts = [0] * len(self.zones)
        self.unplaced = 0  # tracked, but beyond the radius of the scanner nearest to them
        self.evicted = 0  # tracks dropped for the bound before their window ran out

    def __len__(self) -> int:
        return len(self._tracks)

    def zone_of(self, scanner: int) -> int:
        """The index into `zones` of the zone `scanner` covers."""
        return self._zone_of[scanner]

    def observe(self, key: bytes, scanner: int, rssi_dbm: float, now: float) -> bool:
        """One advertisement of device `key` heard by `scanner` (an index into `scanners`) at `now`; True when
        the device is new (not tracked a moment ago)."""
        tracks = self._tracks
        track = tracks.get(key)
        new = track is None
        if track is None:
            if len(tracks) >= self.max_devices:
                self._forget(next(iter(tracks)))
                self.evicted += 1
            track = tracks[key] = _Track(len(self.scanners))
            self.unplaced += 1
        else:
            tracks.move_to_end(key)
        stale = now - self.window_s
        if track.heard[scanner] < stale:  # a fresh start, not an average with an old position
            track.rssi[scanner] = rssi_dbm
        else:
            track.rssi[scanner] += self.scanners[scanner].smoothing * (rssi_dbm - track.rssi[scanner])
        track.heard[scanner] = now
        self._last[key] = now
        self._place(track, self._nearest(track, stale))
        return new

    def _nearest(self, track: _Track, stale: float) -> int:
        best, best_d = -1, math.inf
        for i, cal in enumerate(self.scanners):
            if track.heard[i] >= stale:
                d = cal.distance_m(track.rssi[i])
                if d < best_d:
                    best, best_d = i, d
        if best < 0 or best_d > self.scanners[best].radius_m:
            return -1
        return self._zone_of[best]

    def _place(self, track: _Track, zone: int) -> None:
        if zone == track.zone:
            return
        if track.zone < 0:
            self.unplaced -= 1
        else:
            self._counts[track.zone] -= 1
        if zone < 0:
            self.unplaced += 1
        else:
            self._counts[zone] += 1
        track.zone = zone

    def sweep(self, now: float) -> int:
        """Forget devices not heard within the window; returns how many were forgotten."""
        stale = now - self.window_s
        tracks, last = self._tracks, self._last
        gone = 0
        while tracks:
            key = next(iter(tracks))
            if last[key] >= stale:
                break
            self._forget(key)
            gone += 1
        return gone

    def _forget(self, key: bytes) -> None:
        track = self._tracks.pop(key)
        del self._last[key]
        self._place(track, -1)
        self.unplaced -= 1

    def counts(self) -> dict[str, int]:
        """Devices per zone, now."""
        return dict(zip(self.zones, self._counts, strict=True))

    def clear(self) -> None:
        self._tracks.clear()
        self._last.clear()
        self._counts = [0] * len(self.zones)
        self.unplaced = 0


class Arrivals:
    """New devices per zone over the last `window_s` seconds, in one-second buckets: a flood of random addresses
    costs a fixed ring of counts, whatever its rate. Time is the caller's (monotonic s)."""

    def __init__(self, zones: int, window_s: int = 60) -> None:
        self.window_s = window_s
        self._ring = [[0] * zones for _ in range(window_s)]
        self._second: int | None = None

    def add(self, zone: int, now: float) -> None:
        self._advance(now)
        self._ring[int(now) % self.window_s][zone] += 1

    def per_minute(self, now: float) -> list[float]:
        """Each zone's new devices in the window, as a rate per minute."""
        self._advance(now)
        return [sum(bucket[z] for bucket in self._ring) * 60 / self.window_s for z in range(len(self._ring[0]))]

    def _advance(self, now: float) -> None:
        second = int(now)
        if self._second is None:
            self._second = second
        for s in range(self._second + 1, min(second, self._second + self.window_s) + 1):  # the buckets that aged
            self._ring[s % self.window_s] = [0] * len(self._ring[0])
        self._second = max(self._second, second)


class Smoothed:
    """An exponential moving average that starts afresh after a gap (the beacons' RSSI per scanner)."""

    __slots__ = ("at", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.at = -math.inf

    def add(self, sample: float, weight: float, now: float, gap_s: float) -> float:
        self.value = sample if now - self.at > gap_s else self.value + weight * (sample - self.value)
        self.at = now
        return self.value


def parse_time_of_day(text: str) -> tuple[int, int] | None:
    """"HH:MM" (24 h) as (hour, minute), or None when it is not one."""
    hour, sep, minute = text.partition(":")
    if not (sep and hour.isdigit() and minute.isdigit() and len(minute) == 2):
        return None
    h, m = int(hour), int(minute)
    return (h, m) if h < 24 and m < 60 else None


def next_rotation(now: datetime, at: tuple[int, int]) -> datetime:
    """The next time of day `at` strictly after `now`. Given naive local time, `.timestamp()` of the result
    applies the local zone's rules of that day, so a change to or from summer time moves nothing."""
    candidate = now.replace(hour=at[0], minute=at[1], second=0, microsecond=0)
    if candidate <= now:
        candidate = (candidate + timedelta(days=1)).replace(hour=at[0], minute=at[1])
    return candidate
