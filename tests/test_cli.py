"""The `venue-gateway` commands a tech runs against a live box, run as a tech runs them: `python -m gateway ...` as a
subprocess against the demo daemon (and, for `mirror --send`, through a real Mosquitto), each checked by its
effect on the gateway."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peers.mosquitto import Mosquitto
from tests.conftest import ADMIN, OPERATOR, ROOT, VIEWER, Daemon, free_port


def vg(*args: str, token: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(token))


def _env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENUE_GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    if token is not None:
        env["VENUE_GATEWAY_TOKEN"] = token
    return env


def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def test_get_and_set_one_asset(daemon_factory: Any, tmp_path: Path) -> None:
    d: Daemon = daemon_factory(speed=20).start()
    url = ("--url", d.url)

    got = vg("get", "amp:r01.1", *url, token=VIEWER)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("amp:r01.1  amplifier, zone stage, owned by venue; version ")
    assert "temperature_c" in got.stdout and "desired  (nothing)" in got.stdout
    doc = json.loads(vg("get", "amp:r01.1", "--json", *url, token=VIEWER).stdout)
    assert doc["id"] == "amp:r01.1" and "temperature_c" in doc["reported"]
    missing = vg("get", "amp:nope", *url, token=VIEWER)
    assert missing.returncode == 1 and "404 no asset 'amp:nope'" in missing.stderr

    admin = tmp_path / "admin.token"
    admin.write_text(ADMIN + "\n")
    done = vg("set", "amp:r01.1", "enabled=false", "--token-file", str(admin), *url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("amp:r01.1: desired enabled=false; version ")
    assert d.get("/api/v1/twin/assets/amp:r01.1")["desired"] == {"enabled": False}
    until(lambda: d.get("/api/v1/twin/assets/amp:r01.1")["reported"].get("enabled") is False,
          what="the sim driver applies enabled=false")

    refused = vg("set", "amp:r01.1", "gain_db=99", *url, token=ADMIN)  # out of the amplifier's range
    assert refused.returncode == 1
    assert refused.stderr.startswith("venue-gateway set: amp:r01.1: refused, nothing changed: ")
    assert "gain_db (-40 to 6)" in refused.stderr
    unknown = vg("set", "amp:r01.1", '{"colour": "red"}', *url, token=ADMIN)
    assert unknown.returncode == 1 and "refused, nothing changed" in unknown.stderr and "colour" in unknown.stderr
    assert d.get("/api/v1/twin/assets/amp:r01.1")["desired"] == {"enabled": False}

    stale = vg("set", "amp:r01.1", "gain_db=-3", "--if-version", "1", *url, token=ADMIN)
    assert stale.returncode == 1 and "is at version" in stale.stderr and "not 1: nothing changed" in stale.stderr
    viewer = vg("set", "amp:r01.1", "gain_db=-3", *url, token=VIEWER)
    assert viewer.returncode == 1 and "403" in viewer.stderr and "admin" in viewer.stderr
    bad = vg("set", "amp:r01.1", "{gain_db: -3", *url, token=ADMIN)
    assert bad.returncode == 2 and "not a JSON object" in bad.stderr
    assert vg("set", "amp:r01.1", "gain_db", *url, token=ADMIN).returncode == 2

    level = vg("set", "universe:1", "levels.10=255", "levels.11=128", *url, token=ADMIN)
    assert level.returncode == 0, level.stderr
    until(lambda: d.get("/api/v1/twin/assets/universe:1")["reported"]["levels"][9:11] == [255, 128],
          what="the universe's levels follow its desired state")
    over = vg("set", "universe:1", "levels.10=256", *url, token=ADMIN)
    assert over.returncode == 1 and "level 256 of channel 10 is out of range" in over.stderr

    gone = vg("get", "amp:r01.1", "--url", f"http://127.0.0.1:{free_port()}", token=VIEWER)
    assert gone.returncode == 1 and "cannot reach the gateway at http://127.0.0.1:" in gone.stderr
    no_token = vg("get", "amp:r01.1", *url)
    assert no_token.returncode == 1 and "a token is needed" in no_token.stderr


def test_stop_blackout_and_tempo(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(speed=20).start()
    url = ("--url", d.url)
    assert vg("set", "universe:1", "levels.1=255", *url, token=ADMIN).returncode == 0
    until(lambda: d.get("/api/v1/twin/assets/universe:1")["reported"]["levels"][0] == 255, what="a light on")

    stopped = vg("stop", *url, token=OPERATOR)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("every effect stopped (effect ") and "floor, balcony, bar" in stopped.stdout
    last = d.get("/api/v1/twin/assets/show_control")["reported"]["last_effect"]
    assert last["effect"]["kind"] == "blackout" and last["effect_id"] in stopped.stdout
    # `fire` says, as `stop` and `blackout` do, what each transmitter did with the effect (sent, or why not).
    fired = vg("fire", "chorus", "--zone", "floor", *url, token=OPERATOR)
    assert fired.returncode == 0, fired.stderr
    delivery = d.get("/api/v1/twin/assets/show_control")["reported"]["last_effect"]["delivery"]
    assert delivery and fired.stdout.rstrip().endswith(
        "; " + "; ".join(f"{name}: {status}" for name, status in delivery.items())), fired.stdout
    assert vg("blackout", *url, token=VIEWER).returncode == 1

    dark = vg("blackout", *url, token=OPERATOR)
    assert dark.returncode == 0, dark.stderr
    assert "DMX universe" in dark.stdout and " at 0 until a level is raised" in dark.stdout
    universe = until(lambda: (u := d.get("/api/v1/twin/assets/universe:1"))["reported"]["levels"][0] == 0 and u,
                     what="the universe dark in the twin")
    assert not any(universe["reported"]["levels"]) and universe["desired"] == {}
    last = d.get("/api/v1/twin/assets/show_control")["reported"]["last_effect"]
    assert last["effect"]["kind"] == "blackout" and last["effect_id"] in dark.stdout

    assert vg("tempo", *url, token=VIEWER).stdout == "128 bpm\n"  # the demo's
    changed = vg("tempo", "140", *url, token=OPERATOR)
    assert changed.returncode == 0 and changed.stdout == "140 bpm\n"
    assert d.get("/api/v1/twin/assets/show_control")["reported"]["tempo_bpm"] == 140
    wrong = vg("tempo", "0", *url, token=OPERATOR)
    assert wrong.returncode == 1 and "tempo 0.0 bpm is out of range (allowed: 1 to 999)" in wrong.stderr

    tap = subprocess.Popen([sys.executable, "-m", "gateway", "tempo", "--tap", *url], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(OPERATOR))
    assert tap.stdin is not None and tap.stderr is not None
    assert "press Enter on each beat" in tap.stderr.readline()
    for _ in range(4):  # a beat every half second: 120 bpm
        tap.stdin.write("\n")
        tap.stdin.flush()
        time.sleep(0.5)
    out, err = tap.communicate(timeout=30)
    assert tap.returncode == 0, err
    answers = [float(line.split()[0]) for line in out.splitlines()]
    assert len(answers) == 4 and answers[0] == 140 and 110 <= answers[-1] <= 125, answers
    assert d.get("/api/v1/tempo") == {"tempo_bpm": answers[-1]}


def test_follow_prints_each_change_and_ends_on_ctrl_c(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(speed=20).start()
    url = ("--url", d.url)
    follow = subprocess.Popen([sys.executable, "-m", "gateway", "follow", "--asset", "amp:r01.*", *url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(VIEWER))
    assert follow.stdout is not None and follow.stderr is not None
    first = follow.stderr.readline()
    assert first.startswith("following demo-01 (venue demo-hall) from version "), first
    d.request("PATCH", "/api/v1/twin/assets/amp:r01.2/desired", ADMIN, {"gain_db": -6})
    lines: list[str] = []
    while not (any("amp:r01.2  desired gain_db=-6" in line for line in lines)
               and any("amp:r01.1  reported temperature_c=" in line for line in lines)):
        lines.append(follow.stdout.readline())
        assert lines[-1], follow.stderr.read()
    assert all(line.split("  ")[2].startswith("amp:r01.") for line in lines), lines
    versions = [int(line.split()[0]) for line in lines]
    assert versions == sorted(versions) and versions[0] > int(first.split()[-3].rstrip(","))
    follow.send_signal(signal.SIGINT)
    _, err = follow.communicate(timeout=10)
    assert follow.returncode == 0, err
    assert "Traceback" not in err and "stopped at version " in err and "resume with --since " in err
    resume = int(err.split("resume with --since ")[1].split()[0])

    # from a version on, as JSON lines; --count ends it
    more = vg("follow", "--since", str(resume), "--count", "3", "--json", *url, token=VIEWER)
    assert more.returncode == 0, more.stderr
    changes = [json.loads(line) for line in more.stdout.splitlines()]
    assert len(changes) == 3 and [c["version"] for c in changes] == list(range(resume + 1, resume + 4))

    denied = vg("follow", "--count", "1", *url, token="not-a-token")
    assert denied.returncode == 1 and "401 the bearer token is not valid" in denied.stderr
    gone = vg("follow", "--url", f"http://127.0.0.1:{free_port()}", token=VIEWER)
    assert gone.returncode == 1 and "cannot reach the gateway" in gone.stderr

    # the gateway going away ends the stream with its close code and where to resume
    follow = subprocess.Popen([sys.executable, "-m", "gateway", "follow", "--kind", "nothing", *url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(VIEWER))
    assert follow.stderr is not None and follow.stderr.readline().startswith("following demo-01")
    assert d.terminate() == 0
    _, err = follow.communicate(timeout=10)
    assert follow.returncode == 1 and "the gateway closed the stream (1001" in err and "resume with --since" in err


def test_mirror_sends_a_cloud_command_and_prints_the_answer(daemon_factory: Any, mosquitto: Mosquitto) -> None:
    broker = f"mqtt://127.0.0.1:{mosquitto.port}"
    d: Daemon = daemon_factory(speed=20, extra=f'[cloud]\nbroker = "{broker}"\n').start()
    until(lambda: d.get("/api/v1/health")["services"]["cloud"].get("detail", {}).get("link") == "online",
          what="the cloud link online")

    def send(*args: str) -> subprocess.CompletedProcess[str]:
        return vg("mirror", "--broker", broker, "--gateway", "demo-01", "--send", *args)

    fired = send("fire", "preset=chorus", 'zones=["floor"]')
    assert fired.returncode == 0, fired.stderr
    assert fired.stdout.startswith("demo-hall/demo-01: command_result ")
    answer = json.loads(fired.stdout.split("command_result ", 1)[1])
    assert answer["command"] == "cmd/fire" and answer["zones"] == ["floor"] and answer["request_id"].startswith("cli-")
    last = d.get("/api/v1/twin/assets/show_control")["reported"]["last_effect"]
    assert last["effect_id"] == answer["effect_id"] and last["preset"] == "chorus"

    refused = send("desired", "asset=amp:r01.1", "desired.gain_db=99")
    assert refused.returncode == 1
    assert "demo-hall/demo-01 refused desired (desired_refused): " in refused.stderr, refused.stderr
    assert "gain_db" not in d.get("/api/v1/twin/assets/amp:r01.1")["desired"]
    applied = send("desired", '{"asset": "amp:r01.1", "desired": {"enabled": false}}')
    assert applied.returncode == 0, applied.stderr
    assert d.get("/api/v1/twin/assets/amp:r01.1")["desired"] == {"enabled": False}
    stopped = send("stop")
    assert stopped.returncode == 0 and '"command":"cmd/stop"' in stopped.stdout
    unknown = send("reboot")
    assert unknown.returncode == 1 and "(unknown_command)" in unknown.stderr

    stranger = vg("mirror", "--broker", broker, "--gateway", "nobody", "--send", "stop")
    assert stranger.returncode == 1 and "no gateway nobody is known" in stranger.stderr
    usage = vg("mirror", "--broker", broker, "--send", "stop")
    assert usage.returncode == 2 and "--send needs --gateway" in usage.stderr
    away = vg("mirror", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--gateway", "demo-01", "--send", "stop")
    assert away.returncode == 1 and "cannot be reached" in away.stderr

    mosquitto.stop()  # the retained status is kept (persistence), the gateway is away when the command goes out
    d.terminate()
    mosquitto.start()
    silent = vg("mirror", "--broker", broker, "--gateway", "demo-01", "--send", "stop", "--wait", "2")
    assert silent.returncode == 1 and "no answer from demo-hall/demo-01 within 2 s: it is offline (" in silent.stderr


def test_every_command_has_help() -> None:
    for command in ("get", "set", "stop", "blackout", "tempo", "follow", "mirror"):
        shown = vg(command, "--help")
        assert shown.returncode == 0 and f"usage: venue-gateway {command}" in shown.stdout, shown.stderr
        assert "--url" in shown.stdout or command == "mirror"


def test_ctrl_c_while_the_gateway_keeps_the_cli_waiting_exits_130_quietly() -> None:
    with socket.socket() as server:  # takes the connection and never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(30)
        waiting = subprocess.Popen([sys.executable, "-m", "gateway", "get", "amp:r01.1", "--url",
                                    f"http://127.0.0.1:{server.getsockname()[1]}", "--timeout", "60"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(VIEWER),
                                   # as from a terminal: a suite started in the background has SIGINT ignored,
                                   # and a child inherits that
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        connection, _ = server.accept()
        with connection:
            waiting.send_signal(signal.SIGINT)
            _, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 130 and "Traceback" not in err, err


def test_a_reader_gone_from_the_pipe_gets_no_traceback() -> None:
    """`venue-gateway ... | head`: the reader may go before the command has written all; no traceback then."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes
    try:
        done = subprocess.run([str(ROOT / ".venv/bin/venue-gateway"), "check-config", str(ROOT / "config/demo.toml")],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.returncode == 141 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
