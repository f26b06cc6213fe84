"""One show, three boxes: `venue-gateway run` three times, each with its own data directory, ports and radio, all in
one shared show (`[show.shared]`) over a real Mosquitto, on one virtual air (drivers/sim/shared_air.py, in a
process of its own: bench/shared_air_process.py). Each daemon runs under libfaketime with its own wall-clock
offset, as a box's clock is off from the others' by what its time sync leaves: LAN grade as chrony holds boxes on
a LAN (its documentation: "on a LAN, accuracy is typically in tens of microseconds"; modelled as up to 80 us from
true time, 130 us between two boxes), a worse case (1 ms either way, 2 ms between two boxes), and one box beyond
the show's clock bound (5 ms with `clock_bound_ms` 2), which must refuse to transmit. Each box's loop runs at
SCHED_FIFO 10, as an installed box runs it, and the air above them (as bench/wristband.py runs its air).

The floor: three radios along it, A, B and C; bands where only one is heard, where neighbours overlap (A+B, B+C)
and in the middle (A+B+C); each radio's copies lost at 30 % by each band independently. Effects are fired over
HTTP on the boxes in turn: two as soon as the boxes have joined the show (reported apart: the first seconds of a box
are its slowest), then, once the show has settled for the bands' clock window (10 s), the measured ones; one box
(A) is killed (SIGKILL, its radio dark with it) mid-show, while an effect counts down, and the show goes on from the
other two. Figures, over every band and effect: a band's start from the effect's median band start
(p50, p99, max) and the widest effect's largest minus smallest start, for the Bumble bands and for a crowd of
10,000 modelled bands placed the same way hearing the air's log; bands started; what the bands that heard only
the killed box show afterwards. The peer, measured in the same run: one box alone with the one-radio air (the
single-box path of bench/wristband.py), the same effects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.air_process import AirProcess
from bench.common import (
    PYTHON,
    REALTIME_PRIORITY,
    ROOT,
    Figure,
    die_with_parent,
    exit_on_signals,
    figures_table,
    percentile,
    title,
)
from bench.multibox_bus import NODELAY, bus_latency
from bench.shared_air_process import SharedAirProcess, SharedRecord
from drivers.sim.crowd import Crowd
from drivers.sim.shared_air import FLOOR, SharedCrowd, placed, spot_name
from drivers.wristband.band import CLOCK_WINDOW_S
from drivers.wristband.protocol import show_key
from peers import PeerMissing
from peers.mosquitto import Mosquitto
from peers.ports import LOOPBACK, free_port

KEY_HEX = "000102030405060708090a0b0c0d0e0f"  # the venue key (a demo key: the virtual air only)
SHOW_ID = 1
KEY = show_key(bytes.fromhex(KEY_HEX), SHOW_ID)
BOXES = ("box-a", "box-b", "box-c")
LOSS = 0.3
LEAD_MS = 500
TAIL_S = 0.4  # past an effect's start, its copies' tail (200 ms) and the bands' say
OPERATOR, VIEWER = "demo-operator-token", "demo-viewer-token"
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
CLOCK_BOUND_MS = 2.0
# Each box's wall clock minus true time, ms.
LAN_MS = (0.08, -0.05, 0.02)  # chrony on a LAN: tens of microseconds from the server
WORSE_MS = (1.0, -1.0, 0.0)  # two boxes 2 ms apart: a congested LAN, a server far away
BEYOND_MS = (0.0, 0.0, 5.0)  # box C beyond the show's clock bound (2 ms)
AIR_PRIORITY = REALTIME_PRIORITY + 10  # as bench/wristband.py: the radios' stand-in above the daemons' loops
BOX_PRIORITY = REALTIME_PRIORITY  # each box's loop, as an installed box runs it (config/venue.example.toml)
TARGET_SPREAD_MS = 5.0
TARGET_STARTED_PCT = 99.9
BUS_SAMPLES = 200
ONE_BOX = "one box"
WARM_EFFECTS = 2  # fired as soon as the boxes have joined, before the show settles (reported apart)
COLOURS = ("#ff0000", "#00ff00", "#0000ff", "#ffff00", "#00ffff", "#ff00ff")


def faketime_env(offset_ms: float) -> dict[str, str]:
    """The environment that runs a process with its wall clock `offset_ms` off (libfaketime), its monotonic clock
    untouched."""
    return {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": f"{offset_ms / 1000:+.6f}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@dataclass
class Box:
    """One gateway of the show: its daemon, its ports and its radio's pty, its clock's offset."""

    name: str
    directory: Path
    pty: Path
    offset_ms: float
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    def config(self, brokers: Sequence[str], boxes: Sequence[str], bound_ms: float = CLOCK_BOUND_MS,
               shared: bool = True, command_timeout_s: float = 1.0, realtime_priority: int = 0) -> Path:
        """Its configuration: one zone, the radio on its pty (a controller unanswered for `command_timeout_s` is
        reset), its loop at `realtime_priority` (0: ordinary); in the shared show unless `shared` is false."""
        self.directory.mkdir(parents=True, exist_ok=True)
        section = ("\n[show.shared]\nbrokers = [" + ", ".join(f'"{b}"' for b in brokers) + "]\nboxes = ["
                   + ", ".join(f'"{b}"' for b in boxes) + f"]\nclock_bound_ms = {bound_ms}\n") if shared else ""
        path = self.directory / "gateway.toml"
        path.write_text(f"""
[gateway]
id = "{self.name}"
venue = "arena"
data_dir = "data"
realtime_priority = {realtime_priority}

[api]
listen = "{LOOPBACK}:{self.api_port}"

[[api.tokens]]
role = "viewer"
demo_token = "{VIEWER}"

[[api.tokens]]
role = "operator"
demo_token = "{OPERATOR}"

[supervisor]
backoff_initial_s = 0.2
backoff_max_s = 0.5

[show]
lead_ms = {LEAD_MS}

[[show.zones]]
name = "floor"
index = 0
{section}
[drivers.radio]
type = "wristband"
port = "{self.pty}"
demo_key = "{KEY_HEX}"
command_timeout_s = {command_timeout_s}
""")
        return path

    def start(self, config: Path) -> None:
        if not FAKETIME_LIB.exists():
            raise PeerMissing("the Debian package faketime (libfaketime, to run a box with its clock off)")
        env = {**os.environ, "PYTHONPATH": str(ROOT), **faketime_env(self.offset_ms)}
        with (self.directory / "daemon.log").open("ab") as log:
            self.proc = subprocess.Popen([PYTHON, "-m", "gateway", "run", "--config", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         cwd=self.directory, start_new_session=True, preexec_fn=die_with_parent)

    def kill(self) -> None:
        """SIGKILL: the box is lost, as a power cut loses it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def request(self, method: str, path: str, token: str = VIEWER, body: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def health(self) -> dict[str, Any]:
        status, doc = self.request("GET", "/api/v1/health")
        if status != 200:
            raise OSError(f"{self.name}: GET /api/v1/health: {status} {doc}")
        return dict(doc)

    def fire(self, colour: str) -> dict[str, Any]:
        """A solid effect over HTTP, with the show's lead: the fired effect as the box answers it."""
        status, doc = self.request("POST", "/api/v1/effects", OPERATOR,
                                   {"effect": {"kind": "solid", "colour": colour}, "lead_ms": LEAD_MS})
        if status != 202:
            raise RuntimeError(f"{self.name}: POST /api/v1/effects: {status} {doc}")
        return dict(doc)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.directory / "daemon.log").read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


async def wait_for(check: Any, seconds: float, what: str, boxes: Sequence[Box] = ()) -> None:
    """Poll `check` (a blocking callable, run in a thread) every 100 ms until true; raise after `seconds`, or when
    a box that should run has exited."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError, KeyError):
            if await asyncio.to_thread(check):
                return
        for box in boxes:
            if box.proc is not None and box.proc.poll() is not None:
                raise RuntimeError(f"{box.name} exited with {box.proc.returncode}:\n{box.log_tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {box.name}:\n{box.log_tail()}" for box in boxes)
            raise TimeoutError(f"not {what} within {seconds:g} s\n{tails}")
        await asyncio.sleep(0.1)


def radio_running(box: Box) -> bool:
    return bool(box.health()["drivers"]["radio"]["state"] == "running")


def status(box: Box) -> str:
    """What a box says of its radio and the show: copies sent, the clock gate, its problems."""
    health = box.health()
    radio = health["drivers"]["radio"]
    detail = radio.get("detail", {})
    shared = health["services"]["shared"]["detail"]
    offsets = ", ".join(f"{name} {b['offset_ms']} ms (round trip {b['delay_ms']} ms)"
                        for name, b in shared["boxes"].items() if b["state"] == "online")
    return (f"{box.name} (loop {health['scheduling']}): radio {radio['state']}, {detail.get('copies_sent')} copies "
            f"sent, clock gate {detail.get('clock_gate')} ({detail.get('gated_slots')} slots kept quiet); others' "
            f"clocks: {offsets}; problems: {health['problems'] or 'none'}")


def show_joined(box: Box) -> int | None:
    """The show epoch the box's radio sends from, once it runs, the box is on the show's bus, it has heard every
    other box and its clock, and its clock watch has had its first word (None until then)."""
    health = box.health()
    shared = health["services"]["shared"]["detail"]
    radio = health["drivers"]["radio"]
    watch = health["services"].get("clock", {}).get("detail") or {}
    waiting = watch.get("state", "unknown") == "unknown"  # the clock watch has not had its first word yet
    joined = radio["state"] == "running" and shared["bus"] == "online" and not waiting and \
        all(b["state"] == "online" and b["offset_ms"] is not None for b in shared["boxes"].values())
    return int(radio["detail"]["show_epoch_ms"]) if joined else None


def joined_one_show(boxes: Sequence[Box]) -> bool:
    """Every box has joined the show (`show_joined`), all on one epoch."""
    epochs = [show_joined(box) for box in boxes]
    return None not in epochs and len(set(epochs)) == 1


@dataclass
class Floor:
    """The show on the floor: the broker, the air and the boxes."""

    air: SharedAirProcess
    boxes: list[Box]
    bands: list[tuple[int, tuple[int, ...]]]
    broker_url: str


@contextlib.asynccontextmanager
async def floor(directory: Path, offsets_ms: Sequence[float], per_spot: int, air_priority: int = 0, seed: int = 11,
                command_timeout_s: float = 1.0, box_priority: int = 0) -> AsyncIterator[Floor]:
    """Three boxes in one shared show over a Mosquitto of their own, on the FLOOR layout's air: each radio running
    and every box heard by the others. The boxes, the air and the broker are stopped on the way out (the air's
    record is the caller's to take before)."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    boxes = [Box(name, directory / name, directory / f"hci-{name}", offset) for name, offset in
             zip(BOXES, offsets_ms, strict=True)]
    bands = placed(FLOOR, [0], per_spot)
    broker = Mosquitto(directory / "broker", persistence=False)
    broker.conf.write_text(broker.conf.read_text() + NODELAY)  # as a venue's broker is set up for the show
    air = SharedAirProcess(KEY, SHOW_ID, [LOSS] * len(boxes), seed, air_priority)
    with broker:
        await air.open([box.pty for box in boxes], bands, directory / "air.log")
        try:
            for box in boxes:
                box.start(box.config([broker.url], BOXES, command_timeout_s=command_timeout_s,
                                     realtime_priority=box_priority))
            await wait_for(lambda: joined_one_show(boxes), 30,
                           "every box in the show, its radio sending from the show's epoch", boxes)
            yield Floor(air, boxes, bands, broker.url)
        finally:
            for box in boxes:
                box.stop()
            await air.stop()


class Starting(Protocol):
    """A band as the figures read it: when it started each effect (serial -> monotonic time)."""

    @property
    def starts(self) -> dict[int, float]: ...


class Started(Starting, Protocol):
    """A band of the shared air as the figures read it: its starts, and the radios it hears."""

    @property
    def radios(self) -> Collection[int]: ...


class Air(Protocol):
    async def serials(self) -> set[int]: ...


@dataclass(frozen=True)
class Starts:
    """How a set of bands started a set of effects: each band's start from its effect's median band start, ms,
    every (band, effect); each effect's largest minus smallest start; (band, effect) pairs started of those
    expected."""

    from_median_ms: list[float]
    widths_ms: list[float]
    started: int
    expected: int

    @property
    def started_pct(self) -> float:
        return 100 * self.started / self.expected if self.expected else float("nan")

    def line(self) -> str:
        m, w = self.from_median_ms, self.widths_ms
        return (f"from the median band: p50 {percentile(m, 50):.2f} ms, p99 {percentile(m, 99):.2f} ms, max "
                f"{max(m, default=float('nan')):.2f} ms; widest effect {max(w, default=float('nan')):.2f} ms "
                f"(median effect {statistics.median(w) if w else float('nan'):.2f} ms); started {self.started}/"
                f"{self.expected} ({self.started_pct:.3f} %)")


def starts(bands: Sequence[Starting], serials: Sequence[int]) -> Starts:
    from_median: list[float] = []
    widths: list[float] = []
    started = 0
    for serial in serials:
        at = sorted(b.starts[serial] for b in bands if serial in b.starts)
        started += len(at)
        if not at:
            continue
        median = at[len(at) // 2]
        from_median += [abs(t - median) * 1000 for t in at]
        widths.append((at[-1] - at[0]) * 1000)
    return Starts(from_median, widths, started, len(bands) * len(serials))


@dataclass
class Show:
    """What was fired: the serials before the kill, the one counting down as the box was killed, those fired after;
    each effect's firing box and its answer's delivery."""

    before: list[int]
    during: int | None
    after: list[int]
    killed: int  # the index of the box killed
    answers: list[tuple[str, dict[str, str]]] = field(default_factory=list)


async def serial_of(air: Air, before: set[int], seconds: float = 3.0) -> int:
    """The one new effect bands have started since `before`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = await air.serials() - before
        if new:
            assert len(new) == 1, f"bands started {sorted(new)} at once"
            return new.pop()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no band started the effect within {seconds:g} s")


async def play(f: Floor, effects: int, kill_after: int | None, killed: int = 0,
               into_lead_s: float | None = 0.25) -> Show:
    """`effects` effects fired in turn on the boxes still up, 1 s apart; after `kill_after` of them, box `killed`
    is killed (its radio dark with it), `into_lead_s` into the next effect's lead (None: before it is fired)."""
    show = Show([], None, [], killed)
    alive = list(range(len(f.boxes)))

    async def kill() -> None:
        await asyncio.to_thread(f.boxes[killed].kill)
        await f.air.power_off(killed)  # its dongle, powered by the box, goes dark with it
        alive.remove(killed)

    for k in range(effects):
        if k == kill_after and into_lead_s is None:
            await kill()
        before = await f.air.serials()
        box = f.boxes[alive[k % len(alive)]]
        answer = await asyncio.to_thread(box.fire, COLOURS[k % len(COLOURS)])
        show.answers.append((box.name, answer["delivery"]))
        if k == kill_after and into_lead_s is not None:
            await asyncio.sleep(into_lead_s)
            await kill()
        await asyncio.sleep(LEAD_MS / 1000 + TAIL_S)
        serial = await serial_of(f.air, before)
        if kill_after is None or k < kill_after:
            show.before.append(serial)
        elif k == kill_after and into_lead_s is not None:
            show.during = serial
        else:
            show.after.append(serial)
        await asyncio.sleep(0.2)
    return show


def only(bands: Sequence[Started], radio: int) -> list[Started]:
    return [b for b in bands if set(b.radios) == {radio}]


def others(bands: Sequence[Started], radio: int) -> list[Started]:
    return [b for b in bands if set(b.radios) != {radio}]


@dataclass
class Case:
    """One run of the show at a set of clock offsets: the air's record, what was fired, what the boxes said."""

    label: str
    offsets_ms: tuple[float, ...]
    record: SharedRecord
    show: Show
    bands: list[tuple[int, tuple[int, ...]]]
    said: list[str]  # what each box still up said of its radio and the show at the end
    scheduling: str  # the air's process
    warm: list[int]  # the effects fired as the boxes had just joined, before the show settled


async def _case(directory: Path, label: str, offsets_ms: tuple[float, ...], effects: int, per_spot: int,
                air_priority: int) -> Case:
    async with floor(directory, offsets_ms, per_spot, air_priority, box_priority=BOX_PRIORITY) as f:
        warm = await play(f, WARM_EFFECTS, kill_after=None)
        await asyncio.sleep(CLOCK_WINDOW_S)  # the show settles: past the boxes' start, a clock window of the bands
        show = await play(f, effects, kill_after=effects // 2, killed=0)
        said = [await asyncio.to_thread(status, box) for box in f.boxes if box.proc and box.proc.poll() is None]
        record = await f.air.close()
    return Case(label, offsets_ms, record, show, f.bands, said, f.air.scheduling, warm.before)


def clock_gate(box: Box) -> str | None:
    """Why the box's clock keeps its radio quiet (None: it transmits)."""
    gate = box.health()["drivers"]["radio"].get("detail", {}).get("clock_gate")
    return None if gate is None else str(gate)


async def _beyond(directory: Path, effects: int, per_spot: int, air_priority: int, crowd_size: int) -> list[Figure]:
    """Box C's clock beyond the show's bound: once its clock watch has seen it, effects fired on every box in turn
    (none killed), half at once and half once the bands' clock window (10 s) has passed since C's last copy. C's
    radio must send nothing, its effects go out from the others, its own bands start none."""
    c = len(BOXES) - 1
    async with floor(directory, BEYOND_MS, per_spot, air_priority, box_priority=BOX_PRIORITY) as f:
        await wait_for(lambda: clock_gate(f.boxes[c]) is not None, 30, f"{BOXES[c]}'s clock gate closed", f.boxes)
        gated = time.monotonic()
        gate = await asyncio.to_thread(clock_gate, f.boxes[c])
        early = await play(f, effects // 2, kill_after=None)
        await asyncio.sleep(max(0.0, gated + CLOCK_WINDOW_S + 1 - time.monotonic()))
        late = await play(f, effects - effects // 2, kill_after=None)
        said = [await asyncio.to_thread(status, box) for box in f.boxes]
        record = await f.air.close()
    sent = {data: t for t, data, r in reversed(record.on_air) if r == c}  # each copy's first time on the air
    before_gate = sum(t <= gated for t in sent.values())
    crowd = SharedCrowd(KEY, SHOW_ID, placed(FLOOR, [0], crowd_size // len(FLOOR)), [LOSS] * 3, seed=5)
    crowd.hear(record.on_air)
    print(f"  {BOXES[c]}'s clock gate: {gate}")
    for line in said:
        print(f"  {line}")
    answers = {str(d) for name, d in early.answers + late.answers if name == BOXES[c]}
    print(f"  {spot_name([c])}'s copies on the air: {len(sent)}, {before_gate} of them before its gate was seen "
          f"closed; effects fired on {BOXES[c]} answered: {'; '.join(answers)}")
    out = []
    for when, show in ((f"at once ({len(early.before)} effects)", early),
                       (f"after the bands' {CLOCK_WINDOW_S:g} s clock window ({len(late.before)})", late)):
        alone, rest = starts(only(crowd.bands, c), show.before), starts(others(crowd.bands, c), show.before)
        air_alone, air_rest = starts(only(record.bands, c), show.before), starts(others(record.bands, c), show.before)
        print(f"  fired {when}: bands that hear only {spot_name([c])} started {air_alone.started}/"
              f"{air_alone.expected} Bumble, {alone.started}/{alone.expected} modelled; the others: "
              f"{air_rest.line()} (Bumble), {rest.line()} (modelled)")
        out.append((alone, rest))
    (_, first), (alone, rest) = out
    return [
        Figure(f"multibox {BOXES[c]} beyond the bound: its own bands started", alone.started_pct, "%"),
        Figure(f"multibox {BOXES[c]} beyond the bound: the others started, modelled", rest.started_pct, "%",
               TARGET_STARTED_PCT, "higher"),
        Figure(f"multibox {BOXES[c]} beyond the bound: the others' widest effect, modelled", max(rest.widths_ms),
               "ms", TARGET_SPREAD_MS),
        Figure(f"multibox {BOXES[c]} beyond the bound: the others' widest, fired at once", max(first.widths_ms), "ms"),
    ]


def _expected(case: Case, bands: Sequence[Started]) -> Starts:
    """Every band on every effect it should start: all of them before the loss (and the effect counting down
    then, whose copies the lost box's bands had heard), and those that hear another radio after it."""
    before = starts(bands, [*case.show.before, *([case.show.during] if case.show.during is not None else [])])
    after = starts(others(bands, case.show.killed), case.show.after)
    return Starts(before.from_median_ms + after.from_median_ms, before.widths_ms + after.widths_ms,
                  before.started + after.started, before.expected + after.expected)


def _lost_box(case: Case, bands: Sequence[Started]) -> tuple[int, int, int, int]:
    """After the loss: (band, effect) pairs started of those fired, for the bands that heard only the lost box, and
    how many of those bands go on showing the effect they last heard before it (the one counting down then)."""
    alone = only(bands, case.show.killed)
    started = sum(serial in b.starts for b in alone for serial in case.show.after)
    last = case.show.during if case.show.during is not None else case.show.before[-1]
    showing = sum(bool(b.starts) and max(b.starts, key=b.starts.__getitem__) == last for b in alone)
    return started, len(alone) * len(case.show.after), showing, len(alone)


@dataclass(frozen=True)
class Peer:
    """One box alone: its Bumble bands' starts and its modelled crowd's."""

    air: Starts
    crowd: Starts


async def _one_box(directory: Path, effects: int, bands: int, air_priority: int, crowd_size: int) -> Peer:
    """The peer: one box alone, not in a shared show, with the one-radio air; the same effects, as settled."""
    await asyncio.to_thread(directory.mkdir, parents=True)
    box = Box("box-a", directory / "box-a", directory / "hci", 0.0)
    air = AirProcess(KEY, SHOW_ID, LOSS, 11, air_priority)
    await air.open(box.pty, [0] * bands, directory / "air.log")
    serials = []
    try:
        box.start(box.config([], BOXES, shared=False, realtime_priority=BOX_PRIORITY))
        await wait_for(lambda: radio_running(box), 30, "the radio running", [box])
        for k in range(WARM_EFFECTS + effects):
            if k == WARM_EFFECTS:
                await asyncio.sleep(CLOCK_WINDOW_S)  # as the shared show's cases: the measured effects once settled
            before = await air.serials()
            await asyncio.to_thread(box.fire, COLOURS[k % len(COLOURS)])
            await asyncio.sleep(LEAD_MS / 1000 + TAIL_S)
            serials.append(await serial_of(air, before))
            await asyncio.sleep(0.2)
        box.stop()
        record = await air.close()
    finally:
        box.stop()
        await air.stop()
    crowd = Crowd(KEY, SHOW_ID, [0] * crowd_size, LOSS, seed=5)
    crowd.hear(record.on_air)
    return Peer(starts(record.bands, serials[WARM_EFFECTS:]), starts(crowd.bands, serials[WARM_EFFECTS:]))


def _figures(case: Case, crowd_size: int, peer: Peer) -> list[Figure]:
    air = _expected(case, case.record.bands)
    copies = [len({data for _, data, x in case.record.on_air if x == r}) for r in range(len(BOXES))]
    per_radio = ", ".join(f"{spot_name([r])} {n}" for r, n in enumerate(copies))
    print(f"  {case.label}: {sum(copies)} copies on the air ({per_radio}); the air's process: {case.scheduling}")
    for line in case.said:
        print(f"  {line}")
    print(f"  {len(case.record.bands)} Bumble bands: {air.line()}")
    for spot in FLOOR:
        here = [b for b in case.record.bands if b.radios == spot]
        print(f"    {spot_name(spot):6} {len(here)} bands: {_expected(case, here).line()}")
    began = time.monotonic()
    crowd = SharedCrowd(KEY, SHOW_ID, placed(FLOOR, [0], crowd_size // len(FLOOR)), [LOSS] * 3, seed=5)
    crowd.hear(case.record.on_air)
    modelled = _expected(case, crowd.bands)
    print(f"  {len(crowd.bands)} modelled bands (in {time.monotonic() - began:.1f} s): {modelled.line()}")
    print(f"    each effect's largest minus smallest start, in the order fired: "
          f"{', '.join(f'{ms:.2f}' for ms in modelled.widths_ms)} ms")
    warm = starts(crowd.bands, case.warm)
    print(f"  the {len(case.warm)} effects fired as the boxes had just joined (then {CLOCK_WINDOW_S:g} s before the "
          f"rest), {len(crowd.bands)} modelled: {warm.line()}")
    started, fired, showing, alone = _lost_box(case, crowd.bands)
    air_started, air_fired, air_showing, air_alone = _lost_box(case, case.record.bands)
    after = starts(others(crowd.bands, case.show.killed), case.show.after)
    print(f"  box {spot_name([case.show.killed])} killed 250 ms into an effect's lead: of the bands that heard only "
          f"it, {air_showing}/{air_alone} Bumble and {showing}/{alone} modelled go on showing that effect; they "
          f"started {air_started}/{air_fired} and {started}/{fired} of the {len(case.show.after)} effects fired "
          f"after; the others started {after.started}/{after.expected}")
    label = case.label
    return [
        Figure(f"multibox {label}: a band from the median p50, {len(crowd.bands)} modelled",
               percentile(modelled.from_median_ms, 50), "ms"),
        Figure(f"multibox {label}: a band from the median p99, {len(crowd.bands)} modelled",
               percentile(modelled.from_median_ms, 99), "ms", peer=percentile(peer.crowd.from_median_ms, 99),
               peer_label=ONE_BOX),
        Figure(f"multibox {label}: widest effect (largest - smallest start), {len(crowd.bands)} modelled",
               max(modelled.widths_ms), "ms", TARGET_SPREAD_MS, peer=max(peer.crowd.widths_ms), peer_label=ONE_BOX),
        Figure(f"multibox {label}: widest effect, {len(case.record.bands)} Bumble bands", max(air.widths_ms), "ms",
               TARGET_SPREAD_MS, peer=max(peer.air.widths_ms), peer_label=ONE_BOX),
        Figure(f"multibox {label}: started, {len(crowd.bands)} modelled", modelled.started_pct, "%",
               TARGET_STARTED_PCT, "higher"),
        Figure(f"multibox {label}: started, {len(case.record.bands)} Bumble bands", air.started_pct, "%",
               TARGET_STARTED_PCT, "higher"),
        Figure(f"multibox {label}: lost box's own bands, effects started after", 100 * started / max(fired, 1), "%"),
        Figure(f"multibox {label}: widest effect, fired as the boxes had just joined", max(warm.widths_ms), "ms"),
    ]


async def _run(effects: int, per_spot: int, crowd: int, air_priority: int) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="vg-bench-multibox-") as tmp:
        peer = await _one_box(Path(tmp) / "one", effects, per_spot * len(FLOOR), air_priority, crowd)
        print(f"  one box, one radio, {per_spot * len(FLOOR)} Bumble bands: {peer.air.line()}")
        print(f"  one box, one radio, {crowd} modelled bands: {peer.crowd.line()}")
        for label, offsets in (("LAN clocks", LAN_MS), ("2 ms apart", WORSE_MS)):
            print(f"{label}: box clocks {', '.join(f'{o:+.2f} ms' for o in offsets)} from true time")
            case = await _case(Path(tmp) / label.replace(" ", "-"), label, offsets, effects, per_spot, air_priority)
            figures += _figures(case, crowd, peer)
        print(f"beyond the bound: box clocks {', '.join(f'{o:+.2f} ms' for o in BEYOND_MS)} from true time, "
              f"clock_bound_ms {CLOCK_BOUND_MS:g}")
        figures += await _beyond(Path(tmp) / "beyond", effects, per_spot, air_priority, crowd)
        broker = Mosquitto(Path(tmp) / "bus", persistence=False)
        broker.conf.write_text(broker.conf.read_text() + NODELAY)
        with broker:
            bus = [s * 1000 for s in (await asyncio.to_thread(bus_latency, broker.url, BUS_SAMPLES))[0]]
        print(f"the show's bus (bench/multibox_bus.py: {BUS_SAMPLES} effects fired on one box, carried by another): "
              f"p50 {percentile(bus, 50):.2f} ms, p99 {percentile(bus, 99):.2f} ms, max {max(bus):.2f} ms")
        figures.append(Figure("multibox: bus, an effect fired on one box to carried by another p99",
                              percentile(bus, 99), "ms", LEAD_MS / 10))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.multibox", description=__doc__)
    parser.add_argument("--effects", type=int, default=12)
    parser.add_argument("--per-spot", type=int, default=4, help="Bumble bands at each spot of the floor")
    parser.add_argument("--crowd", type=int, default=10_000)
    parser.add_argument("--air-priority", type=int, default=AIR_PRIORITY)
    args = parser.parse_args()
    exit_on_signals()
    print(figures_table(run(args.effects, args.per_spot, args.crowd, args.air_priority)))


def run(effects: int = 12, per_spot: int = 4, crowd: int = 10_000, air_priority: int = AIR_PRIORITY) -> list[Figure]:
    title(f"Multi-box show: three boxes, three radios on one air ({', '.join(spot_name(s) for s in FLOOR)}), "
          f"{LOSS:.0%} loss per radio; {effects} effects by HTTP on the boxes in turn")
    return asyncio.run(_run(effects, per_spot, crowd, air_priority))


if __name__ == "__main__":
    main()
