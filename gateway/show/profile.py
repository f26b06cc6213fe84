"""The crowd as a console sees it: the fixture definition of a crowd fixture in Open Fixture Library's JSON format
(fixture format 12, https://github.com/OpenLightingProject/open-fixture-library/blob/master/docs/fixture-format.md)
and the patch sheet, both from the configured patch (`[[show.patch]]`, `[[show.macros]]`).

The definition states the channel layout `gateway/show/patch.py` reads, in both modes, with the venue's flash cap;
the sheet lists each fixture's universe, address and zones, and each macro channel's ranges.
"""

from __future__ import annotations

import csv
import datetime
import io
from typing import Any

from gateway import __version__
from gateway.show.console_settings import LAYOUTS
from gateway.show.patch import EFFECTS, RELEASED_FROM, SPEED_BPM, STROBE_FROM, STROBE_HZ
from gateway.show.settings import ShowSection

SCHEMA = "https://raw.githubusercontent.com/OpenLightingProject/open-fixture-library/master/schemas/fixture.json"
NAME = "Crowd Wristband Zone"
MODE_NAMES = {"8ch": "8-channel", "4ch": "4-channel"}
CHANNEL_NAMES = {"intensity": "Intensity", "red": "Red", "green": "Green", "blue": "Blue", "strobe": "Strobe",
                 "effect": "Effect", "speed": "Effect Speed", "control": "Control"}
SHEET_COLUMNS = ("fixture", "mode", "zones", "universe", "address", "channels", "notes")


def _number(value: float) -> str:
    return f"{value:g}"


def _channels(show: ShowSection) -> dict[str, Any]:
    cap = show.max_flash_hz
    strobe_lo, strobe_hi = STROBE_HZ
    effects = [{"dmxRange": [0, EFFECTS[0][0] - 1], "type": "NoFunction", "comment": "The live look"}]
    effects += [{"dmxRange": [lo, hi], "type": "Effect", "effectName": kind.capitalize(),
                 "comment": "Fired on entering the range, in the colour and intensity set then"}
                for lo, hi, kind in EFFECTS]
    effects.append({"dmxRange": [EFFECTS[-1][1] + 1, 255], "type": "NoFunction", "comment": "The live look"})
    return {
        "Intensity": {"capability": {"type": "Intensity", "brightnessStart": "0%", "brightnessEnd": "100%"}},
        "Red": {"capability": {"type": "ColorIntensity", "color": "Red"}},
        "Green": {"capability": {"type": "ColorIntensity", "color": "Green"}},
        "Blue": {"capability": {"type": "ColorIntensity", "color": "Blue"}},
        "Strobe": {"capabilities": [
            {"dmxRange": [0, STROBE_FROM - 1], "type": "ShutterStrobe", "shutterEffect": "Open"},
            {"dmxRange": [STROBE_FROM, 255], "type": "ShutterStrobe", "shutterEffect": "Strobe",
             "speedStart": f"{_number(strobe_lo)}Hz", "speedEnd": f"{_number(strobe_hi)}Hz",
             "comment": f"Never faster than the venue's flash cap, {_number(cap)} Hz"},
        ]},
        "Effect": {"capabilities": effects},
        "Effect Speed": {"capabilities": [
            {"dmxRange": [0, 0], "type": "Generic", "comment": "The show's tempo"},
            {"dmxRange": [1, 255], "type": "EffectSpeed", "speedStart": f"{_number(SPEED_BPM[0])}bpm",
             "speedEnd": f"{_number(SPEED_BPM[1])}bpm",
             "comment": f"A flashing effect never faster than the venue's flash cap, {_number(cap)} Hz"},
        ]},
        "Control": {"capabilities": [
            {"dmxRange": [0, RELEASED_FROM - 1], "type": "Generic", "comment": "Live: the console drives the zones"},
            {"dmxRange": [RELEASED_FROM, 255], "type": "Generic",
             "comment": "Released to the box's own effects (OSC, HTTP, cue list)"},
        ]},
    }


def definition(show: ShowSection, today: datetime.date | None = None) -> dict[str, Any]:
    """The crowd fixture in OFL's JSON format, with every mode the gateway reads."""
    day = (today or datetime.date.today()).isoformat()
    return {
        "$schema": SCHEMA,
        "name": NAME,
        "shortName": "VG Crowd",
        "categories": ["Color Changer", "Strobe"],
        "meta": {"authors": [f"venue-gateway {__version__}"], "createDate": day, "lastModifyDate": day},
        "comment": ("A zone of LED wristbands (or a group of zones) lit by venue-gateway over its radio. A change "
                    f"shows on every band of the zone {show.live.delay_ms} ms after it reaches the gateway, with a "
                    f"{show.live.fade_ms} ms fade. A rise of more than half of full brightness within "
                    f"1/{_number(show.max_flash_hz)} s of the last one is held back to that moment."),
        "availableChannels": _channels(show),
        "modes": [{"name": MODE_NAMES[mode], "shortName": mode, "channels": [CHANNEL_NAMES[c] for c in layout]}
                  for mode, layout in LAYOUTS.items()],
    }


def patch_sheet(show: ShowSection) -> str:
    """The patch as CSV: one row for each crowd fixture, then one for each macro channel."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(SHEET_COLUMNS)
    for fixture in sorted(show.patch, key=lambda f: (f.universe, f.address)):
        writer.writerow((fixture.name, fixture.mode, " ".join(fixture.zones), fixture.universe, fixture.address,
                         fixture.channels, ""))
    for macro in sorted(show.macros, key=lambda m: (m.universe, m.channel)):
        ranges = "; ".join(f"{r.lo}-{r.hi} {r.preset}" for r in macro.parsed())
        writer.writerow(("macro", "", " ".join(macro.zones), macro.universe, macro.channel, 1,
                         f"fires presets: {ranges}"))
    return out.getvalue()
