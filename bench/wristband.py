"""Wristband sync: the real daemon (`venue-gateway run` on the demo configuration, virtual venue running) fires
presets by OSC; its radio driver speaks HCI over a pseudo-terminal to a Bumble controller, and virtual bands
(Bumble hosts scanning the same virtual link, 30% of advertisements lost each) start the effects on their own
drifting clocks; that air runs in a process of its own (bench/air_process.py), real-time above the daemon's loop,
as a radio chip answers whatever the host's cores do, and its trace times the controller's answers and the
gateway's turnaround within each copy. A crowd of 10,000 modelled bands then hears the same transmissions (the
air's log) through the same loss; once more with a modelled controller delay of 0-10 ms per advertising event
(the worst a real controller's advDelay could add). Then each preset once more, fired while the daemon drains a
cloud backlog of 3,000,000 readings to Mosquitto (one daemon per preset, the loop real-time as the example venue
runs it). Figures: the spread of start times across bands, against each zone's intended start, and the share of
bands that started, per effect (the worst effect is reported)."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder

from bench.air_process import AirProcess, HeardBand
from bench.backlog import broker, fill
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
from bench.daemon_probe import DaemonApi
from drivers.sim.crowd import Crowd, Started, Sync, VirtualBand, sync
from drivers.wristband import hci
from drivers.wristband.protocol import Effect, decode, show_key
from drivers.wristband.radio import parse_key
from peers.ports import LOOPBACK, free_port

TOKEN = "demo-viewer-token"
LOSS = 0.3
TARGET_SPREAD_MS = 5.0
TARGET_STARTED_PCT = 99.9
PRESETS = ("intro", "drop", "chorus", "sparkle", "encore")
BETWEEN_S = 1.5  # between effects: past the last zone's start and the copies' tail
DRAIN_READINGS = 3_000_000  # a backlog that drains for about a second, longer than an effect's copies are sent
DRAIN_WAIT_S = 60.0  # for the first and the last of that backlog to be acknowledged
# The virtual air's process: above the daemon's loop, as a radio chip answers whatever the host's cores do.
AIR_PRIORITY = REALTIME_PRIORITY + 10
DATA, ENABLE = {hci.LE_SET_EXT_ADV_DATA, hci.LE_SET_ADV_DATA}, {hci.LE_SET_EXT_ADV_ENABLE, hci.LE_SET_ADV_ENABLE}


@dataclass
class Round:
    """One daemon's effects: (serial, zone -> intended start) each, what the air carried, its Bumble bands, the
    HCI commands its radio took (opcode, read, answered), the show's key and the radio's health, the zones, how the loop
    ran; with a backlog, the wall-clock times of the first and last acknowledgement polled."""
    fired: list[tuple[int, dict[int, float]]]
    on_air: list[tuple[float, bytes]]
    bands: list[HeardBand]
    commands: list[tuple[int, float, float]]
    key: bytes
    radio: dict[str, Any]
    zones: list[int]
    scheduling: str
    air: str  # how the air's process ran
    drain: tuple[float, float] | None = None

    def crowd(self, size: int, seed: int, controller_delay_ms: float = 0.0) -> list[VirtualBand]:
        """A modelled crowd of `size` that heard what the air carried."""
        crowd = Crowd(self.key, 1, [self.zones[i % len(self.zones)] for i in range(size)], LOSS,
                      controller_delay_ms=controller_delay_ms, seed=seed)
        crowd.hear(self.on_air)
        return crowd.bands


def _report(label: str, rounds: list[Round], crowds: Sequence[Sequence[Started]]) -> tuple[float, float]:
    """Each effect's sync in the bands that heard its round, printed; the worst spread and started share."""
    results = []
    for r, crowd in zip(rounds, crowds, strict=True):
        for serial, intended in r.fired:
            result = sync(crowd, serial, intended)
            doc = result.document()
            print(f"  {label}: effect {serial:3d}: {doc['started']}/{doc['bands']} started, spread "
                  f"{doc['spread_ms']:.2f} ms (error {doc['error_min_ms']:.2f} to {doc['error_max_ms']:.2f} ms)")
            results.append(result)
    return _worst(results)


def _config(directory: Path, api_port: int, osc_port: int, pty: Path,
            broker_port: int | None = None) -> tuple[Path, bytes, dict[int, int]]:
    """The demo configuration on this run's ports; with `broker_port`, a cloud link to it (the backlog's outbox
    fits the store) and the loop real-time."""
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace('listen = "127.0.0.1:8080"', f'listen = "{LOOPBACK}:{api_port}"')
    text = text.replace('listen = "127.0.0.1:9000"', f'listen = "{LOOPBACK}:{osc_port}"')
    text = text.replace('data_dir = "../var/demo"', 'data_dir = "data"')
    text = text.replace('"/tmp/venue-gateway-air"', f'"{pty}"')
    text = text.replace('type = "air"\n', 'type = "air"\nenabled = false  # the benchmark hosts the air\n')
    text = text.replace('type = "ble"\n', 'type = "ble"\nenabled = false  # its room is the air driver\'s\n')
    text = re.sub(r"(?m)^\[cloud\]\n(?:[^\n]+\n)*", "", text)  # the demo's own cloud side is not this run's
    if broker_port is not None:
        text = text.replace('log_level = "info"', f'log_level = "info"\nrealtime_priority = {REALTIME_PRIORITY}')
        text = text.replace("max_mb = 256", "max_mb = 1024").replace("[drivers.osc]", f"""[cloud]
broker = "mqtt://{LOOPBACK}:{broker_port}"
outbox_max_mb = 512
backoff_initial_s = 0.05
backoff_max_s = 0.1

[drivers.osc]""")
    path = directory / "gateway.toml"
    path.write_text(text)
    from gateway import config

    cfg = config.load(path)
    radio = next(d for d in cfg.drivers if d.type == "wristband")
    delays = {z.index: round(z.distance_m / cfg.show.speed_of_sound_m_s * 1000) for z in cfg.show.zones}
    return path, show_key(parse_key(radio.options.demo_key), radio.options.show_id), delays


def _wall(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _worst(results: list[Sync]) -> tuple[float, float]:
    return max(r.spread_ms for r in results), min(100 * r.started / r.bands for r in results)


async def _measure(api: DaemonApi, osc_port: int, air: AirProcess, delays: dict[int, int],
                   presets: tuple[str, ...] = PRESETS) -> list[tuple[int, dict[int, float]]]:
    """Fire each preset by OSC; (serial, zone -> intended start on this clock) for each."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fired: list[tuple[int, dict[int, float]]] = []
    try:
        for preset in presets:
            before = await air.serials()
            sock.sendto(OscMessageBuilder(f"/vg/preset/{preset}/fire").build().dgram, (LOOPBACK, osc_port))
            await asyncio.sleep(0.2)
            effect = (await asyncio.to_thread(api.json, "/api/v1/twin/assets/show_control"))["reported"][
                "last_effect"]
            assert effect["preset"] == preset and effect["delivery"] == {"wristbands": "sending"}, effect
            to_mono = time.monotonic() - time.time()
            intended = {zone: _wall(effect["starts_at"]) + to_mono + delay / 1000 for zone, delay in delays.items()}
            await asyncio.sleep(BETWEEN_S)
            new = await air.serials() - before
            assert len(new) == 1, f"{preset}: bands started {new}"
            fired.append((new.pop(), intended))
    finally:
        sock.close()
    return fired


def _epoch_ms(r: Round) -> int:
    """The show's start on the show clock (wall-clock ms): what the copies' sequence numbers count from."""
    return int(r.radio["detail"]["show_epoch_ms"])


def _stamp_to_air_ms(r: Round) -> list[float]:
    """How long after its stamp (the show clock in its sequence number) each copy was first on the air (Bumble's
    controller repeats a set every interval until it is disabled; bands ignore a repeat)."""
    on_air, key, epoch = r.on_air, r.key, _epoch_ms(r)
    to_wall = time.time() - time.monotonic()
    out, seen = [], set()
    for t, data in on_air:
        if data in seen:
            continue
        seen.add(data)
        packet = decode(data, key)
        out.append((t + to_wall) * 1000 - epoch - packet.sequence)
    return out


def _hci_ms(rounds: list[Round]) -> tuple[list[float], list[float]]:
    """From the radio's trace of the copies (within the drain, for a round with one): how long the virtual
    controller took to answer each command, and how long from a copy's set data answered to its enable read (with
    the air real-time, the gateway's turnaround: its loop and the pty's two ways), in ms."""
    to_mono = time.monotonic() - time.time()
    answers, turnarounds = [], []
    for r in rounds:
        first, last = (r.drain[0] + to_mono, r.drain[1] + to_mono) if r.drain else (-math.inf, math.inf)
        copies = [(opcode, read, answered) for opcode, read, answered in r.commands
                  if opcode in DATA | ENABLE and first <= read <= last and not math.isnan(answered)]
        answers += [(answered - read) * 1000 for _, read, answered in copies]
        turnarounds += [(read - answered) * 1000 for (before, _, answered), (opcode, read, _)
                        in itertools.pairwise(copies) if opcode in ENABLE and before in DATA]
    return answers, turnarounds


def _print_hci(label: str, rounds: list[Round]) -> tuple[float, float]:
    """The trace's two shares printed; their p99s."""
    answers, turnarounds = _hci_ms(rounds)
    for what, ms in (("virtual controller's answer", answers), ("gateway's turnaround", turnarounds)):
        print(f"{label}: {what}: p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
              f"max {max(ms):.2f} ms ({len(ms)} measured)")
    return percentile(answers, 99), percentile(turnarounds, 99)


async def _within(event: asyncio.Event, seconds: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        raise RuntimeError(f"not {what} within {seconds:g} s (the daemon {'runs' if proc.poll() is None else 'exited'}"
                           "; see its log)") from None


async def _round(directory: Path, bands: int, presets: tuple[str, ...], air_priority: int, backlog: int = 0) -> Round:
    """The demo daemon with its own Bumble air firing `presets`; with a `backlog` of readings in its outbox,
    offline until Mosquitto starts, the presets fired once the first of it is acknowledged."""
    api_port, osc_port, broker_port, pty = free_port(), free_port(), free_port(), directory / "hci"
    path, key, delays = _config(directory, api_port, osc_port, pty, broker_port if backlog else None)
    zones = sorted(delays)
    api = DaemonApi(f"http://{LOOPBACK}:{api_port}", TOKEN)
    if backlog:
        await asyncio.to_thread(fill, directory / "data", backlog, ("demo-01", "demo-hall"))
    air = AirProcess(key, 1, LOSS, 11, air_priority)
    await air.open(pty, [zones[i % len(zones)] for i in range(bands)], directory / "air.log")
    sent: list[tuple[float, int]] = []  # (wall time, readings the broker has acknowledged), polled
    acknowledged, drained = asyncio.Event(), asyncio.Event()  # the first of the backlog; all of it

    async def poll() -> None:
        while True:
            health = await asyncio.to_thread(api.health)
            sent.append((time.time(), health["services"]["cloud"]["detail"]["sent"]["readings"]))
            if sent[-1][1] > 0:
                acknowledged.set()
            if sent[-1][1] >= backlog:
                drained.set()
            await asyncio.sleep(0.05)

    try:
        with child([PYTHON, "-m", "gateway", "run", "--config", str(path)], directory / "daemon.log") as proc:
            def radio_running() -> bool:
                health = api.health()
                return bool(health["drivers"]["wristbands"]["state"] == "running")
            await asyncio.to_thread(wait_until, radio_running, 30, proc, "the radio running")
            if backlog:
                with broker(directory / "broker", broker_port):
                    polling = asyncio.create_task(poll())
                    try:
                        await _within(acknowledged, DRAIN_WAIT_S, "the first of the backlog acknowledged", proc)
                        fired = await _measure(api, osc_port, air, delays, presets)
                        await _within(drained, DRAIN_WAIT_S, "the whole backlog acknowledged", proc)
                    finally:
                        polling.cancel()
            else:
                fired = await _measure(api, osc_port, air, delays, presets)
            health = await asyncio.to_thread(api.health)
        record = await air.close()
    finally:
        await air.stop()
    # from the poll before the first acknowledgement to the first poll that saw the whole backlog
    drain = (next(t for t, n in sent if n > 0) - 0.05, next(t for t, n in sent if n >= backlog)) if backlog else None
    return Round(fired, record.on_air, record.bands, record.commands, key, health["drivers"]["wristbands"], zones,
                 health["scheduling"], air.scheduling, drain)


async def _run(bands: int, crowd_size: int, drain: bool, air_priority: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="vg-bench-wristband-") as tmp:
        quiet = await _round(Path(tmp), bands, PRESETS, air_priority)
    print(f"{len(quiet.fired)} effects fired by OSC; {len(quiet.on_air)} advertisements on the air "
          f"({quiet.radio['detail']['copies_sent']} copies, {quiet.radio['detail']['hci_commands']} HCI commands)")
    stamp = _stamp_to_air_ms(quiet)
    print(f"stamp to air: p50 {percentile(stamp, 50):.2f} ms, p99 {percentile(stamp, 99):.2f} ms, "
          f"max {max(stamp):.2f} ms (HCI over the pty, Bumble's controller, the virtual link; the air's process: "
          f"{quiet.air})")
    quiet_hci = _print_hci("quiet", [quiet])
    air_spread, air_started = _report(f"{bands} Bumble bands", [quiet], [quiet.bands])
    began = time.monotonic()
    crowd = quiet.crowd(crowd_size, 5)
    print(f"(crowd of {crowd_size} modelled in {time.monotonic() - began:.1f} s)")
    crowd_spread, crowd_started = _report(f"{crowd_size} modelled", [quiet], [crowd])
    worst_spread, worst_started = _report(f"{crowd_size} modelled, 0-10 ms controller delay", [quiet],
                                          [quiet.crowd(crowd_size, 6, 10.0)])
    figures = [
        Figure(f"wristband spread, {bands} Bumble bands (30% loss)", air_spread, "ms", TARGET_SPREAD_MS),
        Figure(f"wristband started, {bands} Bumble bands", air_started, "%", TARGET_STARTED_PCT, "higher"),
        Figure(f"wristband spread, {crowd_size} modelled (30% loss)", crowd_spread, "ms", TARGET_SPREAD_MS),
        Figure(f"wristband started, {crowd_size} modelled", crowd_started, "%", TARGET_STARTED_PCT, "higher"),
        Figure("wristband spread, + 0-10 ms controller delay", worst_spread, "ms"),
        Figure("wristband started, + 0-10 ms controller delay", worst_started, "%", better="higher"),
        Figure("wristband copy stamp to air p99", percentile(stamp, 99), "ms"),
    ]
    if drain:
        # each drain round fires one effect on bands that have just heard the daemon: the quiet run's first
        # effect is the like-for-like peer (the later ones include 1.5-6 s more of the bands' crystal drift)
        first = quiet.fired[0]
        figures += await _while_draining(bands, crowd_size, sync(quiet.bands, *first).spread_ms,
                                         sync(crowd, *first).spread_ms, percentile(stamp, 99), quiet_hci,
                                         air_priority)
    return figures


async def _while_draining(bands: int, crowd_size: int, quiet_air: float, quiet_crowd: float,
                          quiet_stamp: float, quiet_hci: tuple[float, float], air_priority: int) -> list[Figure]:
    """Each preset fired by a daemon of its own while it drains a cloud backlog (an uncapped drain is over in
    about a second, so one effect a drain); the spreads against the quiet daemon's first effect, the radio's
    trace against the quiet daemon's."""
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="vg-bench-wristband-drain-") as tmp:
        for i, preset in enumerate(PRESETS):
            directory = Path(tmp) / str(i)
            directory.mkdir()
            r = await _round(directory, bands, (preset,), air_priority, DRAIN_READINGS)
            shutil.rmtree(directory, ignore_errors=True)  # some 300 MB of outbox, not left to the next round's disk
            assert r.drain is not None
            first, last = (round(t * 1000) for t in r.drain)
            serial = r.fired[0][0]  # its copies, not the heartbeats (which carry the last effect's serial too)
            stamps = {_epoch_ms(r) + p.sequence for p in (decode(data, r.key) for _, data in r.on_air)  # show clock
                      if p.serial == serial and p.effect != Effect.HEARTBEAT}
            during = sum(1 for stamp in stamps if first <= stamp <= last)
            print(f"round {i + 1}/{len(PRESETS)}: {preset} fired while {DRAIN_READINGS:,} readings drained in about "
                  f"{r.drain[1] - r.drain[0]:.2f} s (health polled every 50 ms); {during} of its {len(stamps)} "
                  f"copies stamped within the drain; the daemon's loop: {r.scheduling}; the air's: {r.air}")
            rounds.append(r)
    air_spread, air_started = _report(f"{bands} Bumble bands, draining", rounds, [r.bands for r in rounds])
    crowd_spread, crowd_started = _report(f"{crowd_size} modelled, draining", rounds,
                                          [r.crowd(crowd_size, 5 + i) for i, r in enumerate(rounds)])
    stamp = [ms for r in rounds for ms in _stamp_to_air_ms(r)]
    print(f"stamp to air while draining: p50 {percentile(stamp, 50):.2f} ms, p99 {percentile(stamp, 99):.2f} ms, "
          f"max {max(stamp):.2f} ms")
    answer, turnaround = _print_hci("draining", rounds)
    loop = "/".join(sorted({r.scheduling.split(":")[0] for r in rounds}))
    return [
        Figure(f"wristband spread while draining (loop {loop}), {bands} Bumble bands", air_spread, "ms",
               TARGET_SPREAD_MS, peer=quiet_air, peer_label="no drain, 1st effect"),
        Figure(f"wristband started while draining, {bands} Bumble bands", air_started, "%", TARGET_STARTED_PCT,
               "higher"),
        Figure(f"wristband spread while draining, {crowd_size} modelled", crowd_spread, "ms", TARGET_SPREAD_MS,
               peer=quiet_crowd, peer_label="no drain, 1st effect"),
        Figure(f"wristband started while draining, {crowd_size} modelled", crowd_started, "%",
               TARGET_STARTED_PCT, "higher"),
        Figure("wristband copy stamp to air p99, draining", percentile(stamp, 99), "ms", peer=quiet_stamp,
               peer_label="no drain"),
        Figure("radio: gateway's HCI turnaround p99, draining", turnaround, "ms", peer=quiet_hci[1],
               peer_label="no drain"),
        Figure("radio: virtual controller's answer p99, draining", answer, "ms", peer=quiet_hci[0],
               peer_label="no drain"),
    ]


def run(bands: int = 24, crowd: int = 10_000, drain: bool = True, air_priority: int = AIR_PRIORITY) -> list[Figure]:
    title(f"Wristband sync: {len(PRESETS)} presets fired by OSC at the demo daemon; {bands} Bumble bands and "
          f"{crowd} modelled, {LOSS:.0%} loss" + (f"; then each fired while a {DRAIN_READINGS:,}-reading cloud "
                                                    "backlog drains" if drain else ""))
    if drain and shutil.which("mosquitto") is None:
        print("NOT MEASURED while draining: needs the Debian package mosquitto (make peers installs it)")
        drain = False
    return asyncio.run(_run(bands, crowd, drain, air_priority))


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.wristband", description=__doc__)
    parser.add_argument("--bands", type=int, default=24, help="virtual bands on the Bumble air (default 24)")
    parser.add_argument("--crowd", type=int, default=10_000, help="modelled bands (default 10000)")
    parser.add_argument("--no-drain", action="store_true", help="skip the rounds fired while a backlog drains")
    parser.add_argument("--air-priority", type=int, default=AIR_PRIORITY,
                        help=f"the virtual air's SCHED_FIFO priority, 0: ordinary (default {AIR_PRIORITY})")
    args = parser.parse_args()
    print(figures_table(run(args.bands, args.crowd, not args.no_drain, args.air_priority)))


if __name__ == "__main__":
    main()
