"""Effects as documents (`Effect.from_document`) and the show engine's fire request (`ShowEngine.fire_request`),
from the HTTP API, the cloud and presets: any document gives an effect or EffectError (UnknownPreset for a preset
that is not there), never another error; an effect accepted is one the wristband radio can send, and after any
request the show's state is still servable."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from drivers.wristband.streams import template
from gateway import config
from gateway.show.effects import FIELDS, KINDS, Effect, EffectError
from gateway.show.engine import ShowEngine, UnknownPreset
from gateway.twin import Twin
from tests.fuzz.budget import fuzz
from tests.fuzz.support import deep_objects, encodable, json_objects, json_scalars, json_values

ROOT = Path(__file__).resolve().parents[2]
SHOW = config.load(ROOT / "config" / "demo.toml").show

# Effect documents near the valid ones: a kind, a colour, and fields from FIELDS with values in, at and past
# their bounds, or of the wrong type.
field_values = st.one_of(json_scalars, st.sampled_from([lo for _, lo, _ in FIELDS.values()]
                                                       + [hi for _, _, hi in FIELDS.values()]),
                         st.floats(-1e9, 1e9), st.integers(-(10**6), 10**7))
effect_documents = st.one_of(
    st.fixed_dictionaries({"kind": st.sampled_from(KINDS) | json_scalars},
                          optional={"colour": st.sampled_from(["#ff0000", "00ff00", "#FFF", "#gg0000"]) | json_values,
                                    **{name: field_values for name in FIELDS}}),
    json_objects)


def _transmittable(effect: Effect) -> None:
    assert 20 <= effect.period_ms <= 600_000 and 0 <= effect.intensity <= 1 and effect.duration_ms >= 0
    assert all(0 <= c <= 255 for c in effect.colour) and 0 <= effect.param <= 255
    encodable(effect.document())


@fuzz(100)
@given(effect_documents | deep_objects, st.none() | st.floats(1, 999))
def test_any_effect_document_is_an_effect_or_effect_error(doc: dict[str, Any], tempo: float | None) -> None:
    try:
        effect = Effect.from_document(doc, tempo)
    except EffectError:
        return
    _transmittable(effect)


requests = st.one_of(
    st.fixed_dictionaries({}, optional={
        "preset": st.sampled_from([p.name for p in SHOW.presets] + ["nope", ""]) | json_values,
        "effect": effect_documents | json_values,
        "zones": st.lists(st.sampled_from([z.name for z in SHOW.zones] + ["nowhere", ""]), max_size=4) | json_values,
        "lead_ms": st.integers(-10, 70_000) | json_scalars}),
    json_objects)


@fuzz(40)
@given(requests | st.fixed_dictionaries({"effect": deep_objects}))
def test_any_fire_request_fires_or_says_what_is_wrong(doc: dict[str, Any]) -> None:
    twin = Twin("gw", "hall")
    show = ShowEngine(SHOW, twin)
    try:
        fired = show.fire_request(doc)
    except (EffectError, UnknownPreset):
        twin.snapshot_json()
        return
    _transmittable(fired.effect)
    template(fired, 1, 0xFFFF).body()  # the radio's packet: every field fits
    assert math.isfinite(fired.starts_at)
    encodable(fired.document())
    twin.snapshot_json()  # the twin as GET /api/v1/twin serves it
