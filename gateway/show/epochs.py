"""The show epochs of a shared show: each show id's start on the show clock, as this box's radios hold it and as the
other boxes say they hold it (their presence on the show's bus, gateway/show/shared.py).

Every box of a shared show sends its sequence numbers from the same epoch, the earliest any of them holds for the
show id: a radio adopts an earlier one (its sequence numbers only move forward, which bands accept) and never a
later one (its sequences would go back, and bands would refuse them as replays).
"""

from __future__ import annotations

from collections.abc import Callable


class ShowEpochs:
    def __init__(self) -> None:
        self.local: dict[int, int] = {}  # show id -> the epoch this box's radio sends from
        self.peers: dict[str, dict[int, int]] = {}  # box -> its show ids' epochs
        self._listeners: list[Callable[[], None]] = []

    def hold(self, show_id: int, epoch_ms: int) -> None:
        """This box's radio sends show `show_id` from `epoch_ms`."""
        if self.local.get(show_id) != epoch_ms:
            self.local[show_id] = epoch_ms
            for listener in list(self._listeners):
                listener()

    def heard(self, box: str, epochs: dict[int, int]) -> None:
        """Box `box` says it sends each show id from these epochs."""
        self.peers[box] = dict(epochs)

    def earliest(self, show_id: int) -> int | None:
        """The earliest epoch any box of the show holds for `show_id` (None: none known)."""
        known = [epochs[show_id] for epochs in (self.local, *self.peers.values()) if show_id in epochs]
        return min(known) if known else None

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """`listener()` whenever this box holds a new epoch (to say so on the bus)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None
