"""`venue-gateway mirror`: the reference consumer on the command line. Prints what the gateways say (births,
evictions, alerts, command answers, and a summary now and then) and can serve the rebuilt twins over HTTP. With
`--send`, it is the cloud sending one command to a gateway instead, and prints the answer."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from typing import Any

import aiomqtt
import orjson
from aiohttp import web

from gateway.addresses import parse_listen
from gateway.client import parse_object
from gateway.cloud.mirror import GatewayMirror, Mirror, NoAnswer, send_command
from gateway.cloud.settings import Broker, parse_broker

SUMMARY_EVERY_S = 10.0
MIRROR: web.AppKey[Mirror] = web.AppKey("mirror")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("mirror", help="follow gateways on an MQTT broker (rebuild their twins, drop duplicates), "
                                      "or send one a cloud command",
                       description="Subscribe to one or many gateways, rebuild each twin from the retained snapshot "
                                   "and the deltas after it, and drop duplicate telemetry and events. With --send, "
                                   "publish one command to --gateway as the cloud would (desired, fire, stop, "
                                   "snapshot: docs/cloud-protocol.md), print its answer and exit: 0 on "
                                   "command_result, 1 on command_error or no answer.",
                       epilog="examples: mirror --broker mqtt://127.0.0.1:1883 --gateway demo-01 --send fire "
                              "preset=chorus 'zones=[\"floor\"]' | ... --send stop | ... --send desired "
                              "asset=amp:r01.1 desired.enabled=false | ... --send snapshot")
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    p.add_argument("--venue", default="+", help="one venue (default: every venue)")
    p.add_argument("--gateway", default="+", metavar="ID", help="one gateway (default: every gateway)")
    p.add_argument("--client-id", metavar="ID",
                   help="a fixed client id: a persistent session, so nothing is missed while the mirror is away")
    p.add_argument("--username")
    p.add_argument("--password-env", metavar="NAME", help="the environment variable holding the password")
    p.add_argument("--ca-file", metavar="FILE", help="the CA of the broker's certificate (mqtts)")
    p.add_argument("--cert-file", metavar="FILE", help="a client certificate for mutual TLS")
    p.add_argument("--key-file", metavar="FILE", help="its key")
    p.add_argument("--no-ask", action="store_true",
                   help="never publish cmd/snapshot when a twin has a gap (wait for the periodic snapshot)")
    p.add_argument("--serve", metavar="HOST:PORT", help="serve the mirrored twins over HTTP")
    p.add_argument("--quiet", action="store_true", help="print only the summaries")
    p.add_argument("--send", metavar="COMMAND",
                   help="send COMMAND (desired, fire, stop, snapshot, or cmd/NAME) to --gateway, print the answer")
    p.add_argument("payload", nargs="*", metavar="KEY=VALUE|JSON",
                   help="with --send: the command's payload, KEY=VALUE pairs (VALUE read as JSON when it is; a dotted "
                        "KEY reaches into an object) or one JSON object; a request_id is added")
    p.add_argument("--wait", type=float, default=10.0, metavar="S",
                   help="with --send: seconds to wait for the answer (default 10)")
    p.set_defaults(func=cmd_mirror)


def cmd_mirror(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        broker = parse_broker(args.broker)
        password = None
        if args.password_env:
            password = os.environ.get(args.password_env) or None
            if password is None:
                raise ValueError(f"environment variable {args.password_env} is not set or empty")
        tls = None
        if broker.tls:
            tls = ssl.create_default_context(cafile=args.ca_file)
            if args.cert_file:
                tls.load_cert_chain(args.cert_file, args.key_file)
        listen = parse_listen(args.serve) if args.serve else None
        if args.payload and not args.send:
            raise ValueError(f"{args.payload[0]!r}: a payload goes with --send")
        if args.send and args.gateway == "+":
            raise ValueError("--send needs --gateway ID")
        payload = parse_object(args.payload) if args.send else {}
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"venue-gateway mirror: {exc}", file=sys.stderr)
        return 2
    if args.send:
        return asyncio.run(_send(args, broker, payload, password, tls))
    mirror = Mirror(broker, venue=args.venue, gateway=args.gateway, client_id=args.client_id,
                    username=args.username, password=password, tls=tls, ask_snapshots=not args.no_ask)
    if not args.quiet:
        mirror.listeners.append(_print)
    asyncio.run(_run(mirror, listen))
    return 0


async def _send(args: argparse.Namespace, broker: Broker, payload: dict[str, Any], password: str | None,
                tls: ssl.SSLContext | None) -> int:
    try:
        venue, answer = await send_command(broker, args.gateway, args.send, payload, venue=args.venue,
                                           wait_s=args.wait, username=args.username, password=password, tls=tls)
    except NoAnswer as exc:
        print(f"venue-gateway mirror: {exc}", file=sys.stderr)
        return 1
    except aiomqtt.MqttError as exc:
        print(f"venue-gateway mirror: the broker {broker} cannot be reached: {exc}", file=sys.stderr)
        return 1
    detail = {k: v for k, v in answer.items() if k not in ("event_id", "gateway_id", "kind", "at")}
    if answer.get("kind") == "command_error":
        print(f"venue-gateway mirror: {venue}/{args.gateway} refused {detail.get('command', args.send)} "
              f"({detail.get('error')}): {detail.get('message')}", file=sys.stderr)
        return 1
    print(f"{venue}/{args.gateway}: {answer.get('kind')} {orjson.dumps(detail).decode()}", flush=True)
    return 0


def _print(gw: GatewayMirror, what: str, doc: dict[str, Any]) -> None:
    name = f"{gw.venue}/{gw.gateway_id}"
    if what == "status":
        state = "online" if doc.get("online") else f"offline ({doc.get('reason', 'unknown')})"
        print(f"{name}: {state}", flush=True)
    elif what == "twin/snapshot":
        print(f"{name}: snapshot at version {doc.get('version')}, {len(doc.get('assets', {}))} assets", flush=True)
    elif what == "events" and doc.get("kind") != "effect_fired":
        detail = {k: v for k, v in doc.items() if k not in ("event_id", "gateway_id", "kind", "at")}
        print(f"{name}: {doc.get('kind')} {orjson.dumps(detail).decode()}", flush=True)


async def _run(mirror: Mirror, listen: tuple[str, int] | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    if listen is not None:
        runner = web.AppRunner(_app(mirror), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, *listen).start()
        print(f"mirror serving http://{listen[0]}:{listen[1]}/gateways", flush=True)
    task = asyncio.create_task(mirror.run())
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUMMARY_EVERY_S)
            for gw in mirror.gateways.values():
                s = gw.summary()
                t = s["telemetry"]
                print(f"{gw.venue}/{gw.gateway_id}: {'online' if s['online'] else 'offline'}, twin version "
                      f"{s['twin_version']} ({s['assets']} assets), {t['readings']} readings in {t['batches']} "
                      f"batches, {t['duplicates']} duplicates dropped, {s['events']} events", flush=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if runner is not None:
            await runner.cleanup()


def _app(mirror: Mirror) -> web.Application:
    app = web.Application()
    app[MIRROR] = mirror

    def found(request: web.Request) -> GatewayMirror:
        key = (request.match_info["venue"], request.match_info["id"])
        gw = request.app[MIRROR].gateways.get(key)
        if gw is None:
            raise web.HTTPNotFound(text=orjson.dumps({"error": "not_found", "message": f"no gateway {key[0]}/"
                                                      f"{key[1]} seen"}).decode(), content_type="application/json")
        return gw

    async def gateways(request: web.Request) -> web.Response:
        return web.json_response([gw.summary() for gw in request.app[MIRROR].gateways.values()],
                                 dumps=lambda d: orjson.dumps(d).decode())

    async def summary(request: web.Request) -> web.Response:
        return web.json_response(found(request).summary(), dumps=lambda d: orjson.dumps(d).decode())

    async def twin(request: web.Request) -> web.Response:
        gw = found(request)
        if not gw.complete:
            raise web.HTTPServiceUnavailable(text=orjson.dumps({"error": "no_snapshot", "message": "no snapshot "
                                             "received yet"}).decode(), content_type="application/json")
        return web.Response(body=orjson.dumps(gw.twin()), content_type="application/json")

    async def events(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(list(found(request).events)), content_type="application/json")

    app.router.add_get("/gateways", gateways)
    app.router.add_get("/gateways/{venue}/{id}", summary)
    app.router.add_get("/gateways/{venue}/{id}/twin", twin)
    app.router.add_get("/gateways/{venue}/{id}/events", events)
    return app
