"""The data the dashboard reads beside the twin: the show, the alerts, the DMX levels (viewer), the running
configuration with its secrets redacted, a configuration checked as `check-config` checks it, and the recent log
(admin). The demo as a subprocess on a real port, and the API in-process (tests/test_api.py's fixtures) where a
test raises alerts itself."""

from __future__ import annotations

import json
import logging
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import cli
from gateway.alerts import RECENT_ALERTS
from gateway.api.admin import REDACTED, redacted
from gateway.daemon import Gateway
from gateway.logring import LOG_RECORDS, MAX_MESSAGE_CHARS, LogRing
from gateway.twin import rfc3339
from tests.conftest import ADMIN, OPERATOR, VIEWER, Daemon
from tests.test_api import ADMIN as IN_PROCESS_ADMIN
from tests.test_api import AUTH, client, gateway  # noqa: F401 (the in-process API's fixtures)
from tests.test_api import VIEWER as IN_PROCESS_VIEWER

VIEWERS = ("/api/v1/show", "/api/v1/alerts", "/api/v1/dmx", "/api/v1/dmx?universe=1")
ADMINS = ("/api/v1/config", "/api/v1/log")


def post_text(daemon: Daemon, path: str, body: bytes, content_type: str = "text/plain",
              token: str = ADMIN) -> tuple[int, Any]:
    req = urllib.request.Request(daemon.url + path, data=body, method="POST",
                                 headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_each_endpoint_asks_for_its_role(demo: Daemon) -> None:
    for path in VIEWERS + ADMINS:
        status, _, body = demo.request("GET", path, None)
        assert status == 401 and json.loads(body)["error"] == "unauthorized", path
        status, _, body = demo.request("GET", path, "not-a-token")
        assert status == 401, path
    for path in VIEWERS:
        assert demo.request("GET", path, VIEWER)[0] == 200, path
    for path in ADMINS:
        for token in (VIEWER, OPERATOR):
            status, _, body = demo.request("GET", path, token)
            assert status == 403 and json.loads(body)["error"] == "forbidden", (path, token)
        assert demo.request("GET", path, ADMIN)[0] == 200, path
    assert post_text(demo, "/api/v1/config/check", b"", token=OPERATOR)[0] == 403
    assert post_text(demo, "/api/v1/config/check", b"", token="not-a-token")[0] == 401


def test_the_show_lists_its_presets_and_recent_effects_newest_first(demo: Daemon) -> None:
    first = json.loads(demo.request("POST", "/api/v1/effects", OPERATOR, {"preset": "intro", "zones": ["bar"]})[2])
    second = json.loads(demo.request("POST", "/api/v1/effects", OPERATOR,
                                     {"preset": "chorus", "zones": ["floor"], "lead_ms": 1500})[2])
    show = demo.get("/api/v1/show")
    assert show["tempo_bpm"] > 0 and show["max_flash_hz"] == 3.0
    assert [z["name"] for z in show["zones"]] == ["floor", "balcony", "bar"]
    assert show["zones"][0]["delay_ms"] == round(10 / 343 * 1000)
    presets = {p["name"]: p for p in show["presets"]}
    assert presets["drop"]["kind"] == "strobe" and presets["drop"]["flashing"] and presets["drop"]["flash_hz"] > 0
    assert not presets["encore"]["flashing"] and presets["encore"]["flash_hz"] == 0
    newest, before = show["recent"][:2]
    assert (newest["effect_id"], before["effect_id"]) == (second["effect_id"], first["effect_id"])
    assert newest["preset"] == "chorus" and newest["kind"] == "wave" and newest["zones"] == ["floor"]
    assert newest["lead_ms"] == 1500 and newest["starts_at"] == second["starts_at"]
    assert newest["delivery"] == second["delivery"] and "wristbands" in newest["delivery"]
    (group,) = newest["groups"]
    assert group["show_ms"] == newest["show_ms"] + group["delay_ms"]


def test_dmx_levels_are_the_outputs_frame(demo: Daemon) -> None:
    listed = demo.get("/api/v1/dmx")
    assert listed["universes"] == [{"universe": 1, "outputs": ["artnet"]}, {"universe": 2, "outputs": ["sacn"]}]
    patched = demo.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN,
                           {"levels": {"1": 255, "512": 7}})
    assert patched[0] == 200, patched
    levels = demo.get("/api/v1/dmx?universe=1")
    assert levels["universe"] == 1 and len(levels["levels"]) == 512 and levels["changes"] > 0
    assert levels["levels"][0] == 255 and levels["levels"][511] == 7 and sum(levels["levels"][1:511]) == 0
    for bad in ("3", "abc", "-1", "1.5", "", "99999"):
        status, _, body = demo.request("GET", f"/api/v1/dmx?universe={bad}", VIEWER)
        assert status == 400 and "allowed" in json.loads(body)["message"], (bad, body)
    began = time.perf_counter()
    for _ in range(20):
        demo.get("/api/v1/dmx?universe=1")
    print(f"GET /dmx?universe=1: {(time.perf_counter() - began) / 20 * 1000:.2f} ms a request (HTTP/1.1, new "
          "connection each)")


def _secrets(doc: Any, key: str = "") -> Iterator[str]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _secrets(v, k)
    elif isinstance(doc, list):
        for v in doc:
            yield from _secrets(v, key)
    elif key in ("demo_token", "demo_key"):
        yield str(doc)


def test_the_running_configuration_has_no_secret(demo: Daemon) -> None:
    status, _, body = demo.request("GET", "/api/v1/config", ADMIN)
    assert status == 200
    secrets = set(_secrets(tomllib.loads(demo.config.read_text())))
    assert {VIEWER, OPERATOR, ADMIN} <= secrets and len(secrets) >= 5  # the tokens, the show's and a BTHome key
    text = body.decode()
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"secrets in GET /config: {leaked}"
    doc = json.loads(body)
    assert doc["file"] == str(demo.config.resolve()) and doc["gateway"]["id"] == "demo-01"
    assert [t["demo_token"] for t in doc["api"]["tokens"]] == [REDACTED] * 3
    assert [t["role"] for t in doc["api"]["tokens"]] == ["viewer", "operator", "admin"]
    assert doc["drivers"]["wristbands"]["demo_key"] == REDACTED and doc["drivers"]["wristbands"]["key_file"] is None
    assert doc["drivers"]["venue"]["type"] == "sim" and doc["store"]["max_mb"] == 256


def test_redaction_follows_key_names_and_known_values() -> None:
    doc = {"name": "tok-en-value", "keys": ["abc"], "password": 3, "ca_file": "/etc/ca.pem", "key_env": "SHOW_KEY",
           "broker": {"client_secret": "s3", "nested": {"api_key": {"a": ["deep"]}}}, "keepalive_s": 2.0,
           "salt_rotation": "12:00", "monkey": "m", "psk": None, "api-key": "k", "showKey": "k", "SECRET": "s",
           "key_path": "/k", "keyboard": "qwerty", "bindkey": "b", "api_key2": "k", "passWord": "p"}
    out = redacted(doc, lambda text: text == "tok-en-value")
    assert out == {"name": REDACTED, "keys": [REDACTED], "password": REDACTED, "ca_file": "/etc/ca.pem",
                   "key_env": "SHOW_KEY", "broker": {"client_secret": REDACTED,
                                                     "nested": {"api_key": {"a": [REDACTED]}}},
                   "keepalive_s": 2.0, "salt_rotation": "12:00", "monkey": REDACTED, "psk": None, "api-key": REDACTED,
                   "showKey": REDACTED, "SECRET": REDACTED, "key_path": "/k", "keyboard": "qwerty",
                   "bindkey": REDACTED, "api_key2": REDACTED, "passWord": REDACTED}


def _printed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """What `venue-gateway check-config` prints (its command, run here: the daemon's environment and user)."""
    assert cli.main(["check-config", *argv]) == 2
    return capsys.readouterr().err.splitlines()


def test_a_configuration_is_checked_exactly_as_check_config_says(demo: Daemon,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    good = demo.config.read_bytes()
    assert post_text(demo, "/api/v1/config/check", good, "application/toml") == (200, {"ok": True, "problems": []})
    bad = good.decode().replace("max_mb = 256", "max_mb = 1\nmystery = true", 1)
    bad += ('\n[[api.tokens]]\nrole = "admin"\nenv = "VG_NOT_SET_ANYWHERE"\n'
            '[drivers.extra]\ntype = "artnet"\nuniverses = [9]\n')
    seen = {}
    try:  # check-config reads the daemon's own file (which the daemon read at its start): the same path in each line
        demo.config.write_text(bad)
        for query, args in (("", ()), ("?offline=true", ("--offline",))):
            status, answer = post_text(demo, f"/api/v1/config/check{query}", bad.encode())
            expected = _printed(capsys, *args, str(demo.config))
            assert status == 200 and answer == {"ok": False, "problems": expected}, (answer, expected)
            assert all(line.startswith(f"{demo.config.resolve()}: ") for line in expected)
            seen[query] = "\n".join(expected)
    finally:
        demo.config.write_bytes(good)
    for problem in ("store.max_mb", "store.mystery: unknown key", "drivers.extra.targets"):
        assert problem in seen[""] and problem in seen["?offline=true"], (problem, seen)
    assert "VG_NOT_SET_ANYWHERE" in seen[""] and "VG_NOT_SET_ANYWHERE" not in seen["?offline=true"]  # the box's
    syntax = post_text(demo, "/api/v1/config/check", b"[gateway\n")
    assert syntax[0] == 200 and syntax[1]["problems"][0].startswith(f"{demo.config.resolve()}: (syntax): ")
    foreign = post_text(demo, "/api/v1/config/check", good + b'\n[drivers.x]\ntype = "antigravity:Fly"\n')
    assert foreign[0] == 200 and not foreign[1]["ok"]
    assert foreign[1]["problems"] == [f"{demo.config.resolve()}: drivers.x.type: 'antigravity:Fly' is a module this "
                                      "gateway has not loaded, and the HTTP API imports none (allowed: an installed "
                                      "driver's name here; check the file on the box with venue-gateway "
                                      "check-config)"]
    assert post_text(demo, "/api/v1/config/check", b"\xff[gateway]")[0] == 400
    assert post_text(demo, "/api/v1/config/check", b"{}", "application/json")[0] == 415
    assert post_text(demo, "/api/v1/config/check?offline=yes", good)[0] == 400
    assert post_text(demo, "/api/v1/config/check", b"#" * (257 * 1024))[0] == 413


def test_the_log_is_read_incrementally(demo: Daemon) -> None:
    log = demo.get("/api/v1/log", ADMIN)
    assert log["records"] and log["records"][-1]["seq"] == log["last"] and log["oldest"] == 1
    assert any("HTTP API listening" in r["message"] for r in log["records"])
    assert not any(token in json.dumps(log) for token in (VIEWER, OPERATOR, ADMIN))  # logged before the ring
    demo.request("POST", "/api/v1/effects", OPERATOR, {"preset": "sparkle", "zones": ["balcony"], "lead_ms": 5000})
    since = demo.get(f"/api/v1/log?after={log['last']}", ADMIN)
    assert since["records"] and all(r["seq"] > log["last"] for r in since["records"])
    assert any("fired for balcony" in r["message"] and r["level"] == "INFO" and r["logger"] == "gateway.show.engine"
               for r in since["records"])
    assert demo.get(f"/api/v1/log?after={since['last'] + 10**6}", ADMIN)["records"][0]["seq"] == 1
    for bad in ("-1", "x", "1e3"):
        assert demo.request("GET", f"/api/v1/log?after={bad}", ADMIN)[0] == 400


def test_the_log_ring_keeps_its_bound() -> None:
    ring = LogRing()
    logger = logging.getLogger("tests.logring")
    logger.addHandler(ring)
    logger.propagate = False
    try:
        for i in range(LOG_RECORDS + 100):
            logger.warning("record %d %s", i, "x" * (MAX_MESSAGE_CHARS if i == LOG_RECORDS + 99 else 0))
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
        logger.warning("%d args", "not a number")  # a bad format: its text kept, no error
    finally:
        logger.removeHandler(ring)
        logger.propagate = True
    kept = ring.after(0)
    records = kept["records"]
    assert len(records) == LOG_RECORDS and kept["oldest"] == 103 and kept["last"] == LOG_RECORDS + 102
    assert records[-3]["message"].endswith("…") and len(records[-3]["message"]) == MAX_MESSAGE_CHARS
    assert records[-2]["message"].startswith("failed\nTraceback") and "ValueError: boom" in records[-2]["message"]
    assert records[-1]["message"] == "%d args" and records[-1]["level"] == "WARNING"
    assert [r["seq"] for r in ring.after(kept["last"] - 2)["records"]] == [kept["last"] - 1, kept["last"]]


async def test_alerts_standing_and_recent(client: TestClient[Any, Any], gateway: Gateway) -> None:  # noqa: F811
    alerts = gateway.alerts
    alerts.raise_alert("sound_level", "floor over 100 dB", {"alert": "sound_level", "zone": "floor"},
                       key="sound:floor")
    since = alerts.standing["sound:floor"].at
    alerts.raise_alert("sound_level", "floor still over", {"alert": "sound_level", "zone": "floor"},
                       key="sound:floor")
    alerts.raise_alert("model_refused", "mood: not a model", {"alert": "model_refused"})
    resp = await client.get("/api/v1/alerts", headers=AUTH[IN_PROCESS_VIEWER])
    assert resp.status == 200
    doc = await resp.json()
    (standing,) = doc["standing"]
    assert standing["key"] == "sound:floor" and standing["text"] == "floor still over"
    assert standing["doc"] == {"alert": "sound_level", "zone": "floor"}
    assert standing["since"] == rfc3339(since)  # raised again while it stands: it stands since the first time
    assert [(a["kind"], a["state"]) for a in doc["recent"]] == [
        ("model_refused", "event"), ("sound_level", "raised"), ("sound_level", "raised")]
    alerts.raise_alert("sound_level", "floor back under", {"alert": "sound_level", "zone": "floor"},
                       key="sound:floor", standing=False)
    for i in range(RECENT_ALERTS):
        alerts.raise_alert("test", f"event {i}", {})
    doc = await (await client.get("/api/v1/alerts", headers=AUTH[IN_PROCESS_VIEWER])).json()
    assert doc["standing"] == [] and len(doc["recent"]) == RECENT_ALERTS
    assert doc["recent"][0]["text"] == f"event {RECENT_ALERTS - 1}"
    assert (await client.get("/api/v1/alerts")).status == 401


async def test_what_the_daemon_tells_the_cloud_itself_is_among_the_recent_alerts(
        client: TestClient[Any, Any], gateway: Gateway) -> None:  # noqa: F811
    gateway.show.expect_transmitter("radio")  # configured, not attached: what is fired is not sent by it
    fired = gateway.show.fire(inline={"kind": "solid"})
    assert gateway.supervisor.on_failure is not None
    gateway.supervisor.on_failure("xl2-floor", "driver", "port /dev/ttyUSB0 is gone")
    doc = await (await client.get("/api/v1/alerts", headers=AUTH[IN_PROCESS_VIEWER])).json()
    assert [(a["kind"], a["text"], a["state"]) for a in doc["recent"]] == [
        ("unit_failed", "driver xl2-floor failed: port /dev/ttyUSB0 is gone", "event"),
        ("not_sent", f"effect {fired.effect_id}: radio not sent: the transmitter is down", "event")]
    assert doc["standing"] == []



async def test_a_checked_file_never_makes_a_loaded_package_import_a_module(
        client: TestClient[Any, Any]) -> None:  # noqa: F811
    """A driver type `package:name` whose package is loaded but does not hold the name yet (a package's module
    __getattr__ may import a submodule on first access, as numpy's does) is answered without looking it up."""
    import sys
    import types

    asked: list[str] = []
    lazy = types.ModuleType("vg_test_lazy")

    def first_access(name: str) -> Any:
        asked.append(name)  # where a real package would import a module
        raise AttributeError(name)

    lazy.__getattr__ = first_access  # type: ignore[method-assign]
    sys.modules["vg_test_lazy"] = lazy
    try:
        response = await client.post("/api/v1/config/check", data='[drivers.x]\ntype = "vg_test_lazy:Driver"\n',
                                     headers={**AUTH[IN_PROCESS_ADMIN], "Content-Type": "application/toml"})
        doc = await response.json()
    finally:
        del sys.modules["vg_test_lazy"]
    assert response.status == 200 and any("drivers.x.type" in line and "has not loaded" in line
                                          for line in doc["problems"]), doc
    assert asked == [], "the check looked the name up in the package"
