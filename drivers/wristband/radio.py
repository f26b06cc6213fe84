"""The `wristband` driver: the show's effects broadcast to the crowd's wristbands through a BLE controller
spoken to in HCI over a serial port (docs/wristband-protocol.md).

Start: reset the controller, read what it is and whether it has extended advertising, give it a random static
address and non-connectable advertising parameters (extended advertising with legacy PDUs when it has it, so
every band hears them; legacy advertising otherwise). Run: every copy interval, the next copy (streams.py) is
stamped with the show clock and handed over as disable, set data, enable (one advertising event with extended
advertising): a copy goes on the air as soon as it is made, and a fresh stamp is what keeps the bands in sync.
Heartbeats keep the bands' clocks fresh between effects and prove the controller still answers. The console's live
looks (`ctx.show.live`, read again whenever its version moves) go out as live frames in turn with the effects'
copies, standing in for heartbeats while any zone is live.

A controller that stops answering, reports a hardware error or is unplugged ends the run (NotReady); the
supervisor resets it after a backoff. Effects fired meanwhile are reported "not sent" by the show engine; those
still counting down when the radio comes back are resumed.

Keys and freshness: the configured key is the venue's; the radio signs with the show's key derived from it
(protocol.show_key), the one the show's bands are given. Sequence numbers count from the show's start, kept with
the last one sent in the radio's state file (freshness.py): the radio does not start while the clock is behind
it, nor while the kernel says the clock is not synchronised (unless `clock_sync = "none"`: a box with no time
source). A demo key is for the virtual air only: a real port needs `key_file` or `key_env`.

Several boxes, one show (docs/multi-box.md): the radio sends from the earliest epoch any box of the show holds for
its show id (`ctx.show.epochs`, filled in from the show's bus), adopting an earlier one as it is heard and never a
later one; but only one within `epoch_window_hours` of its own. A box further off (a state file left from another
show under the same id, a cloned card) is not followed: the radio says that two boxes disagree about the show's
start (its log, its health's `epoch_problem`, its twin asset and the standing alert `show_epoch`), on either box.
While `ctx.show.clock_gate` says the box's clock is off, it sends nothing at all and answers an effect
"not sent: <reason>"; it resumes by itself once the gate is cleared, with what still counts down.
"""

from __future__ import annotations

import asyncio
import binascii
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from drivers.wristband import hci
from drivers.wristband.freshness import RadioState, StateError, clock_synchronised
from drivers.wristband.hci_port import HciPort
from drivers.wristband.protocol import KEY_SIZE, MAX_SEQUENCE, LiveFrame, WristbandError, show_key
from drivers.wristband.streams import Streams
from gateway.driver import (
    Driver,
    DriverContext,
    Fired,
    NotReady,
    Problem,
    environment_variable,
    read_secret,
    secret_file,
    setting,
)

SAVE_EVERY_S = 1.0  # the last sequence number sent goes to the state file this often (and at stop)
PTY_DIR = "/dev/pts/"  # the virtual air's controller is a pseudo-terminal; a real dongle never is


def on_virtual_air(port: str) -> bool:
    """Whether `port` is a pseudo-terminal (the virtual air's controller), following symlinks."""
    return os.path.realpath(port).startswith(PTY_DIR)


def parse_key(text: str) -> bytes:
    try:
        key = binascii.unhexlify("".join(text.split()))
    except (binascii.Error, ValueError):
        raise ValueError("a show key is 32 hexadecimal digits") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"a show key is {KEY_SIZE} bytes (32 hexadecimal digits), not {len(key)}")
    return key


@dataclass(frozen=True)
class RadioOptions:
    port: str  # the dongle's serial port; name it by /dev/serial/by-id/... so replugging changes nothing
    show_id: int = setting(1, min=0, max=0xFFFF)  # one id per show, never reused: the show's key derives from it
    key_file: str | None = None  # an absolute path to the venue key (the show key's source): 32 hexadecimal digits
    key_env: str | None = None  # or an environment variable holding them
    demo_key: str | None = None  # or the digits themselves, for the virtual air only
    # "wait": no radio while the kernel says the clock is not synchronised; "none": the box has no time source
    # (its clock is trusted as it is; the stored last sequence number is then the only guard).
    clock_sync: Literal["wait", "none"] = "wait"
    # A show id is one show's: a show begun longer ago than this is not continued (the radio asks for a new id).
    max_show_hours: float = setting(24.0, min=1, max=MAX_SEQUENCE / 3_600_000)
    # Another box's earlier epoch for the show id is adopted only this close to this radio's own (default: a quarter
    # of max_show_hours, 6 h): radios of one show started hours apart still share one epoch, and the show id still
    # lasts max_show_hours less this from this radio's own start; another show's epoch kept under the same id is
    # further off, and is not followed (the radio says the boxes disagree).
    epoch_window_hours: float | None = setting(None, min=0, max=MAX_SEQUENCE / 3_600_000)
    baudrate: int = setting(1_000_000, min=9600, max=4_000_000)
    rtscts: bool = True
    advertising: Literal["auto", "extended", "legacy"] = "auto"
    copy_interval_ms: int = setting(10, min=10, max=1000)  # shared in turn by an effect's zone groups
    heartbeat_interval_ms: int = setting(500, min=0, max=60_000)  # 0: no heartbeats
    tail_ms: int = setting(200, min=0, max=5000)  # copies go on this long after the start, for late joiners
    live_tail_ms: int = setting(100, min=0, max=5000)  # a live change is sent first this long after its instant
    command_timeout_s: float = setting(1.0, min=0.05, max=30)

    def problems(self) -> list[Problem]:
        sources = [s for s in ("key_file", "key_env", "demo_key") if getattr(self, s) is not None]
        if len(sources) != 1:
            return [Problem("", "needs exactly one show key source (allowed: key_file, key_env, demo_key)")]
        if self.key_file is not None and not Path(self.key_file).is_absolute():
            return [Problem("key_file", f"{self.key_file!r} is not an absolute path")]
        if self.epoch_window_hours is not None and self.epoch_window_hours >= self.max_show_hours:
            return [Problem("epoch_window_hours", f"{self.epoch_window_hours:g} is not less than max_show_hours "
                                                  f"({self.max_show_hours:g}): an epoch that far back leaves no show")]
        if self.demo_key is not None:
            if self.port.startswith("/dev/") and not self.port.startswith(PTY_DIR):
                return [Problem("demo_key", f"a demo key is for the virtual air only, not the real port "
                                            f"{self.port} (allowed: key_file or key_env)")]
            try:
                parse_key(self.demo_key)
            except ValueError as exc:
                return [Problem("demo_key", str(exc))]
        return []

    @property
    def epoch_window_ms(self) -> int:
        hours = self.max_show_hours / 4 if self.epoch_window_hours is None else self.epoch_window_hours
        return round(hours * 3_600_000)

    def key(self) -> bytes:
        """The venue key, as configured. ValueError saying why it cannot be had (a key file open to other users is
        refused, as at check-config)."""
        if self.key_file is not None:
            text = read_secret(Path(self.key_file), "show key file")
            try:
                return parse_key(text)
            except ValueError as exc:
                raise ValueError(f"show key file {self.key_file}: {exc}") from None
        if self.key_env is not None:
            if self.key_env not in os.environ:
                raise ValueError(f"environment variable {self.key_env} (the show key) is not set")
            return parse_key(os.environ[self.key_env])
        assert self.demo_key is not None
        return parse_key(self.demo_key)


class WristbandRadio(Driver[RadioOptions]):
    Options = RadioOptions
    TRANSMITS_EFFECTS = True

    def __init__(self, ctx: DriverContext, options: RadioOptions) -> None:
        super().__init__(ctx, options)
        self.key = b""  # the show's, derived from the venue key
        self.port = HciPort(options.port, options.baudrate, options.rtscts, options.command_timeout_s, ctx.log)
        self.streams = Streams(options.show_id, options.tail_ms, options.heartbeat_interval_ms,
                               live_tail_ms=options.live_tail_ms)
        self.state = RadioState(ctx.data_dir / f"{ctx.name}.radio.json") if ctx.data_dir is not None else None
        self.extended = False
        self.controller: dict[str, Any] = {}
        self.copies_sent = 0
        self.effects_taken = 0
        self.live_frames_sent = 0
        self._live_version: int | None = None  # the live looks' version the streams have
        self._undo: Any = None
        self.gated: str | None = None  # why the clock gate keeps the radio quiet now
        self.gated_copies = 0  # slots the gate kept quiet
        self._refused_epoch: int | None = None  # an earlier epoch heard that this show cannot take (said once)
        self.epoch_problem: str | None = None  # boxes of the show that send from an epoch too far from this one's
        self._far: tuple[int, list[tuple[str, int]]] = (0, [])  # this radio's epoch and those boxes, as last said

    @classmethod
    def preflight(cls, options: RadioOptions) -> list[Problem]:
        if options.key_file is not None:
            key, found = "key_file", secret_file(Path(options.key_file), "key_file", "the show key file")
        elif options.key_env is not None:
            key, found = "key_env", environment_variable(options.key_env, "key_env", "the show key")
        else:
            return []
        if found:
            return found
        try:
            options.key()
        except ValueError as exc:
            return [Problem(key, str(exc))]
        return []

    async def start(self) -> None:
        options = self.options
        try:
            self.key = show_key(options.key(), options.show_id)
        except ValueError as exc:  # a key file not there yet: retried with backoff, one line each time
            raise NotReady(str(exc)) from None
        virtual = on_virtual_air(options.port)
        if options.demo_key is not None and not virtual:
            raise NotReady(f"{options.port} is not the virtual air: a demo key is for the virtual air only "
                           "(allowed: key_file or key_env)")
        # The virtual air's bands live and die with the process: no recording of them can be older than they are.
        if options.clock_sync == "wait" and not virtual and clock_synchronised() is False:
            raise NotReady("the kernel says the clock is not synchronised (adjtimex: STA_UNSYNC): waiting for the "
                           "time source (allowed: clock_sync = \"none\" on a box that has none)")
        if self.state is None:
            raise NotReady("no data directory for the radio's state (its sequence numbers)")
        try:
            await asyncio.to_thread(self.state.load)
            show = self.state.begin(options.show_id, self.ctx.show.show_ms(time.monotonic()),
                                    round(options.max_show_hours * 3_600_000), again=virtual)
            await asyncio.to_thread(self.state.save)
        except StateError as exc:
            raise NotReady(str(exc)) from None
        self.streams.epoch_ms = show.epoch_ms
        self.ctx.show.epochs.hold(options.show_id, show.epoch_ms)
        await self.port.open()
        try:
            await self._set_up()
        except BaseException:
            await self.port.close()
            raise

    async def _set_up(self) -> None:
        port = self.port
        await port.command(hci.RESET)
        version = await port.command(hci.READ_LOCAL_VERSION)
        if len(version) < 8:
            raise NotReady(f"the controller on {self.options.port} answered Read Local Version with "
                           f"{len(version)} bytes, not 8")
        hci_version, _, _, manufacturer, _ = struct.unpack_from("<BHBHH", version)
        features = int.from_bytes((await port.command(hci.LE_READ_LOCAL_FEATURES))[:8], "little")
        has_extended = bool(features & hci.LE_FEATURE_EXTENDED_ADVERTISING)
        if self.options.advertising == "extended" and not has_extended:
            raise ValueError(f"the controller on {self.options.port} has no extended advertising "
                             "(allowed: advertising = \"auto\" or \"legacy\")")
        self.extended = has_extended and self.options.advertising != "legacy"
        address = bytearray(os.urandom(6))
        address[5] |= 0xC0  # a random static address: its two top bits set
        interval = self.options.copy_interval_ms
        if self.extended:
            await port.command(hci.LE_SET_EXT_ADV_PARAMETERS, hci.extended_parameters(interval))
            await port.command(hci.LE_SET_ADV_SET_RANDOM_ADDRESS, bytes([hci.ADV_HANDLE]) + address)
        else:
            await port.command(hci.LE_SET_RANDOM_ADDRESS, bytes(address))
            await port.command(hci.LE_SET_ADV_PARAMETERS, hci.legacy_parameters(interval))
        self.controller = {"hci_version": hci_version, "manufacturer": manufacturer,
                           "advertising": "extended" if self.extended else "legacy"}
        self.ctx.log.info("BLE controller on %s: HCI version %d, manufacturer 0x%04x, %s advertising",
                          self.options.port, hci_version, manufacturer, self.controller["advertising"])
        asset = f"radio:{self.ctx.name}"
        self.ctx.declare(asset, "wristband_radio")
        self.ctx.report(asset, {"port": self.options.port, "show_id": self.options.show_id,
                                "show_epoch_ms": self.streams.epoch_ms, **self.controller})

    def attach(self) -> None:
        super().attach()
        show = self.ctx.show
        now = show.show_ms(time.monotonic())
        # Every recent effect, in the order fired: a later one takes its zones from earlier ones even when its own
        # copies are over (a stop fired while the radio was down), and what is still to come is sent after all.
        for fired in show.recent:
            self.streams.add(fired)
        self._live_version = None  # the live looks read afresh: zones released while the radio was down are gone
        if show.clock_gate is None:
            self._resume(now)
        self._undo = show.attach_transmitter(self.ctx.name, self._take)

    def _resume(self, now: int) -> None:
        """The recent effects reported not sent that still count down at `now` go out after all."""
        show = self.ctx.show
        for fired in show.recent:
            if fired.delivery.get(self.ctx.name, "").startswith("not sent") \
                    and self.streams.before_start(fired.effect_id, now):
                show.update_delivery(fired, self.ctx.name, "sending (resumed)")

    def detach(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
        now = self.ctx.show.show_ms(time.monotonic())
        for fired in self.ctx.show.recent:
            if fired.delivery.get(self.ctx.name, "").startswith("sending") \
                    and self.streams.before_start(fired.effect_id, now):
                self.ctx.show.update_delivery(fired, self.ctx.name, "not sent: the radio stopped before the start")
        super().detach()

    def _take(self, fired: Fired) -> str:
        self.streams.add(fired)
        self.effects_taken += 1
        gate = self.ctx.show.clock_gate
        return "sending" if gate is None else f"not sent: {gate}"  # sent after all if the gate clears in time

    def _adopt_epoch(self, now: int) -> None:
        """Send from the earliest epoch the show's boxes hold for this show id within epoch_window_hours before this
        radio's (its sequence numbers move forward); one a show cannot take (begun longer ago than max_show_hours)
        is refused. A box whose epoch is further from this radio's, earlier or later, is said (`epoch_problem`)."""
        show_id, epochs = self.options.show_id, self.ctx.show.epochs
        own, window = self.streams.epoch_ms, self.options.epoch_window_ms
        held = {box: e[show_id] for box, e in epochs.peers.items() if show_id in e}
        if show_id in epochs.local:
            held["this box"] = epochs.local[show_id]
        earlier = [epoch for epoch in held.values() if own - window <= epoch < own]
        if earlier:
            self._adopt(min(earlier), now)
        self._agree(held)

    def _adopt(self, earliest: int, now: int) -> None:
        show_id = self.options.show_id
        if now - earliest > min(self.options.max_show_hours * 3_600_000, MAX_SEQUENCE):
            if earliest != self._refused_epoch:
                self._refused_epoch = earliest
                self.ctx.log.warning("another box of the show sends show %d from an epoch %.1f hours ago, longer than "
                                     "a show lasts (max_show_hours %g): not adopted; give the show a new show_id",
                                     show_id, (now - earliest) / 3_600_000, self.options.max_show_hours)
            return
        assert self.state is not None
        self.ctx.log.info("show %d: sending from the shared show's epoch %d, %d ms earlier than this box's", show_id,
                          earliest, self.streams.epoch_ms - earliest)
        self.streams.epoch_ms = earliest
        self.state.shows[show_id].epoch_ms = earliest
        self.ctx.show.epochs.hold(show_id, earliest)
        self.ctx.report(f"radio:{self.ctx.name}", {"show_epoch_ms": earliest})

    def _agree(self, held: dict[str, int]) -> None:
        """Say (once, on a change) which boxes send this show id from an epoch beyond the window from this radio's,
        and clear it when none does."""
        own, window = self.streams.epoch_ms, self.options.epoch_window_ms
        far = sorted((box, epoch) for box, epoch in held.items() if abs(epoch - own) > window)
        if (own, far) == self._far:  # as last said (this runs at every copy slot)
            return
        self._far = (own, far)
        problem = None
        if far:
            said = "; ".join(f"{box} {abs(epoch - own) / 3_600_000:.1f} h {'earlier' if epoch < own else 'later'}"
                             for box, epoch in far)
            problem = (f"the boxes disagree about show {self.options.show_id}'s start: {said} than this radio's "
                       f"epoch (allowed: within epoch_window_hours, {window / 3_600_000:g} h): not followed. One box's "
                       "radio state holds another show's start under this show_id (a state file left from an "
                       "earlier show, a cloned card): move that box's <data_dir>/<driver>.radio.json away while no "
                       "band of that show is still in use, or give the show a new show_id")
        if problem == self.epoch_problem:
            return
        self.epoch_problem = problem
        name = self.ctx.name
        doc = {"alert": "show_epoch", "state": "raised" if problem is not None else "cleared", "driver": name,
               "show_id": self.options.show_id, "show_epoch_ms": own, "boxes": {box: epoch for box, epoch in far}}
        if problem is not None:
            self.ctx.log.warning("%s", problem)
            self.ctx.alert("show_epoch", problem, doc, key=f"show_epoch:{name}", standing=True)
        else:
            self.ctx.log.info("the boxes agree about show %d's start again", self.options.show_id)
            self.ctx.alert("show_epoch", f"the boxes agree about show {self.options.show_id}'s start again", doc,
                           key=f"show_epoch:{name}", standing=False)
        self.ctx.report(f"radio:{name}", {"epoch_problem": problem})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(self._send_forever(), name=f"{self.ctx.name}:copies"),
                 loop.create_task(self.port.closed(), name=f"{self.ctx.name}:closed"),
                 loop.create_task(self._save_forever(), name=f"{self.ctx.name}:state")}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:  # the first real failure ends the run; each task's outcome is read
            if isinstance(outcome, Exception):
                raise outcome

    async def _send_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.options.copy_interval_ms / 1000
        show, port = self.ctx.show, self.port
        enable, disable, set_data = ((hci.LE_SET_EXT_ADV_ENABLE, hci.extended_enable(True, max_events=1)),
                                     (hci.LE_SET_EXT_ADV_ENABLE, hci.extended_enable(False)),
                                     hci.LE_SET_EXT_ADV_DATA) if self.extended else \
            ((hci.LE_SET_ADV_ENABLE, b"\x01"), (hci.LE_SET_ADV_ENABLE, b"\x00"), hci.LE_SET_ADV_DATA)
        advertising = False
        quiet_since = due = loop.time()
        while True:
            due = max(due + interval, loop.time())  # a late copy is not made up for: the next one is fresh
            await asyncio.sleep(due - loop.time())
            if advertising:  # the last copy off the air before the next is made
                await port.command(*disable)
                advertising = False
                quiet_since = loop.time()
            gate = show.clock_gate
            if gate is not None:  # the box's clock is off: nothing at all goes out
                if gate != self.gated:
                    self.ctx.log.warning("the radio sends nothing: %s", gate)
                self.gated = gate
                self.gated_copies += 1
                if loop.time() - quiet_since > 1.0:  # still notice a controller gone silent
                    await port.command(hci.READ_LOCAL_VERSION)
                    quiet_since = loop.time()
                continue
            now = show.show_ms(time.monotonic())
            if self.gated is not None:
                self.ctx.log.info("the clock gate is cleared: the radio sends again")
                self.gated = None
                self._resume(now)
            self._adopt_epoch(now)
            live = show.live
            if live.version != self._live_version:
                self._live_version = live.version
                self.streams.set_live(live.current().values())
            # Stamped now, after the round trips before it: the closest the host gets to the air.
            try:
                packet = self.streams.next(show.show_ms(time.monotonic()))
            except WristbandError as exc:  # the show's sequence numbers used up: the next start says what to do
                raise NotReady(str(exc)) from None
            if packet is None:
                if loop.time() - quiet_since > 1.0:  # no heartbeats: still notice a controller gone silent
                    await port.command(hci.READ_LOCAL_VERSION)
                    quiet_since = loop.time()
                continue
            self._sent(packet.sequence)
            adv = packet.encode(self.key)
            await port.command(set_data, hci.extended_data(adv) if self.extended else hci.legacy_data(adv))
            await port.command(*enable)
            advertising = True
            self.copies_sent += 1
            self.live_frames_sent += isinstance(packet, LiveFrame)

    def _sent(self, sequence: int) -> None:
        assert self.state is not None
        self.state.shows[self.options.show_id].last_sequence = sequence

    async def _save_forever(self) -> None:
        assert self.state is not None
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            try:
                await asyncio.to_thread(self.state.save)
            except StateError as exc:  # a sequence not stored could be reused after a clock step: stop sending
                raise NotReady(str(exc)) from None

    async def stop(self) -> None:
        await self.port.close()
        if self.state is not None and self.options.show_id in self.state.shows:
            try:
                await asyncio.to_thread(self.state.save)
            except StateError as exc:
                self.ctx.log.error("%s", exc)

    def health(self) -> dict[str, Any]:
        return {"port": self.options.port, **self.controller, "show_epoch_ms": self.streams.epoch_ms,
                "epoch_problem": self.epoch_problem, "copies_sent": self.copies_sent,
                "effects_taken": self.effects_taken, "streams": len(self.streams.active),
                "live_zones": len(self.streams.live), "live_frames_sent": self.live_frames_sent,
                "clock_gate": self.gated, "gated_slots": self.gated_copies,
                "hci_commands": self.port.commands, "unexpected_events": self.port.unexpected,
                "dropped": dict(self.port.reader.dropped), "ignored_events": self.port.reader.ignored}
