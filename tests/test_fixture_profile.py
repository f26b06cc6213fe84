"""`venue-gateway fixture-profile`: the crowd's fixture definition, checked against Open Fixture Library's own JSON
schema (vendored in tests/data/ofl) and against what the patch reads, and the CSV patch sheet."""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from gateway.cli import main
from gateway.schema import check_all
from gateway.show import patch, profile
from gateway.show.console_settings import LAYOUTS
from gateway.show.settings import ShowSection

OFL = Path(__file__).parent / "data" / "ofl"
SHOW = """
max_flash_hz = 2.5
[[zones]]
name = "floor"
index = 0
[[zones]]
name = "balcony"
index = 1
[[zones]]
name = "bar"
index = 2
[[presets]]
name = "intro"
kind = "solid"
[[patch]]
name = "crowd-back"
universe = 7
address = 9
zones = ["balcony", "bar"]
mode = "4ch"
[[patch]]
name = "crowd-floor"
universe = 7
address = 1
zones = ["floor"]
[[macros]]
universe = 7
channel = 20
ranges = [{from = 10, to = 19, preset = "intro"}]
"""


def show() -> ShowSection:
    built, problems = check_all(ShowSection, tomllib.loads(SHOW))
    assert built is not None, problems
    return built


def ofl_validator() -> jsonschema.Draft202012Validator:
    resources = []
    for path in OFL.glob("*.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    fixture = json.loads((OFL / "fixture.json").read_text())
    return jsonschema.Draft202012Validator(fixture, registry=Registry().with_resources(resources),
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_the_definition_is_valid_open_fixture_library_json() -> None:
    doc = profile.definition(show(), today=datetime.date(2026, 12, 7))
    validator = ofl_validator()
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    assert doc["meta"]["createDate"] == "2026-12-07"
    broken = json.loads(json.dumps(doc))  # the schema does catch a wrong one
    broken["availableChannels"]["Strobe"]["capabilities"][1]["speedStart"] = "fast-ish"
    assert list(validator.iter_errors(broken))


def test_the_definition_says_what_the_patch_reads() -> None:
    doc = profile.definition(show())
    channels = doc["availableChannels"]
    modes = {m["shortName"]: m["channels"] for m in doc["modes"]}
    assert modes == {mode: [profile.CHANNEL_NAMES[c] for c in layout] for mode, layout in LAYOUTS.items()}
    for name, channel in channels.items():  # OFL's own check: each channel's ranges cover 0..255 in order
        ranges = [c["dmxRange"] for c in channel.get("capabilities", [])]
        if ranges:
            assert ranges[0][0] == 0 and ranges[-1][1] == 255, name
            assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges)), name
    for capability in channels["Effect"]["capabilities"]:
        lo, hi = capability["dmxRange"]
        kind = capability.get("effectName", "").lower() or None
        assert patch.effect_kind(lo) == patch.effect_kind(hi) == kind
    strobe = channels["Strobe"]["capabilities"]
    assert patch.strobe_hz(strobe[0]["dmxRange"][1]) == 0
    assert (patch.strobe_hz(strobe[1]["dmxRange"][0]), patch.strobe_hz(255)) == (0.5, 3.0)
    assert strobe[1]["speedEnd"] == "3Hz" and "flash cap, 2.5 Hz" in strobe[1]["comment"]
    speed = channels["Effect Speed"]["capabilities"]
    assert patch.speed_bpm(0) is None and (patch.speed_bpm(1), patch.speed_bpm(255)) == (15, 180)
    assert (speed[1]["speedStart"], speed[1]["speedEnd"]) == ("15bpm", "180bpm")
    control = channels["Control"]["capabilities"]
    assert control[1]["dmxRange"][0] == patch.RELEASED_FROM


def test_the_patch_sheet_lists_fixtures_and_macros() -> None:
    rows = list(csv.DictReader(io.StringIO(profile.patch_sheet(show()))))
    assert rows == [
        {"fixture": "crowd-floor", "mode": "8ch", "zones": "floor", "universe": "7", "address": "1",
         "channels": "8", "notes": ""},
        {"fixture": "crowd-back", "mode": "4ch", "zones": "balcony bar", "universe": "7", "address": "9",
         "channels": "4", "notes": ""},
        {"fixture": "macro", "mode": "", "zones": "", "universe": "7", "address": "20", "channels": "1",
         "notes": "fires presets: 10-19 intro"},
    ]


def write_config(tmp_path: Path, show_text: str) -> Path:
    """A gateway's configuration with `show_text` as its [show] section."""
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nid = "foh-01"\nvenue = "hall"\n\n[show]\n'
                    + re.sub(r"\[\[(zones|presets|patch|macros)\]\]", r"[[show.\1]]", show_text))
    return path


def test_the_command_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "console"
    assert main(["fixture-profile", "--config", str(write_config(tmp_path, SHOW)), "--out", str(out)]) == 0
    written: dict[str, Any] = json.loads((out / "venue-gateway-crowd.json").read_text())
    assert written["name"] == profile.NAME and not list(ofl_validator().iter_errors(written))
    assert (out / "venue-gateway-patch.csv").read_text().startswith("fixture,mode,zones,universe,address")
    assert capsys.readouterr().out.split() == [str(out / "venue-gateway-crowd.json"),
                                                str(out / "venue-gateway-patch.csv")]


def test_the_command_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_config(tmp_path, SHOW.replace('zones = ["floor"]', 'zones = ["pit"]'))
    assert main(["fixture-profile", "--config", str(bad), "--out", str(tmp_path)]) == 2
    assert "show.patch[1].zones: no zone 'pit' (allowed: floor, balcony, bar)" in capsys.readouterr().err
    empty = write_config(tmp_path, 'tempo_bpm = 120\n')
    assert main(["fixture-profile", "--config", str(empty), "--out", str(tmp_path)]) == 2
    assert "patches nothing" in capsys.readouterr().err
    assert not (tmp_path / "venue-gateway-crowd.json").exists()
