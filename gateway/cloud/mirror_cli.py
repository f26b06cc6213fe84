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
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
from aiohttp import web

from gateway.addresses import is_loopback, parse_listen
from gateway.client import parse_object
from gateway.cloud.mirror import SESSION_EXPIRY_S, GatewayMirror, Mirror, NoAnswer, send_command
from gateway.cloud.mirror_http import MemoryView, View, app
from gateway.cloud.settings import Broker, parse_brokers
from gateway.preflight import read_secret

SUMMARY_EVERY_S = 10.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("mirror", help="follow gateways on an MQTT broker (rebuild their twins, drop duplicates), "
                                      "or send one a cloud command",
                       description="Subscribe to one or many gateways, rebuild each twin from the retained snapshot "
                                   "and the deltas after it, and drop duplicate telemetry and events. With "
                                   "--database, keep it all in PostgreSQL, as one of several replicas with --share "
                                   "(docs/fleet.md). With --send, "
                                   "publish one command to --gateway as the cloud would (desired, fire, stop, "
                                   "snapshot: docs/cloud-protocol.md), print its answer and exit: 0 on "
                                   "command_result, 1 on command_error or no answer.",
                       epilog="examples: mirror --broker mqtt://127.0.0.1:1883 --gateway demo-01 --send fire "
                              "preset=chorus 'zones=[\"floor\"]' | ... --send stop | ... --send desired "
                              "asset=amp:r01.1 desired.enabled=false | ... --send snapshot")
    p.add_argument("--broker", required=True, action="append", metavar="URL",
                   help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]; again for another broker to fail over to")
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
    p.add_argument("--database", metavar="URL",
                   help="keep everything in PostgreSQL (postgresql://USER@HOST:PORT/DB; the password from PGPASSWORD "
                        "or ~/.pgpass) and answer from it; needs --client-id (docs/fleet.md)")
    p.add_argument("--share", metavar="GROUP",
                   help="one of several replicas: split telemetry, events and deltas with the others of GROUP "
                        "(MQTT 5 shared subscription)")
    p.add_argument("--retire", action="store_true",
                   help="with --share and --client-id: take this replica out of its group for good (store what its "
                        "session holds, end the session, exit 0)")
    p.add_argument("--session-expiry", type=int, default=SESSION_EXPIRY_S, metavar="S",
                   help=f"with --client-id under MQTT 5 (--share, --database): how long the broker keeps this "
                        f"mirror's session while it is away (default {SESSION_EXPIRY_S})")
    p.add_argument("--serve", metavar="HOST:PORT", help="serve the mirrored twins over HTTP (docs/fleet.md)")
    p.add_argument("--token-env", metavar="NAME",
                   help="the environment variable holding a bearer token every HTTP request must carry (needed to "
                        "serve off loopback)")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve HTTPS with this certificate (its chain; the key too unless --tls-key): needed to serve "
                        "off loopback, so that the token never crosses the network in clear")
    p.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (mode 0600 or 0640)")
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
        brokers = parse_brokers(args.broker)
        broker = brokers[0]
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
        token = None
        if args.token_env:
            token = os.environ.get(args.token_env) or None
            if token is None:
                raise ValueError(f"environment variable {args.token_env} is not set or empty")
        serve_tls = _serve_tls(args)
        if listen is not None and not is_loopback(listen[0]) and (token is None or serve_tls is None):
            wanted = [what for what, missing in (
                ("--token-env (only the token's holders read the fleet)", token is None),
                ("--tls-cert and --tls-key (HTTPS: the token never crosses the network in clear)",
                 serve_tls is None)) if missing]
            raise ValueError(f"--serve {args.serve} is off loopback: give {' and '.join(wanted)}; or serve on "
                             "127.0.0.1 (allowed off loopback: a token over HTTPS)")
        if not 0 <= args.session_expiry <= 0xFFFFFFFF:
            raise ValueError(f"--session-expiry {args.session_expiry}: allowed 0 to {0xFFFFFFFF} seconds")
        if args.retire and not (args.share and args.database):
            raise ValueError("--retire is for a replica of a share group: give --database, --share and its --client-id")
        if args.share and not args.database:
            raise ValueError("--share needs --database: replicas each hold only their share of the messages, and "
                             "the database is where they meet")
        if args.database and not args.client_id:
            raise ValueError("--database needs --client-id (one fixed id per replica): its session holds what the "
                             "broker sent and the replica had not stored when it stopped")
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
    options: dict[str, Any] = {"venue": args.venue, "gateway": args.gateway, "client_id": args.client_id,
                               "username": args.username, "password": password, "tls": tls,
                               "ask_snapshots": not args.no_ask, "share": args.share,
                               "session_expiry_s": args.session_expiry}
    if args.database:
        try:
            return _fleet(args, brokers, options, listen, token, serve_tls)
        except ValueError as exc:
            print(f"venue-gateway mirror: {exc}", file=sys.stderr)
            return 2
    mirror = Mirror(brokers, **options)
    if not args.quiet:
        mirror.listeners.append(_print)
    return asyncio.run(_run(mirror, listen, MemoryView(mirror), token, serve_tls))


def _serve_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The HTTPS context of --serve from --tls-cert and --tls-key; None without them. ValueError says what is
    wrong."""
    if args.tls_key and not args.tls_cert:
        raise ValueError("--tls-key goes with --tls-cert")
    if not args.tls_cert:
        return None
    if not args.serve:
        raise ValueError("--tls-cert is for --serve")
    key = Path(args.tls_key or args.tls_cert)
    read_secret(key, "--tls-key" if args.tls_key else "--tls-cert")  # a private key open to other users is refused
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"--tls-cert {args.tls_cert} and --tls-key {args.tls_key} are not a certificate and its "
                         f"key: {exc}") from None
    return context


def check_database_url(url: str) -> None:
    """Refuse at the start what PostgreSQL's client library would refuse at every connection, retried for ever: a
    URL psycopg cannot parse, and option values libpq rejects before it connects (a port that is no number or out of
    range, an unknown sslmode, target_session_attrs, ...). libpq is asked with the hosts replaced by socket
    directories that do not exist, so the check looks nothing up and reaches nothing. ValueError gives the reason."""
    import psycopg
    from psycopg import pq

    allowed = "allowed: postgresql://USER@HOST:PORT/DB[?OPTION=VALUE...], or libpq's key=value form"
    try:
        options = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ValueError(f"--database {url!r} is not a PostgreSQL URL ({allowed}): {exc}") from None
    if "hostaddr" not in options:  # with hostaddr, libpq looks no name up
        hosts = str(options.get("host") or "").split(",")
        options["host"] = ",".join("/nonexistent/venue-gateway-check" for _ in hosts)
    probe = pq.PGconn.connect_start(psycopg.conninfo.make_conninfo("", **options).encode())
    try:
        error = probe.error_message.decode(errors="replace").strip()
        if probe.status == pq.ConnStatus.BAD and error and "connection to server" not in error:
            raise ValueError(f"--database: PostgreSQL refuses this URL: {error} ({allowed}; the options are "
                             f"libpq's, https://www.postgresql.org/docs/current/libpq-connect.html)")
    finally:
        probe.finish()


def _fleet(args: argparse.Namespace, brokers: list[Broker], options: dict[str, Any],
           listen: tuple[str, int] | None, token: str | None, serve_tls: ssl.SSLContext | None) -> int:
    """The mirror on PostgreSQL; its driver is the `fleet` extra, imported only here."""
    try:
        from gateway.cloud.mirror_db import Database
        from gateway.cloud.mirror_fleet import DatabaseView, FleetMirror
    except ImportError as exc:
        raise ValueError(f"--database needs the fleet extra (pip install 'venue-gateway[fleet]'): {exc}") from None
    check_database_url(args.database)
    fleet = FleetMirror(brokers, Database(args.database), retire=args.retire, **options)
    if not args.quiet:
        fleet.listeners.append(_print)
    return asyncio.run(_run(fleet, listen, DatabaseView(fleet), token, serve_tls))


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


async def _run(mirror: Mirror, listen: tuple[str, int] | None, view: View, token: str | None,
               tls: ssl.SSLContext | None = None) -> int:
    """Follow until SIGTERM or SIGINT (0), or until the mirror cannot go on (1, the reason printed)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    if listen is not None:
        runner = web.AppRunner(app(view, token=token), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, *listen, ssl_context=tls).start()
        host = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
        print(f"mirror serving {'https' if tls else 'http'}://{host}:{listen[1]}/gateways", flush=True)
    task = asyncio.create_task(mirror.run())
    stopped = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            await asyncio.wait([task, stopped], timeout=SUMMARY_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
            if task.done():  # it cannot go on, or it has retired
                error = task.exception()
                if error is None:
                    return 0
                print(f"venue-gateway mirror: {error}", file=sys.stderr)
                return 1
            if mirror.manual_acks:  # the fleet's: the totals this replica stored
                service = view.service()
                stored = service["stored"]
                print(f"stored {stored['readings']} readings in {stored['batches']} batches, {stored['events']} "
                      f"events, {stored['changes']} twin changes, {stored['snapshots']} snapshots; "
                      f"{stored['duplicates']} duplicates dropped; database {service['database']}", flush=True)
                continue
            for gw in mirror.gateways.values():
                s = gw.summary()
                t = s["telemetry"]
                print(f"{gw.venue}/{gw.gateway_id}: {'online' if s['online'] else 'offline'}, twin version "
                      f"{s['twin_version']} ({s['assets']} assets), {t['readings']} readings in {t['batches']} "
                      f"batches, {t['duplicates']} duplicates dropped, {s['events']} events", flush=True)
    finally:
        stopped.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if runner is not None:
            await runner.cleanup()
    return 0
