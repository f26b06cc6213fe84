"""Processes the cloud benchmark runs beside the gateway, each on an interpreter of its own: a subscriber that
counts the telemetry readings that arrive (the zero-loss check, and the arrival window both runs are timed by),
and the peer, a bare paho-mqtt loop publishing the same payloads with QoS 1.

    python -m bench.mqtt_peers count PORT TOPIC READINGS   prints {"first_ns", "last_ns", "backlog", ...}
    python -m bench.mqtt_peers publish PORT TOPIC DATABASE prints {"published", "seconds"}
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT_S = 120.0


def count(port: int, topic: str, expected: int) -> None:
    seen: set[str] = set()
    state = {"first_ns": 0, "last_ns": 0, "readings": 0, "backlog": 0, "batches": 0, "duplicates": 0}
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.time_ns()
        doc = orjson.loads(message.payload)
        if doc["batch_id"] in seen:
            state["duplicates"] += 1
            return
        seen.add(doc["batch_id"])
        state["first_ns"] = state["first_ns"] or now
        state["last_ns"] = now
        state["readings"] += len(doc["readings"])
        state["batches"] += 1
        if doc["readings"]:  # the backlog is sequence numbers 1..expected; live readings come after it
            first, last = doc["readings"][0][0], doc["readings"][-1][0]
            state["backlog"] += max(0, min(last, expected) - first + 1)
        if state["backlog"] >= expected:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    print("ready", flush=True)
    done.wait(TIMEOUT_S)
    client.loop_stop()
    print(orjson.dumps(state).decode(), flush=True)


def publish(port: int, topic: str, database: str) -> None:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        payloads = [row[0] for row in db.execute("SELECT payload FROM outbox WHERE kind = 'telemetry' ORDER BY id")]
    acked = threading.Event()
    left = [len(payloads)]

    def on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        left[0] -= 1
        if left[0] == 0:
            acked.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.perf_counter()
    for payload in payloads:
        client.publish(topic, payload, qos=1)
    acked.wait(TIMEOUT_S)
    seconds = time.perf_counter() - began
    client.loop_stop()
    print(orjson.dumps({"published": len(payloads) - left[0], "seconds": seconds}).decode(), flush=True)


if __name__ == "__main__":
    mode, port, topic, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if mode == "count":
        count(port, topic, int(arg))
    else:
        publish(port, topic, arg)
