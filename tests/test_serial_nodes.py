"""Line-protocol sensor nodes: the line codec's properties and published checksum vectors, and the real `nodes`
driver in a gateway process reading simulated nodes across a socat pseudo-terminal pair, unplugged and back."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.lines import (
    NOISE,
    LineDecoder,
    LineError,
    LineFramer,
    NodeLine,
    encode_line,
    parse_line,
    xor_checksum,
)
from drivers.serial.nodes import NodesOptions
from drivers.sim.serial_devices import BackgroundLoop, PtyDevice, SimNode
from gateway.schema import check_all
from peers.socat import SocatPair
from tests.conftest import Daemon

names = st.from_regex(r"[A-Za-z0-9_.\-]{1,16}", fullmatch=True)
fields = st.dictionaries(names.filter(lambda k: k != "node"), st.floats(allow_nan=False, allow_infinity=False),
                         max_size=6)
forms = st.sampled_from(["json", "kv"])
reading_sets = st.builds(NodeLine, names, fields)


def encoded(sets: list[NodeLine], form: Literal["json", "kv"], checksum: bool) -> bytes:
    return b"".join(encode_line(s.node, s.values, form=form, checksum=checksum) for s in sets)


# -- the codec ---------------------------------------------------------------------------------------------------
@given(names, fields, forms, st.booleans())
def test_encode_then_parse_gives_the_reading_set_back(node: str, values: dict[str, float],
                                                      form: Literal["json", "kv"], checksum: bool) -> None:
    line = encode_line(node, values, form=form, checksum=checksum)
    assert line.endswith(b"\n")
    for mode in ("optional", "required") if checksum else ("none", "optional"):
        assert parse_line(line[:-1], mode) == NodeLine(node, values, (), checksum)


@given(st.binary(max_size=2000))
def test_any_bytes_decode_without_error(data: bytes) -> None:
    for mode in ("none", "optional", "required"):
        LineDecoder(mode, 64).feed(data)
        with contextlib.suppress(LineError):
            parse_line(data, mode)


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_the_codecs_own_error(text: str) -> None:
    try:
        parse_line(text.encode())
    except LineError as exc:
        assert exc.reason


@given(st.lists(reading_sets, max_size=6), forms, st.booleans(), st.binary(max_size=200), st.data())
def test_a_stream_split_anywhere_decodes_the_same(sets: list[NodeLine], form: Literal["json", "kv"],
                                                  checksum: bool, garbage: bytes, data: st.DataObject) -> None:
    stream = garbage + b"\n" + encoded(sets, form, checksum)
    whole = LineDecoder("optional", 128)
    expected = whole.feed(stream)
    cut = data.draw(st.integers(0, len(stream)))
    split = LineDecoder("optional", 128)
    assert split.feed(stream[:cut]) + split.feed(stream[cut:]) == expected
    one_by_one = LineDecoder("optional", 128)
    assert [m for i in range(len(stream)) for m in one_by_one.feed(stream[i:i + 1])] == expected
    for d in (split, one_by_one):
        assert (d.lines, d.bad_lines, d.garbage_bytes, d.overlong) == (whole.lines, whole.bad_lines,
                                                                        whole.garbage_bytes, whole.overlong)


@given(st.binary(max_size=300).filter(lambda g: b"node" not in g and b"\\u" not in g),
       st.lists(reading_sets, min_size=1, max_size=5), forms, st.booleans())
def test_garbage_before_good_lines_is_skipped_and_counted(garbage: bytes, sets: list[NodeLine],
                                                          form: Literal["json", "kv"], checksum: bool) -> None:
    decoder = LineDecoder("optional")
    got = decoder.feed(garbage + b"\n" + encoded(sets, form, checksum))
    assert [(m.node, m.values) for m in got] == [(s.node, s.values) for s in sets]
    if any(b not in b" \r\n" for b in garbage):
        assert decoder.garbage_bytes > 0


@given(st.binary(min_size=1, max_size=40).map(lambda b: bytes(NOISE[x % len(NOISE)] for x in b if
                                                             NOISE[x % len(NOISE)] != 0x0A)),
       reading_sets, forms)
def test_boot_noise_glued_to_a_line_is_skipped(noise: bytes, reading_set: NodeLine,
                                               form: Literal["json", "kv"]) -> None:
    decoder = LineDecoder("required")
    got = decoder.feed(noise + encode_line(reading_set.node, reading_set.values, form=form, checksum=True))
    assert [(m.node, m.values) for m in got] == [(reading_set.node, reading_set.values)]
    assert decoder.noise_bytes == len(noise)


@given(reading_sets, forms, st.data())
def test_a_corrupted_line_with_a_checksum_is_rejected(reading_set: NodeLine, form: Literal["json", "kv"],
                                                      data: st.DataObject) -> None:
    line = bytearray(encode_line(reading_set.node, reading_set.values, form=form, checksum=True)[:-1])
    at = data.draw(st.integers(0, len(line) - 1))
    line[at] = data.draw(st.integers(0, 255).filter(lambda b: b not in (line[at], 0x0A)))
    with pytest.raises(LineError):
        parse_line(bytes(line), "required")
    if at < len(line) - 3:  # the body, not the suffix: even an optional checksum catches it
        with pytest.raises(LineError) as caught:
            parse_line(bytes(line), "optional")
        assert caught.value.reason in ("checksum", "encoding")


def test_the_checksum_is_nmea_0183s() -> None:
    # Published NMEA 0183 sentences with their checksums: Wikipedia's "NMEA 0183" article (the GGA at 09:27:50)
    # and gpsinformation.org's NMEA data page by Dale DePriest (the GGA and RMC at 12:35:19).
    for sentence in (b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76",
                     b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
                     b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"):
        body, _, given_sum = sentence[1:].partition(b"*")
        assert xor_checksum(body) == int(given_sum, 16)
    assert encode_line("n1", {"t": 1.5}, form="kv", checksum=True) == b"node=n1 t=1.5*%02X\n" % xor_checksum(
        b"node=n1 t=1.5")


def test_line_forms_and_their_failures() -> None:
    assert parse_line(b'{"node":"a","t":21.5,"fw":"1.2","ok":true}') == NodeLine("a", {"t": 21.5}, ("fw", "ok"))
    assert parse_line(b"node=a t=21.5, rh=40;co2=612 fw=1.2.3") == NodeLine(
        "a", {"t": 21.5, "rh": 40.0, "co2": 612.0}, ("fw",))
    assert parse_line(b'{"node":7,"t":1}').node == "7"
    for line, reason in ((b"t=1", "no_node"), (b"booting...", "syntax"), (b'{"t":1}', "no_node"),
                         (b"[1,2]", "syntax"), (b"node=a t=1*00", "checksum"), (b"\xff\xfe", "encoding"),
                         (b"  ", "empty")):
        with pytest.raises(LineError) as caught:
            parse_line(line)
        assert caught.value.reason == reason, line
    with pytest.raises(LineError, match="required"):
        parse_line(b"node=a t=1", "required")
    assert parse_line(b"node=a t=1*00", "none").other == ("t",)  # not a checksum to this bus: t is not a number


def test_a_line_longer_than_the_limit_is_dropped_until_the_next_newline() -> None:
    framer = LineFramer(16)
    assert framer.feed(b"x" * 40) == []
    assert framer.feed(b"yy\nnode=a t=1\r\n") == [b"node=a t=1"]
    assert (framer.overlong, framer.dropped) == (1, 43)


# -- the driver, in a gateway, across a socat pair -------------------------------------------------------------------
def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    return result


@pytest.fixture
def socat_pair(tmp_path: Path) -> Iterator[SocatPair]:
    pair = SocatPair(tmp_path, "ttyNodes")
    pair.plug()
    yield pair
    pair.close()


@pytest.fixture
def sims() -> Iterator[BackgroundLoop]:
    bg = BackgroundLoop()
    yield bg
    bg.close()


def nodes_config(port: Path) -> str:
    return f"""
[supervisor]
backoff_initial_s = 0.1
backoff_max_s = 0.3

[drivers.stage_nodes]
type = "nodes"
port = "{port}"
checksum = "optional"
stale_s = 1.5
report_s = 0.5

[[drivers.stage_nodes.nodes]]
id = "stage-env"
asset = "env:stage"
kind = "environment"
zone = "stage"
fields.t = {{ metric = "temperature_c", range = [-20, 60] }}
fields.rh = {{ metric = "humidity_pct", range = [0, 100] }}
"""


def reported(d: Daemon, asset: str) -> dict[str, Any]:
    try:
        return dict(d.get(f"/api/v1/twin/assets/{asset}")["reported"])
    except OSError:  # not declared yet
        return {}


def test_nodes_reach_the_twin_and_bad_input_is_counted_not_believed(socat_pair: SocatPair, sims: BackgroundLoop,
                                                                    daemon_factory: Any) -> None:
    device = PtyDevice()
    sims.call(device.attach, str(socat_pair.far))
    stage = SimNode(device, "stage-env", {"t": 23.5, "rh": 41.0}, period_s=0.1)
    stranger = SimNode(device, "mystery", {"t": 1.0}, form="kv", checksum=False, period_s=0.3)
    sims.call(stage.start)
    sims.call(stranger.start)
    d: Daemon = daemon_factory(extra=nodes_config(socat_pair.device)).start()

    wait_for(lambda: reported(d, "env:stage").get("temperature_c") == 23.5, 10, "temperature in the twin")
    env = reported(d, "env:stage")
    assert env["humidity_pct"] == 41.0 and env["online"] is True

    sims.call(stage.inject, b"\x00\xff\xfe boot noise\n")
    sims.call(stage.inject, b'{"node":"stage-env","t":99.9,"rh":41.0}*00\n')  # a checksum that does not match
    sims.call(stage.values.update, {"t": 999.0, "rh": 42.5})
    wait_for(lambda: reported(d, "env:stage").get("out_of_range") == ["temperature_c"], 5, "the flag")
    wait_for(lambda: reported(d, "env:stage").get("humidity_pct") == 42.5, 5, "humidity going on")
    assert reported(d, "env:stage")["temperature_c"] == 23.5  # 999 was not believed, nor 99.9

    bus = wait_for(lambda: (b := reported(d, "bus:stage_nodes")).get("bad_checksum") and b, 5, "the bus counts")
    assert bus["connected"] is True and bus["port"] == str(socat_pair.device)
    assert bus["unknown_nodes"] > 0 and bus["unknown_node_ids"] == ["mystery"]
    assert bus["garbage_bytes"] >= 16 and bus["bad_lines"] >= 2 and bus["out_of_range"] >= 1
    health = d.get("/api/v1/health")["drivers"]["stage_nodes"]
    assert health["state"] == "running" and health["detail"]["rejected"]["checksum"] >= 1

    sims.call(stage.values.update, {"t": 24.0})
    wait_for(lambda: reported(d, "env:stage").get("out_of_range") == [], 5, "the flag cleared")
    assert reported(d, "env:stage")["temperature_c"] == 24.0

    sims.call(stage.stop)  # a node that goes quiet is reported offline after stale_s
    wait_for(lambda: reported(d, "env:stage").get("online") is False, 5, "the node offline")
    d.terminate()


def test_a_port_that_vanishes_and_comes_back_is_picked_up_without_a_restart(
        socat_pair: SocatPair, sims: BackgroundLoop, daemon_factory: Any) -> None:
    device = PtyDevice()
    sims.call(device.attach, str(socat_pair.far))
    stage = SimNode(device, "stage-env", {"t": 20.0, "rh": 50.0}, form="kv", period_s=0.1)
    sims.call(stage.start)
    d: Daemon = daemon_factory(extra=nodes_config(socat_pair.device)).start()
    wait_for(lambda: reported(d, "env:stage").get("temperature_c") == 20.0, 10, "the first reading")

    socat_pair.unplug()
    wait_for(lambda: d.get("/api/v1/health")["drivers"]["stage_nodes"]["state"] != "running", 10,
             "the driver noticing")
    wait_for(lambda: reported(d, "bus:stage_nodes").get("connected") is False, 5, "the bus disconnected")
    assert reported(d, "env:stage")["online"] is False
    health = d.get("/api/v1/health")
    assert health["status"] == "degraded" and health["drivers"]["venue"]["state"] == "running"

    sims.call(stage.values.update, {"t": 21.0})
    socat_pair.plug()
    sims.call(device.attach, str(socat_pair.far))
    d.wait_healthy(timeout=10)
    wait_for(lambda: reported(d, "env:stage").get("temperature_c") == 21.0, 10, "readings after the replug")
    assert reported(d, "bus:stage_nodes")["connected"] is True
    log = d.log.read_text()
    assert "driver stage_nodes not ready: " in log and "went away (unplugged?)" in log and "Traceback" not in log
    d.terminate()


def test_configuration_problems_name_the_key() -> None:
    raw = {"port": "/dev/ttyUSB0", "checksum": "crc",
           "nodes": [{"id": "a", "asset": "env:a", "fields": {"t": {"metric": "t_c", "range": [60, -20]}}},
                     {"id": "a", "asset": "env:b", "fields": {"node": {"metric": "x"}}}]}
    _, problems = check_all(NodesOptions, raw, "drivers.bus")
    assert [str(p) for p in problems] == [
        "drivers.bus.checksum: 'crc' is not allowed (allowed: none, optional, required)",
        "drivers.bus.nodes[0].fields.t.range: [60.0, -20.0] is not [lowest, highest] (allowed: two numbers, rising)",
        "drivers.bus.nodes[1].fields.node: names the node; it is not a measurement",
        "drivers.bus.nodes[1].id: 'a' is used twice (allowed: each once)"]  # in the same run as the rest
    raw["checksum"] = "required"
    raw["nodes"] = [{"id": "a", "asset": "env:a"}, {"id": "a", "asset": "env:a"}]
    _, problems = check_all(NodesOptions, raw, "drivers.bus")
    assert [str(p) for p in problems] == ["drivers.bus.nodes[1].id: 'a' is used twice (allowed: each once)",
                                          "drivers.bus.nodes[1].asset: 'env:a' is used twice (allowed: each once)"]
