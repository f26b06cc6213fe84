"""The venue twin: the live, versioned state of every asset, a bounded change log, and change waiters.

Every change takes the next global version. State dicts are replaced, never mutated, so a snapshot or a
store batch can hold references to them while the loop goes on changing the twin.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.readings import Reading

log = logging.getLogger(__name__)

JSON = dict[str, Any]
# What an asset's reported or desired state may hold: objects and arrays nested at most MAX_DEPTH deep (the state
# itself is the first level). Every document that carries a state (the snapshot, a delta, the store's row, an
# event) adds a few levels of its own, and orjson encodes no deeper than 254: a state past that could enter the
# twin and then never be encoded again. A desired state is also kept to MAX_DESIRED_BYTES, encoded.
MAX_DEPTH = 32
MAX_DESIRED_BYTES = 256 * 1024
DesiredHandler = Callable[[str, Mapping[str, Any]], None]
DesiredCheck = Callable[[str, Mapping[str, Any]], str | None]  # why it is refused, or None


@lru_cache(maxsize=4096)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def rfc3339(ts: float) -> str:
    """UTC RFC 3339 to the nearest millisecond (one instant reads the same on every box, whatever its float's last
    bits); cached per second because snapshots format thousands at once."""
    sec, ms = divmod(round(ts * 1000), 1000)
    return f"{_second(sec)}.{ms:03d}Z"


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> JSON:
    """RFC 7396 JSON merge patch, returning a new dict: null deletes a key, objects merge recursively."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            base = merged.get(key)
            merged[key] = merge_patch(base if isinstance(base, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def merge_diff(old: Any, new: Any) -> Any:
    """The merge patch that turns `old` into `new` (RFC 7396 read backwards): a key `old` has and `new` has not is
    null, objects are compared key by key; anything else is `new` itself."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    return {**{key: None for key in old if key not in new}, **{key: merge_diff(old.get(key), value)
                                                               for key, value in new.items()}}


class UnknownAsset(LookupError):
    pass


class VersionMismatch(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"the asset is at version {current}")
        self.current = current


class TwinFrozen(Exception):
    """No version is durably reserved for the change: the twin holds still rather than risk reusing a version
    after a crash. It happens only while the store has been unable to write for a long time."""


class ChangesGone(Exception):
    """The changes asked for are older than the retained log: take a snapshot instead."""

    def __init__(self, floor: int, message: str | None = None) -> None:
        super().__init__(message or f"changes before version {floor} are no longer kept; take a snapshot")
        self.floor = floor


class ChangesAhead(ChangesGone):
    """A version beyond the twin's own: the client's version comes from another history of the twin (its store
    replaced or reset), or was never given out. A snapshot starts it again."""

    def __init__(self, since: int, version: int, floor: int) -> None:
        super().__init__(floor, f"version {since} is ahead of the twin, which is at version {version}: it was never "
                                f"given out by this twin (its store was replaced?); take a snapshot")
        self.version = version


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests objects and arrays more than `limit` deep (a flat object is 1)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [v for c in level for v in (c.values() if isinstance(c, Mapping) else c)
                 if isinstance(v, Mapping | list | tuple)]
        if not level:
            return False
    return True


class InvalidState(ValueError):
    """A state the twin cannot hold: not encodable as JSON, nested deeper than MAX_DEPTH, or a desired state over
    MAX_DESIRED_BYTES. Nothing was changed."""


def encode_state(patch: Mapping[str, Any]) -> bytes:
    """A patch (or a whole state) as the log keeps it, or InvalidState saying why it cannot be held."""
    if too_deep(patch):
        raise InvalidState(f"nested deeper than {MAX_DEPTH} levels (allowed: up to {MAX_DEPTH})")
    try:
        return _encode(dict(patch))
    except TypeError as exc:  # orjson: a type JSON cannot carry, an integer past 64 bits, a key not a string
        raise InvalidState(f"not representable as JSON: {exc}") from None


def state_problem(value: Any) -> str | None:
    """Why a state read back from elsewhere (the store) cannot be served, or None when it can."""
    if not isinstance(value, dict):
        return "not a JSON object"
    try:
        encode_state(value)
    except InvalidState as exc:
        return str(exc)
    return None


class DesiredRefused(ValueError):
    """The asset's owner says at once that it cannot take this desired state; nothing was changed."""


class Asset:
    __slots__ = ("_json", "_json_version", "desired", "id", "kind", "owner", "reported", "updated_at", "version",
                 "zone")

    def __init__(self, asset_id: str, kind: str, zone: str | None, owner: str | None, *,
                 reported: JSON | None = None, desired: JSON | None = None, version: int = 0,
                 updated_at: float = 0.0) -> None:
        self.id = asset_id
        self.kind = kind
        self.zone = zone
        self.owner = owner
        self.reported: JSON = reported or {}
        self.desired: JSON = desired or {}
        self.version = version
        self.updated_at = updated_at
        self._json = b""
        self._json_version = -1

    def document(self) -> JSON:
        return {"kind": self.kind, "zone": self.zone, "owner": self.owner, "reported": self.reported,
                "desired": self.desired, "version": self.version, "updated_at": rfc3339(self.updated_at)}

    def json_entry(self) -> bytes:
        """`"id":{...}` for the snapshot document, encoded once per version of the asset."""
        if self._json_version != self.version:
            self._json = orjson.dumps(self.id) + b":" + orjson.dumps(self.document())
            self._json_version = self.version
        return self._json


# A change: (version, asset, at, kind, zone, owner, reported patch, desired patch, removed). The patches are the
# merge patches applied, as their JSON, or None. A plain tuple of atomic values on purpose: the garbage collector
# stops tracking such a tuple, while a tuple holding a dict (even an untracked one) or a NamedTuple stays tracked,
# and 100,000 tracked log entries made each full collection a 17-50 ms pause of the event loop.
Change = tuple[int, str, float, str, str | None, str | None, bytes | None, bytes | None, bool]


def _encode(patch: JSON) -> bytes:
    """A patch as the log keeps it: its JSON, in an object of its own size. orjson's result keeps the whole of
    its write buffer (about 4 KB, however short the JSON): a log of 50,000 of them held 200 MB."""
    return memoryview(orjson.dumps(patch)).tobytes()


def change_document(change: Change) -> JSON:
    """The change as it travels; its patches are embedded as the JSON they were kept as (orjson.Fragment)."""
    version, asset, at, kind, zone, owner, reported, desired, removed = change
    return {"version": version, "asset": asset, "at": rfc3339(at), "kind": kind, "zone": zone, "owner": owner,
            "reported": None if reported is None else orjson.Fragment(reported),
            "desired": None if desired is None else orjson.Fragment(desired), "removed": removed}


class Twin:
    def __init__(self, gateway_id: str, venue: str, *, change_log: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.gateway_id = gateway_id
        self.venue = venue
        self._clock = clock
        self._assets: dict[str, Asset] = {}
        self._version = 0
        self._log: list[Change] = []  # _log[i].version == _floor + 1 + i
        self._floor = 0
        self._log_size = change_log
        self._dirty: dict[str, Asset | None] = {}  # for the store: None marks a removed asset
        self._waiter: asyncio.Event | None = None
        self._desired_handlers: dict[str, DesiredHandler] = {}
        self._desired_checks: dict[str, DesiredCheck] = {}
        self._snapshot: tuple[int, bytes] = (-1, b"")
        # The highest version the store has durably reserved (None: no store). Versions are never handed out
        # past it, so none can be reused after a crash, however long the disk has been failing.
        self.version_limit: int | None = None
        self.refused_changes = 0
        self._last_refusal_log = -math.inf

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    @property
    def floor(self) -> int:
        """The oldest `since` that `changes_since` can answer."""
        return self._floor

    def __len__(self) -> int:
        return len(self._assets)

    def get(self, asset_id: str) -> Asset | None:
        return self._assets.get(asset_id)

    def assets(self) -> Mapping[str, Asset]:
        return self._assets

    def changes_since(self, since: int, limit: int | None = None) -> Sequence[Change]:
        if since > self._version:
            raise ChangesAhead(since, self._version, self._floor)
        if since < self._floor:
            raise ChangesGone(self._floor)
        start = since - self._floor
        return self._log[start:] if limit is None else self._log[start:start + limit]

    def header(self) -> JSON:
        return {"gateway_id": self.gateway_id, "venue": self.venue, "version": self._version,
                "taken_at": rfc3339(self._clock())}

    def snapshot_json(self) -> bytes:
        """The whole twin as the JSON document of `GET /api/v1/twin`, encoded once per version."""
        version, body = self._snapshot
        if version != self._version:
            head = orjson.dumps(self.header())
            body = head[:-1] + b',"assets":{' + b",".join(a.json_entry() for a in self._assets.values()) + b"}}"
            self._snapshot = (self._version, body)
        return body

    async def wait_for_change(self, after: int) -> None:
        """Return once the twin's version is past `after`; costs nothing while nobody waits."""
        while self._version <= after:
            if self._waiter is None:
                self._waiter = asyncio.Event()
            await self._waiter.wait()

    # -- changing --------------------------------------------------------------------------------------
    def restore(self, assets: Iterable[Asset], version: int) -> None:
        """Load persisted state before anything runs; the log starts empty at `version`."""
        self._assets = {a.id: a for a in assets}
        self._version = self._floor = version
        self.version_limit = None  # the store sets it once it has reserved versions past `version`
        self._log.clear()
        self._dirty.clear()

    @property
    def frozen(self) -> bool:
        return self.version_limit is not None and self._version >= self.version_limit

    def _reserve(self, changes: int) -> None:
        """Raise TwinFrozen, changing nothing, unless `changes` more versions are durably reserved."""
        if self.version_limit is None or self._version + changes <= self.version_limit:
            return
        self.refused_changes += changes
        now = time.monotonic()
        if now - self._last_refusal_log >= 10.0:
            self._last_refusal_log = now
            log.error("twin held at version %d: the store has not reserved more versions (it cannot write); "
                      "%d changes refused so far", self._version, self.refused_changes)
        raise TwinFrozen(f"the twin is held at version {self._version} until the store can write")

    def declare(self, asset_id: str, kind: str, zone: str | None = None, owner: str | None = None) -> Asset:
        """Create an asset, or update what it is and who owns it; a no-op when nothing differs."""
        asset = self._assets.get(asset_id)
        if asset is not None and (asset.kind, asset.zone, asset.owner) == (kind, zone, owner):
            return asset
        self._reserve(1)
        if asset is None:
            asset = self._assets[asset_id] = Asset(asset_id, kind, zone, owner)
        else:
            asset.kind, asset.zone, asset.owner = kind, zone, owner
        self._commit(asset, None, None)
        return asset

    def report(self, asset_id: str, values: Mapping[str, Any], owner: str | None = None) -> None:
        """Merge `values` into the reported state (null deletes a key); creates an unknown asset."""
        patch = dict(values)
        encoded = encode_state(patch)  # first: a value the twin cannot hold is refused with nothing changed
        asset = self._assets.get(asset_id)
        self._reserve(1 if asset else 2)
        asset = asset or self.declare(asset_id, "unknown", None, owner)
        asset.reported = merge_patch(asset.reported, patch)
        self._commit(asset, encoded, None)

    def apply_readings(self, readings: Iterable[Reading], owner: str | None = None) -> None:
        """Fold a batch of readings into reported state: one change per asset, not per reading. A value JSON cannot
        carry (a NumPy scalar, say) refuses the whole batch with TypeError, nothing changed."""
        groups: dict[str, JSON] = {}
        for _, asset_id, metric, value in readings:
            group = groups.get(asset_id)
            if group is None:
                groups[asset_id] = {metric: value}
            else:
                group[metric] = value
        encoded = [_encode(patch) for patch in groups.values()]
        assets = self._assets
        if self.version_limit is not None:  # one change per asset, and one more for each new asset
            self._reserve(len(groups) + sum(1 for a in groups if a not in assets))
        for (asset_id, patch), patch_json in zip(groups.items(), encoded, strict=True):
            asset = assets.get(asset_id) or self.declare(asset_id, "unknown", None, owner)
            asset.reported = {**asset.reported, **patch}
            self._commit(asset, patch_json, None)

    def patch_desired(self, asset_id: str, patch: Mapping[str, Any], if_match: int | None = None) -> Asset:
        """Merge `patch` into the asset's desired state. InvalidState when the patch, or the state it makes, could
        not be held (encoded, within MAX_DEPTH, within MAX_DESIRED_BYTES); nothing is changed then."""
        asset = self._assets.get(asset_id)
        if asset is None:
            raise UnknownAsset(asset_id)
        if if_match is not None and if_match != asset.version:
            raise VersionMismatch(asset.version)
        encoded = encode_state(patch)
        desired = merge_patch(asset.desired, patch)  # no deeper than the patch or the state before it
        size = len(orjson.dumps(desired))
        if size > MAX_DESIRED_BYTES:
            raise InvalidState(f"the desired state would be {size} bytes encoded (allowed: up to "
                               f"{MAX_DESIRED_BYTES})")
        check = self._desired_checks.get(asset.owner or "")
        if check is not None and (reason := check(asset.id, desired)) is not None:
            raise DesiredRefused(reason)
        self._reserve(1)
        asset.desired = desired
        self._commit(asset, None, encoded)
        handler = self._desired_handlers.get(asset.owner or "")
        if handler is not None:
            handler(asset.id, asset.desired)
        return asset

    def remove(self, asset_id: str) -> None:
        if asset_id not in self._assets:
            raise UnknownAsset(asset_id)
        self._reserve(1)
        asset = self._assets.pop(asset_id)
        self._commit(asset, None, None, removed=True)

    def on_desired(self, owner: str, handler: DesiredHandler, check: DesiredCheck | None = None) -> Callable[[], None]:
        """Route desired-state changes of `owner`'s assets to `handler`; returns the undo. `check`, when given, is
        asked first (asset id, the desired state as it would be) and refuses a patch by returning why."""
        self._desired_handlers[owner] = handler
        if check is not None:
            self._desired_checks[owner] = check

        def undo() -> None:
            self._desired_handlers.pop(owner, None)
            self._desired_checks.pop(owner, None)

        return undo

    def take_dirty(self) -> tuple[list[Asset], list[str]]:
        """Assets changed (and ids removed) since the last call, for the store to persist."""
        dirty, self._dirty = self._dirty, {}
        return [a for a in dirty.values() if a is not None], [k for k, a in dirty.items() if a is None]

    def _commit(self, asset: Asset, reported: bytes | None, desired: bytes | None, removed: bool = False) -> None:
        """One version: the patches come encoded (Change), so nothing here can fail half way."""
        self._version += 1
        now = self._clock()
        asset.version = self._version
        asset.updated_at = now
        self._log.append((self._version, asset.id, now, asset.kind, asset.zone, asset.owner, reported, desired,
                          removed))
        if len(self._log) > self._log_size + self._log_size // 4:  # trimmed in steps: amortised O(1)
            drop = len(self._log) - self._log_size
            del self._log[:drop]
            self._floor += drop
        self._dirty[asset.id] = None if removed else asset
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None
