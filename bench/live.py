"""Live: a console's fader to the crowd's wristbands. A console (the `sacn` package's sender, bench/console.py)
streams sACN unicast at 44 Hz to the demo configuration's daemon (virtual venue running), whose `sacn-in` driver
hands the universe to the patch; the patch's crowd fixtures set the zones' live looks, and the radio sends them as
live frames over HCI to a Bumble controller, the virtual air, in a process of its own (bench/air_process.py,
real-time above the daemon's loop, as bench/wristband.py runs it). Virtual bands (Bumble hosts scanning the same
link, 8 per zone, each on its own drifting clock) lose 30 % of the advertisements; a crowd of 10,000 modelled bands
then hears the air's log through the same loss.

The console makes fader moves: each fixture's intensity from 0 to full and back, a new level every console frame
(44 a second), in a colour under the band's LED ceiling, so the look a band shows names the level it came from.
Each data packet is stamped as it leaves the console. A band's latency for a look is when it began to show it (its
clock read back to the host's) minus the stamp of the first packet carrying that level; a look no band shows (a
later one came before its instant) has no sample. Figures: latency p50 and p99 over every band and look; the
spread of a change across bands as the p99, over every band and look, of a band's start from the median band's
start of that look (and, beside it, each look's largest minus smallest start, p99 over looks: set by the few bands
that lost every copy before the instant and joined from a later one); and the share of (band, move) pairs that
end the move on its final look. A level the console's sender never sent (two set between its passes, as a console
samples a fader) has no sample either."""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.air_process import AirProcess
from bench.common import (
    PYTHON,
    REALTIME_PRIORITY,
    ROOT,
    Figure,
    child,
    exit_on_signals,
    figures_table,
    percentile,
    title,
    wait_until,
)
from bench.console import Console, Sent
from bench.daemon_probe import DaemonApi
from drivers.sim.crowd import Crowd, LiveShown
from drivers.wristband.protocol import show_key
from drivers.wristband.radio import parse_key
from gateway.driver import Look
from peers.ports import LOOPBACK, free_port, free_udp_port

TOKEN = "demo-viewer-token"
LOSS = 0.3
FPS = 44  # a console's sACN rate (DMX's own refresh)
TARGET_P99_MS = 100.0
TARGET_SPREAD_P99_MS = 20.0
TARGET_FINAL_PCT = 100.0
MOVES = 8
STEPS = 22  # console frames a move takes: half a second at 44 Hz
SETTLE_S = 0.6  # after a move, before the next: past its last look's instant and the bands' fade
COLOUR = (200, 100, 50)  # under the band's LED ceiling (204): a band shows the console's colour as it is
AIR_PRIORITY = REALTIME_PRIORITY + 10  # as bench/wristband.py: the radio's stand-in above the daemon's loop
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Fixture:
    universe: int
    address: int


@dataclass(frozen=True)
class Move:
    """A fader move: its levels in order, the stamp of the first packet that carried each, and until when it is the
    latest (the next move's first packet, or the end)."""

    levels: list[int]
    sent_ns: list[int]
    until_ns: int

    @property
    def began_ns(self) -> int:
        return self.sent_ns[0]


def rgb(level: int) -> RGB:
    """What a band shows for an intensity level of the fixture in COLOUR (the contract's Look)."""
    return Look(COLOUR, level / 255).rgb()


def moves_levels(moves: int, steps: int) -> list[list[int]]:
    """Up, down, up, ...: each move's levels, none repeated within a move (a look names its level)."""
    up = [round(255 * (k + 1) / steps) for k in range(steps)]
    down = [round(255 * (steps - 1 - k) / steps) for k in range(steps)]
    return [up if m % 2 == 0 else down for m in range(moves)]


@dataclass(frozen=True)
class Config:
    path: Path
    key: bytes  # the show's
    zones: list[int]  # the zones' indexes
    fixtures: list[Fixture]
    drivers: tuple[str, str]  # the radio's name and the console input's
    delay_ms: int  # show.live.delay_ms: how long after its arrival a change shows


def demo_config(directory: Path, api_port: int, sacn_port: int, pty: Path) -> Config:
    """The demo configuration on this run's ports and pty, its own air off (the benchmark hosts it), its cloud
    side off; with its patch (or one fixture per zone on universe 1 when it has none) and an sACN input of its own
    on loopback's `sacn_port` (the demo's console input, if any, stays as it is)."""
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace('listen = "127.0.0.1:8080"', f'listen = "{LOOPBACK}:{api_port}"')
    text = text.replace('listen = "127.0.0.1:9000"', f'listen = "{LOOPBACK}:{free_port()}"')
    text = text.replace('data_dir = "../var/demo"', 'data_dir = "data"')
    text = text.replace('"../models/', f'"{ROOT}/models/')  # the demo's own files, from the run's directory
    text = re.sub(r'(?m)^file = "([^"/]+)"', lambda m: f'file = "{ROOT}/config/{m[1]}"', text)
    text = text.replace('"/tmp/venue-gateway-air"', f'"{pty}"')
    text = text.replace('type = "air"\n', 'type = "air"\nenabled = false  # the benchmark hosts the air\n')
    text = text.replace('type = "ble"\n', 'type = "ble"\nenabled = false  # its room is the air driver\'s\n')
    text = re.sub(r"(?m)^\[cloud\]\n(?:[^\n]+\n)*", "", text)
    from gateway import config

    path = directory / "gateway.toml"
    path.write_text(text)
    cfg = config.load(path)
    text += (f'\n[drivers.console-sacn]  # the benchmark\'s console\ntype = "sacn-in"\nbind = "{LOOPBACK}"\n'
             f'port = {sacn_port}\nmulticast = false\n')
    if not cfg.show.patch:
        text += "".join(f'\n[[show.patch]]\nname = "{z.name}"\nuniverse = 1\naddress = {1 + 8 * i}\n'
                        f'zones = ["{z.name}"]\n' for i, z in enumerate(cfg.show.zones))
    path.write_text(text)
    cfg = config.load(path)
    radio = next(d for d in cfg.drivers if d.type == "wristband")
    console = next(d for d in cfg.drivers if d.name == "console-sacn")
    return Config(path, show_key(parse_key(radio.options.demo_key), radio.options.show_id),
                  sorted(z.index for z in cfg.show.zones), [Fixture(f.universe, f.address) for f in cfg.show.patch],
                  (radio.name, console.name), cfg.show.live.delay_ms)


def levels_of(fixtures: Sequence[Fixture], universe: int, level: int) -> bytes:
    """The universe's channels with every fixture at `level` in COLOUR (strobe, effect, control at 0: live)."""
    out = bytearray(512)
    for f in fixtures:
        if f.universe == universe:
            out[f.address - 1:f.address + 3] = bytes((level, *COLOUR))
    return bytes(out)


async def _fade(console: Console, fixtures: Sequence[Fixture], plan: list[list[int]]) -> list[list[int]]:
    """The moves played on the console, a level a frame, SETTLE_S after each; each move's levels as set."""
    universes = sorted({f.universe for f in fixtures})
    period = 1 / FPS
    for levels in plan:
        began = time.monotonic()
        for k, level in enumerate(levels):
            for universe in universes:
                console.set(universe, levels_of(fixtures, universe, level))
            await asyncio.sleep(max(0.0, began + (k + 1) * period - time.monotonic()))
        await asyncio.sleep(SETTLE_S)
    return plan


def moves_on_wire(plan: list[list[int]], sent: Sequence[Sent], fixture: Fixture, end_ns: int) -> list[Move]:
    """Each move's levels with the stamp of the first packet carrying each, in order on the wire. A level the
    console's sender never sent (set twice between two of its passes, as a console samples a fader) has no stamp
    (-1): no band can show it."""
    channel = fixture.address - 1
    stream = [(s.at_ns, s.levels[channel]) for s in sent if s.universe == fixture.universe]
    stamped: list[list[int]] = []
    i = 0
    for levels in plan:
        place = {level: k for k, level in enumerate(levels)}
        stamps, k = [-1] * len(levels), 0
        while k < len(levels) and i < len(stream):
            at, level = stream[i]
            i += 1
            if place.get(level, -1) >= k:
                k = place[level]
                stamps[k] = at
                k += 1
        stamped.append(stamps)
    ends = [stamps[0] for stamps in stamped[1:]] + [end_ns]
    return [Move(levels, stamps, until) for levels, stamps, until in zip(plan, stamped, ends, strict=True)]


@dataclass
class Result:
    latencies_ms: list[float]  # a band's start of a look minus the stamp of the packet that set it, every (band, look)
    offsets_ms: list[float]  # a band's start of a look from the median band's, every (band, look)
    widths_ms: list[float]  # a look's largest start minus its smallest, over the bands that showed it
    final: int  # (band, move) pairs that ended on the move's final look
    pairs: int
    unmatched: int  # looks shown that no level of their move names


def analyse(bands: Sequence[Sequence[LiveShown]], moves: Sequence[Move]) -> Result:
    """Every band's shown looks matched to the moves' levels: latencies, how closely the bands showed each look,
    final looks."""
    by_look: dict[tuple[int, int], list[float]] = {}
    latencies: list[float] = []
    final = unmatched = 0
    for looks in bands:
        for m, move in enumerate(moves):
            names = {rgb(level): k for k, level in enumerate(move.levels)}
            during = [s for s in looks if move.began_ns <= s.at * 1e9 < move.until_ns]
            for s in during:
                k = names.get(s.rgb)
                if k is None or move.sent_ns[k] < 0:
                    unmatched += 1
                    continue
                latencies.append((s.at * 1e9 - move.sent_ns[k]) / 1e6)
                by_look.setdefault((m, k), []).append(s.at)
            final += bool(during) and during[-1].rgb == rgb(move.levels[-1])
    offsets, widths = [], []
    for starts in by_look.values():
        starts.sort()
        median = starts[len(starts) // 2]
        offsets += [abs(t - median) * 1000 for t in starts]
        widths.append((starts[-1] - starts[0]) * 1000)
    return Result(latencies, offsets, widths, final, len(bands) * len(moves), unmatched)


def _print(label: str, r: Result, delay_ms: int) -> None:
    beyond = [ms - delay_ms for ms in r.latencies_ms]
    lat, off, wide = r.latencies_ms, r.offsets_ms, r.widths_ms
    print(f"  {label}: {len(lat)} looks shown ({len(wide)} distinct); latency p50 {percentile(lat, 50):.1f} ms, "
          f"p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms (beyond the live delay of {delay_ms} ms: p50 "
          f"{percentile(beyond, 50):.1f} ms, p99 {percentile(beyond, 99):.1f} ms); a band's start from the median "
          f"band's: p50 {percentile(off, 50):.2f} ms, p99 {percentile(off, 99):.2f} ms, p99.9 "
          f"{percentile(off, 99.9):.2f} ms, max {max(off):.1f} ms; a look's largest minus smallest start: p50 "
          f"{percentile(wide, 50):.2f} ms, p99 {percentile(wide, 99):.2f} ms; on the final look {r.final}/{r.pairs} "
          f"(band, move); {r.unmatched} unmatched")


async def _run(directory: Path, bands: int, crowd_size: int, moves: int, air_priority: int) -> list[Figure]:
    api_port, sacn_port, pty = free_port(), free_udp_port(), directory / "hci"
    cfg = demo_config(directory, api_port, sacn_port, pty)
    key, zones, fixtures = cfg.key, cfg.zones, cfg.fixtures
    api = DaemonApi(f"http://{LOOPBACK}:{api_port}", TOKEN)
    air = AirProcess(key, 1, LOSS, 11, air_priority)
    await air.open(pty, [zones[i % len(zones)] for i in range(bands)], directory / "air.log")
    plan = moves_levels(moves, STEPS)
    universes = sorted({f.universe for f in fixtures})
    try:
        with child([PYTHON, "-m", "gateway", "run", "--config", str(cfg.path)], directory / "daemon.log") as proc:
            def ready() -> bool:
                drivers = api.health()["drivers"]
                return all(drivers[name]["state"] == "running" for name in cfg.drivers)
            await asyncio.to_thread(wait_until, ready, 30, proc, "the radio and the console input running")
            with Console(universes, sacn_port, FPS, record=universes) as console:
                for universe in universes:  # every fixture dark, and the bands told so, before the first move
                    console.set(universe, levels_of(fixtures, universe, 0))
                await asyncio.sleep(1.0)
                began = time.monotonic_ns()
                await _fade(console, fixtures, plan)
                end = time.monotonic_ns()
            health = await asyncio.to_thread(api.health)
        record = await air.close()
    finally:
        await air.stop()
    sent = [s for s in console.sent if s.at_ns >= began]
    on_wire = moves_on_wire(plan, sent, fixtures[0], end)
    radio = health["drivers"][cfg.drivers[0]]["detail"]
    print(f"{moves} fader moves of {STEPS} levels at {FPS} Hz on {len(fixtures)} fixtures ({len(universes)} "
          f"universe(s)); {console.packets} sACN packets sent; {len(record.on_air)} advertisements on the air "
          f"({radio.get('copies_sent')} copies, {radio.get('live_frames_sent')} live frames); the air's process: "
          f"{air.scheduling}; the daemon's loop lag p99 {health['loop_lag']['p99_ms']:.2f} ms, max "
          f"{health['loop_lag']['max_ms']:.1f} ms")
    air_result = analyse([b.looks for b in record.bands], on_wire)
    _print(f"{bands} Bumble bands", air_result, cfg.delay_ms)
    t0 = time.monotonic()
    crowd = Crowd(key, 1, [zones[i % len(zones)] for i in range(crowd_size)], LOSS, seed=5)
    crowd.hear(record.on_air)
    print(f"  (crowd of {crowd_size} modelled in {time.monotonic() - t0:.1f} s)")
    crowd_result = analyse([b.looks for b in crowd.bands], on_wire)
    _print(f"{crowd_size} modelled bands", crowd_result, cfg.delay_ms)
    figures = []
    for label, r in ((f"{bands} Bumble bands", air_result), (f"{crowd_size} modelled", crowd_result)):
        figures += [
            Figure(f"live: sACN to band p50, {label} (30% loss)", percentile(r.latencies_ms, 50), "ms"),
            Figure(f"live: sACN to band p99, {label} (30% loss)", percentile(r.latencies_ms, 99), "ms",
                   TARGET_P99_MS),
            Figure(f"live: spread p99 (a band from the median), {label}", percentile(r.offsets_ms, 99), "ms",
                   TARGET_SPREAD_P99_MS),
            Figure(f"live: a look's largest minus smallest start p99, {label}", percentile(r.widths_ms, 99), "ms"),
            Figure(f"live: bands on a move's final look, {label}", 100 * r.final / r.pairs, "%", TARGET_FINAL_PCT,
                   "higher"),
        ]
    return figures


def run(bands: int = 24, crowd: int = 10_000, moves: int = MOVES, air_priority: int = AIR_PRIORITY) -> list[Figure]:
    title(f"Live: console fader (sACN at {FPS} Hz) to the demo daemon's patch and radio; {bands} Bumble bands and "
          f"{crowd} modelled, {LOSS:.0%} loss; {moves} moves")
    with tempfile.TemporaryDirectory(prefix="vg-bench-live-") as tmp:
        return asyncio.run(_run(Path(tmp), bands, crowd, moves, air_priority))


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__)
    parser.add_argument("--bands", type=int, default=24, help="virtual bands on the Bumble air (default 24)")
    parser.add_argument("--crowd", type=int, default=10_000, help="modelled bands (default 10000)")
    parser.add_argument("--moves", type=int, default=MOVES, help=f"fader moves (default {MOVES})")
    parser.add_argument("--air-priority", type=int, default=AIR_PRIORITY,
                        help=f"the virtual air's SCHED_FIFO priority, 0: ordinary (default {AIR_PRIORITY})")
    args = parser.parse_args()
    print(figures_table(run(args.bands, args.crowd, args.moves, args.air_priority)))


if __name__ == "__main__":
    main()
