"""Several boxes, one show, over a real Mosquitto: gateways in this process (each its own engine, twin, store, API
and, where it matters, a wristband radio on its own virtual controller) joined by `[show.shared]`. An effect fired
over HTTP on one is carried by the others with the same id, serial and start; a live look likewise; serials come
from each box's block; the show's earliest epoch is adopted; a box killed is marked lost; a box that joins
mid-show carries what still counts down; malformed and foreign messages are dropped and counted; the clock gate
stops the radio."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.sim.air import VirtualAir
from drivers.wristband.protocol import WristbandPacket, decode_any, show_key
from gateway import config as configuration
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.driver import Look
from gateway.show.shared import SharedShow
from peers.mosquitto import Mosquitto
from tests.cloud import until
from tests.conftest import ADMIN, OPERATOR, VIEWER, Daemon, free_port
from tests.fixtures import mosquitto  # noqa: F401  (a fixture)

VENUE = "arena"
KEY_HEX = "000102030405060708090a0b0c0d0e0f"
KEY = show_key(bytes.fromhex(KEY_HEX), 7)


def box_config(directory: Path, box: str, broker: str, boxes: list[str], *, pty: Path | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    radio = "" if pty is None else f"""
[drivers.radio]
type = "wristband"
port = "{pty}"
demo_key = "{KEY_HEX}"
show_id = 7
command_timeout_s = 0.5
"""
    path = directory / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "{box}"
venue = "{VENUE}"
data_dir = "data"

[api]
listen = "127.0.0.1:{free_port()}"

[[api.tokens]]
role = "viewer"
demo_token = "{VIEWER}"

[[api.tokens]]
role = "operator"
demo_token = "{OPERATOR}"

[store]
max_mb = 64

[supervisor]
backoff_initial_s = 0.1
backoff_max_s = 0.3

[show]
lead_ms = 600

[[show.zones]]
name = "floor"
index = 0

[[show.zones]]
name = "balcony"
index = 1
distance_m = 34.3

[[show.presets]]
name = "drop"
kind = "pulse"
colour = "#ff0000"
bpm = 60

[show.live]
delay_ms = 50

[show.shared]
brokers = ["{broker}"]
boxes = {json.dumps(boxes)}
backoff_initial_s = 0.05
backoff_max_s = 0.2
keepalive_s = 1
silence_s = 1.0
clock_interval_s = 0.2
{radio}""")
    return path


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Gateway]:
    """A gateway on `path`, in this loop, on the show's bus, until the block ends."""
    gw = Gateway(configuration.load(path), Tokens([(VIEWER, "viewer"), (OPERATOR, "operator"), (ADMIN, "admin")]))
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await until(lambda: (gw.shared is not None and gw.shared.state == "online") or task.done(), 10, "the bus")
        if task.done():
            task.result()
        yield gw
    finally:
        stop.set()
        await task


def shared(gw: Gateway) -> SharedShow:
    assert gw.shared is not None
    return gw.shared


async def fire(gw: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/v1/effects on the box's own API, as a console or the dashboard does."""
    url = f"http://{gw.config.api.listen}/api/v1/effects"

    def post() -> dict[str, Any]:
        request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {OPERATOR}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 202
            return dict(json.loads(answer.read()))

    return await asyncio.to_thread(post)


def carried(gw: Gateway, effect_id: str) -> Any:
    return next((f for f in gw.show.recent if f.effect_id == effect_id), None)


async def test_an_effect_fired_on_one_box_is_carried_by_the_others_with_its_id_serial_and_start(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    boxes = ["a", "b"]
    async with running(box_config(tmp_path / "a", "a", mosquitto.url, boxes)) as a, \
            running(box_config(tmp_path / "b", "b", mosquitto.url, boxes)) as b:
        await until(lambda: shared(a).peers["b"].state == "online" and shared(b).peers["a"].state == "online", 5,
                    "the boxes to hear each other")
        answer = await fire(a, {"preset": "drop"})
        assert answer["delivery"] == {"shared": "shared"}
        fired_a = carried(a, answer["effect_id"])
        fired_b = await until(lambda: carried(b, answer["effect_id"]), 5, "the effect on b")
        assert (fired_b.serial, fired_b.groups, fired_b.origin) == (fired_a.serial, fired_a.groups, "a")
        assert fired_b.starts_at == pytest.approx(fired_a.starts_at, abs=0.001)
        assert fired_b.delivery == {"shared": "carried from a"}
        last = b.twin.get("show_control")
        assert last is not None and last.reported["last_effect"]["origin"] == "a"
        assert shared(b).peers["a"].carried == 1 and shared(a).peers["b"].carried == 0  # not published again
        # Each box counts within its own block of the 256: a has 0-127, b 128-255.
        serials = {"a": [fired_a.serial], "b": []}
        for i in range(3):
            for name, gw, zone in (("a", a, "floor"), ("b", b, "balcony")):
                got = await fire(gw, {"effect": {"kind": "solid", "colour": "#0000ff"}, "zones": [zone],
                                      "lead_ms": 1000 + 400 * i})
                serials[name].append(carried(gw, got["effect_id"]).serial)
                await until(lambda got=got, gw=gw: carried(b if gw is a else a, got["effect_id"]), 5, "carried")
        assert all(s < 128 for s in serials["a"]) and all(s >= 128 for s in serials["b"]), serials
        # A local effect too near one fired on another box is refused: the carried one is in the flash cap's book.
        status, body = await asyncio.to_thread(_post_raw, b, {"preset": "drop", "zones": ["floor"], "lead_ms": 1900})
        assert status == 429 and "from the last one there" in body, (status, body)
        twin = b.twin.get("shared_show")
        assert twin is not None and twin.reported["boxes"]["a"]["state"] == "online"


def _post_raw(gw: Gateway, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{gw.config.api.listen}/api/v1/effects", json.dumps(body).encode(),
                                     method="POST", headers={"Authorization": f"Bearer {OPERATOR}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
