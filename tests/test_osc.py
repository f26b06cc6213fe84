"""OSC: SLIP framing, address patterns, and the real driver in the daemon driven by liblo's oscsend, with
feedback read by liblo's oscdump; bundles with future timetags wait on the loop, not in it. Floods of bad input
(malformed packets, timed bundles, unknown addresses) are counted exactly and told at a bounded rate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from drivers.osc import slip
from drivers.osc.driver import ALERTS_PER_WINDOW, OscDriver, OscOptions
from drivers.osc.packets import BUNDLE, MAX_DEPTH, Malformed, TooDeep, timed_messages
from drivers.osc.routes import pattern
from drivers.throttle import Throttle
from gateway.dmx import DmxUniverses, FrameClock
from gateway.driver import DriverContext
from gateway.schema import check_all
from gateway.show.cue_settings import CuesSection
from gateway.show.engine import Fired, ShowEngine
from gateway.show.settings import PresetSection, ShowSection, ShowZone
from gateway.twin import Twin
from tests.conftest import ADMIN, OPERATOR, Daemon, free_port, require


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=6))
def test_slip_whole_or_byte_by_byte_gives_the_same_packets(packets: list[bytes]) -> None:
    stream = b"".join(slip.encode(p) for p in packets)
    assert slip.Decoder().feed(stream) == packets
    one = slip.Decoder()
    assert [p for i in range(len(stream)) for p in one.feed(stream[i:i + 1])] == packets


@given(st.binary(max_size=500))
def test_slip_any_bytes_decode_without_error(data: bytes) -> None:
    slip.Decoder().feed(data)


def test_osc_address_patterns() -> None:
    assert pattern("/eos/out/event/cue/1/*/fire").match("/eos/out/event/cue/1/23/fire")
    assert not pattern("/eos/out/event/cue/1/*/fire").match("/eos/out/event/cue/1/2/3/fire")
    assert pattern("/a/{go,stop}/?").match("/a/stop/x")
    assert pattern("/ch/[0-9]").match("/ch/7") and not pattern("/ch/[!0-9]").match("/ch/7")


def osc(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def bundle(at: float, *messages: bytes) -> bytes:
    from pythonosc.osc_message import OscMessage

    builder = OscBundleBuilder(at)  # type: ignore[arg-type]  # (typed int; it takes seconds as a float)
    for m in messages:
        builder.add_content(OscMessage(m))
    return builder.build().dgram


def test_sources_off_the_allow_list_and_malformed_packets_are_dropped_and_counted() -> None:
    twin = Twin("gw", "hall")
    dmx = DmxUniverses(twin, [1])
    driver = OscDriver(DriverContext("osc", twin, None, dmx, FrameClock(40), None),  # type: ignore[arg-type]
                       OscOptions(allow=["10.0.0.0/8"]))
    driver.packet(osc("/vg/dmx/1/1", 255), "192.168.1.20")
    driver.packet(b"/vg/dmx\x00garbage", "10.1.2.3")
    driver.packet(osc("/vg/dmx/1/1", 255)[:-2], "10.1.2.3")
    assert dmx.get(1).levels[0] == 0
    assert driver.counts["not_allowed"] == 1 and driver.counts["malformed"] == 2
    driver.packet(osc("/vg/dmx/1/1", 255), "10.1.2.3")
    assert dmx.get(1).levels[0] == 255


class Dump:
    """liblo's oscdump on a port, line by line."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE)
        self.lines: list[str] = []
        self._partial = b""

    def wait_for(self, fragment: str, timeout: float = 5.0) -> str:
        """The first line not taken yet with `fragment` in it. The pipe is read as bytes arrive, every line of a
        burst at once (a buffered reader would keep lines that select no longer sees)."""
        import select

        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if fragment in line:
                    self.lines.remove(line)
                    return line
            if select.select([self.proc.stdout], [], [], 0.1)[0]:
                *whole, self._partial = (self._partial + os.read(self.proc.stdout.fileno(), 65536)).split(b"\n")
                self.lines += [line.decode() for line in whole]
        raise AssertionError(f"{fragment!r} never came; got {self.lines}")


def test_osc_in_and_feedback_out_with_liblo(daemon_factory: Any, tmp_path: Path) -> None:
    require(shutil.which("oscsend") is not None and shutil.which("oscdump") is not None,
            "liblo's oscsend and oscdump (Debian package liblo-tools)")
    osc_port, dump_port = free_port(), free_port()
    extra = f"""
[drivers.desk]
type = "osc"
listen = "127.0.0.1:{osc_port}"
destinations = ["127.0.0.1:{dump_port}"]
routes = [{{ match = "/eos/out/event/cue/1/*/fire", to = "/vg/dmx/1/10", args = [255] }}]
horizon_s = 30

[show.feedback]
universe = 2
"""  # the demo's own [dmx] has universes 1 and 2
    dump = Dump(dump_port)
    try:
        d: Daemon = daemon_factory(extra=extra).start()

        def send(*args: str) -> None:
            subprocess.run(["oscsend", "127.0.0.1", str(osc_port), *args], check=True, timeout=10)

        def level(channel: int) -> int:
            return int(d.get("/api/v1/twin/assets/universe:1")["reported"]["levels"][channel - 1])

        def wait_level(channel: int, value: int, timeout: float = 3.0) -> float:
            began = time.monotonic()
            while level(channel) != value:
                assert time.monotonic() - began < timeout, (channel, level(channel))
                time.sleep(0.05)
            return time.monotonic() - began

        send("/vg/ping")
        dump.wait_for("/vg/out/pong")
        send("/vg/dmx/1/5", "i", "200")
        send("/vg/dmx/1/6", "f", "0.5")
        send("/eos/out/event/cue/1/7/fire")
        wait_level(5, 200)
        wait_level(6, 128)
        wait_level(10, 255)
        send("/vg/nope")
        assert '"unknown_address" "/vg/nope"' in dump.wait_for("/vg/out/alert")
        send("/vg/preset/intro/fire", "s", "floor")
        fired = dump.wait_for("/vg/out/effect/fired")
        assert '"intro"' in fired
        effect = d.get("/api/v1/twin/assets/show_control")["reported"]["last_effect"]
        assert effect["effect_id"] in fired and effect["zones"] == ["floor"]
        dump.wait_for("/vg/out/zone/floor/look ffff 0.117647 0.313726 1.000000")  # the pulse, once it starts
        deadline = time.monotonic() + 3  # and in the feedback universe: the floor (index 0) at channels 1-3
        while not any(d.get("/api/v1/twin/assets/universe:2")["reported"]["levels"][:3]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        send("/vg/preset/nope/fire")
        assert "no preset 'nope'" in dump.wait_for('"unknown_preset"')
        send("/vg/tempo", "f", "100")
        send("/vg/effect/stop")
        assert '"blackout"' in dump.wait_for("/vg/out/effect/fired")
        assert d.get("/api/v1/twin/assets/show_control")["reported"]["tempo_bpm"] == 100.0
        send("/vg/dmx/9/1", "i", "1")
        assert "universe 9 is not configured" in dump.wait_for("/vg/out/alert")

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(bundle(time.time() + 1.0, osc("/vg/dmx/1/20", 99)), ("127.0.0.1", osc_port))
            s.sendto(osc("/vg/ping"), ("127.0.0.1", osc_port))
            dump.wait_for("/vg/out/pong", timeout=0.5)  # the bundle waits on the loop, not in it
            assert level(20) == 0
            assert 0.4 < wait_level(20, 99, timeout=3.0) < 1.5
            s.sendto(bundle(time.time() + 3600, osc("/vg/dmx/1/21", 1)), ("127.0.0.1", osc_port))
            assert "beyond_horizon" in dump.wait_for("/vg/out/alert")
            s.sendto(b"\x00not osc", ("127.0.0.1", osc_port))

        with socket.create_connection(("127.0.0.1", osc_port)) as tcp:
            tcp.sendall(slip.encode(osc("/vg/dmx/1/30", 42)) + slip.encode(osc("/vg/ping")))
            dump.wait_for("/vg/out/pong")
        wait_level(30, 42)
        health = d.get("/api/v1/health")["drivers"]["desk"]["detail"]
        assert health["malformed"] == 1 and health["beyond_horizon"] == 1 and health["routed"] == 1
        assert d.terminate() == 0
    finally:
        dump.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            dump.proc.wait(5)


def test_a_blackout_holds_until_someone_raises_a_level_across_a_restart_too(daemon_factory: Any) -> None:
    """A level set as desired state, then /vg/blackout: the output goes dark, the desired levels are cleared, and
    after a restart the light stays dark; a level raised again after the blackout is kept."""
    osc_port = free_port()
    d: Daemon = daemon_factory(extra=f'[drivers.desk]\ntype = "osc"\nlisten = "127.0.0.1:{osc_port}"\n'
                                ).start()  # the demo's own [dmx] has universe 1

    def levels() -> list[int]:
        return list(d.get("/api/v1/twin/assets/universe:1")["reported"].get("levels", [0] * 512))

    def until(check: Any, what: str) -> None:
        deadline = time.monotonic() + 5
        while not check():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    try:
        status, _, _ = d.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN,
                                 {"levels": {"20": 128, "21": 64}})
        assert status == 200
        until(lambda: levels()[19:21] == [128, 64], "the desired levels on the output")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(osc("/vg/dmx/1/30", 200), ("127.0.0.1", osc_port))
            until(lambda: levels()[29] == 200, "the OSC level")
            s.sendto(osc("/vg/blackout"), ("127.0.0.1", osc_port))
        until(lambda: not any(levels()), "the blackout")
        assert "levels" not in d.get("/api/v1/twin/assets/universe:1")["desired"]
        assert d.terminate() == 0
        d.start()
        time.sleep(0.5)  # desired state is applied at start: nothing is, so nothing lights
        assert not any(levels()) and "levels" not in d.get("/api/v1/twin/assets/universe:1")["desired"]
        status, _, _ = d.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN, {"levels": {"20": 128}})
        assert status == 200
        until(lambda: levels()[19] == 128, "a level raised again after the blackout")
        assert d.terminate() == 0
    finally:
        d.cleanup()


async def test_tcp_clients_off_the_allow_list_are_shut_out_and_stop_closes_the_rest() -> None:
    import asyncio

    twin = Twin("gw", "hall")
    dmx = DmxUniverses(twin, [1])
    port = free_port()
    refusing = OscDriver(DriverContext("osc", twin, None, dmx, FrameClock(40), None),  # type: ignore[arg-type]
                         OscOptions(listen=f"127.0.0.1:{port}", allow=["10.0.0.0/8"]))
    await refusing.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed before anything is read
    writer.close()
    await refusing.stop()
    driver = OscDriver(DriverContext("osc", twin, None, dmx, FrameClock(40), None),  # type: ignore[arg-type]
                       OscOptions(listen=f"127.0.0.1:{port}"))
    await driver.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(slip.encode(osc("/vg/dmx/1/2", 50)))
    await writer.drain()
    for _ in range(50):
        if dmx.get(1).levels[1] == 50:
            break
        await asyncio.sleep(0.02)
    assert dmx.get(1).levels[1] == 50
    await asyncio.wait_for(driver.stop(), 2)
    assert await asyncio.wait_for(reader.read(), 2) == b""  # a stopped driver obeys nobody
    writer.close()


FADER_ROUTES = """
listen = "127.0.0.1:{osc_port}"
destinations = ["127.0.0.1:{feedback_port}"]
tcp = false

[[routes]]  # a grandMA3 executor fader as MA's manual addresses it: 0 to 100
match = "/Page1/Fader201"
to = "/vg/dmx/1/3"
arg = 0
range = [0, 100]

[[routes]]  # the level after another argument
match = "/Page1/Fader202"
to = "/vg/dmx/1/4"
arg = 1
range = [0, 100]

[[routes]]  # an Eos fader bank's fader: 0.0 to 1.0
match = "/eos/fader/1/1"
to = "/vg/dmx/1/5"
arg = 0
range = [0.0, 1.0]

[[routes]]  # one argument kept as it is, the others dropped
match = "/surface/level"
to = "/vg/dmx/1/6"
arg = 1
"""


def test_route_arg_and_range_are_checked_with_what_is_allowed() -> None:
    import tomllib

    good, problems = check_all(OscOptions, tomllib.loads(FADER_ROUTES.format(osc_port=9000, feedback_port=9001)))
    assert problems == [] and good is not None
    assert good.routes[0].range == [0.0, 100.0] and good.routes[1].arg == 1 and good.routes[3].range is None

    def problems_of(**route: Any) -> list[str]:
        _, found = check_all(OscOptions, {"routes": [{"match": "/Page1/Fader201", "to": "/vg/dmx/1/3", **route}]})
        return [str(p) for p in found]

    assert problems_of(arg=-1) == ["routes[0].arg: -1 is not an argument's index (allowed: 0 for the first, 1 for "
                                   "the second, ...)"]
    for bad in ([100, 0], [5, 5], [0], [0, 50, 100], [0, float("inf")]):
        (message,) = problems_of(arg=0, range=bad)
        assert message.startswith("routes[0].range: ") and "(allowed: two finite numbers, lo below hi" in message
    assert problems_of(args=[255], arg=0) == problems_of(args=[255], range=[0, 100]) == [
        "routes[0].args: `args` replaces the incoming arguments and `arg`/`range` pick one of them (allowed: `args`, "
        "or `arg` and `range`, not both)"]
    assert problems_of(arg="1") == ["routes[0].arg: must be an integer (got '1')"]
    assert problems_of(range=[0, 100]) == []  # `range` alone maps the first argument


async def test_console_faders_routed_with_arg_and_range_set_channels_and_refusals_leave_them() -> None:
    """A console's fader messages, sent by liblo's oscsend to the driver's real UDP socket and routed with `arg` and
    `range`; what a route refuses comes back to a real feedback socket as a bad_arguments alert naming the route."""
    import asyncio
    import tomllib

    from pythonosc.osc_message import OscMessage

    require(shutil.which("oscsend") is not None, "liblo's oscsend (Debian package liblo-tools)")
    osc_port = free_port()
    feedback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    feedback.bind(("127.0.0.1", 0))
    feedback.setblocking(False)
    options, problems = check_all(OscOptions, tomllib.loads(
        FADER_ROUTES.format(osc_port=osc_port, feedback_port=feedback.getsockname()[1])))
    assert options is not None, problems
    twin = Twin("gw", "hall")
    dmx = DmxUniverses(twin, [1])
    driver = OscDriver(DriverContext("osc", twin, None, dmx, FrameClock(40), None),  # type: ignore[arg-type]
                       options)
    await driver.start()

    async def send(address: str, types: str = "", *values: str) -> None:
        proc = await asyncio.create_subprocess_exec("oscsend", "127.0.0.1", str(osc_port), address,
                                                    *([types] if types else []), *values)
        assert await asyncio.wait_for(proc.wait(), 10) == 0

    async def level(channel: int, value: int) -> None:
        for _ in range(100):
            if dmx.get(1).levels[channel - 1] == value:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"channel {channel} is {dmx.get(1).levels[channel - 1]}, not {value}")

    async def alert() -> tuple[str, str]:
        for _ in range(100):
            try:
                msg = OscMessage(feedback.recv(65536))
            except BlockingIOError:
                await asyncio.sleep(0.02)
                continue
            assert msg.address == "/vg/out/alert"
            kind, text = msg.params
            return kind, text
        raise AssertionError("no alert came")

    try:
        await send("/Page1/Fader201", "i", "50")
        await level(3, 128)  # 50 of 0-100 is 0.5, and 0.5 of 255 is 127.5, rounded half to even
        await send("/Page1/Fader201", "i", "30")
        await level(3, 76)  # 76.5: half to even again
        await send("/Page1/Fader201", "f", "100")
        await level(3, 255)
        await send("/Page1/Fader201", "i", "0")
        await level(3, 0)
        await send("/Page1/Fader201", "ii", "100", "5")  # MA's manual: the level, then a fade time
        await level(3, 255)
        await send("/Page1/Fader201", "f", "12.5")
        await level(3, 32)  # 31.875
        await send("/Page1/Fader202", "sf", "FaderMaster", "25")
        await level(4, 64)  # the second argument: 63.75
        await send("/eos/fader/1/1", "f", "0.5")
        await level(5, 128)
        await send("/eos/fader/1/1", "i", "1")
        await level(5, 255)  # through `range = [0.0, 1.0]` an integer 1 is full, not a level of 1 in 255
        await send("/surface/level", "si", "x", "200")
        await level(6, 200)  # `arg` without `range`: kept as it came
        assert driver.counts["routed"] == 10

        # Refused, never clamped: each is an alert naming the route and the channel keeps its level.
        refused = [
            (("/Page1/Fader201", "i", "101"), "routes[0] (/Page1/Fader201 to /vg/dmx/1/3) takes argument 0, a number "
                                              "from 0 to 100; got 101"),
            (("/Page1/Fader201", "f", "-0.5"), "got -0.5"),
            (("/Page1/Fader201",), "takes argument 0, a number from 0 to 100; got nothing"),
            (("/Page1/Fader201", "s", "fifty"), "got 'fifty'"),
            (("/Page1/Fader201", "T"), "got True"),
            (("/Page1/Fader202", "i", "25"), "routes[1] (/Page1/Fader202 to /vg/dmx/1/4) takes argument 1, a number "
                                             "from 0 to 100; got 25"),
            (("/eos/fader/1/1", "f", "1.5"), "routes[2] (/eos/fader/1/1 to /vg/dmx/1/5) takes argument 0, a number "
                                             "from 0 to 1; got 1.5"),
            (("/surface/level", "s", "x"), "routes[3] (/surface/level to /vg/dmx/1/6) takes argument 1; got 'x'"),
        ]
        for message, text in refused:
            await send(*message)
            kind, said = await alert()
            assert kind == "bad_arguments" and said.startswith(message[0] + ": routes[") and said.endswith(text), said
        # `arg` without `range` passes the argument on as it is: /vg/dmx itself refuses what is not a level
        await send("/surface/level", "si", "x", "256")
        assert (await alert())[1] == "/vg/dmx/1/6 takes one int (0-255) or float (0-1); got 256"
        await asyncio.sleep(0.1)
        assert list(dmx.get(1).levels[2:6]) == [32, 64, 255, 200]
        assert driver.counts["routed"] == 11 and driver.counts["received"] == 19
    finally:
        await driver.stop()
        feedback.close()


def test_a_sound_level_alert_reaches_front_of_house(daemon_factory: Any) -> None:
    """The core's compliance monitor judges the virtual venue's meters; its alert goes out as OSC feedback."""
    require(shutil.which("oscdump") is not None, "liblo's oscdump (Debian package liblo-tools)")
    osc_port, dump_port = free_port(), free_port()
    extra = f"""
[drivers.desk]
type = "osc"
listen = "127.0.0.1:{osc_port}"
destinations = ["127.0.0.1:{dump_port}"]
"""
    dump = Dump(dump_port)
    extra += '[compliance]\nlimits = [{ measure = "laeq", window_min = 1, level_db = 60 }]\n'
    # the demo judges by the WHO profile; here a limit its levels are far over
    d: Daemon = daemon_factory(extra=extra, overrides={"compliance.profile": "custom"})
    try:
        d.start()
        line = dump.wait_for("/vg/out/alert", timeout=10)
        assert '"sound_level"' in line and "over the 60 dB limit" in line
        zones = d.get("/api/v1/compliance")["zones"]
        assert zones and all(z["limits"][0]["state"] == "over" for z in zones.values())
    finally:
        dump.proc.kill()
        d.terminate()


def test_crowd_energy_reaches_front_of_house_and_drives_a_preset(daemon_factory: Any, tmp_path: Path) -> None:
    """The audience-mood model's energy per zone goes out as /vg/out/zone/{zone}/energy; the demo's `chorus`
    preset (intensity_from = "energy") is as bright as the crowd is lively. A small mood model with a one-second
    window stands in for the shipped one here, so the test need not wait for its two-minute window."""
    require(shutil.which("oscdump") is not None, "liblo's oscdump (Debian package liblo-tools)")
    from tests import onnx_files

    (tmp_path / "mood.onnx").write_bytes(onnx_files.mood(onnx_files.mood_spec(version="osc-1", bin_s=0.5)))
    osc_port, dump_port = free_port(), free_port()
    dump = Dump(dump_port)
    d: Daemon = daemon_factory(extra=f"""
[drivers.desk]
type = "osc"
listen = "127.0.0.1:{osc_port}"
destinations = ["127.0.0.1:{dump_port}"]
""", overrides={"inference.mood_model": str(tmp_path / "mood.onnx")})
    try:
        d.start()
        line = dump.wait_for("/vg/out/zone/floor/energy", timeout=15)
        assert " f " in line and 0.0 <= float(line.split()[-1]) <= 1.0
        assert d.get("/api/v1/twin")["assets"]["inference"]["reported"]["audience_mood"]["version"] == "osc-1"
        energy = d.get("/api/v1/twin")["assets"]["mood:floor"]["reported"]["energy"]
        status, _, body = d.request("POST", "/api/v1/effects", OPERATOR, {"preset": "chorus", "zones": ["floor"]})
        assert status == 202
        last = d.get("/api/v1/twin")["assets"]["show_control"]["reported"]["last_effect"]
        assert last["effect_id"] == json.loads(body)["effect_id"]
        assert last["effect"]["intensity"] == pytest.approx(0.3 + 0.7 * energy, abs=0.05)
    finally:
        dump.proc.kill()
        d.terminate()


# -- bad input, in floods --------------------------------------------------------------------------------
def nested(depth: int) -> bytes:
    """A message inside `depth` bundles, each inside the next."""
    packet = osc("/vg/ping")
    for _ in range(depth):
        packet = BUNDLE + (1).to_bytes(8, "big") + len(packet).to_bytes(4, "big") + packet
    return packet


def timed_bundle(at: float, *elements: bytes) -> bytes:
    """A bundle built by hand: thousands of elements in one datagram, as fast as they can be written."""
    seconds = at + 2_208_988_800  # NTP's epoch is 1900
    tag = int(seconds).to_bytes(4, "big") + int(seconds % 1 * 2**32).to_bytes(4, "big")
    return BUNDLE + tag + b"".join(len(e).to_bytes(4, "big") + e for e in elements)


GARBAGE = [  # one of each kind of malformed packet, and the counter it goes to
    (b"\x00not osc at all", "malformed"),
    (osc("/vg/dmx/1/1", 255)[:-2], "malformed"),  # cut short
    (b"/vg/dmx/1/1\x00,c\x00\x00\x00\x00\x00A", "malformed"),  # a type tag python-osc warns of and skips
    (b"/" + b"a" * 1000, "malformed"),  # an address never terminated
    (b"/vg/tempo\x00\x00\x00,s\x00\x00" + b"1" * 1000, "malformed"),  # a string never terminated
    (BUNDLE + bytes(7) + b"\x01" + (-4).to_bytes(4, "big", signed=True), "malformed"),  # python-osc: loops for ever
    (BUNDLE + bytes(7) + b"\x01" + (8).to_bytes(4, "big") + b"garbage!", "malformed"),  # python-osc: a warning
    (nested(1500), "too_deep"),  # python-osc: a RecursionError
    (b"/vg/ping\x00\x00\x00\x00," + b"[" * 20 + b"]" * 20 + b"\x00" * 3, "too_deep"),  # arrays within arrays
]


def test_packets_python_osc_mishandles_are_malformed_before_it_sees_them() -> None:
    for data, kind in GARBAGE:
        with pytest.raises(Malformed) as caught:
            timed_messages(data, time.time())
        assert isinstance(caught.value, TooDeep) == (kind == "too_deep"), (data[:40], caught.value)
    assert [m.address for _, m in timed_messages(nested(MAX_DEPTH), 0.0)] == ["/vg/ping"]
    later = timed_bundle(time.time() + 5, osc("/vg/dmx/1/2", 2), timed_bundle(0, osc("/vg/dmx/1/1", 1)))
    assert [m.address for _, m in timed_messages(later, time.time())] == ["/vg/dmx/1/1", "/vg/dmx/1/2"]


@given(st.binary(max_size=300) | st.binary(max_size=200).map(lambda tail: BUNDLE + bytes(7) + b"\x01" + tail))
def test_any_bytes_are_messages_or_malformed(data: bytes) -> None:
    with contextlib.suppress(Malformed):
        timed_messages(data, time.time())


def test_throttle_lets_a_burst_through_per_window_and_tells_how_many_it_held() -> None:
    throttle = Throttle(2, 10.0)
    assert [throttle(t) for t in (0.0, 1.0, 2.0, 3.0, 9.9)] == [0, 0, None, None, None]
    assert throttle(10.5) == 3 and throttle(11.0) == 0 and throttle(12.0) is None


async def feedback_driver(show: ShowEngine | None = None, **options: Any) -> tuple[OscDriver, socket.socket, int]:
    """A started driver on a real UDP port, its feedback going to a real socket of the test's."""
    feedback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    feedback.bind(("127.0.0.1", 0))
    feedback.setblocking(False)
    port = free_port()
    twin = Twin("gw", "hall")
    ctx = DriverContext("osc", twin, None, DmxUniverses(twin, [1]), FrameClock(40), show)  # type: ignore[arg-type]
    driver = OscDriver(ctx, OscOptions(listen=f"127.0.0.1:{port}", tcp=False,
                                       destinations=[f"127.0.0.1:{feedback.getsockname()[1]}"], **options))
    await driver.start()
    return driver, feedback, port


def alerts(feedback: socket.socket) -> list[str]:
    from pythonosc.osc_message import OscMessage

    kinds = []
    with contextlib.suppress(BlockingIOError):
        while True:
            msg = OscMessage(feedback.recv(65536))
            kinds.append(msg.params[0])
    return kinds


CUES = """
[[cues]]
id = "verse"
timecode = "01:00:10:00"
preset = "intro"

[[cues]]
id = "chorus"
timecode = "01:00:20:00"
preset = "intro"
armed = false
"""


async def test_cues_are_armed_fired_and_skipped_by_osc_and_an_unknown_cue_is_told(tmp_path: Path) -> None:
    (tmp_path / "cues.toml").write_text(CUES)
    show = ShowEngine(ShowSection(lead_ms=0, zones=[ShowZone("floor", 0)], presets=[PresetSection("intro")],
                                  cues=CuesSection(file="cues.toml")), Twin("gw", "hall"))
    assert show.cues.load(tmp_path) == []
    fired: list[Fired] = []
    show.on_fire(fired.append)
    driver, feedback, _ = await feedback_driver(show)

    def state(cue: str) -> dict[str, Any]:
        return next(c for c in show.cues.document()["cues"] if c["id"] == cue)

    try:
        driver.packet(osc("/vg/cue/arm", "chorus"), "127.0.0.1")
        assert state("chorus")["armed"] is True
        driver.packet(osc("/vg/cue/skip", "chorus"), "127.0.0.1")
        assert state("chorus")["state"] == "skipped"
        driver.packet(osc("/vg/cue/fire", "verse"), "127.0.0.1")
        assert [f.preset for f in fired] == ["intro"] and state("verse")["effect_id"] == fired[0].effect_id
        driver.packet(osc("/vg/cue/skip", "verse"), "127.0.0.1")  # fired already: the list refuses
        driver.packet(osc("/vg/cue/fire", "bridge"), "127.0.0.1")
        driver.packet(osc("/vg/cue/arm"), "127.0.0.1")
        driver.packet(osc("/vg/cue/arm", 3), "127.0.0.1")
        await asyncio.sleep(0.05)
        told = alerts(feedback)
    finally:
        await driver.stop()
        feedback.close()
    assert told == ["bad_arguments", "unknown_cue", "bad_arguments", "bad_arguments"], told
    assert driver.counts["refused"] == 4 and len(fired) == 1


async def test_a_burst_of_malformed_packets_is_counted_exactly_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """1,800 malformed packets of every kind over real UDP: each counted, one log line for all of them, no traceback,
    no warning from python-osc, nothing carried out."""
    caplog.set_level(logging.INFO)
    driver, feedback, port = await feedback_driver()
    sent = {"malformed": 0, "too_deep": 0}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(200):
                for data, kind in GARBAGE:
                    s.sendto(data, ("127.0.0.1", port))
                    sent[kind] += 1
                for _ in range(500):  # read as they come: the kernel drops nothing, so every packet is counted
                    if all(driver.counts[k] == n for k, n in sent.items()):
                        break
                    await asyncio.sleep(0.001)
        assert {k: driver.counts[k] for k in sent} == sent == {"malformed": 1400, "too_deep": 400}
        assert "received" not in driver.counts and alerts(feedback) == []
        lines = [r for r in caplog.records if r.name == "drivers.osc" and "malformed" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], \
            [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    finally:
        await driver.stop()
        feedback.close()


async def test_one_datagram_of_future_bundles_fills_max_pending_and_alerts_are_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    """One 64 KB datagram of 5,400 messages timed 30 s ahead puts max_pending of them on the clock and refuses the
    rest; with 500 timed beyond the horizon and 500 unknown addresses after it, each kind is counted exactly and
    told at most ALERTS_PER_WINDOW times, to the destination and in the log."""
    caplog.set_level(logging.INFO, "drivers.osc")
    driver, feedback, port = await feedback_driver(max_pending=100, horizon_s=60)
    try:
        flood = timed_bundle(time.time() + 30, *[b"/x\x00\x00,\x00\x00\x00"] * 5400)
        assert len(flood) <= 65507  # one UDP datagram
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(flood, ("127.0.0.1", port))
            s.sendto(timed_bundle(time.time() + 3600, *[osc("/vg/dmx/1/1", 1)] * 500), ("127.0.0.1", port))
            s.sendto(timed_bundle(0, *[osc("/vg/nope")] * 500), ("127.0.0.1", port))
            for _ in range(500):
                if driver.counts["unknown"] == 500:
                    break
                await asyncio.sleep(0.01)
        health = driver.health()
        assert health["pending_timed"] == health["scheduled"] == 100 and health["pending_full"] == 5300
        assert health["beyond_horizon"] == 500 and health["unknown"] == 500
        told = alerts(feedback)
        assert {k: told.count(k) for k in set(told)} == dict.fromkeys(
            ("pending_full", "beyond_horizon", "unknown_address"), ALERTS_PER_WINDOW)
        assert health["alerts_held"] == 6300 - 3 * ALERTS_PER_WINDOW
        assert len([r for r in caplog.records if r.name == "drivers.osc"]) <= 3 * ALERTS_PER_WINDOW + 1  # (+ listening)
    finally:
        await driver.stop()
        feedback.close()
    assert driver.health()["pending_timed"] == 0  # a stopped driver keeps no timers


def test_horizon_and_max_pending_are_bounded() -> None:
    _, problems = check_all(OscOptions, {"horizon_s": 86400, "max_pending": 10**6})
    assert [p.path for p in problems] == ["horizon_s", "max_pending"]
