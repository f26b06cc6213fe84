"""Several boxes, one show, over a real Mosquitto: gateways in this process (each its own engine, twin, store, API
and, where it matters, a wristband radio on its own virtual controller) joined by `[show.shared]`. An effect fired
over HTTP on one is carried by the others with the same id, serial and start; a live look likewise; serials come
from each box's block; the show's earliest epoch is adopted; a box killed is marked lost; a box that joins
mid-show carries what still counts down; malformed and foreign messages are dropped and counted; the clock gate
stops the radio."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.sim.air import VirtualAir
from drivers.wristband.protocol import WristbandPacket, decode_any, show_key
from drivers.wristband.radio import RadioOptions, WristbandRadio
from gateway import config as configuration
from gateway.alerts import Alerts
from gateway.api.auth import Tokens
from gateway.cloud.client import Client, PublishRefused
from gateway.daemon import Gateway
from gateway.dmx import FrameClock
from gateway.driver import DriverContext, Look
from gateway.show import shared_messages as msg
from gateway.show.engine import ShowEngine
from gateway.show.settings import ShowSection, ShowZone
from gateway.show.shared import SharedShow
from gateway.twin import Twin
from peers.mosquitto import Mosquitto
from tests.cloud import until
from tests.conftest import ADMIN, OPERATOR, ROOT, VIEWER, Daemon, free_port
from tests.fixtures import mosquitto  # noqa: F401  (a fixture)

VENUE = "arena"
KEY_HEX = "000102030405060708090a0b0c0d0e0f"
KEY = show_key(bytes.fromhex(KEY_HEX), 7)


def find_faketime() -> str | None:
    """libfaketime's preload library wherever this system keeps it: the dynamic linker's cache (`ldconfig -p`), then
    the directories the distributions install it in (Debian's multiarch `/usr/lib/<triplet>/faketime/`, Fedora's
    `/usr/lib64/faketime/`, a build's `/usr/local/lib/faketime/`)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=5).stdout
        for line in cache.splitlines():
            if line.strip().startswith("libfaketime.so.1 ") and "=>" in line:
                return line.split("=>", 1)[1].strip()
    patterns = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib*/faketime/libfaketime.so.1",
                "/usr/local/lib*/faketime/libfaketime.so.1", "/usr/local/lib/*/faketime/libfaketime.so.1")
    found = sorted(path for pattern in patterns for path in glob.glob(pattern))
    return found[0] if found else None


FAKETIME = find_faketime()
NO_FAKETIME = "libfaketime is not installed (Debian's and Ubuntu's package faketime, Fedora's libfaketime)"
# A box's wall clock 5 ms ahead, its monotonic clock left alone (empty without libfaketime: tests that need it skip)
SKEW = {} if FAKETIME is None else {"FAKETIME": "+0.005", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "LD_PRELOAD": FAKETIME}


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
        serials: dict[str, list[int]] = {"a": [fired_a.serial], "b": []}
        for i in range(3):
            for name, gw, zone in (("a", a, "floor"), ("b", b, "balcony")):
                got = await fire(gw, {"effect": {"kind": "solid", "colour": "#0000ff"}, "zones": [zone],
                                      "lead_ms": 1000 + 400 * i})
                serials[name].append(carried(gw, got["effect_id"]).serial)
                await until(functools.partial(carried, b if gw is a else a, got["effect_id"]), 5, "the effect carried")
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


def wall(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


async def asked(daemon: Daemon, path: str, check: Callable[[Any], bool], seconds: float = 5) -> Any:
    """GET `path` from a daemon until `check` holds of it."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError):
            doc = await asyncio.to_thread(daemon.get, path)
            if check(doc):
                return doc
        assert time.monotonic() < deadline, f"{path} never as expected"
        await asyncio.sleep(0.05)


def radio(gw: Gateway) -> Any:
    unit = gw.supervisor.units["radio"].unit
    assert unit is not None
    return unit


def starts(air: VirtualAir, effect_serial: int, epoch_ms: int) -> set[int]:
    """The absolute starts (show_ms) that the copies on `air` of the effect of `effect_serial` say (the tail
    after the start, countdown 0, says only that it has begun)."""
    out = set()
    for _, data in air.on_air:
        packet = decode_any(data, KEY)
        if isinstance(packet, WristbandPacket) and packet.serial == effect_serial and packet.countdown_ms > 0:
            out.add(epoch_ms + packet.sequence + packet.countdown_ms)
    return out


async def test_the_radios_send_one_show_from_the_earliest_epoch(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    boxes = ["a", "b"]
    airs = {name: VirtualAir(KEY, 7, seed=i) for i, name in enumerate(boxes)}
    for name, air in airs.items():
        await air.open(str(tmp_path / f"hci-{name}"), [], record=True)
    # b's radio has sent show 7 for a minute already: a adopts b's epoch, b never a's later one.
    earlier = int(time.time() * 1000) - 60_000
    (tmp_path / "b" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data" / "radio.radio.json").write_text(json.dumps({"shows": {"7": [earlier, 59_000]}}))
    try:
        async with running(box_config(tmp_path / "a", "a", mosquitto.url, boxes, pty=tmp_path / "hci-a")) as a, \
                running(box_config(tmp_path / "b", "b", mosquitto.url, boxes, pty=tmp_path / "hci-b")) as b:
            await until(lambda: radio(a).streams.epoch_ms == earlier, 5, "a to adopt b's epoch")
            assert radio(b).streams.epoch_ms == earlier
            await asyncio.sleep(1.1)  # the state file is written every second
            stored = json.loads((tmp_path / "a" / "data" / "radio.radio.json").read_text())["shows"]["7"]
            assert stored[0] == earlier
            # Both radios carry an effect fired on a with one serial and one absolute start.
            answer = await fire(a, {"preset": "drop", "zones": ["floor"], "lead_ms": 300})
            fired = carried(a, answer["effect_id"])
            assert answer["delivery"] == {"radio": "sending", "shared": "shared"}
            await until(lambda: carried(b, fired.effect_id), 5, "the effect on b")
            await asyncio.sleep(0.5)
            assert starts(airs["a"], fired.serial, earlier) == {fired.groups[0].show_ms}
            assert starts(airs["b"], fired.serial, earlier) == {fired.groups[0].show_ms}
            assert carried(b, fired.effect_id).delivery == {"radio": "sending", "shared": "carried from a"}
            # A console's look on b shows on a at the same instant.
            b.show.live.set(("balcony",), Look((0, 200, 0), 1.0))
            change = await until(lambda: a.show.live.current().get("balcony"), 5, "the look on a")
            assert (change.show_ms, change.look, change.origin) == \
                (b.show.live.current()["balcony"].show_ms, Look((0, 200, 0), 1.0), "b")
    finally:
        for air in airs.values():
            await air.close()


async def test_a_box_that_joins_mid_show_carries_what_counts_down_and_a_box_killed_is_lost(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    boxes = ["a", "b"]
    async with running(box_config(tmp_path / "a", "a", mosquitto.url, boxes)) as a:
        answer = await fire(a, {"preset": "drop", "lead_ms": 20_000})
        assert answer["delivery"] == {"shared": "shared"}
        # b, a daemon as a venue runs it (`venue-gateway run --config`), joins mid-show with no hand work.
        path = box_config(tmp_path / "b", "b", mosquitto.url, boxes)
        # Its wall clock 5 ms ahead of this one's (libfaketime), which the clock exchanges measure.
        skew = SKEW
        b = Daemon(path, int(configuration.load(path).api.listen.rsplit(":", 1)[1]), env=skew)
        try:
            await asyncio.to_thread(b.start)
            last = await asked(b, "/api/v1/twin/assets/show_control",  # (a loaded machine: a first connect may
                               lambda doc: doc["reported"].get("last_effect") is not None, 12)  # time out)
            assert last["reported"]["last_effect"]["effect_id"] == answer["effect_id"]
            assert last["reported"]["last_effect"]["origin"] == "a"
            # the same start on the show clock (ms: the origin's document has the fraction its show_ms drops)
            # (whole ms compared: two instants 1 ms apart differ by a hair over 0.001 as floats)
            assert abs(round(wall(last["reported"]["last_effect"]["starts_at"]) * 1000)
                       - round(wall(answer["starts_at"]) * 1000)) <= 1
            await until(lambda: shared(a).peers["b"].state == "online", 5, "a to hear b")
            # An exchange's error is at most half its round trip (the best of the recent ones counts): the true
            # offset (5 ms with libfaketime, else 0) is within it, however loaded this machine is.
            await until(lambda: len(shared(a).peers["b"].samples) >= 5, 5, "clock exchanges with b")
            clock = shared(a).clocks()["b"]
            assert abs(clock.offset_ms - (5 if skew else 0)) <= clock.delay_ms / 2 + 0.5 and clock.age_s < 5, clock
            # Malformed messages on b's topics and a box not of the show: dropped and counted, nothing carried. An
            # effect of b's with a serial of a's block (boxes listed in another order there) is one of them.
            body = msg.effect_body(carried(a, answer["effect_id"]), "b")
            stray_serial = msg.encode("b", {**body, "effect_id": "stray", "serial": 5})
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                for topic, payload in (("venues/arena/show/b/effect", b"not json"),
                                       ("venues/arena/show/b/live", b'{"v": 1, "box": "b", "zone": "floor"}'),
                                       ("venues/arena/show/b/effect", json.dumps(
                                           {"v": 1, "box": "a", "effect_id": "x"}).encode()),
                                       ("venues/arena/show/b/effect", stray_serial),
                                       ("venues/arena/show/zz/effect", b'{"v": 1, "box": "zz"}')):
                    await client.publish(topic, payload, qos=1)
            await until(lambda: shared(a).peers["b"].malformed == 4 and shared(a).foreign == 1, 5, "the drops")
            assert len(a.show.recent) == 1
            # b killed: its will says it is lost; a goes on.
            b.proc.send_signal(signal.SIGKILL) if b.proc is not None else None
            await until(lambda: shared(a).peers["b"].state == "lost", 5, "a to mark b lost")
            lost = a.twin.get("shared_show")
            assert lost is not None and lost.reported["boxes"]["b"]["state"] == "lost"
            assert lost.reported["boxes"]["b"]["reason"] == "connection lost"
            assert lost.reported["boxes"]["b"]["malformed"] == 4 and lost.reported["foreign"] == 1
            assert a.health()["problems"] == ["shared show: lost b (connection lost); the show goes on without it"]
            again = await fire(a, {"preset": "drop", "zones": ["floor"]})
            assert again["delivery"] == {"shared": "shared"}
        finally:
            b.cleanup()
    if not skew:  # all else was checked; the measure of a clock that is off was not
        pytest.skip(f"{NO_FAKETIME}: b's clock was not put 5 ms ahead, so the exchanges measured no offset")


async def test_with_the_bus_down_a_box_goes_on_alone_and_says_so(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    async with running(box_config(tmp_path / "a", "a", mosquitto.url, ["a", "b"])) as a:
        await asyncio.to_thread(mosquitto.stop)
        await until(lambda: shared(a).state != "online" and shared(a).last_error, 5, "a to see the bus down")
        answer = await fire(a, {"preset": "drop"})
        assert answer["delivery"]["shared"].startswith("not shared: the show's bus is "), answer
        assert answer["delivery"]["shared"].endswith("this box goes on alone")
        problems = a.health()["problems"]
        assert problems and problems[0].startswith("shared show: the bus is "), problems
        twin = a.twin.get("shared_show")
        assert twin is not None and twin.reported["bus"] != "online" and twin.reported["bus_error"]
        await asyncio.to_thread(mosquitto.start)
        await until(lambda: shared(a).state == "online", 5, "a back on the bus")
        again = await fire(a, {"preset": "drop", "lead_ms": 1000})
        assert again["delivery"] == {"shared": "shared"} and not a.health()["problems"]


async def test_the_clock_gate_keeps_a_radio_quiet_and_it_resumes_by_itself(tmp_path: Path) -> None:
    """The gate as the clock watch sets it (gateway/show/clock_watch.py): set here by hand, on a radio alone."""
    air = VirtualAir(KEY, 7, seed=3)
    await air.open(str(tmp_path / "hci"), [], record=True)
    twin = Twin("a", VENUE)
    engine = ShowEngine(ShowSection(zones=[ShowZone("floor", 0)]), twin)
    ctx = DriverContext("radio", twin, None, None, FrameClock(40), engine, data_dir=tmp_path)  # type: ignore[arg-type]
    driver = WristbandRadio(ctx, RadioOptions(port=str(tmp_path / "hci"), demo_key=KEY_HEX, show_id=7,
                                              clock_sync="none"))
    await driver.start()
    driver.attach()
    running_radio = asyncio.get_running_loop().create_task(driver.run())
    try:
        await until(lambda: air.on_air, 2, "heartbeats")
        engine.clock_gate = "the clock is 4.0 ms from the show's (allowed: 2.0)"
        await asyncio.sleep(0.05)
        quiet = len(air.on_air)
        fired = engine.fire(inline={"kind": "solid", "colour": "#ff0000"}, lead_ms=500)
        assert fired.delivery == {"radio": "not sent: the clock is 4.0 ms from the show's (allowed: 2.0)"}
        await asyncio.sleep(0.3)  # no copy, no heartbeat
        assert len(air.on_air) == quiet and driver.health()["clock_gate"] == engine.clock_gate
        engine.clock_gate = None
        await until(lambda: len(air.on_air) > quiet, 1, "the radio to send again")
        assert fired.delivery == {"radio": "sending (resumed)"} and driver.health()["clock_gate"] is None
        await asyncio.sleep(0.3)
        epoch = driver.streams.epoch_ms
        assert starts(air, fired.serial, epoch) == {fired.groups[0].show_ms}
    finally:
        running_radio.cancel()
        await asyncio.gather(running_radio, return_exceptions=True)
        driver.detach()
        await driver.stop()
        await air.close()


async def test_a_radio_adopts_an_earlier_epoch_only_within_its_window_and_says_when_boxes_disagree(
        tmp_path: Path) -> None:
    """The show's epochs as the other boxes' presence gives them (gateway/show/shared.py), set here by hand on a
    radio alone. Its show began 10 h ago; a box whose state file holds a show 12 h before that (the same show id)
    is not followed, one an hour earlier is; a box whose epoch is later by more than the window is said too (this
    box's own state would then be the stale one)."""
    hour = 3_600_000
    began = int(time.time() * 1000) - 10 * hour
    (tmp_path / "radio.radio.json").write_text(json.dumps({"shows": {"7": [began, 1000]}}))
    air = VirtualAir(KEY, 7, seed=4)
    await air.open(str(tmp_path / "hci"), [], record=True)
    twin, alerts = Twin("a", VENUE), Alerts()
    engine = ShowEngine(ShowSection(zones=[ShowZone("floor", 0)]), twin)
    ctx = DriverContext("radio", twin, None, None, FrameClock(40), engine, alerts=alerts,  # type: ignore[arg-type]
                        data_dir=tmp_path)
    driver = WristbandRadio(ctx, RadioOptions(port=str(tmp_path / "hci"), demo_key=KEY_HEX, show_id=7,
                                              clock_sync="none"))
    assert driver.options.epoch_window_ms == 6 * hour  # a quarter of max_show_hours
    await driver.start()
    driver.attach()
    running_radio = asyncio.get_running_loop().create_task(driver.run())
    try:
        assert driver.streams.epoch_ms == began
        engine.epochs.heard("c", {7: began - 12 * hour})  # 22 h ago: within max_show_hours, beyond the window
        await until(lambda: driver.epoch_problem, 2, "the disagreement said")
        assert driver.streams.epoch_ms == began
        assert "the boxes disagree about show 7's start: c 12.0 h earlier than this radio's epoch (allowed: within " \
            "epoch_window_hours, 6 h): not followed" in (driver.epoch_problem or "")
        assert alerts.standing["show_epoch:radio"].text == driver.epoch_problem
        assert driver.health()["epoch_problem"] == driver.epoch_problem
        asset = twin.get("radio:radio")
        assert asset is not None and asset.reported["epoch_problem"] == driver.epoch_problem
        engine.epochs.heard("b", {7: began - hour})  # a box whose radio began an hour before this one: followed
        await until(lambda: driver.streams.epoch_ms == began - hour, 2, "b's epoch adopted")
        assert driver.state is not None and driver.state.shows[7].epoch_ms == began - hour
        assert "c 11.0 h earlier" in (driver.epoch_problem or "")
        engine.epochs.heard("c", {7: began - hour})  # c's stale state moved away: c restarted on the show's epoch
        await until(lambda: driver.epoch_problem is None, 2, "the boxes to agree")
        assert "show_epoch:radio" not in alerts.standing
        engine.epochs.heard("d", {7: began + 7 * hour})  # this box's state would be the stale one: said here too
        await until(lambda: driver.epoch_problem, 2, "the disagreement said")
        assert "d 8.0 h later than this radio's epoch" in (driver.epoch_problem or "")
        assert driver.streams.epoch_ms == began - hour
    finally:
        running_radio.cancel()
        await asyncio.gather(running_radio, return_exceptions=True)
        driver.detach()
        await driver.stop()
        await air.close()
    options = RadioOptions(port="/dev/ttyACM0", key_file="/etc/venue.key", epoch_window_hours=24)
    assert [p.message for p in options.problems()] == \
        ["24 is not less than max_show_hours (24): an epoch that far back leaves no show"]


def test_check_config_holds_a_box_to_the_show_and_passes_the_examples() -> None:
    for example in sorted((ROOT / "config" / "multibox").glob("box-*.toml")):
        cfg = configuration.load(example)
        assert cfg.show.shared is not None and cfg.gateway.id in cfg.show.shared.boxes
    base = (ROOT / "config" / "multibox" / "box-a.toml").read_text()
    cases = {
        'boxes = ["box-b", "box-c"]': "show.shared.boxes: this box's id 'box-a' is not among them",
        "boxes = [" + ", ".join(f'"box-{i}"' for i in range(17)) + "]": "show.shared.boxes: 17 boxes (allowed: 1 to 16",
        'boxes = ["box-a", "box-a"]': "show.shared.boxes: gateway ids must be unique",
    }
    for boxes, said in cases.items():
        text = base.replace('boxes = ["box-a", "box-b", "box-c"]', boxes)
        with pytest.raises(configuration.ConfigError) as caught:
            configuration.parse(Path("box-a.toml"), text)
        assert any(said in line for line in caught.value.lines()), caught.value.lines()
    for wrong, right, said in (
            ('username = "arena/box-a"', 'username = "arena/show/box-a"',
             "show.shared.username: 'arena/box-a' is not this box's identity on the venue's broker 'arena/show/box-a'"),
            ('brokers = ["mqtt://broker.arena.lan"]', 'brokers = ["mqtts://broker.arena.lan:8883"]',
             "show.shared.password_env: the password would cross the network in clear to broker.arena.lan")):
        with pytest.raises(configuration.ConfigError) as caught:
            configuration.parse(Path("box-a.toml"), base.replace(right, wrong))
        assert any(said in line for line in caught.value.lines()), caught.value.lines()


async def test_the_venue_brokers_acl_holds_each_box_to_its_own_topics(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    for i, box in enumerate(("box-a", "box-b")):  # the example ACL's boxes, by their user names
        await asyncio.to_thread(subprocess.run, ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []),
                                                 str(passwords), f"{VENUE}/show/{box}", f"{box}-secret"], check=True)
    broker = await asyncio.to_thread(Mosquitto(tmp_path / "broker", acl=ROOT / "config" / "multibox" / "mosquitto.acl",
                                               passwords=passwords).start)
    try:
        v5, host = aiomqtt.ProtocolVersion.V5, "127.0.0.1"
        user = f"{VENUE}/show/"
        async with Client(host, broker.port, username=user + "box-a", password="box-a-secret", protocol=v5) as a, \
                Client(host, broker.port, username=user + "box-b", password="box-b-secret", protocol=v5) as b:
            await a.subscribe(f"venues/{VENUE}/show/+/+", qos=1)
            await b.publish(f"venues/{VENUE}/show/box-b/effect", b"b's own", qos=1)
            with pytest.raises(PublishRefused):
                await b.publish(f"venues/{VENUE}/show/box-a/effect", b"as if a", qos=1)
            message = await asyncio.wait_for(anext(aiter(a.messages)), 5)
            assert (str(message.topic), message.payload) == (f"venues/{VENUE}/show/box-b/effect", b"b's own")
    finally:
        await asyncio.to_thread(broker.stop)


async def test_sessions_the_broker_drops_soon_after_they_began_wait_the_backoff(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    """Two gateways with one id (a cloned card) take each other's session over on the broker, again and again: each
    session ends soon after it began, so each is a failed attempt and the reconnections wait a growing backoff
    (0.5 s, then 1 s, 2 s ...), not the first step every time."""
    paths = [box_config(tmp_path / name, "a", mosquitto.url, ["a", "b"]) for name in ("one", "two")]
    for path in paths:  # the show's own backoff, not the tests' short one: 0.25-0.5 s, 0.5-1 s, 1-2 s, ...
        text = path.read_text()
        assert "backoff_initial_s = 0.05\nbackoff_max_s = 0.2\n" in text
        path.write_text(text.replace("backoff_initial_s = 0.05\nbackoff_max_s = 0.2\n",
                                     "backoff_initial_s = 0.5\nbackoff_max_s = 5.0\n"))
    async with running(paths[0]) as one, running(paths[1]) as two:
        before = shared(one).connects + shared(two).connects
        await asyncio.sleep(4)
        made = shared(one).connects + shared(two).connects - before
        assert 1 <= made <= 7, made  # at the first step every time: 10 and more
