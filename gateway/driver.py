"""The driver API: the one module of the core a driver imports. It holds the small interface every device driver
implements and the context it is given, and re-exports the rest a driver needs: readings, the options schema's
helpers, backoff, listen addresses, and the show's fired effects and their errors. A site's own driver, loaded as
`package.module:Class`, imports from here alone; what it names here stays importable across releases.

A driver knows its protocol and nothing of the core beyond this module. Its life is start -> run -> stop,
supervised: raising from `start` or `run` gets it restarted with backoff while the rest of the box runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from gateway.addresses import is_loopback, parse_listen
from gateway.alerts import Alerts, Listener
from gateway.dmx import DmxUniverses, FrameClock
from gateway.kernel_clock import kernel_clock
from gateway.preflight import environment_variable, importable, read_secret, readable_file, secret_file
from gateway.readings import Ingest, Reading
from gateway.schema import Problem, check_listen, check_slug, setting
from gateway.show.effects import EffectError
from gateway.show.engine import Fired, ShowEngine, UnknownPreset
from gateway.show.live import LiveChange, Look
from gateway.show.timecode import Rate, Timecode
from gateway.supervisor import NotReady, Unit, backoff_delay
from gateway.twin import Twin, TwinFrozen

# What a driver may import from here: the interface and its context; a start that cannot go on yet and the backoff
# between tries; readings; its options (a frozen dataclass of `setting(...)` fields, checked across keys by
# `problems()`); what it needs from the box, for its `preflight`; the addresses it listens on or sends to; the show's
# fired effects and why a fire was refused; the console's live looks and timecode; the kernel's word on its clock.
__all__ = [
    "Driver", "DriverContext", "EffectError", "Fired", "LiveChange", "Look", "NoOptions", "NotReady", "Problem", "Rate",
    "Reading", "Timecode", "UnknownPreset", "backoff_delay", "check_listen", "check_slug", "environment_variable",
    "importable", "is_loopback", "kernel_clock", "parse_listen", "read_secret", "readable_file", "secret_file",
    "setting",
]

OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class NoOptions:
    pass


class DriverContext:
    """What a driver may do to the rest of the box: declare assets, publish readings, report state."""

    def __init__(self, name: str, twin: Twin, ingest: Ingest, dmx: DmxUniverses, frames: FrameClock,
                 show: ShowEngine, *, alerts: Alerts | None = None, data_dir: Path | None = None) -> None:
        self.name = name
        self.log = logging.getLogger(f"drivers.{name}")
        self.dmx = dmx  # the universes' levels, for DMX outputs
        self.frames = frames  # subscribe to send one frame per tick
        self.show = show  # fire and stop effects; subscribe to what is fired
        # The box's data directory, for a driver's own small state (a file named after the driver); None when the
        # driver runs outside a gateway with one.
        self.data_dir = data_dir
        self._twin = twin
        self._ingest = ingest
        self._alerts = alerts or Alerts()

    # While the twin is held (TwinFrozen: the store cannot write), declarations and reports are refused and
    # counted by the twin; a driver goes on working rather than failing over it.
    def declare(self, asset_id: str, kind: str, zone: str | None = None) -> None:
        """Make an asset known to the twin, owned by this driver (desired changes come back to it)."""
        with contextlib.suppress(TwinFrozen):
            self._twin.declare(asset_id, kind, zone, self.name)

    def publish(self, readings: Sequence[Reading]) -> None:
        """Telemetry: into the twin's reported state and the store's history."""
        self._ingest.publish(readings, self.name)

    def report(self, asset_id: str, values: Mapping[str, Any]) -> None:
        """State that is not telemetry (modes, flags, text): into the twin only."""
        with contextlib.suppress(TwinFrozen):
            self._twin.report(asset_id, values, self.name)

    def desired(self, asset_id: str) -> Mapping[str, Any]:
        asset = self._twin.get(asset_id)
        return asset.desired if asset is not None else {}

    def owned(self) -> list[str]:
        return [a.id for a in self._twin.assets().values() if a.owner == self.name]

    def on_alert(self, listener: Listener) -> Callable[[], None]:
        """The core's alerts (sound-level compliance, ...): `listener(kind, text, document)`."""
        return self._alerts.listen(listener)

    def alert(self, kind: str, text: str, doc: Mapping[str, Any], *, key: str, standing: bool) -> None:
        """Raise an alert through the core's alerts (the cloud's events, OSC feedback), standing under `key` until
        raised again with `standing=False`. Raise it on a change of state, not every tick."""
        self._alerts.raise_alert(kind, text, dict(doc), key=key, standing=standing)

    def on_readings(self, listener: Callable[[Sequence[Reading], str | None], None]) -> Callable[[], None]:
        """Every batch of readings as it goes into the twin (the audience-mood energies for OSC feedback, ...):
        `listener(readings, owner)`, on the loop; keep it quick."""
        observers = self._ingest.observers
        observers.append(listener)
        return lambda: observers.remove(listener) if listener in observers else None

    def on_desired(self, handler: Callable[[str, Mapping[str, Any]], None],
                   check: Callable[[str, Mapping[str, Any]], str | None] | None = None) -> Callable[[], None]:
        """Desired state of this driver's assets to `handler`; `check` may refuse it first (a PATCH answers 422)."""
        return self._twin.on_desired(self.name, handler, check)


class Driver(Unit, ABC, Generic[OptionsT]):
    """Subclass with `Options` (a frozen dataclass of the driver's config keys) and `run`."""

    Options: ClassVar[type[Any]] = NoOptions
    # A transmitter of effects (the wristband radio) attaches to the show engine while it runs; while it is
    # down, effects are reported "not sent" by it.
    TRANSMITS_EFFECTS: ClassVar[bool] = False

    def __init__(self, ctx: DriverContext, options: OptionsT) -> None:
        self.ctx = ctx
        self.options = options
        self._undo_desired: Callable[[], None] | None = None
        self._desired_tasks: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def run(self) -> None:
        """Do the work until cancelled; raising or returning gets the driver restarted."""

    @classmethod
    def preflight(cls, options: Any) -> list[Problem]:
        """What would stop this driver at start on this box, found without starting it: a file or secret it reads,
        an optional library it imports (see the helpers `readable_file`, `secret_file`, `environment_variable`,
        `importable`). `check-config` lists them, keyed within the driver's table; a driver that cannot start
        still raises NotReady from `start` and is retried."""
        return []

    async def apply_desired(self, asset_id: str, desired: Mapping[str, Any]) -> None:
        """Bring an owned asset to its desired state and report what it then is."""
        self.ctx.log.warning("asset %s takes no desired state; ignored", asset_id)

    def check_desired(self, asset_id: str, desired: Mapping[str, Any]) -> str | None:
        """While the driver runs, asked before a desired state is taken: why this asset cannot take it (keys it has
        not, values out of range), or None. A refusal is answered at once (HTTP 422, a cloud `command_error`) and
        changes nothing; what only the device can tell goes into `reported.desired_error` later."""
        return None

    # Desired state is delivered while the driver runs; what changed while it was down is applied at start.
    def attach(self) -> None:
        self._undo_desired = self.ctx.on_desired(self._desired_changed, self.check_desired)
        for asset_id in self.ctx.owned():
            if self.ctx.desired(asset_id):
                self._desired_changed(asset_id, self.ctx.desired(asset_id))

    def detach(self) -> None:
        if self._undo_desired is not None:
            self._undo_desired()
            self._undo_desired = None
        for task in self._desired_tasks:
            task.cancel()

    def _desired_changed(self, asset_id: str, desired: Mapping[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._apply(asset_id, desired))
        self._desired_tasks.add(task)
        task.add_done_callback(self._desired_tasks.discard)

    async def _apply(self, asset_id: str, desired: Mapping[str, Any]) -> None:
        try:
            await self.apply_desired(asset_id, desired)
        except Exception:
            self.ctx.log.exception("applying desired state to %s failed", asset_id)
