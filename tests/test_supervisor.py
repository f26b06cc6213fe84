"""The supervisor: failing units restart with growing, jittered delays; the rest of the box runs on."""

from __future__ import annotations

import asyncio
import random

from gateway.settings import SupervisorSection
from gateway.supervisor import NotReady, Supervisor, Unit, backoff_delay
from gateway.twin import Twin


class Flaky(Unit):
    def __init__(self, log: list[str], fail_starts: int, counter: list[int]) -> None:
        self.log, self.fail_starts, self.counter = log, fail_starts, counter

    async def start(self) -> None:
        self.counter[0] += 1
        if self.counter[0] <= self.fail_starts:
            raise NotReady("dongle unplugged")
        self.log.append("start")

    async def run(self) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("lost the device")

    async def stop(self) -> None:
        self.log.append("stop")


class Steady(Unit):
    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.01)


def test_backoff_grows_to_its_bound_with_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 8.0, rng) for n in range(8)]
    for n, d in enumerate(delays):
        full = min(8.0, 0.5 * 2**n)
        assert full / 2 <= d <= full
    assert len({round(backoff_delay(3, 0.5, 8.0, rng), 6) for _ in range(20)}) > 1  # jittered


async def test_a_failing_unit_is_restarted_and_the_others_keep_running() -> None:
    twin = Twin("gw", "hall")
    sup = Supervisor(SupervisorSection(backoff_initial_s=0.01, backoff_max_s=0.05), twin)
    log: list[str] = []
    steady = Steady()
    sup.add("flaky", "driver", lambda: Flaky(log, fail_starts=2, counter=counter))
    sup.add("steady", "driver", lambda: steady)
    counter = [0]
    sup.start()
    await asyncio.sleep(0.6)
    flaky = sup.units["flaky"]
    assert flaky.restarts >= 3
    assert flaky.last_error is not None
    assert log[:4] == ["start", "stop", "start", "stop"]  # stop after every successful start
    assert sup.units["steady"].state == "running" and steady.ticks > 20
    reported = twin.get("driver:flaky")
    assert reported is not None and reported.reported["restarts"] >= 3
    assert sup.status() in ("degraded", "ok")
    await sup.stop()
    assert all(u.state == "stopped" for u in sup.units.values())


async def test_status_is_starting_then_ok_then_degraded() -> None:
    twin = Twin("gw", "hall")
    sup = Supervisor(SupervisorSection(backoff_initial_s=5, backoff_max_s=10), twin)
    gate = asyncio.Event()

    class Slow(Unit):
        async def start(self) -> None:
            await gate.wait()

        async def run(self) -> None:
            await asyncio.sleep(0.05)
            raise RuntimeError("boom")

    sup.add("slow", "driver", Slow)
    assert sup.status() == "starting"
    sup.start()
    await asyncio.sleep(0.01)
    assert sup.status() == "starting"
    gate.set()
    await asyncio.sleep(0.02)
    assert sup.status() == "ok"
    await asyncio.sleep(0.1)
    assert sup.status() == "degraded"
    assert sup.units["slow"].document()["state"] == "backoff"
    assert 2.5 <= sup.units["slow"].document()["retry_in_s"] <= 5
    await sup.stop()


async def test_a_unit_that_cannot_even_be_built_is_retried() -> None:
    twin = Twin("gw", "hall")
    sup = Supervisor(SupervisorSection(backoff_initial_s=0.01, backoff_max_s=0.02), twin)
    builds = [0]

    def factory() -> Unit:
        builds[0] += 1
        if builds[0] < 3:
            raise ValueError("bad wiring")
        return Steady()

    sup.add("fragile", "driver", factory)
    sup.start()
    await asyncio.wait_for(sup.settled.wait(), 1)
    await asyncio.sleep(0.2)
    assert sup.units["fragile"].state == "running" and sup.units["fragile"].restarts == 2
    assert "bad wiring" in (sup.units["fragile"].last_error or "")
    await sup.stop()


class Opens(Unit):
    """Starts in `delay` seconds, or fails when `fails`; notes when its start began and ended."""

    def __init__(self, name: str, log: list[str], delay: float = 0.0, fails: bool = False) -> None:
        self.name, self.log, self.delay, self.fails = name, log, delay, fails

    async def start(self) -> None:
        self.log.append(f"{self.name} starting")
        await asyncio.sleep(self.delay)
        if self.fails:
            raise NotReady("not there")
        self.log.append(f"{self.name} running")


async def test_a_unit_starts_after_the_units_it_names_have_run_or_failed_once() -> None:
    sup = Supervisor(SupervisorSection(backoff_initial_s=5, backoff_max_s=5), Twin("gw", "hall"))
    log: list[str] = []
    sup.add("radio", "driver", lambda: Opens("radio", log), after=["air"])
    sup.add("air", "driver", lambda: Opens("air", log, delay=0.2))
    sup.add("scanner", "driver", lambda: Opens("scanner", log), after=["broken"])
    sup.add("broken", "driver", lambda: Opens("broken", log, delay=0.1, fails=True))
    sup.start()
    await asyncio.sleep(0.4)
    await sup.stop()
    assert log.index("air running") < log.index("radio starting")
    assert log.index("broken starting") < log.index("scanner starting")  # a failed first try does not hold it
    assert sup.units["radio"].restarts == 0 and sup.units["scanner"].restarts == 0
