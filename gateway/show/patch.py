"""The patch: a console's universes mapped to crowd fixtures (looks of zones) and macro channels (presets)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.show.engine import ShowEngine


class Patch:
    def __init__(self, engine: ShowEngine) -> None:
        self.engine = engine

    def levels(self, universe: int, levels: bytes) -> None:
        """A console universe's merged levels (from channel 1), as received."""

    def lost(self, universe: int) -> None:
        """The console's signal for `universe` is lost (every source gone)."""
