"""The twin: versions, the change log, desired state, snapshots, and rebuilding it from changes."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.readings import Reading
from gateway.twin import (
    MAX_DEPTH,
    MAX_DESIRED_BYTES,
    ChangesGone,
    InvalidState,
    Twin,
    UnknownAsset,
    VersionMismatch,
    change_document,
    merge_diff,
    merge_patch,
    rfc3339,
)


def make_twin(log: int = 100) -> Twin:
    clock = iter(range(1_700_000_000, 1_800_000_000))
    return Twin("gw", "hall", change_log=log, clock=lambda: float(next(clock)))


def test_every_change_takes_the_next_version() -> None:
    twin = make_twin()
    twin.declare("amp:1", "amplifier", "stage", "sim")
    twin.report("amp:1", {"temperature_c": 40.0})
    twin.patch_desired("amp:1", {"enabled": False})
    assert twin.version == 3
    assert [c[0] for c in twin.changes_since(0)] == [1, 2, 3]
    asset = twin.get("amp:1")
    assert asset is not None and asset.version == 3
    assert asset.reported == {"temperature_c": 40.0} and asset.desired == {"enabled": False}


def test_declaring_the_same_asset_again_changes_nothing() -> None:
    twin = make_twin()
    twin.declare("spl:floor", "spl_meter", "floor", "sim")
    twin.declare("spl:floor", "spl_meter", "floor", "sim")
    assert twin.version == 1
    twin.declare("spl:floor", "spl_meter", "pit", "sim")
    assert twin.version == 2 and change_document(twin.changes_since(1)[0])["zone"] == "pit"


def test_a_batch_of_readings_is_one_change_per_asset() -> None:
    twin = make_twin()
    readings = [Reading(1.0, f"amp:{i % 3}", m, float(i)) for i, m in enumerate(["a", "b", "c", "d", "e", "f"])]
    twin.apply_readings(readings, owner="sim")
    # three assets created (declared as unknown), each then changed once
    assert twin.version == 6
    docs = [orjson.loads(orjson.dumps(change_document(c))) for c in twin.changes_since(0)]
    reported = {d["asset"]: d["reported"] for d in docs if d["reported"]}
    assert reported == {"amp:0": {"a": 0.0, "d": 3.0}, "amp:1": {"b": 1.0, "e": 4.0}, "amp:2": {"c": 2.0, "f": 5.0}}
    asset = twin.get("amp:0")
    assert asset is not None and asset.owner == "sim" and asset.kind == "unknown"


def test_the_change_log_is_not_scanned_by_the_garbage_collector() -> None:
    """A full collection walks every tracked object: 100,000 tracked log entries were a 17-50 ms loop pause."""
    twin = make_twin()
    twin.apply_readings([Reading(1.0, "amp:1", "temperature_c", 40.0)], owner="sim")
    twin.report("amp:1", {"anomaly_channels": ["fan_rpm"], "state": {"nested": True}})
    twin.patch_desired("amp:1", {"enabled": False})
    twin.remove("amp:1")
    gc.collect()
    changes = twin.changes_since(0)
    assert len(changes) == 5 and not any(gc.is_tracked(c) for c in changes)


def test_the_change_log_costs_what_its_entries_hold() -> None:
    """orjson's result keeps its whole write buffer (about 4 KB); a log of 50,000 such patches held 200 MB."""
    twin = make_twin(log=10_000)
    tracemalloc.start()
    try:
        for k in range(50):
            twin.apply_readings([Reading(1.0, f"amp:{i}", m, float(k + i)) for i in range(100) for m in "abc"])
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(twin.changes_since(twin.floor)) >= 5000
    assert held < 2_500_000  # about 250 bytes an entry with its tuple and its JSON; 4 KB each would be 20 MB


def test_a_value_json_cannot_carry_is_refused_with_nothing_changed() -> None:
    twin = make_twin()
    twin.apply_readings([Reading(1.0, "amp:1", "temperature_c", 40.0)], owner="sim")
    version, state = twin.version, dict(twin.get("amp:1").reported)  # type: ignore[union-attr]
    bad: Any = np.float32(41.0)  # not a float, as a careless driver might hand over: JSON encoders refuse it
    with pytest.raises(TypeError):
        twin.apply_readings([Reading(2.0, "amp:1", "current_a", 1.0), Reading(2.0, "amp:2", "temperature_c", bad)])
    with pytest.raises(InvalidState):
        twin.report("amp:1", {"temperature_c": bad})
    with pytest.raises(InvalidState):
        twin.patch_desired("amp:1", {"limit": bad})
    assert twin.version == version and twin.get("amp:2") is None
    assert twin.get("amp:1").reported == state  # type: ignore[union-attr]
    twin.report("amp:1", {"temperature_c": 41.0})
    assert [c[0] for c in twin.changes_since(version - 1)] == [version, version + 1]


def nested(depth: int, leaf: Any = 1) -> Any:
    """An object `depth` levels deep: {"a": {"a": ... leaf}}."""
    for _ in range(depth):
        leaf = {"a": leaf}
    return leaf


def test_a_state_the_twin_could_not_encode_again_never_enters_it() -> None:
    """A desired patch 254 deep encodes by itself, but not inside the asset's document: once applied, the snapshot
    (GET /api/v1/twin, the cloud's twin sync) could never be encoded again. The twin refuses it, and anything
    past MAX_DEPTH or MAX_DESIRED_BYTES, with InvalidState (a ValueError), nothing changed."""
    twin = make_twin()
    twin.declare("amp:1", "amplifier", "stage", "sim")
    twin.patch_desired("amp:1", {"ok": nested(MAX_DEPTH - 1)})  # the deepest allowed, arrays counting too
    twin.report("amp:1", {"levels": [[1, [2]], nested(MAX_DEPTH - 2)]})
    version, desired = twin.version, twin.get("amp:1").desired  # type: ignore[union-attr]
    for patch in (nested(254), nested(MAX_DEPTH + 1), {"a": [[[nested(MAX_DEPTH)]]]}, {"big": 2**70},
                  {"x": "y" * MAX_DESIRED_BYTES}):
        with pytest.raises(InvalidState) as refused:
            twin.patch_desired("amp:1", patch)
        assert str(refused.value).startswith(("nested deeper than", "not representable", "the desired state"))
    with pytest.raises(InvalidState):
        twin.report("amp:1", nested(300))
    assert twin.version == version and twin.get("amp:1").desired == desired  # type: ignore[union-attr]
    assert orjson.loads(twin.snapshot_json())["assets"]["amp:1"]["desired"] == desired


def test_changes_since_a_trimmed_version_are_gone() -> None:
    twin = make_twin(log=100)
    twin.declare("a", "sensor")
    for i in range(500):
        twin.report("a", {"v": i})
    assert twin.floor > 0
    with pytest.raises(ChangesGone):
        twin.changes_since(twin.floor - 1)
    changes = twin.changes_since(twin.floor)
    assert [c[0] for c in changes] == list(range(twin.floor + 1, twin.version + 1))
    assert len(twin.changes_since(twin.version)) == 0
    with pytest.raises(ChangesGone):  # ahead of the twin: the client knows another history
        twin.changes_since(twin.version + 1)


def test_desired_state_is_a_json_merge_patch_with_optimistic_concurrency() -> None:
    twin = make_twin()
    twin.declare("dmx:1", "universe", None, "artnet")
    seen: list[tuple[str, dict[str, Any]]] = []
    undo = twin.on_desired("artnet", lambda asset, desired: seen.append((asset, dict(desired))))
    v = twin.patch_desired("dmx:1", {"levels": {"1": 255, "2": 10}, "mode": "live"}).version
    twin.patch_desired("dmx:1", {"levels": {"2": None}, "mode": None}, if_match=v)
    asset = twin.get("dmx:1")
    assert asset is not None and asset.desired == {"levels": {"1": 255}}
    with pytest.raises(VersionMismatch) as err:
        twin.patch_desired("dmx:1", {"x": 1}, if_match=v)
    assert err.value.current == asset.version
    with pytest.raises(UnknownAsset):
        twin.patch_desired("nope", {})
    assert seen == [("dmx:1", {"levels": {"1": 255, "2": 10}, "mode": "live"}), ("dmx:1", {"levels": {"1": 255}})]
    undo()
    twin.patch_desired("dmx:1", {"y": 2})
    assert len(seen) == 2


def test_merge_patch_does_not_touch_its_inputs() -> None:
    base = {"a": {"b": 1}, "c": 2}
    assert merge_patch(base, {"a": {"d": 3}, "c": None}) == {"a": {"b": 1, "d": 3}}
    assert base == {"a": {"b": 1}, "c": 2}


def test_snapshot_json_matches_the_snapshot_and_is_cached_per_version() -> None:
    twin = make_twin()
    twin.declare("zone:floor", "zone", "floor", "sim")
    twin.report("zone:floor", {"occupancy": 900.0, "label": "Floor"})
    body = twin.snapshot_json()
    doc = orjson.loads(body)
    expected = {**twin.header(), "assets": {a.id: a.document() for a in twin.assets().values()}}
    assert doc["assets"] == expected["assets"] and doc["version"] == expected["version"] == 2
    assert twin.snapshot_json() is body
    twin.report("zone:floor", {"occupancy": 901.0})
    assert orjson.loads(twin.snapshot_json())["assets"]["zone:floor"]["reported"]["occupancy"] == 901.0


def test_removed_assets_leave_the_snapshot_and_say_so_in_the_log() -> None:
    twin = make_twin()
    twin.declare("tag:1", "sensor_tag")
    twin.remove("tag:1")
    assert "tag:1" not in orjson.loads(twin.snapshot_json())["assets"]
    assert change_document(twin.changes_since(1)[0])["removed"]
    assert twin.take_dirty() == ([], ["tag:1"])
    with pytest.raises(UnknownAsset):
        twin.remove("tag:1")


async def test_waiters_wake_on_change_without_polling() -> None:
    twin = make_twin()
    woke = asyncio.Event()

    async def wait() -> None:
        await twin.wait_for_change(0)
        woke.set()

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.01)
    assert not woke.is_set()
    twin.declare("a", "sensor")
    await asyncio.wait_for(task, 1)
    assert woke.is_set()


def test_restore_starts_an_empty_log_at_the_restored_version() -> None:
    twin = make_twin()
    twin.restore([], 1_000_000)
    assert twin.version == twin.floor == 1_000_000
    with pytest.raises(ChangesGone):
        twin.changes_since(500)
    twin.declare("a", "sensor")
    assert twin.version == 1_000_001


def test_rfc3339() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_763_700_000.25) == "2025-11-21T04:40:00.250Z"
    # One instant computed on two boxes differs in its float's last bits: it reads the same, to the nearest ms.
    assert rfc3339(1_765_000_000.2599999) == rfc3339(1_765_000_000.26) == "2025-12-06T05:46:40.260Z"
    assert rfc3339(1_765_000_000.9996) == "2025-12-06T05:46:41.000Z"


documents = st.recursive(st.one_of(st.integers(-3, 3), st.text(max_size=2), st.lists(st.integers(0, 2), max_size=2)),
                         lambda inner: st.dictionaries(st.sampled_from("abc"), inner, max_size=3), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abc"), documents, max_size=3),
       st.dictionaries(st.sampled_from("abc"), documents, max_size=3))
def test_merge_diff_is_the_patch_that_turns_one_document_into_another(old: Any, new: Any) -> None:
    assert merge_patch(old, merge_diff(old, new)) == new


values = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3), st.booleans())
patches = st.dictionaries(st.sampled_from("abcd"), st.one_of(values, st.dictionaries(st.sampled_from("xy"), values)),
                          max_size=3)
ops = st.lists(st.tuples(st.sampled_from(["declare", "report", "desired", "remove", "readings"]),
                         st.sampled_from(["a1", "a2", "a3"]), patches), max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_a_consumer_rebuilds_the_twin_from_a_snapshot_and_the_changes(sequence: list[Any]) -> None:
    """What a cloud mirror does: take a snapshot, then fold the changes after it; it must equal the twin."""
    twin = make_twin(log=1000)
    twin.declare("a1", "sensor", "floor")
    mirror = {k: {"reported": v["reported"], "desired": v["desired"], "kind": v["kind"], "zone": v["zone"]}
              for k, v in orjson.loads(twin.snapshot_json())["assets"].items()}
    since = twin.version
    for op, asset, patch in sequence:
        present = twin.get(asset) is not None
        if op == "declare":
            twin.declare(asset, "sensor", "bar")
        elif op == "report" and present:
            twin.report(asset, patch)
        elif op == "desired" and present:
            twin.patch_desired(asset, patch)
        elif op == "remove" and present:
            twin.remove(asset)
        elif op == "readings":
            twin.apply_readings([Reading(0.0, asset, k, 1.0) for k in patch])
    for change in twin.changes_since(since):
        doc = orjson.loads(orjson.dumps(change_document(change)))  # as it travels
        if doc["removed"]:
            mirror.pop(doc["asset"], None)
            continue
        entry = mirror.setdefault(doc["asset"], {"reported": {}, "desired": {}})
        entry["kind"], entry["zone"] = doc["kind"], doc["zone"]
        entry["reported"] = merge_patch(entry["reported"], doc["reported"] or {})
        entry["desired"] = merge_patch(entry["desired"], doc["desired"] or {})
    expected = {k: {"reported": v["reported"], "desired": v["desired"], "kind": v["kind"], "zone": v["zone"]}
                for k, v in orjson.loads(twin.snapshot_json())["assets"].items()}
    assert mirror == expected
