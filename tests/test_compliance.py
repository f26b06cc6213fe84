"""Sound-level compliance: rolling LAeq exact against numpy, limits with hysteresis, the projection to the show's
end, alerts, and the per-minute history through the store to the CSV export of a real (in-process) gateway."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import config, history
from gateway.api.app import build_app
from gateway.api.auth import Tokens
from gateway.compliance.leq import RollingLeq, RollingMax
from gateway.compliance.monitor import ComplianceMonitor, LogRow
from gateway.compliance.settings import ComplianceSection, LimitSection
from gateway.daemon import Gateway
from gateway.readings import Reading
from gateway.twin import Twin
from tests.conftest import Daemon

VIEWER = "v-token-123"
AUTH = {"Authorization": f"Bearer {VIEWER}"}
T0 = 1_790_000_040.0  # a minute boundary


def reference_leq(ends: np.ndarray, levels: np.ndarray, dts: np.ndarray, now: float, span: float) -> float:
    inside = ends > now - span
    return float(10 * np.log10(np.sum(dts[inside] * 10 ** (levels[inside] / 10)) / np.sum(dts[inside])))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(30, 135), st.floats(0.05, 5)), min_size=1, max_size=3000),
       st.integers(0, 2**32 - 1))
def test_rolling_leq_matches_numpy_to_a_hundredth_of_a_db(samples: list[tuple[float, float]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    levels = np.array([s[0] for s in samples])
    dts = np.array([s[1] for s in samples])
    ends = T0 + np.cumsum(dts + np.where(rng.random(len(dts)) < 0.02, 30.0, 0.0))  # now and then a gap
    windows = (60.0, 900.0, 3600.0)
    roll = RollingLeq(windows)
    checks = set(rng.integers(0, len(samples), 20).tolist()) | {len(samples) - 1}
    for i, (end, lv, d) in enumerate(zip(ends.tolist(), levels.tolist(), dts.tolist(), strict=True)):
        roll.add(end, lv, d)
        if i in checks:
            for w, span in enumerate(windows):
                expected = reference_leq(ends[:i + 1], levels[:i + 1], dts[:i + 1], end, span)
                assert abs(roll.leq(w) - expected) < 0.01


def test_rolling_max_is_the_maximum_of_its_span() -> None:
    rng = np.random.default_rng(3)
    peak = RollingMax(60.0)
    levels = rng.uniform(60, 130, 2000)
    for i, lv in enumerate(levels.tolist()):
        peak.add(T0 + i, lv)
        assert peak.value() == max(levels[max(0, i - 59):i + 1])


class Rig:
    """A monitor on a real twin with one meter in the `floor` zone; alerts and log rows collected."""

    def __init__(self, **options: Any) -> None:
        self.twin = Twin("gw", "hall")
        self.twin.declare("spl:floor", "spl_meter", "floor", "meter")
        self.alerts: list[tuple[str, str, dict[str, Any]]] = []
        self.rows: list[LogRow] = []
        self.published: list[Reading] = []
        settings = ComplianceSection(**{"warn_margin_db": 3.0, "hysteresis_db": 1.0, **options})
        self.monitor = ComplianceMonitor(settings, self.twin, self.published.extend, self.rows.extend,
                                         lambda *a, **kw: self.alerts.append(a))
        self.t = T0

    def play(self, level_db: float, seconds: int, asset: str = "spl:floor") -> None:
        for _ in range(seconds):
            self.t += 1
            self.monitor.observe([Reading(self.t, asset, "laeq_db", level_db)])

    def states(self) -> list[str]:
        return [doc["state"] for kind, _, doc in self.alerts if kind == "sound_level"]


def test_a_limit_is_warned_of_then_over_and_cleared_with_hysteresis() -> None:
    rig = Rig(profile="custom", limits=[LimitSection("laeq", 1, 100.0)])
    rig.play(90, 120)
    assert rig.states() == []
    rig.play(98, 60)  # LAeq,1min 98: within the 3 dB warning margin
    assert rig.states() == ["warning"]
    rig.play(101, 60)
    assert rig.states() == ["warning", "over"]
    rig.play(99.5, 60)  # under the limit but within the hysteresis: still over, no new alert
    assert rig.states() == ["warning", "over"]
    rig.play(98.5, 60)
    assert rig.states() == ["warning", "over", "warning"]
    rig.play(96.5, 60)  # below the warning threshold but within its hysteresis
    assert rig.states() == ["warning", "over", "warning"]
    rig.play(90, 60)
    assert rig.states() == ["warning", "over", "warning", "ok"]
    assert rig.twin.get("compliance:floor").reported["state"] == "ok"  # type: ignore[union-attr]


def test_a_window_not_yet_covered_is_judged_by_its_certain_part_and_said_so() -> None:
    """Until a limit's window holds min_coverage of readings, its level is only the energy already certain (a lower
    bound, far under the level so far), and the document and the twin say so: a page shows it as "at least"."""
    rig = Rig(profile="custom", limits=[LimitSection("laeq", 15, 100.0)])
    rig.play(95, 120)  # 2 of 15 minutes
    limit = rig.monitor.document()["zones"]["floor"]["limits"][0]
    assert limit["partial"] is True and limit["level_db"] < 95 - 5
    rig.play(95, 8 * 60)  # past half the window
    limit = rig.monitor.document()["zones"]["floor"]["limits"][0]
    assert limit["partial"] is False and abs(limit["level_db"] - 95) < 0.1
    assert rig.twin.get("compliance:floor").reported["limits"][0]["partial"] is False  # type: ignore[union-attr]


def test_the_document_says_how_far_below_a_limit_the_warning_starts() -> None:
    rig = Rig(profile="custom", limits=[LimitSection("laeq", 1, 100.0)], warn_margin_db=4.5)
    rig.play(96, 60)  # 4 dB under the limit: within the margin the document states
    doc = rig.monitor.document()
    assert doc["warn_margin_db"] == 4.5 and doc["zones"]["floor"]["limits"][0]["state"] == "warning"


def test_the_who_profile_judges_the_15_minute_laeq_and_the_swiss_one_the_maximum() -> None:
    who = Rig(profile="who")
    who.play(104, 400)  # 400 s at 104 dB: the energy alone already puts the 15-min window over 100 dB
    assert who.states()[-1] == "over" and who.alerts[-1][2]["limit"] == "LAeq,15min"
    swiss = Rig(profile="ch_vnissg")
    swiss.play(95, 30)
    swiss.play(126, 1)  # one loud second: LAFmax (here the loudest interval) over 125 dB
    assert [d["limit"] for _, _, d in swiss.alerts] == ["LAeq,60min", "LAFmax"] or \
        [d["limit"] for _, _, d in swiss.alerts if d["state"] == "over"] == ["LAFmax"]


def test_a_short_start_is_judged_only_on_the_energy_already_certain() -> None:
    rig = Rig(profile="who", warn_margin_db=0.0)
    rig.play(101, 60)  # one minute at 101 dB: LAeq over what was covered is 101, but 14 minutes are still to come
    assert rig.states() == []
    assert rig.monitor.document()["zones"]["floor"]["laeq_15min_db"] == pytest.approx(101.0)


def test_the_projection_says_where_the_show_ends_and_the_level_to_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(profile="custom", limits=[LimitSection("laeq", 60, 100.0)], show_end="23:00")
    end = T0 + 3600 + 600  # the window at the show's end starts 10 minutes after T0
    monkeypatch.setattr(ComplianceMonitor, "_show_end", lambda self, now: end if now < end else None)
    rig.play(97, 1800)
    rig.play(103, 1200)  # 50 minutes in, the last minute at 103 dB
    rig.play(103, 61)  # the first second of a minute closes the one before: the projection is made then
    ls = rig.monitor.zones["floor"].limits[0]
    now = rig.t
    remaining = end - now
    known_e = (1800 - 600) * 10 ** 9.7 + (now - T0 - 1800) * 10 ** 10.3
    expected = 10 * math.log10((known_e + remaining * 10 ** 10.3) / 3600)
    assert ls.projected_db is not None and ls.projected_db > 100
    assert ls.projected_db == pytest.approx(expected, abs=0.05)
    allowed = 10 * math.log10((10 ** 10 * 3600 - known_e) / remaining)
    assert ls.allowed_db == pytest.approx(allowed, abs=0.05)
    assert [d["alert"] for k, _, d in rig.alerts if k == "sound_projection"] == ["sound_projection"]


def test_one_meter_per_zone_counts_and_gaps_are_not_silence() -> None:
    rig = Rig(profile="who")
    rig.twin.declare("spl:floor-2", "spl_meter", "floor", "meter")
    rig.play(95, 30)
    rig.play(60, 30, asset="spl:floor-2")  # a second meter in the same zone is ignored, and named
    assert rig.monitor.document()["ignored_meters"] == ["spl:floor-2"]
    rig.t += 600  # the meter was away ten minutes
    rig.play(95, 30)
    doc = rig.monitor.document()["zones"]["floor"]
    assert doc["laeq_15min_db"] == pytest.approx(95.0) and doc["coverage"]["15min"] == pytest.approx(61 / 900, 0.02)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    text = ('[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n'
            '[compliance]\nprofile = "who"\n')
    gw = Gateway(config.parse(tmp_path / "gw.toml", text), Tokens([(VIEWER, "viewer")]))
    await gw.store.open(gw.twin)
    yield gw
    await gw.store.close(gw.twin)


async def test_the_history_is_kept_per_minute_and_exported_as_csv(gateway: Gateway, aiohttp_client: Any) -> None:
    alerts: list[str] = []
    gateway.alerts.listen(lambda kind, text, doc: alerts.append(kind))
    for zone in ("floor", "bar"):
        gateway.twin.declare(f"spl:{zone}", "spl_meter", zone, "meter")
    for i in range(1, 10 * 60 + 1):  # ten minutes, the floor at 104 dB and the bar at 85
        gateway.ingest.publish([Reading(T0 + i, "spl:floor", "laeq_db", 104.0),
                                Reading(T0 + i, "spl:bar", "laeq_db", 85.0)], "meter")
    await gateway.store.flush(gateway.twin)
    assert "sound_level" in alerts
    client: TestClient[Any, Any] = await aiohttp_client(build_app(gateway, Tokens([(VIEWER, "viewer")])))
    resp = await client.get("/api/v1/compliance/history.csv", params={"from": str(T0), "to": str(T0 + 3600)},
                            headers=AUTH)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 2 * 9  # minutes 1..9 are closed; the tenth closes with the next reading
    floor = [r for r in rows if r["zone"] == "floor"]
    assert floor[0]["time_utc"].endswith("Z") and floor[0]["laeq_1min_db"] == "104.0"
    assert floor[-1]["state"] == "over" and floor[-1]["limit"] == "LAeq,15min"
    assert {r["state"] for r in rows if r["zone"] == "bar"} == {"ok"}
    resp = await client.get("/api/v1/compliance/history.csv", params={"from": "2026-11-21T22:00:00Z",
                                                                      "to": "2026-11-21T21:00:00Z"}, headers=AUTH)
    assert resp.status == 400
    # RFC 3339 as it is written (a lowercase t or z, an offset, a leap second), epoch seconds; empty: not given
    for start in (str(int(T0)), f"{T0:.3f}", dt.datetime.fromtimestamp(T0, dt.UTC).strftime("%Y-%m-%dt%H:%M:%Sz"),
                  dt.datetime.fromtimestamp(T0, dt.timezone(dt.timedelta(hours=-5))).isoformat()):
        resp = await client.get("/api/v1/compliance/history.csv", params={"from": start, "to": str(T0 + 3600)},
                                headers=AUTH)
        assert resp.status == 200 and len((await resp.text()).splitlines()) == 1 + 2 * 9, start
    resp = await client.get("/api/v1/compliance/history.csv?from=&to=&zone=", headers=AUTH)
    assert resp.status == 200
    resp = await client.get("/api/v1/compliance/history.csv", params={"from": "2016-12-31T23:59:60Z",
                                                                      "to": "2017-01-01T00:00:01Z"}, headers=AUTH)
    assert resp.status == 200  # the leap second is the one before midnight's next
    for bad in ("2026-11-21T22:00:00", "2026-11-21", "2026-13-01T00:00:00Z", "1e9", "nan", "-5", "\u0661\u0662",
                "2026-11-21T22:00:00+24:00", "123456789012"):
        resp = await client.get("/api/v1/compliance/history.csv", params={"from": bad}, headers=AUTH)
        doc = await resp.json()
        assert resp.status == 400 and "is not a time (allowed: RFC 3339" in doc["message"], bad
    resp = await client.get("/api/v1/compliance/history.csv", params={"from": "0001-01-01T00:00:00+23:59"},
                            headers=AUTH)
    assert resp.status == 200 and "sound-levels-" in resp.headers["Content-Disposition"]  # the calendar's first day
    doc = await (await client.get("/api/v1/compliance", headers=AUTH)).json()
    assert doc["zones"]["floor"]["limits"][0]["state"] == "over"
    assert gateway.twin.get("compliance:floor").reported["laeq_1min_db"] == 104.0  # type: ignore[union-attr]


async def test_a_restart_takes_the_windows_back_from_the_store(tmp_path: Path) -> None:
    """Twenty minutes at 104 dB on the floor, then the gateway stops and starts again: the 15- and 60-minute windows
    come back as they stood from the readings in the store (not from nothing), the limit is still over and says
    so once, and no minute is logged twice."""
    text = ('[gateway]\nid = "gw"\nvenue = "hall"\ndata_dir = "data"\n[compliance]\nprofile = "who"\n')
    now = time.time()
    first = Gateway(config.parse(tmp_path / "gw.toml", text), Tokens([(VIEWER, "viewer")]))
    await first.store.open(first.twin)
    first.twin.declare("spl:floor", "spl_meter", "floor", "meter")
    for i in range(20 * 60, 0, -1):
        first.ingest.publish([Reading(now - i, "spl:floor", "laeq_db", 104.0 if i % 2 else 98.0)], "meter")
    assert first.compliance is not None
    before = first.compliance.document()["zones"]["floor"]
    await first.store.close(first.twin)
    logged = history.read_compliance(first.store.path, 0, now + 60)

    second = Gateway(config.parse(tmp_path / "gw.toml", text), Tokens([(VIEWER, "viewer")]))
    alerts: list[dict[str, Any]] = []
    second.alerts.listen(lambda kind, text, doc: alerts.append(doc))
    await second.store.open(second.twin)
    try:
        assert second.compliance is not None and second.compliance.document()["zones"] == {}
        await second._restore_compliance(second.compliance)
        after = second.compliance.document()["zones"]["floor"]
        for key in ("laeq_15min_db", "laeq_60min_db", "lmax_db", "coverage"):
            assert after[key] == before[key], key
        assert after["coverage"]["15min"] == pytest.approx(1.0, abs=0.01)
        assert after["limits"][0]["state"] == "over"
        assert [a["state"] for a in alerts if a["alert"] == "sound_level"] == ["over"]
        await second.store.flush(second.twin)
        assert history.read_compliance(second.store.path, 0, now + 60) == logged
    finally:
        await second.store.close(second.twin)


def test_the_daemon_killed_mid_show_comes_back_with_its_windows(daemon_factory: Any) -> None:
    """The demo's XL2s measure each zone every second; the daemon is killed (-9, as a watchdog or a power cut
    would) and started again: the 60-minute coverage it reports at once is what it had, not a new start."""
    d: Daemon = daemon_factory().start()
    try:
        def coverage() -> float:
            zones = d.get("/api/v1/compliance")["zones"]
            return float(zones["floor"]["coverage"]["60min"]) if "floor" in zones else 0.0

        deadline = time.monotonic() + 30
        while coverage() < 10 / 3600:
            assert time.monotonic() < deadline, "ten seconds of sound levels"
            time.sleep(0.2)
        time.sleep(0.5)  # committed: the store writes every 100 ms
        before = coverage()
        d.kill()
        d.start()
        assert coverage() >= before - 1 / 3600
    finally:
        d.cleanup()
