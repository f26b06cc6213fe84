"""What keeps the radio's sequence numbers fresh across restarts (docs/wristband-protocol.md, Freshness).

A show's sequence numbers count the ms from its start. The radio keeps, in a small file of its own in the data
directory, each show's start (its epoch on the show clock) and the last sequence number it sent, written every
second and at stop: replaced whole (a temporary file, fsync, rename), so a power cut leaves the old file or the
new one, never half of one. Started with a clock behind that last sequence number (a box whose clock was set
wrong, or stepped back), the radio refuses to start until the clock has passed it; with a kernel that says its
clock is not synchronised (adjtimex: STA_UNSYNC), it waits for the synchronisation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from drivers.wristband.protocol import MAX_SEQUENCE
from gateway.driver import kernel_clock


def clock_synchronised() -> bool | None:
    """Whether the kernel says its clock is synchronised to a time source (NTP, PTP, GPS); None when it cannot be
    asked (not Linux, or the call is filtered)."""
    timex = kernel_clock()
    return None if timex is None else timex.synchronised


class StateError(ValueError):
    """The radio's state file cannot be read or written; the message says which and why."""


@dataclass
class Show:
    epoch_ms: int  # the show's start on the show clock: its sequence numbers count from here
    last_sequence: int  # the last sequence number sent (or about to be)


class RadioState:
    """Each show's epoch and last sequence number, in `path` (JSON: {"shows": {"<id>": [epoch_ms, last]}})."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shows: dict[int, Show] = {}

    def load(self) -> None:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return  # a box that never sent: every show begins now
        except OSError as exc:
            raise StateError(f"the radio's state {self.path} cannot be read: {exc.strerror}") from None
        except ValueError:
            raise StateError(f"the radio's state {self.path} is not JSON (it is written whole, so something else "
                             "wrote it; move it away only if no band of its shows is still in use)") from None
        try:
            self.shows = {int(k): Show(int(v[0]), int(v[1])) for k, v in doc["shows"].items()}
        except (TypeError, KeyError, ValueError, IndexError, AttributeError):
            raise StateError(f"the radio's state {self.path} is not what the radio writes") from None

    def begin(self, show_id: int, now_ms: int, max_age_ms: int, again: bool = False) -> Show:
        """The show `show_id` at show time `now_ms`: the one stored, or one that begins now. StateError when the
        clock is behind its last sequence number, or the show began more than `max_age_ms` ago (a show id is one
        show's: every band of it holds its key), unless it may begin `again` (bands that live no longer than the
        process, on the virtual air)."""
        show = self.shows.get(show_id)
        if show is None or (again and now_ms - show.epoch_ms > max_age_ms):
            show = self.shows[show_id] = Show(now_ms, 0)
            return show
        sequence = now_ms - show.epoch_ms
        if sequence <= show.last_sequence:
            behind = (show.last_sequence - sequence) / 1000
            raise StateError(f"the clock is {behind:.1f} s behind the last sequence number this box sent for show "
                             f"{show_id} ({self.path}): its packets would be refused by every band that heard it; "
                             "waiting for the clock to pass it (is the time source right?)")
        if sequence > min(max_age_ms, MAX_SEQUENCE):
            raise StateError(f"show {show_id} began {sequence / 3_600_000:.1f} hours ago, longer than a show lasts "
                             f"(max_show_hours {max_age_ms / 3_600_000:g}): its key is in every band handed out for "
                             "it, so a band kept from then could sign for this one (allowed: a new show_id, and its "
                             "bands given its key)")
        return show

    def save(self) -> None:
        """Replace the file whole: a temporary beside it, flushed to disk, renamed over it, the directory synced."""
        doc = {"shows": {str(k): [v.epoch_ms, v.last_sequence] for k, v in sorted(self.shows.items())}}
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            with temporary.open("w", encoding="ascii") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            temporary.replace(self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            raise StateError(f"the radio's state {self.path} cannot be written: {exc.strerror}") from None
