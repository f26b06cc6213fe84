"""The OSC driver's addresses as tables (docs/osc.md documents each, and tests/test_interface_docs.py holds the page
to them): `INBOUND`, every address the driver obeys with its handler (registered by `@handles` on the driver's
methods), and `OUTBOUND`, every address it sends; and an OSC message's bytes."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pythonosc.osc_message_builder import OscMessageBuilder

if TYPE_CHECKING:
    from drivers.osc.driver import OscDriver

# The parts an address template names: `{universe}` and `{channel}` are whole numbers, any other a path part.
_PARTS = {"universe": r"(\d+)", "channel": r"(\d+)"}
_PART = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Address:
    """An OSC address as docs/osc.md gives it: a template (`{name}` stands for one part of the path) and the OSC
    type tag strings of its arguments (`,` none, `,s...` one string or more). The handlers check what they are
    given themselves; the type tags say what they take."""

    template: str
    types: tuple[str, ...]

    def regex(self) -> re.Pattern[str]:
        pieces = _PART.split(self.template)  # literal, part name, literal, ...
        return re.compile("^" + "".join(re.escape(p) if i % 2 == 0 else _PARTS.get(p, "([^/]+)")
                                        for i, p in enumerate(pieces)) + "$")


Handler = Callable[["OscDriver", tuple[str, ...], list[Any]], None]

# Every address the driver obeys, with its handler; filled by @handles on OscDriver's methods below.
INBOUND: list[tuple[Address, Handler]] = []

# Every address the driver sends to its destinations.
PONG = Address("/vg/out/pong", (",",))
FIRED = Address("/vg/out/effect/fired", (",ss",))  # preset (or effect kind), effect id
ALERT = Address("/vg/out/alert", (",ss",))  # kind, text
ZONE_ENERGY = Address("/vg/out/zone/{zone}/energy", (",f",))  # 0..1
ZONE_LOOK = Address("/vg/out/zone/{zone}/look", (",ffff",))  # red, green, blue 0..1 at full intensity; intensity 0..1
OUTBOUND = (PONG, FIRED, ALERT, ZONE_ENERGY, ZONE_LOOK)


def handles(template: str, *types: str) -> Callable[[Handler], Handler]:
    """Register a method of OscDriver as the handler of an address; it is given the address's parts and the
    message's arguments."""
    def register(handler: Handler) -> Handler:
        INBOUND.append((Address(template, types), handler))
        return handler
    return register


def template_has_parts(template: str) -> bool:
    """Whether an address template names parts (`{universe}`): matched by its regex, not looked up whole."""
    return _PART.search(template) is not None


def message(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram
