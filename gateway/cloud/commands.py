"""What the cloud may ask over MQTT: `desired` (merged like the HTTP PATCH, with the asset's version for optimistic
concurrency) and `cmd/snapshot`, `cmd/fire`, `cmd/stop`. Each answer is an event: `command_result`, or
`command_error` naming the problem. Who may publish these is the broker's ACL (config/mosquitto.acl).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.show.effects import EffectError
from gateway.show.engine import UnknownPreset
from gateway.store import StoreError
from gateway.twin import DesiredRefused, InvalidState, TwinFrozen, UnknownAsset, VersionMismatch, rfc3339

if TYPE_CHECKING:
    from gateway.daemon import Gateway

COMMANDS = ("desired", "cmd/snapshot", "cmd/fire", "cmd/stop")


class CommandError(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


@dataclass(frozen=True)
class Command:
    name: str  # one of COMMANDS
    doc: dict[str, Any]
    request_id: str | None


def parse(name: str, payload: bytes, max_bytes: int) -> Command:
    """Check a command's size and shape; CommandError says what is wrong."""
    if name not in COMMANDS:
        raise CommandError("unknown_command", f"no command {name!r} (allowed: {', '.join(COMMANDS)})")
    if len(payload) > max_bytes:
        raise CommandError("too_large", f"the payload is {len(payload)} bytes (allowed: up to {max_bytes}, "
                                        "cloud.max_payload_kb)")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise CommandError("bad_json", f"the payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CommandError("bad_request", "the payload must be a JSON object")
    request_id = doc.pop("request_id", None)
    if request_id is not None and not isinstance(request_id, str | int):
        raise CommandError("bad_request", "request_id must be a string or a number")
    return Command(name, doc, None if request_id is None else str(request_id))


async def execute(gw: Gateway, command: Command, snapshot: Callable[[], int]) -> dict[str, Any]:
    """Carry a parsed command out; the result document, or CommandError. `snapshot` asks for a fresh retained
    snapshot and returns the version it will have."""
    doc = command.doc
    if command.name == "desired":
        return await _desired(gw, doc)
    if command.name == "cmd/fire":
        try:
            fired = gw.show.fire_request(doc)
        except UnknownPreset as exc:
            raise CommandError("unknown_preset", str(exc)) from None
        except (EffectError, TypeError, ValueError, ArithmeticError) as exc:  # 1e308 s, 5e-324 bpm: OverflowError
            raise CommandError("bad_effect", str(exc) or type(exc).__name__) from None
        return {"effect_id": fired.effect_id, "starts_at": rfc3339(fired.starts_at), "zones": list(fired.zones),
                "delivery": fired.delivery}
    if doc:
        raise CommandError("bad_request", f"unknown key {sorted(doc)[0]!r} (allowed: request_id)")
    if command.name == "cmd/stop":
        fired = gw.show.stop()
        return {"effect_id": fired.effect_id, "delivery": fired.delivery}
    assert command.name == "cmd/snapshot"
    return {"version": snapshot()}


async def _desired(gw: Gateway, doc: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(doc) - {"asset", "desired", "version"})
    if unknown:
        raise CommandError("bad_request", f"unknown key {unknown[0]!r} (allowed: asset, desired, version, request_id)")
    asset, patch, version = doc.get("asset"), doc.get("desired"), doc.get("version")
    if not isinstance(asset, str):
        raise CommandError("bad_request", "asset must be an asset id")
    if not isinstance(patch, dict):
        raise CommandError("bad_request", "desired must be a JSON object (a merge patch)")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise CommandError("bad_request", "version must be the asset's version, a whole number")
    try:
        changed = gw.twin.patch_desired(asset, patch, if_match=version)
    except UnknownAsset:
        raise CommandError("not_found", f"no asset {asset!r}") from None
    except VersionMismatch as exc:
        raise CommandError("version_mismatch", f"the asset is at version {exc.current}, not {version}",
                           version=exc.current) from None
    except InvalidState as exc:
        raise CommandError("bad_request", f"desired: {exc}") from None
    except DesiredRefused as exc:
        raise CommandError("desired_refused", f"{asset}: {exc}") from None
    except TwinFrozen as exc:
        raise CommandError("store_unavailable", str(exc)) from None
    try:  # answered once on disk, as the HTTP PATCH is
        await gw.store.flush(gw.twin)
    except StoreError as exc:
        raise CommandError("store_unavailable", f"the change is in effect but not yet on disk ({exc})",
                           version=changed.version) from None
    return {"asset": asset, "version": changed.version, "desired": changed.desired}
