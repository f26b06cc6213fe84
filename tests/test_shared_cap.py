"""The flash cap across the boxes of a shared show: two boxes firing in one zone within the bus's latency reach the
same single winner (in their books and on their radios' streams) with no message more; a misbehaving box's burst
of effects is carried at most one per 1/max_flash_hz; a carried look that is a flash too soon is dropped; an
effect listed again long after (a presence) is not carried twice. Effects go between the engines as the show's bus
carries them (the messages' encoding), to the radio's real streams."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from drivers.wristband.streams import Streams
from gateway.show import engine
from gateway.show import shared_messages as msg
from gateway.show.engine import Fired, ShowEngine
from gateway.show.live import Look
from gateway.show.settings import ShowSection, ShowZone
from gateway.twin import Twin

GAP_MS = 1000 / 3  # show.max_flash_hz 3 (the default)


class Box:
    """One box of the show: its engine (serials in its block), a radio's streams as its transmitter, its
    listeners' log."""

    def __init__(self, name: str, block: int) -> None:
        self.name = name
        self.twin = Twin(name, "hall")
        zones = [ShowZone("floor", 0), ShowZone("bar", 1)]
        self.show = ShowEngine(ShowSection(zones=zones), self.twin)
        self.show.use_serials(block, 2)
        self.streams = Streams(1, 200, 0)
        self.sent: list[str] = []
        self.heard: list[str] = []
        self.show.attach_transmitter("radio", self._send)
        self.show.on_fire(lambda fired: self.heard.append(fired.effect_id))

    def _send(self, fired: Fired) -> str:
        self.sent.append(fired.effect_id)
        self.streams.add(fired)
        return "sending"

    def carry(self, fired: Fired, origin: str) -> bool:
        """`fired` as the bus brings it from `origin`."""
        return self.show.carry(msg.effect_of(msg.effect_body(fired, origin), self.show.mono, 3))

    def book(self, zone: str) -> list[str]:
        return [f.effect_id for f in self.show._lit.get(zone, ())]

    def on_air(self) -> set[str]:
        return {s.effect_id for s in self.streams.active}


@pytest.mark.parametrize("a_first", [True, False])
@pytest.mark.parametrize("a_starts_first", [True, False])
def test_two_boxes_firing_in_one_zone_both_end_with_the_same_single_winner(a_first: bool,
                                                                          a_starts_first: bool) -> None:
    a, b = Box("box-a", 0), Box("box-b", 1)
    leads = {"a": 1000, "b": 1100} if a_starts_first else {"a": 1100, "b": 1000}
    order = [(a, "a"), (b, "b")] if a_first else [(b, "b"), (a, "a")]
    fired = {key: box.show.fire(inline={"kind": "solid", "colour": "#ffffff"}, zones=["floor"],
                                lead_ms=leads[key]) for box, key in order}
    # Each passed its own check; each now carries the other's (within the bus's latency).
    assert b.carry(fired["a"], "box-a") is a_starts_first  # taken when it wins, in the place of b's own
    assert a.carry(fired["b"], "box-b") is (not a_starts_first)
    winner = fired["a"] if a_starts_first else fired["b"]
    loser = fired["b"] if a_starts_first else fired["a"]
    for box in (a, b):
        assert box.book("floor") == [winner.effect_id], box.name
        assert box.on_air() == {winner.effect_id}, f"{box.name}'s radio sends the winner only"
        assert [f.effect_id for f in box.show.recent] == [winner.effect_id], "the loser is listed no more"
        assert box.show.last is not None and box.show.last.effect_id == winner.effect_id
    refusing = a if a_starts_first else b  # the box whose effect wins refuses the other's
    assert refusing.show.refused_carried == 1 and loser.effect_id not in refusing.sent
    assert loser.effect_id not in refusing.heard, "a refused effect is no listener event"
    control = refusing.twin.get("show_control")
    assert control is not None and control.reported["refused_carried"] == 1
    # A local effect too near the winner is refused on either box, as before.
    with pytest.raises(Exception, match="max_flash_hz"):
        a.show.fire(inline={"kind": "solid"}, zones=["floor"], lead_ms=1050)


@pytest.mark.parametrize("a_first", [True, False])
def test_an_effect_outranked_in_some_of_its_zones_goes_on_in_the_others_on_both_boxes(a_first: bool) -> None:
    a, b = Box("box-a", 0), Box("box-b", 1)
    wide = {"inline": {"kind": "solid"}, "zones": ["floor", "bar"], "lead_ms": 1100}
    narrow = {"inline": {"kind": "solid", "colour": "#0000ff"}, "zones": ["floor"], "lead_ms": 1000}
    if a_first:
        x, y = a.show.fire(**wide), b.show.fire(**narrow)  # type: ignore[arg-type]
    else:
        y, x = b.show.fire(**narrow), a.show.fire(**wide)  # type: ignore[arg-type]
    assert a.carry(y, "box-b") and b.carry(x, "box-a")  # x is carried to b in the bar only
    for box in (a, b):
        assert box.book("floor") == [y.effect_id] and box.book("bar") == [x.effect_id], box.name
        assert {(s.effect_id, s.template.zones) for s in box.streams.active} == {(y.effect_id, 1), (x.effect_id, 2)}
        assert {f.effect_id for f in box.show.recent} == {x.effect_id, y.effect_id}
    assert b.show.refused_carried == 0 and b.show.recent[-1].zones == ("bar",)


def test_a_stop_carried_is_never_refused() -> None:
    a, b = Box("box-a", 0), Box("box-b", 1)
    a.show.fire(inline={"kind": "solid"}, zones=["floor"], lead_ms=0)
    stop = b.show.stop()
    assert a.carry(stop, "box-b") and stop.effect_id in a.sent and a.show.refused_carried == 0


def burst(origin: str, count: int, every_ms: int, lead_ms: int = 1000) -> list[dict[str, Any]]:
    """A misbehaving box's effects in one zone, `every_ms` apart, alternating colours, serials in its block."""
    start = int(time.time() * 1000) + lead_ms
    return [{"origin": origin, "effect_id": f"burst{i}", "serial": 128 + i, "preset": None,
             "effect": {"kind": "solid", "colour": "#ffffff" if i % 2 else "#ff0000", "intensity": 1.0,
                        "period_ms": 1000, "duration_ms": 0, "param": 0},
             "zones": ["floor"], "lead_ms": lead_ms,
             "groups": [{"zones": ["floor"], "mask": 1, "delay_ms": 0, "show_ms": start + i * every_ms}]}
            for i in range(count)]


def test_a_burst_of_carried_effects_is_carried_at_most_one_per_gap() -> None:
    a = Box("box-a", 0)
    docs = burst("box-b", 20, 20)  # over 380 ms: the first and the one 340 ms after it
    taken = [a.show.carry(msg.effect_of(doc, a.show.mono, 3)) for doc in docs]
    assert a.sent == a.heard == ["burst0", "burst17"] and taken.count(True) == 2
    assert a.show.refused_carried == 18
    starts = sorted(a.show.starts("floor"))
    assert all(later - earlier >= GAP_MS / 1000 - 0.001 for earlier, later in itertools.pairwise(starts))


def test_a_burst_carried_latest_first_ends_with_the_first_alone() -> None:
    a = Box("box-a", 0)
    for doc in reversed(burst("box-b", 10, 20)):
        a.show.carry(msg.effect_of(doc, a.show.mono, 3))
    assert a.book("floor") == ["burst0"] and a.on_air() == {"burst0"}
    assert [f.effect_id for f in a.show.recent] == ["burst0"]


def test_an_effect_listed_again_after_many_others_is_not_carried_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    a = Box("box-a", 0)
    docs = burst("box-b", 20, 400, lead_ms=30_000)  # still counting down: the other box's presence lists them all
    for doc in docs:
        assert a.show.carry(msg.effect_of(doc, a.show.mono, 3))
    last = a.show.last
    for doc in docs:  # its presence again, long after the first fell out of the engine's recent effects
        assert not a.show.carry(msg.effect_of(doc, a.show.mono, 3))
    assert a.heard == [doc["effect_id"] for doc in docs] and a.show.last is last
    monkeypatch.setattr(engine, "MAX_SEEN", 64)
    for i in range(100):  # the ids remembered are bounded
        a.show.carry(msg.effect_of({**docs[0], "effect_id": f"stop{i}", "effect": {**docs[0]["effect"],
                                    "kind": "blackout"}}, a.show.mono, 3))
    assert len(a.show._seen) <= 64 and not a.carry(a.show.recent[-1], "box-b"), "the latest is remembered"


async def test_carried_looks_alternating_black_and_white_have_their_rises_held() -> None:
    a = Box("box-a", 0)
    white, black = Look((255, 255, 255), 1.0), Look((0, 0, 0), 0.0)
    first = a.show.show_ms(time.monotonic()) + 200
    shown: list[int] = []
    a.show.live.subscribe(lambda change: shown.append(change.show_ms) if change.look == white else None)
    for i in range(100):  # a second of black and white, every 10 ms
        a.show.live.carry("floor", white if i % 2 else black, first + 10 * i, 0, "box-b")
    await asyncio.sleep(0)
    assert len(shown) == 3, shown  # at most one rise every 1/max_flash_hz: 333 ms
    assert all(later - earlier >= GAP_MS - 5 for earlier, later in itertools.pairwise(shown))
    assert a.show.live.dropped_carried == 50 - 3
