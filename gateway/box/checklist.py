"""The doctor's checks (gateway/box/checks/, one module a subject), in the order they are shown. A check is a
function of the box that returns its findings (gateway.box.check); add one with a line here."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.box.check import Check
from gateway.box.checks import (
    api,
    bluetooth,
    broker,
    clock,
    configuration,
    pi,
    ports,
    realtime,
    storage,
    tokens,
    update,
)


@dataclass(frozen=True)
class Entry:
    name: str
    check: Check
    needs_config: bool = True  # skipped when the configuration does not load


CHECKS = (
    Entry("configuration", configuration.check, needs_config=False),
    Entry("clock", clock.check, needs_config=False),
    Entry("disk", storage.disk),
    Entry("store", storage.store),
    Entry("serial", ports.check),
    Entry("bluetooth", bluetooth.adapters),
    Entry("radio", bluetooth.radio),
    Entry("broker", broker.check),
    Entry("api", api.check),
    Entry("realtime", realtime.check),
    Entry("pi", pi.check, needs_config=False),
    Entry("tokens", tokens.check),
    Entry("update", update.check),
)
