"""The outbox drain: sends what waits in the outbox, oldest first, with a window of batches in flight, and hands
each acknowledged row back to the store for deletion. Reads happen on a thread of its own; the loop only
publishes blobs, so a backlog drains as fast as the broker acknowledges without holding the show up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiomqtt

from gateway.database import worker
from gateway.dmx import FrameClock
from gateway.outbox import OutboxReader
from gateway.store import Store
from gateway.twin import Twin

READ_ROWS = 256
READ_BYTES = 4 * 1024 * 1024
BURST_S = 0.1  # the rate cap lets this much unused time be caught up at once
QUIET_S = 0.008  # while DMX frames go out, nothing is sent in this time before each frame slot


@dataclass
class DrainCounts:
    batches: int = 0  # telemetry batches acknowledged by the broker
    readings: int = 0
    events: int = 0


class RateCap:
    """At most `rate` readings a second on average (0: no cap)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0

    async def take(self, readings: int) -> None:
        if self.rate <= 0 or readings <= 0:
            return
        now = time.monotonic()
        at = max(self._next, now - BURST_S)
        self._next = at + readings / self.rate
        if at > now:
            await asyncio.sleep(at - now)


class Drain:
    def __init__(self, store: Store, inflight: int, rate: float, frames: FrameClock, ack_timeout_s: float) -> None:
        self._store = store
        self._ack_timeout_s = ack_timeout_s
        self._frames = frames
        self._inflight = inflight
        self._cap = RateCap(rate)
        self._reader = OutboxReader(str(store.path))
        self._executor = worker("outbox-reader")
        self.counts = DrainCounts()

    async def run(self, client: aiomqtt.Client, topics: dict[str, str], group: asyncio.TaskGroup) -> None:
        """Send from the start of the outbox (what is still there was never acknowledged) until cancelled;
        a failed publish raises out of `group` and ends the session."""
        store = self._store
        window = asyncio.Semaphore(self._inflight)
        loop = asyncio.get_running_loop()
        after = 0
        try:
            while True:
                store.outbox_ready.clear()  # before reading: a row written after the read sets it again
                rows = await loop.run_in_executor(self._executor, self._reader.read, after, READ_ROWS, READ_BYTES)
                if not rows:
                    await store.outbox_ready.wait()
                    continue
                for row_id, kind, readings, payload in rows:
                    await self._cap.take(readings)
                    await window.acquire()
                    await self._frames.clear(QUIET_S)
                    store.outbox_in_flight = row_id
                    group.create_task(self._send(client, topics[kind], row_id, kind, readings, payload, window))
                    after = row_id
                    await asyncio.sleep(0)  # one publish per loop pass: a frame tick waits behind one, not a window
        finally:
            store.outbox_in_flight = 0

    async def _send(self, client: aiomqtt.Client, topic: str, row_id: int, kind: str, readings: int, payload: bytes,
                    window: asyncio.Semaphore) -> None:
        try:
            # A dead broker is noticed by the keepalive; one that never acknowledges this, by the timeout. Either
            # ends the session, and the row, still in the outbox, goes again.
            await client.publish(topic, payload, qos=1, timeout=self._ack_timeout_s)
        finally:
            window.release()
        self._store.ack_outbox((row_id,))
        if kind == "event":
            self.counts.events += 1
        else:
            self.counts.batches += 1
            self.counts.readings += readings

    async def finish(self, client: aiomqtt.Client, topics: dict[str, str], twin: Twin) -> None:
        """Stopping, the broker there: commit what the store holds, cut the outbox's last batch, and send what
        waits, oldest first, until the outbox is empty (the caller bounds the time). What was in flight when the
        session was cancelled goes again: its acknowledgement was lost with it, and consumers drop duplicates."""
        store = self._store
        loop = asyncio.get_running_loop()
        if store.outbox is not None:
            store.outbox.stopping = True
        window = asyncio.Semaphore(self._inflight)
        while True:
            await store.flush(twin)  # the readings handed over, the acknowledgements so far, the last batch
            rows = await loop.run_in_executor(self._executor, self._reader.read, 0, READ_ROWS, READ_BYTES)
            if not rows:
                return
            sends = []
            for row_id, kind, readings, payload in rows:
                await window.acquire()
                sends.append(asyncio.ensure_future(
                    self._send(client, topics[kind], row_id, kind, readings, payload, window)))
            await asyncio.gather(*sends)

    def close(self) -> None:
        self._executor.submit(self._reader.close)
        self._executor.shutdown(wait=False)
