"""The limits the fleet benchmark measures beside the mirror replicas, each on an interpreter of its own:

    python -m bench.fleet_peers count PORT N     the broker alone: a plain subscriber to every gateway's telemetry;
                                                 prints "ready" once subscribed, then counts the readings that
                                                 arrive (each batch id once) until N and prints {"first_ns",
                                                 "last_ns", "readings", "batches", "duplicates"}
    python -m bench.fleet_peers copy URL LEDGER N  PostgreSQL alone: the ledger's readings, made again by the
                                                 load generator's boxes, written by COPY from one client, N batches
                                                 to a transaction; prints {"rows", "written", "batches", "seconds",
                                                 "backend_cpu_s": its server process's CPU}
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT_S = 300.0
TELEMETRY = "venues/+/+/telemetry"
# PostgreSQL alone writes into tables of its own, shaped as the mirror keeps a batch and its readings
# (gateway/cloud/mirror_db.py): the batch row by its key, the readings with the mirror's two indexes.
TABLES = """
CREATE TABLE alone_batches (gid integer NOT NULL, batch_id text NOT NULL, first_seq bigint, last_seq bigint,
                            readings integer NOT NULL, PRIMARY KEY (gid, batch_id));
CREATE TABLE alone_readings (gid integer NOT NULL, seq bigint NOT NULL, ts double precision NOT NULL,
                             asset text NOT NULL, metric text NOT NULL, value double precision);
CREATE INDEX alone_readings_series ON alone_readings (gid, asset, metric, ts, seq);
CREATE INDEX alone_readings_time ON alone_readings (gid, ts, seq);
"""


def count(port: int, expected: int) -> None:
    seen: set[str] = set()
    state = {"first_ns": 0, "last_ns": 0, "readings": 0, "batches": 0, "duplicates": 0}
    done, subscribed = threading.Event(), threading.Event()

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
        if state["readings"] >= expected:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(TELEMETRY, qos=1)
    if not subscribed.wait(10):
        raise SystemExit("the broker did not answer the subscription")
    print("ready", flush=True)
    done.wait(TIMEOUT_S)
    client.disconnect()
    client.loop_stop()
    print(orjson.dumps(state).decode(), flush=True)


def batches(ledger: dict[str, Any]) -> list[tuple[str, str, str, list[list[Any]]]]:
    """The ledger's batches made again, reading for reading (the same boxes, seeds and counts; only the times
    differ): (batch id, venue, gateway id, readings)."""
    from bench import fleet_load
    from gateway.cloud.settings import Broker

    settings = fleet_load.LoadSettings(**ledger["settings"])
    load = fleet_load.fleet(settings, Broker("127.0.0.1", 1, False))
    out = []
    for box, kept in zip(load.boxes, ledger["boxes"], strict=True):
        now = time.time()
        while box.seq < kept["last_seq"]:
            box.take(min(settings.batch_readings, kept["last_seq"] - box.seq), now)
            box.fold()
        for kind, _, _, payload in box.taken(force=True):
            if kind != "telemetry":
                continue
            doc = orjson.loads(payload)
            out.append((doc["batch_id"], box.venue, box.gateway_id, doc["readings"]))
    return out


def copy(url: str, ledger_path: str, group: int) -> None:
    import psycopg

    with open(ledger_path, "rb") as f:
        made = batches(orjson.loads(f.read()))
    # COPY's text, made before the clock starts: the figure is the server's and one connection's, not Python's
    gids: dict[tuple[str, str], int] = {}
    texts = [(gids.setdefault((venue, gateway_id), len(gids) + 1), batch_id, readings[0][0], readings[-1][0],
              len(readings), "".join(f"{gids[venue, gateway_id]}\t{seq}\t{ts!r}\t{asset}\t{metric}\t{value!r}\n"
                                     for seq, ts, asset, metric, value in readings).encode())
             for batch_id, venue, gateway_id, readings in made]
    rows = sum(len(b[3]) for b in made)
    with psycopg.connect(url) as conn:
        conn.execute(TABLES.encode())
        conn.commit()
        began = time.perf_counter()
        for start in range(0, len(texts), group):
            with conn.transaction(), conn.cursor() as cur:
                for gid, batch_id, first, last, readings, text in texts[start:start + group]:
                    cur.execute("INSERT INTO alone_batches VALUES (%s, %s, %s, %s, %s)",
                                (gid, batch_id, first, last, readings))
                    with cur.copy("COPY alone_readings (gid, seq, ts, asset, metric, value) FROM STDIN") as out:
                        out.write(text)
        seconds = time.perf_counter() - began
        written = conn.execute("SELECT count(*) FROM alone_readings").fetchone()
        pid = conn.info.backend_pid
        with open(f"/proc/{pid}/stat") as stat:  # the server's process for this connection: its CPU time
            fields = stat.read().rsplit(")", 1)[1].split()
    print(orjson.dumps({"rows": rows, "written": written[0] if written else 0, "batches": len(made),
                        "seconds": seconds, "backend_cpu_s": (int(fields[11]) + int(fields[12])) /
                        os.sysconf("SC_CLK_TCK")}).decode(), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "count":
        count(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "copy":
        copy(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
