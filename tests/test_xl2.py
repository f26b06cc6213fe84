"""The NTi XL2 over its remote measurement protocol: the answer parsers' properties, the simulated meter's command
handling, and the real `xl2` driver in a gateway process talking to the simulated meter across a socat pair."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial import xl2_protocol as xl2
from drivers.sim.serial_devices import BackgroundLoop, PtyDevice, SimXl2
from peers.socat import SocatPair
from tests.conftest import Daemon
from tests.test_serial_nodes import reported, wait_for

statuses = st.sampled_from(["ok", "overload", "underrange"])


# -- parsing -------------------------------------------------------------------------------------------------------
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_answer_parses_or_raises_the_protocols_own_error(answer: str | bytes) -> None:
    for parse in (xl2.parse_level, xl2.parse_identity, xl2.parse_state):
        with contextlib.suppress(xl2.Xl2Error):
            parse(answer)


@given(st.one_of(st.none(), st.integers(-500, 2000).map(lambda x: x / 10)), statuses)
def test_a_level_formatted_as_the_meter_does_parses_back(value: float | None, status: xl2.Status) -> None:
    level = xl2.Level(value, status)
    assert xl2.parse_level(xl2.format_level(level)) == level
    assert xl2.parse_level(xl2.format_level(level).encode() + b"\r") == level


def test_answers_as_the_meter_and_its_clients_write_them() -> None:
    # The forms that open-source XL2 clients read: "94.2 dB" (value and unit), "53.8 dB, OK" (ntixl2's template,
    # written from the Remote Measurement manual), "-.- dB" where there is no value yet; overload and underrange.
    assert xl2.parse_level("94.2 dB") == xl2.Level(94.2)
    assert xl2.parse_level("53.8 dB, OK") == xl2.Level(53.8)
    assert xl2.parse_level(b"101.3 dB,OVR\r") == xl2.Level(101.3, "overload")
    assert xl2.parse_level("21.0 dB,UND") == xl2.Level(21.0, "underrange")
    assert xl2.parse_level("-.- dB,OK") == xl2.Level(None)
    assert xl2.parse_level("--.- dB") == xl2.Level(None)
    for garbage in ("", "dB", "94.2", "94.2 dBA", "94.2 dB,MAYBE", "94.2 dB,OK,OK", "RUNNING", "NTiAudio,XL2,x,y"):
        with pytest.raises(xl2.Xl2Error):
            xl2.parse_level(garbage)
    identity = xl2.parse_identity("NTiAudio,XL2,A2A-05955-E0,V4.71\r\n")
    assert (identity.model, identity.serial, identity.firmware) == ("XL2", "A2A-05955-E0", "V4.71")
    with pytest.raises(xl2.Xl2Error, match="not an XL2"):
        xl2.parse_identity("Rigol,DS1054Z,DS1ZA,00.04.04")
    assert xl2.parse_state("running\r") == "RUNNING"


def test_command_headers_in_long_short_or_mixed_form() -> None:
    assert xl2.canonical("MEAS:SLM:123:dt?") == xl2.canonical("MEASure:SLMeter:123:DT?") == "MEASure:SLMeter:123:dt?"
    assert xl2.canonical(":init:stat?") == "INITiate:STATe?"
    assert xl2.canonical("MEA:SLM:123:dt?") is None and xl2.canonical("MEAS:SLM:124?") is None
    assert xl2.dt_query("LAEQ") == b"MEAS:SLM:123:dt? LAEQ\n"


def test_the_simulated_meter_integrates_its_level_over_each_interval() -> None:
    meter = SimXl2(PtyDevice(), level_db=90.0)
    assert meter.answer("*IDN?") == "NTiAudio,XL2,A2A-00000-E0,V4.71"
    assert meter.answer("MEAS:SLM:123:dt? LAEQ") == "-.- dB,OK"  # not measuring yet
    for line in ("*RST", "MEAS:FUNC SLM", "INIT START", "MEAS:INIT"):
        assert meter.answer(line) is None
    assert meter.answer("INIT:STATE?") == "RUNNING"
    meter._since -= 1.0  # one second at 90 dB (moved back rather than slept)
    meter._window = (meter._window[0] - 1.0, *meter._window[1:])
    meter.level_db = 100.0
    meter._since -= 1.0
    meter._window = (meter._window[0] - 1.0, *meter._window[1:])
    meter.answer("MEASure:INITiate")
    laeq = xl2.parse_level(meter.answer("MEAS:SLM:123:dt? LAEQ") or "")
    assert laeq.value == pytest.approx(97.4, abs=0.1)  # 10 log10((10^9 + 10^10) / 2): energy, not dB, averaged
    assert meter.answer("MEAS:SLM:123:dt? LAFMAX") == "101.5 dB,OK"
    assert meter.answer("MEAS:SLM:123:dt? LAS") is None and meter.answer("BOGUS?") is None
    assert meter.answer("SYST:ERR?") == "6,-113" and meter.answer("SYST:ERR?") == "0"


# -- the driver, in a gateway, across a socat pair -------------------------------------------------------------------
@pytest.fixture
def meter_line(tmp_path: Path) -> Iterator[tuple[SocatPair, SimXl2, BackgroundLoop]]:
    pair = SocatPair(tmp_path, "ttyXL2")
    pair.plug()
    bg = BackgroundLoop()
    device = PtyDevice()
    bg.call(device.attach, str(pair.far))
    meter = SimXl2(device, level_db=94.0)
    yield pair, meter, bg
    bg.close()
    pair.close()


def xl2_config(port: Path) -> str:
    return f"""
[drivers.foh_spl]
type = "xl2"
port = "{port}"
zone = "stage"
interval_s = 0.25
timeout_s = 0.15
offline_after = 2
"""


def detail(d: Daemon) -> dict[str, Any]:
    return dict(d.get("/api/v1/health")["drivers"]["foh_spl"].get("detail", {}))


def test_levels_reach_the_twin_each_interval_and_bad_ones_are_flagged(
        meter_line: tuple[SocatPair, SimXl2, BackgroundLoop], daemon_factory: Any) -> None:
    pair, meter, bg = meter_line
    d: Daemon = daemon_factory(extra=xl2_config(pair.device)).start()
    spl = wait_for(lambda: (r := reported(d, "spl:stage")).get("laeq_db") and r, 10, "LAeq in the twin")
    assert spl["laeq_db"] == pytest.approx(94.0, abs=0.1) and spl["lafmax_db"] == pytest.approx(95.5, abs=0.1)
    assert spl["lcpeak_db"] == pytest.approx(109.0, abs=0.1)
    assert spl["online"] is True and spl["identity"] == "NTiAudio,XL2,A2A-00000-E0,V4.71"
    asset = d.get("/api/v1/twin/assets/spl:stage")
    assert (asset["kind"], asset["zone"], asset["owner"]) == ("spl_meter", "stage", "foh_spl")
    assert meter.commands[:6] == ["*IDN?", "*RST", "MEAS:FUNC SLM", "INIT START", "MEAS:INIT", "INIT:STATE?"]

    # Each reading is stamped with the end of its interval: one LAeq per interval, interval_s apart.
    wait_for(lambda: len(d.get("/api/v1/telemetry?asset=spl:stage&metric=laeq_db")["readings"]) >= 6, 10, "history")
    stamps = [dt.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
              for r in d.get("/api/v1/telemetry?asset=spl:stage&metric=laeq_db")["readings"]]
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
    assert gaps[0] > 0.1 and 0.2 < gaps[len(gaps) // 2] < 0.3, gaps

    bg.call(setattr, meter, "level_db", 160.0)  # beyond any venue: a broken microphone, not a loud night
    wait_for(lambda: reported(d, "spl:stage").get("out_of_range") == ["laeq_db", "lafmax_db", "lcpeak_db"], 5,
             "the flag")
    assert reported(d, "spl:stage")["laeq_db"] < 150
    bg.call(setattr, meter, "status", "overload")
    bg.call(setattr, meter, "level_db", 128.0)
    wait_for(lambda: reported(d, "spl:stage").get("status") == "overload", 5, "overload")
    wait_for(lambda: reported(d, "spl:stage").get("laeq_db") == 128.0, 5, "the overloaded level, a lower bound")
    assert reported(d, "spl:stage")["out_of_range"] == []
    bg.call(setattr, meter, "status", "ok")
    wait_for(lambda: reported(d, "spl:stage").get("status") == "ok", 5, "the overload gone")
    counts = detail(d)
    assert counts["out_of_range"] >= 3 and counts["overload"] >= 1 and counts["timeouts"] == 0
    d.terminate()


def test_a_silent_or_babbling_meter_goes_offline_and_is_set_up_again(
        meter_line: tuple[SocatPair, SimXl2, BackgroundLoop], daemon_factory: Any) -> None:
    pair, meter, bg = meter_line
    d: Daemon = daemon_factory(extra=xl2_config(pair.device)).start()
    wait_for(lambda: reported(d, "spl:stage").get("laeq_db"), 10, "LAeq in the twin")

    bg.call(setattr, meter, "mode", "silent")
    wait_for(lambda: reported(d, "spl:stage").get("online") is False, 5, "the meter offline")
    assert detail(d)["timeouts"] >= 2 and d.get("/api/v1/health")["drivers"]["foh_spl"]["state"] == "running"
    bg.call(setattr, meter, "level_db", 88.0)
    bg.call(setattr, meter, "mode", "normal")
    wait_for(lambda: reported(d, "spl:stage").get("online") is True, 5, "the meter back")
    wait_for(lambda: reported(d, "spl:stage").get("laeq_db") == 88.0, 5, "levels again")
    assert detail(d)["setups"] == 2 and meter.commands.count("*RST") == 2

    bg.call(setattr, meter, "mode", "garbage")
    wait_for(lambda: reported(d, "spl:stage").get("online") is False, 5, "the babbling meter offline")
    assert detail(d)["bad_answers"] >= 2
    bg.call(setattr, meter, "mode", "normal")
    wait_for(lambda: detail(d).get("setups") == 3 and reported(d, "spl:stage").get("online"), 5, "set up again")

    bg.call(setattr, meter, "licensed", False)  # it starts, yet gives no results: set up less and less often
    wait_for(lambda: detail(d).get("futile_setups", 0) >= 2, 10, "futile set-ups")
    assert "is its Remote Measurement option installed?" in d.log.read_text()
    bg.call(setattr, meter, "licensed", True)
    wait_for(lambda: reported(d, "spl:stage").get("online") is True and detail(d)["futile_setups"] == 0, 10,
             "results again")

    pair.unplug()  # the USB cable: the driver is not ready until the port is back, then sets the meter up again
    wait_for(lambda: reported(d, "spl:stage").get("connected") is False, 10, "the port gone")
    pair.plug()
    bg.call(meter.device.attach, str(pair.far))
    d.wait_healthy(timeout=10)
    wait_for(lambda: reported(d, "spl:stage").get("online") is True, 10, "the meter after the replug")
    assert "Traceback" not in d.log.read_text()
    d.terminate()
