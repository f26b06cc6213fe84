"""The cue list's view in a real browser (Chromium, the dashboard tests' fixtures): the timecode live as Art-Net
TimeCode arrives at the daemon's `artnet-in` (on a port of the test's own, on loopback), the cues' states, and an
operator's arm, skip and fire; a viewer sees the list without the buttons."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from gateway.show.timecode import Rate, Timecode
from peers.ports import free_port, free_udp_port
from tests.conftest import OPERATOR, VIEWER, Daemon
from tests.test_dashboard import browser, by_testid, go, ids_of, login, text, wait_for

__all__ = ["browser"]  # the dashboard tests' browser, one for this module

CUES = """
[[cues]]
id = "opener"
timecode = "10:00:00:00"
preset = "glow"

[[cues]]
id = "later"
timecode = "10:00:30:00"
effect = { kind = "solid", colour = "#ff2a6d" }
zones = ["floor"]
"""


def art_timecode(tc: Timecode) -> bytes:
    """ArtTimeCode as a console sends it (Art-Net 4: ID, OpCode 0x9700, version 14, two fillers, the label, type)."""
    kind = list(Rate).index(tc.rate)
    return b"Art-Net\x00" + struct.pack("<H", 0x9700) + bytes([0, 14, 0, 0, tc.frames, tc.seconds, tc.minutes,
                                                               tc.hours, kind])


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    directory = tmp_path_factory.mktemp("cues-dashboard")
    port, artnet = free_port(), free_udp_port()
    (directory / "cues.toml").write_text(CUES)
    (directory / "gateway.toml").write_text(f"""
[gateway]
id = "gw"
venue = "hall"
data_dir = "data"

[api]
listen = "127.0.0.1:{port}"

[[api.tokens]]
name = "viewer"
role = "viewer"
demo_token = "{VIEWER}"

[[api.tokens]]
name = "operator"
role = "operator"
demo_token = "{OPERATOR}"

[show.cues]
file = "cues.toml"

[[show.zones]]
name = "floor"
index = 0

[[show.presets]]
name = "glow"
colour = "#1e50ff"

[drivers.console]
type = "artnet-in"
bind = "127.0.0.1"
port = {artnet}
""")
    daemon = Daemon(directory / "gateway.toml", port).start()
    try:
        yield daemon, artnet
    finally:
        daemon.cleanup()


def test_the_cue_view_shows_the_timecode_live_and_an_operator_arms_skips_and_fires(browser: object,
                                                                                  box: tuple[Daemon, int]) -> None:
    daemon, artnet = box
    login(browser, daemon, OPERATOR, "operator")
    go(browser, "cues")
    wait_for(lambda: text(browser, "cue-state-opener") == "next", "the opener next")
    assert text(browser, "cue-timecode") == "--:--:--:--" and text(browser, "cue-running") == "waiting"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as console:  # five seconds before the opener, 25 fps
        start = Timecode(9, 59, 55, 0, Rate.EBU)
        for k in range(15):
            console.sendto(art_timecode(Timecode.of_frame(start.frame() + k, Rate.EBU)), ("127.0.0.1", artnet))
            time.sleep(Rate.EBU.frame_s)
    wait_for(lambda: text(browser, "cue-timecode") == "09:59:55:14", "the last frame's label")
    wait_for(lambda: text(browser, "cue-running") == "stopped", "the timecode stopped")
    assert text(browser, "cue-rate") == "25 fps"  # the list's rate: the timecode's

    by_testid(browser, "cue-skip-opener").click()
    wait_for(lambda: text(browser, "cue-state-opener") == "skipped", "the opener skipped")
    assert text(browser, "cue-next") == "Next: later"
    by_testid(browser, "cue-arm-opener").click()
    wait_for(lambda: text(browser, "cue-state-opener") == "next", "the opener armed again")
    by_testid(browser, "cue-fire-later").click()
    wait_for(lambda: text(browser, "cue-state-later") == "fired", "later fired by hand")
    assert text(browser, "cue-message") == "Fired later in floor"
    fired = daemon.get("/api/v1/show")["recent"][0]
    assert fired["colour"] == "#ff2a6d" and fired["zones"] == ["floor"]

    login(browser, daemon, VIEWER, "viewer")
    go(browser, "cues")
    wait_for(lambda: text(browser, "cue-state-later") == "fired", "the list for a viewer")
    assert not [i for i in ids_of(browser, "cue-") if i.startswith(("cue-arm-", "cue-fire-", "cue-skip-"))]
