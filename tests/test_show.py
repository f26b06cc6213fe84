"""The show engine: effects rendered as the crowd sees them, presets fired at an absolute time in zone groups
delayed by distance, tempo, preview, and the HTTP effects API."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import config
from gateway.api import GATEWAY
from gateway.api.app import build_app
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.show.effects import Effect, EffectError, render
from gateway.show.engine import ShowEngine, UnknownPreset
from gateway.show.settings import PresetSection, ShowSection
from gateway.twin import Twin
from tests.conftest import ROOT

OPERATOR, VIEWER = "operator-token-1", "viewer-token-12"


def engine() -> ShowEngine:
    return ShowEngine(config.load(ROOT / "config" / "demo.toml").show, Twin("gw", "hall"))


def test_effects_render_as_the_crowd_sees_them() -> None:
    red = (255, 0, 0)
    assert render(Effect("solid", red, 0.5), 10, 0, 3) == (128, 0, 0)
    strobe = Effect("strobe", red, period_ms=500)
    assert render(strobe, 10, 0, 1) == red and render(strobe, 200, 0, 1) == (0, 0, 0)
    assert render(Effect("pulse", red, period_ms=1000), 500, 0, 1) == red
    chase = Effect("chase", red, period_ms=100, param=1)
    assert [render(chase, 150, z, 3) for z in range(3)] == [(0, 0, 0), red, (0, 0, 0)]
    wave = Effect("wave", red, period_ms=1000, param=25)  # 250 ms from one zone to the next
    assert render(wave, 250, 0, 2) == red and render(wave, 500, 1, 2) == red
    twinkle = Effect("twinkle", red, period_ms=500, param=round(0.3 * 255))
    lit = sum(render(twinkle, 100, 0, 1, band) == red for band in range(2000))
    assert 500 < lit < 700
    assert render(Effect("solid", red, duration_ms=1000), 1000, 0, 1) == (0, 0, 0)
    assert render(Effect("solid", red), -1, 0, 1) == (0, 0, 0)
    assert render(Effect("blackout"), 10, 0, 1) == (0, 0, 0)
    assert render(Effect("rainbow", period_ms=3000), 0, 0, 1) == (255, 0, 0)


def test_the_twins_last_effect_is_the_last_one_whole() -> None:
    """Each effect's document replaces the last one's in show_control: a key that one had (a carried effect's origin
    and delivery, a twinkle's chance) is not left behind by the twin's merge."""
    show = engine()
    carried = replace(show.fire("sparkle", lead_ms=500), effect_id="from-b", origin="box-b",
                      delivery={"radio": "sending", "shared": "carried from box-b"})
    show.carry(carried)
    assert show._twin.get("show_control").reported["last_effect"]["origin"] == "box-b"  # type: ignore[union-attr]
    fired = show.fire("intro", zones=["bar"], lead_ms=0)
    last = show._twin.get("show_control").reported["last_effect"]  # type: ignore[union-attr]
    assert last == fired.document() and "origin" not in last and "shared" not in last["delivery"]


def test_inline_effects_say_what_is_wrong() -> None:
    with pytest.raises(EffectError, match="kind 'laser' is not allowed"):
        Effect.from_document({"kind": "laser"})
    with pytest.raises(EffectError, match="colour 'red' is not #RRGGBB"):
        Effect.from_document({"kind": "solid", "colour": "red"})
    with pytest.raises(EffectError, match="unknown key 'speed'"):
        Effect.from_document({"kind": "solid", "speed": 3})
    assert Effect.from_document({"kind": "pulse", "bpm": 120}).period_ms == 500
    assert Effect.from_document({"kind": "pulse"}, tempo_bpm=128).period_ms == 469


@pytest.mark.parametrize(("doc", "said"), [
    ({"kind": "solid", "colour": "+abcde"}, "colour '+abcde' is not #RRGGBB"),
    ({"kind": "solid", "colour": "0xabcd"}, "colour '0xabcd' is not #RRGGBB"),
    ({"kind": "solid", "colour": 0xFF0000}, "colour 16711680 is not #RRGGBB"),
    ({"kind": "solid", "intensity": "0.5"}, "intensity must be a number (allowed: 0 to 1)"),
    ({"kind": "solid", "intensity": True}, "intensity must be a number"),
    ({"kind": "pulse", "bpm": 3000.4}, "bpm 3000.4 is out of range (allowed: 0.1 to 3000)"),
    ({"kind": "pulse", "bpm": 0}, "bpm 0 is out of range"),
    ({"kind": "pulse", "bpm": 120, "period_ms": 500}, "give bpm or period_ms, not both"),
    ({"kind": "pulse", "period_ms": 500.5}, "period_ms must be a whole number (allowed: 20 to 600000)"),
    ({"kind": "solid", "chance": 2}, "chance 2 is out of range (allowed: 0 to 1)"),  # checked whatever the kind
    ({"kind": "chase", "width": 17}, "width 17 is out of range (allowed: 1 to 16)"),
    ({"kind": "wave", "step_ms": 2551}, "step_ms 2551 is out of range (allowed: 0 to 2550)"),
])
def test_an_inline_effect_is_checked_field_by_field(doc: dict[str, Any], said: str) -> None:
    """What is accepted is exactly what the API's document says (FIELDS): no value made to fit by a conversion."""
    with pytest.raises(EffectError) as refused:
        Effect.from_document(doc)
    assert str(refused.value).startswith(said)


def test_an_inline_effect_takes_what_its_fields_allow() -> None:
    effect = Effect.from_document({"kind": "twinkle", "colour": "FFaa00", "intensity": 0, "bpm": 0.1,
                                   "duration_s": 6553.5, "chance": 1, "width": 16, "step_ms": 2550})
    assert (effect.colour, effect.period_ms, effect.duration_ms, effect.param) == ((255, 170, 0), 600_000,
                                                                                   6_553_500, 255)
    assert Effect.from_document({"kind": "pulse", "period_ms": 500.0}).period_ms == 500  # JSON's 500.0 is whole


def test_a_preset_fires_in_zone_groups_delayed_by_distance() -> None:
    show = engine()
    seen = []
    show.on_fire(seen.append)
    fired = show.fire("chorus", lead_ms=500)
    assert [g.zones for g in fired.groups] == [("floor",), ("balcony",), ("bar",)]
    assert [g.delay_ms for g in fired.groups] == [29, 102, 131]  # 10, 35 and 45 m at 343 m/s
    assert [g.mask for g in fired.groups] == [0b001, 0b010, 0b100]
    shows = [g.show_ms for g in fired.groups]
    assert shows == sorted(shows) and shows[2] - shows[0] == 102
    assert seen == [fired]
    again = show.fire("intro", zones=["bar"], lead_ms=0)  # fired later, starts sooner: the serial says which wins
    assert again.serial == fired.serial + 1 and again.groups[0].show_ms < shows[0]
    assert again.zones == ("bar",)
    with pytest.raises(UnknownPreset, match="no preset 'nope' \\(allowed: chorus, drop, encore, intro, sparkle\\)"):
        show.fire("nope")
    with pytest.raises(EffectError, match="no zone 'roof'"):
        show.fire("intro", zones=["roof"])
    blackout = show.stop()
    assert blackout.effect.kind == "blackout" and blackout.zones == ("floor", "balcony", "bar")


def test_serials_count_modulo_256() -> None:
    show = engine()
    serials = [show.stop().serial for _ in range(300)]
    assert all((b - a) % 256 == 1 for a, b in itertools.pairwise(serials))
    assert set(serials) == set(range(256))


def test_tempo_and_tap_tempo() -> None:
    show = engine()
    for t in (10.0, 10.5, 10.52, 11.0, 11.5):  # 10.52: the button bouncing, not a tap
        show.tap(t)
    assert show.tempo_bpm == 120.0
    show.tap(20.0)  # after a pause, counting starts again
    assert show.tempo_bpm == 120.0
    show.set_tempo(90)
    assert show.fire("intro").effect.period_ms == 667
    with pytest.raises(EffectError):
        show.set_tempo(0)


def test_preview_renders_each_zone_without_transmitting() -> None:
    show = engine()
    frames = show.preview(Effect("solid", (0, 255, 0)), step_ms=40, duration_ms=200)
    assert set(frames) == {"floor", "balcony", "bar"}
    assert frames["floor"][0] == (0, 0, 0) and frames["floor"][1] == (0, 255, 0)  # the floor starts 29 ms in
    assert frames["bar"][3] == (0, 0, 0) and frames["bar"][4] == (0, 255, 0)  # the bar 131 ms in


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[TestClient[Any, Any]]:
    text = (ROOT / "config" / "demo.toml").read_text().replace('data_dir = "../var/demo"', 'data_dir = "data"')
    cfg = config.parse(tmp_path / "gw.toml", text)
    tokens = Tokens([(OPERATOR, "operator"), (VIEWER, "viewer")])
    gw = Gateway(cfg, tokens)
    await gw.store.open(gw.twin)
    yield await aiohttp_client(build_app(gw, tokens))
    await gw.store.close(gw.twin)


async def test_the_effects_api(client: TestClient[Any, Any]) -> None:
    op = {"Authorization": f"Bearer {OPERATOR}"}
    resp = await client.post("/api/v1/effects", json={"preset": "drop", "zones": ["floor"], "lead_ms": 250}, headers=op)
    assert resp.status == 202
    doc = await resp.json()
    assert set(doc) == {"effect_id", "starts_at", "zones", "delivery"} and doc["zones"] == ["floor"]
    resp = await client.post("/api/v1/effects", json={"preset": "drop"},
                             headers={"Authorization": f"Bearer {VIEWER}"})
    assert resp.status == 403
    resp = await client.post("/api/v1/effects", json={"preset": "nope"}, headers=op)
    assert resp.status == 404 and (await resp.json())["error"] == "unknown_preset"
    resp = await client.post("/api/v1/effects", json={"effect": {"kind": "laser"}}, headers=op)
    assert resp.status == 400 and "kind 'laser'" in (await resp.json())["message"]
    for body, said in (({}, "give a preset or an inline effect"),
                       ({"preset": "drop", "effect": {"kind": "solid"}}, "give a preset or an inline effect, not both"),
                       ({"preset": None, "effect": {"kind": "solid"}}, "give a preset or an inline effect, not both"),
                       ({"preset": "drop", "zones": None}, "zones must be a list of zone names"),
                       ({"preset": "drop", "lead_ms": 60_001}, "lead_ms 60001 is out of range (allowed: 0 to 60000)"),
                       ({"preset": "drop", "lead_ms": 2.5}, "lead_ms must be a whole number"),
                       ({"effect": {"kind": "strobe", "period_ms": 20}},
                        "strobe at 50 flashes a second is over show.max_flash_hz 3"),
                       ({"preset": "drop", "preview": "yes"}, "preview must be true or false"),
                       ({"preset": "drop", "preview": True, "duration_ms": 0},
                        "duration_ms must be a whole number of milliseconds (allowed: 1 to 60000)"),
                       ({"preset": "drop", "preview": True, "lead_ms": -1}, "lead_ms -1 is out of range")):
        resp = await client.post("/api/v1/effects", json=body, headers=op)
        doc = await resp.json()
        assert resp.status == 400 and doc["error"] == "bad_effect" and doc["message"].startswith(said), (body, doc)
    resp = await client.post("/api/v1/effects", json={"effect": {"kind": "solid", "colour": "#00ff00"},
                                                      "preview": True, "duration_ms": 200}, headers=op)
    assert resp.status == 200
    preview = await resp.json()
    assert preview["step_ms"] == 40 and preview["zones"]["floor"][1] == [0, 255, 0]
    resp = await client.delete("/api/v1/effects", headers=op)
    assert resp.status == 202
    snapshot = await (await client.get("/api/v1/twin", headers=op)).json()
    assert snapshot["assets"]["show_control"]["reported"]["last_effect"]["effect"]["kind"] == "blackout"


async def test_a_preview_shows_the_intensity_a_fire_would_send_now(client: TestClient[Any, Any]) -> None:
    """The demo's `chorus` follows the crowd's energy (intensity_from = "energy"): its preview is at the intensity
    that firing it sends at this moment, not at the preset's full intensity."""
    op = {"Authorization": f"Bearer {OPERATOR}"}
    gw = client.server.app[GATEWAY]
    for zone, energy in (("floor", 0.2), ("balcony", 0.4), ("bar", 0.3)):
        gw.twin.declare(f"mood:{zone}", "mood", zone, "inference")
        gw.twin.report(f"mood:{zone}", {"energy": energy}, "inference")
    resp = await client.post("/api/v1/effects", json={"preset": "chorus", "preview": True}, headers=op)
    preview = await resp.json()
    resp = await client.post("/api/v1/effects", json={"preset": "chorus"}, headers=op)
    assert resp.status == 202
    assert gw.show.last is not None
    sent = gw.show.last.effect  # what went to the transmitters
    assert sent.intensity == pytest.approx(0.3 + 0.7 * 0.3)
    assert preview["effect"]["intensity"] == sent.intensity
    resp = await client.post("/api/v1/effects", json={"preset": "chorus", "zones": ["balcony"], "preview": True},
                             headers=op)
    assert (await resp.json())["effect"]["intensity"] == pytest.approx(0.3 + 0.7 * 0.4)
    resp = await client.post("/api/v1/effects", json={"preset": "chorus", "zones": "floor", "preview": True},
                             headers=op)
    assert resp.status == 400


def test_a_zone_named_twice_is_one_zone() -> None:
    fired = engine().fire("intro", zones=["floor", "floor"])
    assert fired.zones == ("floor",) and [g.mask for g in fired.groups] == [0b001]


def test_no_effect_flashes_faster_than_the_cap_whoever_fires_it() -> None:
    show = ShowEngine(ShowSection(presets=[PresetSection(name="drop", kind="strobe")]), Twin("gw", "hall"))
    for doc in ({"kind": "strobe", "period_ms": 20}, {"kind": "strobe", "bpm": 180},  # 333 ms: 3.003 Hz
                {"kind": "pulse", "bpm": 600}, {"kind": "twinkle", "period_ms": 100}):
        with pytest.raises(EffectError, match=r"flashes a second is over show\.max_flash_hz 3 \(allowed: "
                                              r"period_ms 334 or more, or bpm 179\.6 or less\)"):
            show.fire_request({"effect": doc})
    assert show.last is None
    for i, doc in enumerate(({"kind": "strobe", "period_ms": 334}, {"kind": "rainbow", "period_ms": 20},
                             {"kind": "solid", "period_ms": 20})):
        show.fire_request({"effect": doc, "lead_ms": 1000 * i})
    show.set_tempo(240)  # the preset follows the show's tempo: at 4 beats a second it would flash 4 times
    with pytest.raises(EffectError, match=r"strobe at 4 flashes a second is over show\.max_flash_hz 3"):
        show.fire("drop")
    show.set_tempo(120)
    assert show.fire("drop", lead_ms=5000).effect.flash_hz == 2
    lower = ShowEngine(ShowSection(max_flash_hz=1), Twin("gw", "hall"))
    with pytest.raises(EffectError, match=r"over show\.max_flash_hz 1 "):
        lower.fire_request({"effect": {"kind": "strobe", "bpm": 120}})


def test_effects_in_turn_flash_no_faster_than_the_cap_and_a_stop_is_never_refused() -> None:
    """Solid and blackout in turn at 10 Hz would flash a crowd at 5 Hz whatever each effect's own period: an effect
    that lights a zone starts at least 1/max_flash_hz after the last one there."""
    show = engine()
    show.fire("intro", zones=["floor"], lead_ms=0)
    show.stop()  # any time
    with pytest.raises(EffectError, match=r"zone floor: an effect starting \d+ ms from the last one there is over "
                                          r"show\.max_flash_hz 3 \(allowed: one every 334 ms in a zone; a stop at "
                                          r"any time\)"):
        show.fire("intro", zones=["floor"], lead_ms=100)
    show.fire("intro", zones=["balcony"], lead_ms=100)  # another zone's bands
    show.fire("intro", zones=["floor"], lead_ms=400)  # a third of a second on
    show.stop()
    assert show.last is not None and show.last.effect.kind == "blackout"


def test_a_preset_over_the_flash_cap_is_refused_at_config_check() -> None:
    section = ShowSection(tempo_bpm=200, presets=[PresetSection(name="fast", kind="strobe", bpm=600),
                                                  PresetSection(name="tempo", kind="pulse"),
                                                  PresetSection(name="slow", kind="strobe", bpm=120)])
    assert [str(p) for p in section.problems()] == [
        "presets[0]: strobe at 10 flashes a second is over show.max_flash_hz 3 (allowed: period_ms 334 or more, "
        "or bpm 179.6 or less)",
        "presets[1]: pulse at 3.33 flashes a second is over show.max_flash_hz 3 (allowed: period_ms 334 or more, "
        "or bpm 179.6 or less)"]


@pytest.mark.parametrize(("doc", "said"), [
    ({"kind": "strobe", "bpm": 5e-324}, "bpm 4.94066e-324 is out of range (allowed: 0.1 to 3000)"),
    ({"kind": "strobe", "duration_s": 1e308}, "duration_s 1e+308 is out of range (allowed: 0 to 6553.5)"),
    ({"kind": "strobe", "period_ms": 10**400}, "period_ms is out of range (allowed: 20 to 600000)"),
    ({"kind": "strobe", "duration_s": -10**400}, "duration_s is out of range (allowed: 0 to 6553.5)"),
    ({"kind": "strobe", "bpm": float("nan")}, "bpm nan is out of range"),
    ({"kind": "strobe", "intensity": float("-inf")}, "intensity -inf is out of range"),
])
def test_a_huge_or_non_finite_value_is_an_effect_error(doc: dict[str, Any], said: str) -> None:
    with pytest.raises(EffectError) as refused:
        Effect.from_document(doc)
    assert str(refused.value).startswith(said)


@pytest.mark.parametrize("lead", [10**400, 1e308, float("nan"), float("inf"), -1, 2.5, "500", True])
def test_a_fire_requests_lead_time_is_checked_whatever_it_is(lead: Any) -> None:
    with pytest.raises(EffectError, match=r"^lead_ms "):
        ShowEngine(ShowSection(), Twin("gw", "hall")).fire_request({"effect": {"kind": "solid"}, "lead_ms": lead})
