"""The timecode cue list in the gateway (its engine, twin and HTTP API, in process): timecode frames fed at their
instants; cues start exactly at their labels, fired ahead by the show's lead; a jump skips what it passes over and
a jump back runs it again; timecode that stops freezes the list; arm, fire and skip over HTTP; the file checked as
check-config checks it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import config
from gateway.api.app import build_app
from gateway.api.auth import Tokens
from gateway.config import ConfigError
from gateway.daemon import Gateway
from gateway.show.engine import Fired, ShowEngine
from gateway.show.timecode import Rate, Timecode
from gateway.twin import Twin

VIEWER, OPERATOR = "v-token-123", "o-token-123"
AUTH = {t: {"Authorization": f"Bearer {t}"} for t in (VIEWER, OPERATOR)}
CONFIG = """
[gateway]
id = "gw"
venue = "hall"
data_dir = "data"

[show]
lead_ms = 200

[show.cues]
file = "cues.toml"
rate = "25"

[[show.zones]]
name = "floor"
index = 0

[[show.zones]]
name = "balcony"
index = 1
distance_m = 34.3

[[show.presets]]
name = "intro"
kind = "solid"
colour = "#1e50ff"
"""
CUES = """
[[cues]]
id = "one"
timecode = "01:00:01:00"
preset = "intro"
zones = ["floor"]

[[cues]]
id = "two"
timecode = "01:00:01:15"
effect = { kind = "solid", colour = "#ff0000" }
zones = ["balcony"]

[[cues]]
id = "three"
timecode = "01:00:02:00"
preset = "intro"

[[cues]]
id = "spare"
timecode = "01:00:00:05"
preset = "intro"
armed = false
"""
START = Timecode(1, 0, 0, 0, Rate.EBU)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    (tmp_path / "cues.toml").write_text(CUES)
    gw = Gateway(config.parse(tmp_path / "gw.toml", CONFIG), Tokens([]))
    await gw.store.open(gw.twin)
    yield gw
    await gw.store.close(gw.twin)


class Console:
    """Timecode frames at their instants on the monotonic clock, as a console sends them (25 fps)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.fired: list[Fired] = []
        gw.show.on_fire(self.fired.append)

    async def run(self, start: Timecode, frames: int) -> float:
        """Send `frames` frames from `start`; the monotonic instant of `start`."""
        t0 = time.monotonic() + 0.005
        for k in range(frames):
            await asyncio.sleep(max(0.0, t0 + k * Rate.EBU.frame_s - time.monotonic()))
            self.gw.show.cues.timecode(Timecode.of_frame(start.frame() + k, Rate.EBU), time.monotonic())
        return t0 - start.position()  # the monotonic time of 00:00:00:00 on this run


def states(gw: Gateway) -> dict[str, str]:
    return {c["id"]: c["state"] for c in gw.show.cues.document()["cues"]}


async def test_cues_start_at_their_timecode_fired_ahead_by_the_lead(gateway: Gateway) -> None:
    console = Console(gateway)
    assert states(gateway) == {"spare": "disarmed", "one": "next", "two": "armed", "three": "armed"}
    zero = await console.run(Timecode(1, 0, 0, 12, Rate.EBU), 44)  # 01:00:00:12 to 01:00:02:05
    by_zone = {f.zones: f for f in console.fired}
    assert [f.zones for f in console.fired] == [("floor",), ("balcony",), ("floor", "balcony")]
    for fired, label in zip(console.fired, ("01:00:01:00", "01:00:01:15", "01:00:02:00"), strict=True):
        instant = zero + Timecode.parse(label, Rate.EBU).position()
        assert abs(fired.start_mono - instant) < 0.003, (label, fired.start_mono - instant)
        assert 200 <= fired.lead_ms <= 260  # at least the show's lead
    assert by_zone[("balcony",)].groups[0].delay_ms == 100  # the zone still starts with the sound's travel
    doc = gateway.show.cues.document()
    assert doc["state"] == "running" and doc["timecode"] == "01:00:02:05" and doc["rate"] == "25"
    assert states(gateway) == {"spare": "disarmed", "one": "fired", "two": "fired", "three": "fired"}
    await asyncio.sleep(0.5)  # no frame for 5 frame periods: stopped
    assert gateway.show.cues.state() == "stopped"
    reported = gateway.twin.get("cue_list").reported  # type: ignore[union-attr]
    assert reported["state"] == "stopped" and reported["cues"]["three"] == "fired"


async def test_a_jump_skips_what_it_passes_a_jump_back_runs_it_again_and_a_stop_freezes(gateway: Gateway) -> None:
    console = Console(gateway)
    await console.run(START, 10)
    zero = await console.run(Timecode.parse("01:00:01:17", Rate.EBU), 10)  # a seek past one and two
    assert gateway.show.cues.counts["jumps"] == 1
    assert [f.zones for f in console.fired] == [("floor", "balcony")]  # three only
    assert abs(console.fired[0].start_mono - (zero + 3602.0)) < 0.003
    assert states(gateway)["one"] == states(gateway)["two"] == "skipped"

    await console.run(Timecode.parse("01:00:00:10", Rate.EBU), 8)  # back: what it had passed is pending again
    assert states(gateway) == {"spare": "disarmed", "one": "next", "two": "armed", "three": "armed"}
    await asyncio.sleep(0.3)  # the timecode stops at 01:00:00:17, 330 ms before one
    assert gateway.show.cues.state() == "stopped" and len(console.fired) == 1  # frozen: nothing fired
    zero = await console.run(Timecode.parse("01:00:00:18", Rate.EBU), 12)  # resumes where it stopped
    assert len(console.fired) == 2 and abs(console.fired[1].start_mono - (zero + 3601.0)) < 0.003


async def test_bad_frames_are_dropped_and_counted(gateway: Gateway) -> None:
    cues = gateway.show.cues
    cues.timecode(Timecode(1, 0, 0, 25, Rate.EBU), time.monotonic())
    cues.timecode(Timecode(0, 1, 0, 0, Rate.DF), time.monotonic())
    cues.timecode("01:00:00:00", time.monotonic())  # type: ignore[arg-type]
    assert cues.counts["dropped"] == 3 and cues.counts["frames"] == 0 and cues.state() == "waiting"


@pytest.fixture
async def client(gateway: Gateway, aiohttp_client: Any) -> TestClient[Any, Any]:
    c: TestClient[Any, Any] = await aiohttp_client(build_app(gateway, Tokens([(VIEWER, "viewer"),
                                                                              (OPERATOR, "operator")])))
    return c


async def test_arm_fire_and_skip_over_http(client: TestClient[Any, Any], gateway: Gateway) -> None:
    resp = await client.get("/api/v1/cues", headers=AUTH[VIEWER])
    doc = await resp.json()
    assert resp.status == 200 and doc["state"] == "waiting" and doc["next"] == "one" and len(doc["cues"]) == 4
    assert (await client.post("/api/v1/cues/spare/arm", headers=AUTH[VIEWER])).status == 403
    resp = await client.post("/api/v1/cues/spare/arm", headers=AUTH[OPERATOR])
    assert resp.status == 200 and (await resp.json())["next"] == "spare"
    resp = await client.post("/api/v1/cues/spare/skip", headers=AUTH[OPERATOR])
    assert resp.status == 200 and (await resp.json())["next"] == "one"
    resp = await client.post("/api/v1/cues/one/fire", headers=AUTH[OPERATOR])
    fired = await resp.json()
    assert resp.status == 202 and fired["cue"] == "one" and fired["zones"] == ["floor"] and fired["effect_id"]
    assert gateway.show.last is not None and gateway.show.last.effect_id == fired["effect_id"]
    resp = await client.post("/api/v1/cues/one/skip", headers=AUTH[OPERATOR])
    assert resp.status == 409 and (await resp.json())["error"] == "cue_conflict"
    resp = await client.post("/api/v1/cues/three/fire", headers=AUTH[OPERATOR])  # the floor again, at once
    assert resp.status == 429 and (await resp.json())["error"] == "too_soon" and resp.headers["Retry-After"]
    resp = await client.post("/api/v1/cues/nope/fire", headers=AUTH[OPERATOR])
    assert resp.status == 404 and (await resp.json())["error"] == "unknown_cue"
    assert states(gateway) == {"spare": "skipped", "one": "fired", "two": "next", "three": "armed"}


def test_check_config_checks_the_cue_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "cues.toml").write_text("""
[[cues]]
id = "a"
timecode = "01:00:00:25"
preset = "outro"

[[cues]]
id = "a"
timecode = "01:00:01:00"
effect = { kind = "strobe", bpm = 600 }
zones = ["roof"]

[[cues]]
id = "b"
timecode = "01:00:01:05"
preset = "intro"
effect = { kind = "solid" }

[[cues]]
id = "c"
timecode = "01:00:01:02"
preset = "intro"

[[cues]]
id = "d"
timecode = "01:00:01:04"
effect = { kind = "solid" }
zones = ["floor"]
""")
    with pytest.raises(ConfigError) as caught:
        config.parse(tmp_path / "gw.toml", CONFIG, box=True)
    assert [str(p) for p in caught.value.problems] == [
        "show.cues.file: cues.toml: cues[0].timecode: frames 25 is out of range at 25 fps (allowed: 0 to 24)",
        "show.cues.file: cues.toml: cues[0].preset: no preset 'outro' (allowed: intro)",
        "show.cues.file: cues.toml: cues[1].id: 'a' is given twice (allowed: each id once)",
        "show.cues.file: cues.toml: cues[1].zones: no zone 'roof' (allowed: floor, balcony)",
        "show.cues.file: cues.toml: cues[1].effect: strobe at 10 flashes a second is over show.max_flash_hz 3 "
        "(allowed: period_ms 334 or more, or bpm 179.6 or less)",
        "show.cues.file: cues.toml: cues[2].preset: give a preset or an inline effect, not both",
        "show.cues.file: cues.toml: cues[4].timecode: zone floor: 80 ms after cues[3] is over show.max_flash_hz 3 "
        "(allowed: one effect every 333 ms in a zone)"]
    (tmp_path / "cues.toml").unlink()
    with pytest.raises(ConfigError) as caught:
        config.parse(tmp_path / "gw.toml", CONFIG, box=True)
    assert [str(p) for p in caught.value.problems] == [
        f"show.cues.file: the cue list {tmp_path}/cues.toml does not exist (allowed: the path of a readable file)"]
    os.mkfifo(tmp_path / "cues.toml")  # a FIFO no one writes: named, never opened (it would wait for ever)
    with pytest.raises(ConfigError) as caught:
        config.parse(tmp_path / "gw.toml", CONFIG, box=True)
    assert [str(p) for p in caught.value.problems] == [
        f"show.cues.file: the cue list {tmp_path}/cues.toml is not a regular file (allowed: the path of a readable "
        "file)"]


def test_without_a_rate_the_labels_are_read_at_the_timecodes(tmp_path: Path) -> None:
    """A label that is not one at the timecode's rate is refused, and taken again when the rate changes."""
    (tmp_path / "cues.toml").write_text('[[cues]]\nid = "late"\ntimecode = "01:00:09:27"\npreset = "intro"\n')
    engine = ShowEngine(config.parse(tmp_path / "gw.toml", CONFIG.replace('rate = "25"\n', "")).show,
                        Twin("gw", "hall"))
    engine.cues.load(tmp_path)
    assert engine.cues.document()["rate"] is None and states_of(engine) == {"late": "next"}
    engine.cues.timecode(Timecode(1, 0, 0, 0, Rate.EBU), time.monotonic())
    doc = engine.cues.document()
    assert doc["rate"] == "25" and doc["cues"][0]["state"] == "refused"
    assert doc["cues"][0]["why"] == "frames 27 is out of range at 25 fps (allowed: 0 to 24)"
    engine.cues.timecode(Timecode(1, 0, 1, 0, Rate.SMPTE), time.monotonic())
    assert engine.cues.document()["rate"] == "30" and states_of(engine) == {"late": "next"}


def states_of(engine: ShowEngine) -> dict[str, str]:
    return {c["id"]: c["state"] for c in engine.cues.document()["cues"]}


def test_a_timecode_at_another_rate_than_the_lists_is_said_plainly(tmp_path: Path) -> None:
    (tmp_path / "cues.toml").write_text(CUES)
    engine = ShowEngine(config.parse(tmp_path / "gw.toml", CONFIG).show, Twin("gw", "hall"))
    engine.cues.load(tmp_path)
    engine.cues.timecode(Timecode(1, 0, 0, 0, Rate.SMPTE), time.monotonic())
    doc = engine.cues.document()
    assert (doc["rate"], doc["timecode_rate"]) == ("25", "30")
    assert doc["problem"] == ("the timecode arrives at 30 fps but show.cues.rate is 25: the cues' labels are read at "
                              "25 fps")
    engine.cues.timecode(Timecode(1, 0, 0, 1, Rate.EBU), time.monotonic())
    assert engine.cues.document()["problem"] is None


def test_a_cue_the_show_refused_is_pending_again_after_a_jump_back(tmp_path: Path) -> None:
    (tmp_path / "cues.toml").write_text(CUES)
    engine = ShowEngine(config.parse(tmp_path / "gw.toml", CONFIG).show, Twin("gw", "hall"))
    engine.cues.load(tmp_path)
    engine.fire("intro", zones=["floor"], lead_ms=100)  # by hand, 100 ms before 'one' would start there
    now = time.monotonic()
    engine.cues.timecode(Timecode(1, 0, 0, 20, Rate.EBU), now)  # 'one' is 200 ms on: fired at once, and refused
    assert states_of(engine)["one"] == "refused"
    back = Timecode(1, 0, 0, 0, Rate.EBU)  # a seek back 800 ms: two frames that agree
    engine.cues.timecode(back, now + 0.04)
    engine.cues.timecode(Timecode.of_frame(back.frame() + 1, Rate.EBU), now + 0.08)
    assert engine.cues.counts["jumps"] == 1 and states_of(engine)["one"] == "next"
