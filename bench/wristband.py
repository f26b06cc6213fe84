"""Wristband sync: the real daemon (`venue-gateway run` on the demo configuration, virtual venue running) fires
presets by OSC; its radio driver speaks HCI over a pseudo-terminal to a Bumble controller hosted here, and
virtual bands (Bumble hosts scanning the same virtual link, 30% of advertisements lost each) start the effects
on their own drifting clocks. A crowd of 10,000 modelled bands then hears the same transmissions (the air's log)
through the same loss; once more with a modelled controller delay of 0-10 ms per advertising event (the worst a
real controller's advDelay could add). Figures: the spread of start times across bands, against each zone's
intended start, and the share of bands that started, per effect (the worst effect is reported)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder

from bench.common import (
    LOOPBACK,
    PYTHON,
    ROOT,
    Figure,
    child,
    exit_on_signals,
    figures_table,
    free_port,
    percentile,
    title,
    wait_until,
)
from drivers.sim.air import VirtualAir
from drivers.sim.crowd import Crowd, Sync, VirtualBand, sync
from drivers.wristband.protocol import decode
from drivers.wristband.radio import parse_key

TOKEN = "demo-viewer-token"
LOSS = 0.3
TARGET_SPREAD_MS = 5.0
TARGET_STARTED_PCT = 99.9
PRESETS = ("intro", "drop", "chorus", "sparkle", "encore")
BETWEEN_S = 1.5  # between effects: past the last zone's start and the copies' tail


def _config(directory: Path, api_port: int, osc_port: int, pty: Path) -> tuple[Path, bytes, dict[int, int]]:
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace('listen = "127.0.0.1:8080"', f'listen = "{LOOPBACK}:{api_port}"')
    text = text.replace('listen = "127.0.0.1:9000"', f'listen = "{LOOPBACK}:{osc_port}"')
    text = text.replace('data_dir = "../var/demo"', 'data_dir = "data"')
    text = text.replace('"/tmp/venue-gateway-air"', f'"{pty}"')
    text = text.replace('type = "air"\n', 'type = "air"\nenabled = false  # the benchmark hosts the air\n')
    text = text.replace('type = "ble"\n', 'type = "ble"\nenabled = false  # its room is the air driver\'s\n')
    path = directory / "gateway.toml"
    path.write_text(text)
    from gateway import config

    cfg = config.load(path)
    radio = next(d for d in cfg.drivers if d.type == "wristband")
    delays = {z.index: round(z.distance_m / cfg.show.speed_of_sound_m_s * 1000) for z in cfg.show.zones}
    return path, parse_key(radio.options.demo_key), delays


def _get(api_port: int, path: str) -> Any:
    req = urllib.request.Request(f"http://{LOOPBACK}:{api_port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _wall(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _worst(results: list[Sync]) -> tuple[float, float]:
    return max(r.spread_ms for r in results), min(100 * r.started / r.bands for r in results)


async def _measure(api_port: int, osc_port: int, air: VirtualAir, delays: dict[int, int]) -> list[tuple[int, dict[
        int, float]]]:
    """Fire each preset by OSC; (serial, zone -> intended start on this clock) for each."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fired: list[tuple[int, dict[int, float]]] = []
    try:
        for preset in PRESETS:
            before = {s for b in air.bands for s in b.starts}
            sock.sendto(OscMessageBuilder(f"/vg/preset/{preset}/fire").build().dgram, (LOOPBACK, osc_port))
            await asyncio.sleep(0.2)
            effect = (await asyncio.to_thread(_get, api_port, "/api/v1/twin/assets/show_control"))["reported"][
                "last_effect"]
            assert effect["preset"] == preset and effect["delivery"] == {"wristbands": "sending"}, effect
            to_mono = time.monotonic() - time.time()
            intended = {zone: _wall(effect["starts_at"]) + to_mono + delay / 1000 for zone, delay in delays.items()}
            await asyncio.sleep(BETWEEN_S)
            new = {s for b in air.bands for s in b.starts} - before
            assert len(new) == 1, f"{preset}: bands started {new}"
            fired.append((new.pop(), intended))
    finally:
        sock.close()
    return fired


def _stamp_to_air_ms(on_air: list[tuple[float, bytes]], key: bytes) -> list[float]:
    """How long after its stamp (the show clock in its sequence number) each copy was first on the air (Bumble's
    controller repeats a set every interval until it is disabled; bands ignore a repeat)."""
    to_wall = time.time() - time.monotonic()
    out, seen = [], set()
    for t, data in on_air:
        if data in seen:
            continue
        seen.add(data)
        packet = decode(data, key)
        out.append(((t + to_wall) * 1000 - packet.sequence) % 2**32)
    return out


async def _run(bands: int, crowd_size: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="vg-bench-wristband-") as tmp:
        directory = Path(tmp)
        api_port, osc_port, pty = free_port(), free_port(), directory / "hci"
        path, key, delays = _config(directory, api_port, osc_port, pty)
        zones = sorted(delays)
        air = VirtualAir(key, 1, loss=LOSS, seed=11)
        await air.open(str(pty), [zones[i % len(zones)] for i in range(bands)], record=True)
        try:
            with child([PYTHON, "-m", "gateway", "run", "--config", str(path)], directory / "daemon.log") as proc:
                def radio_running() -> bool:
                    health = _get(api_port, "/api/v1/health")
                    return bool(health["drivers"]["wristbands"]["state"] == "running")
                await asyncio.to_thread(wait_until, radio_running, 30, proc, "the radio running")
                fired = await _measure(api_port, osc_port, air, delays)
                radio = (await asyncio.to_thread(_get, api_port, "/api/v1/health"))["drivers"]["wristbands"]
        finally:
            await air.close()
    on_air = list(air.on_air)
    print(f"{len(fired)} effects fired by OSC; {len(on_air)} advertisements on the air "
          f"({radio['detail']['copies_sent']} copies, {radio['detail']['hci_commands']} HCI commands)")
    stamp = _stamp_to_air_ms(on_air, key)
    print(f"stamp to air: p50 {percentile(stamp, 50):.2f} ms, p99 {percentile(stamp, 99):.2f} ms, "
          f"max {max(stamp):.2f} ms (HCI over the pty, Bumble's controller, the virtual link)")

    def report(label: str, crowd: list[VirtualBand]) -> tuple[float, float]:
        results = [sync(crowd, serial, intended) for serial, intended in fired]
        for (serial, _), result in zip(fired, results, strict=True):
            doc = result.document()
            print(f"  {label}: effect {serial:3d}: {doc['started']}/{doc['bands']} started, spread "
                  f"{doc['spread_ms']:.2f} ms (error {doc['error_min_ms']:.2f} to {doc['error_max_ms']:.2f} ms)")
        return _worst(results)

    air_spread, air_started = report(f"{bands} Bumble bands", air.bands)
    modelled = Crowd(key, 1, [zones[i % len(zones)] for i in range(crowd_size)], LOSS, seed=5)
    began = time.monotonic()
    modelled.hear(on_air)
    print(f"(crowd of {crowd_size} modelled in {time.monotonic() - began:.1f} s)")
    crowd_spread, crowd_started = report(f"{crowd_size} modelled", modelled.bands)
    delayed = Crowd(key, 1, [zones[i % len(zones)] for i in range(crowd_size)], LOSS, controller_delay_ms=10.0,
                    seed=6)
    delayed.hear(on_air)
    worst_spread, worst_started = report(f"{crowd_size} modelled, 0-10 ms controller delay", delayed.bands)
    return [
        Figure(f"wristband spread, {bands} Bumble bands (30% loss)", air_spread, "ms", TARGET_SPREAD_MS),
        Figure(f"wristband started, {bands} Bumble bands", air_started, "%", TARGET_STARTED_PCT, "higher"),
        Figure(f"wristband spread, {crowd_size} modelled (30% loss)", crowd_spread, "ms", TARGET_SPREAD_MS),
        Figure(f"wristband started, {crowd_size} modelled", crowd_started, "%", TARGET_STARTED_PCT, "higher"),
        Figure("wristband spread, + 0-10 ms controller delay", worst_spread, "ms"),
        Figure("wristband started, + 0-10 ms controller delay", worst_started, "%", better="higher"),
        Figure("wristband copy stamp to air p99", percentile(stamp, 99), "ms"),
    ]


def run(bands: int = 24, crowd: int = 10_000) -> list[Figure]:
    title(f"Wristband sync: {len(PRESETS)} presets fired by OSC at the demo daemon; {bands} Bumble bands and "
          f"{crowd} modelled, {LOSS:.0%} loss")
    return asyncio.run(_run(bands, crowd))


def main() -> None:
    exit_on_signals()
    parser = argparse.ArgumentParser(prog="python -m bench.wristband", description=__doc__)
    parser.add_argument("--bands", type=int, default=24, help="virtual bands on the Bumble air (default 24)")
    parser.add_argument("--crowd", type=int, default=10_000, help="modelled bands (default 10000)")
    args = parser.parse_args()
    print(figures_table(run(args.bands, args.crowd)))


if __name__ == "__main__":
    main()
