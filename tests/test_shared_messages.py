"""The shared show's messages as a box takes them (gateway/show/shared.py, shared_messages.py): nothing another box
(or anyone on the venue's broker) sends ends the unit, a presence's one bad entry costs only that entry, an effect
fired while the box joins the bus is carried, and a clock answer says when it was sent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import config as configuration
from gateway.api.auth import Tokens
from gateway.daemon import Gateway
from gateway.show import shared_messages as msg
from gateway.show.engine import Fired, ShowEngine
from gateway.show.settings import ShowSection, ShowZone
from gateway.show.shared import SharedShow
from gateway.show.shared_settings import SharedSection
from gateway.twin import Twin
from peers.mosquitto import Mosquitto
from tests.cloud import until
from tests.conftest import ADMIN, OPERATOR, VIEWER
from tests.fixtures import mosquitto  # noqa: F401  (a fixture)
from tests.test_shared_show import box_config, running, shared

VENUE = "arena"


def no_access() -> Any:
    raise AssertionError("not connected in this test")


def box_a() -> SharedShow:
    """Box a of the show a, b, not connected: its messages are handed to `receive` as the bus would."""
    twin = Twin("a", VENUE)
    engine = ShowEngine(ShowSection(zones=[ShowZone("floor", 0), ShowZone("balcony", 1)]), twin)
    engine.use_serials(0, 2)
    return SharedShow(engine, twin, SharedSection(brokers=["mqtt://127.0.0.1:1"], boxes=["a", "b"]), "a", VENUE,
                      no_access)


def effect_doc(box: SharedShow, effect_id: str, serial: int, zone: str = "floor",
               lead_ms: int = 2000) -> dict[str, Any]:
    """An effect of b's as b sends it, starting `lead_ms` from now on a's show clock."""
    show_ms = int(box._now_ms()) + lead_ms
    return {"origin": "b", "effect_id": effect_id, "serial": serial, "preset": None,
            "effect": {"kind": "solid", "colour": "#ff0000", "intensity": 1.0, "period_ms": 1000, "duration_ms": 0,
                       "param": 0},
            "zones": [zone], "lead_ms": lead_ms,
            "groups": [{"zones": [zone], "mask": 1 if zone == "floor" else 2, "delay_ms": 0, "show_ms": show_ms}]}


# -- anything on any topic ----------------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
                    | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
SHOW_IDS = st.sampled_from(["7", "²", "٣", "65535", "65536", "007", "1" * 40, "", " 7", "7\n"]) | st.text(max_size=6)


def _overridden(template: dict[str, Any], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The template with some of its keys given other values, and some left out."""
    keys = sorted(template)
    return st.tuples(st.fixed_dictionaries({}, optional={k: values for k in keys}),
                     st.sets(st.sampled_from(keys), max_size=2)).map(
        lambda t: {k: v for k, v in {**template, **t[0]}.items() if k not in t[1]})


@st.composite
def payloads(draw: st.DrawFn, kind: str, box: SharedShow) -> bytes:
    """What might come on a topic of kind `kind`: bytes, any JSON, or a message of its kind with fields off."""
    how = draw(st.sampled_from(["bytes", "json", "near"]))
    if how == "bytes":
        return draw(st.binary(max_size=64))
    if how == "json":
        return orjson.dumps(draw(JSON))
    effect = draw(_overridden(effect_doc(box, "e1", 130), JSON))
    if "effect" in effect and isinstance(effect["effect"], dict):
        effect["effect"] = draw(_overridden(effect_doc(box, "e1", 130)["effect"], JSON))
    look = {"zone": "balcony", "colour": "#00ff00", "intensity": 1.0, "strobe_hz": 0.0,
            "show_ms": int(box._now_ms()), "fade_ms": 0}
    body: dict[str, Any]
    if kind == "effect":
        body = effect
    elif kind == "live":
        body = draw(_overridden(look, JSON))
    elif kind == "clock":
        body = draw(_overridden({"to": "a", "t1": 1.0, "t2": 2.0, "t3": 3.0}, JSON))
    else:
        body = draw(_overridden({"online": True, "epochs": draw(st.dictionaries(SHOW_IDS, JSON | st.integers(0, 2**53),
                                                                                   max_size=3)),
                                 "effects": [effect, draw(JSON)], "live": [draw(_overridden(look, JSON))]}, JSON))
    return orjson.dumps({"v": 1, "box": draw(st.sampled_from(["b", "b", "b", "a", "zz"])), **body})


def test_nothing_on_any_topic_makes_receive_raise() -> None:
    """Any bytes, any JSON, and messages of each kind with fields off (a presence's epochs keyed by "²", which
    str.isdigit() takes and int() refuses): dropped and counted, never raised (a retained message that raised would
    end the unit at every restart)."""
    loop = asyncio.new_event_loop()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data(), kind=st.sampled_from(msg.KINDS_OF_MESSAGE), sender=st.sampled_from(["b", "b", "a", "zz"]))
    @example(data=None, kind="presence", sender="b")
    def check(data: st.DataObject | None, kind: str, sender: str) -> None:
        async def one() -> None:
            box = box_a()
            if data is None:  # the retained presence that crash-looped the unit
                payload = msg.encode("b", {"online": True, "epochs": {"²": 1}, "effects": [], "live": []})
            else:
                payload = data.draw(payloads(kind, box))
            box.receive(f"venues/{VENUE}/show/{sender}/{kind}", payload)
            if data is None:
                assert box.peers["b"].malformed == 1

        loop.run_until_complete(one())

    try:
        check()
    finally:
        loop.close()


async def test_a_presence_with_one_bad_effect_still_gives_the_others_and_its_looks() -> None:
    box = box_a()
    good, bad, later = effect_doc(box, "good", 130), effect_doc(box, "bad", 5), effect_doc(box, "later", 131,
                                                                                            lead_ms=3000)
    look = {"zone": "balcony", "colour": "#00ff00", "intensity": 1.0, "strobe_hz": 0.0,
            "show_ms": int(box._now_ms()), "fade_ms": 0}
    box.receive(f"venues/{VENUE}/show/b/presence", msg.encode("b", {
        "online": True, "epochs": {"7": 1000}, "effects": [good, bad, later, {"origin": "b"}],
        "live": [{"zone": "floor"}, look]}))
    assert [f.effect_id for f in box.engine.recent] == ["good", "later"]
    assert box.engine.live.current()["balcony"].origin == "b"
    assert box.engine.epochs.peers["b"] == {7: 1000}
    assert box.peers["b"].malformed == 3 and box.peers["b"].carried == 2 and box.peers["b"].state == "online"


# -- over the broker ----------------------------------------------------------------------------------------------
async def test_a_retained_presence_that_cannot_be_taken_never_ends_the_unit(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as b:
        await b.publish(f"venues/{VENUE}/show/b/presence", msg.encode(
            "b", {"online": True, "epochs": {"²": 1}, "effects": [], "live": []}), qos=1, retain=True)
        async with running(box_config(tmp_path / "a", "a", mosquitto.url, ["a", "b"])) as a:
            await until(lambda: shared(a).peers["b"].malformed == 1, 5, "the presence dropped")
            effect = effect_doc(shared(a), "after", 140)
            await b.publish(f"venues/{VENUE}/show/b/effect", msg.encode("b", effect), qos=1)
            await until(lambda: any(f.effect_id == "after" for f in a.show.recent), 5, "b's next effect carried")
            assert shared(a).state == "online" and a.supervisor.units["shared"].restarts == 0


class SlowReplies:
    """A TCP relay to the broker that holds what the broker says back for `delay_s`: a box whose CONNACK, SUBACK
    and PUBACK each take that long."""

    def __init__(self, upstream: int, delay_s: float) -> None:
        self.upstream, self.delay_s = upstream, delay_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, 0.0), self._pipe(up_reader, writer, self.delay_s))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await held.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    return
                writer.write(data)
                await writer.drain()

        delivering = loop.create_task(deliver())
        try:
            while data := await reader.read(65536):
                held.put_nowait((loop.time() + delay_s, data))
            held.put_nowait((loop.time() + delay_s, b""))
            await delivering
        finally:
            delivering.cancel()


async def test_every_effect_fired_while_a_box_joins_the_bus_is_carried(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    """Fired before a's presence is made: in it; after: sent after it. None is lost between the two (the presence
    made, its PUBACK awaited, the bus not yet online): the broker's answers to a take 0.1 s each."""
    boxes = ["a", "b"]
    relay = SlowReplies(mosquitto.port, 0.1)
    await relay.start()
    try:
        async with running(box_config(tmp_path / "b", "b", mosquitto.url, boxes)) as b:
            gw = Gateway(configuration.load(box_config(tmp_path / "a", "a", f"mqtt://127.0.0.1:{relay.port}", boxes)),
                         Tokens([(VIEWER, "viewer"), (OPERATOR, "operator"), (ADMIN, "admin")]))
            stop = asyncio.Event()
            task = asyncio.create_task(gw.run(stop))
            try:
                await until(lambda: gw.shared is not None and gw.shared._undo, 10, "a's shared show attached")
                # Fired until a is online, then no more: a later effect would have a's presence made again, with
                # every effect still counting down.
                fired: list[Fired] = []
                while shared(gw).state != "online":
                    assert len(fired) < 16, "a took too long to join the bus"  # the engine keeps 16 recent effects
                    fired.append(gw.show.fire(inline={"kind": "blackout"}, lead_ms=4000))
                    await asyncio.sleep(0.03)
                ids = {f.effect_id for f in fired}
                with contextlib.suppress(AssertionError):
                    await until(lambda: shared(b).peers["a"].carried >= len(fired), 3, "every effect on b")
                got = {f.effect_id for f in b.show.recent if f.origin == "a"}
                assert ids <= got, f"{len(ids - got)} of {len(ids)} effects fired on a never reached b"
            finally:
                stop.set()
                await task
    finally:
        await relay.close()


async def test_a_clock_answer_is_stamped_when_it_is_sent(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    """Time the answer waits to go out is not network delay: its t3 says when it went, not when it was queued."""
    async with running(box_config(tmp_path / "a", "a", mosquitto.url, ["a", "b"])) as a, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as b:
        await b.subscribe(f"venues/{VENUE}/show/a/clock", qos=0)
        shared(a).receive(f"venues/{VENUE}/show/b/clock", msg.encode("b", {"t1": 1.0}))
        time.sleep(0.05)  # noqa: ASYNC251  (the loop kept busy on purpose: the answer waits to be sent)

        async def answer() -> dict[str, Any]:
            async for message in b.messages:
                assert isinstance(message.payload, bytes)
                doc: dict[str, Any] = orjson.loads(message.payload)
                if doc.get("to") == "b":
                    return doc
            raise AssertionError("no answer")

        doc = await asyncio.wait_for(answer(), 5)
        assert doc["t1"] == 1.0 and doc["t3"] - doc["t2"] >= 50, doc
