"""The twin's desired state from outside (the HTTP PATCH and the cloud's `desired`): `merge_patch` keeps RFC 7396's
rules for any documents, and `Twin.patch_desired` either takes a patch or refuses it with its documented errors,
nothing changed; after any sequence of patches the twin, each asset and each change can still be encoded."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.twin import Twin, VersionMismatch, change_document, merge_patch
from tests.fuzz.budget import fuzz
from tests.fuzz.support import deep_objects, encodable, json_objects, nested


@fuzz(40)
@given(json_objects | st.integers(1, 60).map(nested), json_objects | st.integers(1, 60).map(nested))
def test_merge_patch_keeps_rfc_7396_rules(target: dict[str, Any], patch: dict[str, Any]) -> None:
    before = copy.deepcopy(target)
    merged = merge_patch(target, patch)
    assert target == before, "the target was changed in place"
    assert merge_patch(merged, patch) == merged  # a patch applied twice is applied once
    for key, value in patch.items():
        if value is None:
            assert key not in merged
        elif not isinstance(value, dict):
            assert merged[key] == value
    for key in set(target) - set(patch):
        assert merged[key] == target[key]


patches = st.one_of(json_objects, deep_objects, st.integers(1, 40).map(nested),
                    st.dictionaries(st.sampled_from(["levels", "mode", "a"]),
                                    st.none() | json_objects | st.integers(0, 300), max_size=3))


@fuzz(35)
@given(st.lists(st.tuples(st.sampled_from(["amp:1", "amp:1", "universe:1", "gone"]), patches,
                          st.none() | st.integers(-1, 40)), min_size=1, max_size=8))
def test_any_desired_patches_leave_a_twin_that_can_be_served(steps: list[tuple[str, dict[str, Any], int | None]]
                                                             ) -> None:
    twin = Twin("gw", "hall")
    for asset_id in ("amp:1", "universe:1"):
        twin.declare(asset_id, "amplifier", "stage", "sim")
    for asset_id, patch, version in steps:
        asset = twin.get(asset_id)
        before = None if asset is None else (asset.version, copy.deepcopy(asset.desired))
        try:
            twin.patch_desired(asset_id, patch, if_match=version)
        except (LookupError, ValueError, VersionMismatch):  # UnknownAsset; the twin's or the owner's refusal
            assert asset is None or (asset.version, asset.desired) == before, "a refused patch changed the asset"
        twin.snapshot_json()  # the twin as GET /api/v1/twin serves it
        for a in twin.assets().values():
            a.json_entry()
        for change in twin.changes_since(0):
            encodable(change_document(change))
