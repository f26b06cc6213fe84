"""The Enttec DMX USB Pro output: framing properties, and the real driver on a socat pseudo-terminal pair,
byte-exact, unplugged and plugged back in."""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.dmx.enttec_codec import Decoder, EnttecError, Message, dmx_frame, encode
from peers.socat import SocatPair
from tests.conftest import ADMIN, Daemon

messages = st.lists(st.builds(Message, st.integers(0, 255), st.binary(max_size=600)), max_size=5)


@given(messages)
def test_a_stream_whole_or_byte_by_byte_gives_the_same_messages(msgs: list[Message]) -> None:
    stream = b"".join(encode(m.label, m.data) for m in msgs)
    assert Decoder().feed(stream) == msgs
    one_by_one = Decoder()
    assert [m for i in range(len(stream)) for m in one_by_one.feed(stream[i:i + 1])] == msgs


@given(st.binary(max_size=300), messages)
def test_garbage_before_a_message_is_skipped_and_counted(garbage: bytes, msgs: list[Message]) -> None:
    decoder = Decoder()
    decoded = decoder.feed(garbage.replace(b"\x7e", b"") + b"".join(encode(m.label, m.data) for m in msgs))
    assert decoded == msgs


@given(st.binary(max_size=2000))
def test_any_bytes_decode_without_error(data: bytes) -> None:
    Decoder().feed(data)


def test_dmx_frames_are_label_6_with_start_code_zero() -> None:
    frame = dmx_frame(bytes([255, 1]))
    assert frame[:4] == bytes([0x7E, 6, 25, 0]) and frame[4] == 0 and frame[5:7] == bytes([255, 1])
    assert frame[-1] == 0xE7 and len(frame) == 30
    assert len(dmx_frame(bytes(512))) == 518
    with pytest.raises(EnttecError):
        dmx_frame(bytes(513))


class PtyPair(SocatPair):
    """The gateway opens `device`, the test plays the widget on the far end."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "ttyDMX")

    def frames(self, seconds: float) -> list[Message]:
        """What the widget received over `seconds`."""
        fd = os.open(self.far, os.O_RDONLY | os.O_NONBLOCK)
        decoder, out = Decoder(), []
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                if select.select([fd], [], [], left)[0]:
                    with contextlib.suppress(BlockingIOError):
                        out += decoder.feed(os.read(fd, 4096))
        finally:
            os.close(fd)
        return out


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    pair = PtyPair(tmp_path)
    pair.plug()
    yield pair
    pair.close()


def test_levels_reach_the_widget_and_a_replugged_widget_is_picked_up(pty_pair: PtyPair, daemon_factory: Any) -> None:
    extra = (f'\n[supervisor]\nbackoff_initial_s = 0.1\nbackoff_max_s = 0.3\n\n'
             f'[drivers.widget]\ntype = "enttec"\nport = "{pty_pair.device}"\nuniverse = 1\n')
    d: Daemon = daemon_factory(extra=extra).start()
    status, _, _ = d.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN, {"levels": {"1": 200, "3": 9}})
    assert status == 200
    levels = bytearray(512)
    levels[0], levels[2] = 200, 9
    assert any(m.label == 6 and encode(m.label, m.data) == dmx_frame(bytes(levels)) for m in pty_pair.frames(1.5))

    pty_pair.unplug()
    deadline = time.monotonic() + 10
    while (health := d.get("/api/v1/health"))["drivers"]["widget"]["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert health["status"] == "degraded" and health["drivers"]["venue"]["state"] == "running"

    pty_pair.plug()
    d.wait_healthy(timeout=10)
    d.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN, {"levels": {"2": 77}})
    levels[1] = 77
    assert any(encode(m.label, m.data) == dmx_frame(bytes(levels)) for m in pty_pair.frames(2.5))
    log = d.log.read_text()
    assert "driver widget not ready: " in log and "went away (unplugged?)" in log and "Traceback" not in log
    d.terminate()


def test_a_widget_that_stops_taking_frames_gets_no_growing_backlog(daemon_factory: Any, tmp_path: Path) -> None:
    main_fd, device_fd = os.openpty()  # the widget's side is never read: its buffer fills, then ours would
    try:
        device = tmp_path / "ttyStalled"
        device.symlink_to(os.ttyname(device_fd))
        extra = (f'\n[dmx]\nframe_rate_hz = 40\n\n'
                 f'[drivers.widget]\ntype = "enttec"\nport = "{device}"\nuniverse = 1\nkeepalive_s = 0.1\n')
        d: Daemon = daemon_factory(extra=extra).start()
        deadline = time.monotonic() + 20
        while (detail := d.get("/api/v1/health")["drivers"]["widget"]["detail"])["frames_skipped"] < 5:
            assert time.monotonic() < deadline, detail
            time.sleep(0.2)
        sent = detail["frames_sent"]
        time.sleep(1.0)
        detail = d.get("/api/v1/health")["drivers"]["widget"]["detail"]
        assert detail["frames_sent"] == sent and detail["frames_skipped"] >= 10  # nothing queued while stalled
        assert d.get("/api/v1/health")["drivers"]["widget"]["state"] == "running"
    finally:
        os.close(main_fd)
        os.close(device_fd)
