"""The `venue-gateway` commands that talk to a running gateway over its HTTP API, as a tech would with curl: one
asset, its desired state, the show's stop, blackout and tempo, and the twin's change stream.

Each takes the gateway's address (`--url`, or VENUE_GATEWAY_URL), a token (`--token`, `--token-file`,
VENUE_GATEWAY_TOKEN or VENUE_GATEWAY_TOKEN_FILE, in that order) and, for an https URL, how to trust its certificate:
its SHA-256 fingerprint pinned (`--fingerprint`, or VENUE_GATEWAY_FINGERPRINT; a gateway's own self-signed
certificate), or the CA that signed it (`--ca-file`, or VENUE_GATEWAY_CA_FILE; default: the system's). The
certificate is checked before the token is sent (gateway.trust). A gateway that cannot be reached, that refuses, or
whose certificate is not the one trusted, is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import os
import signal
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import aiohttp

from gateway import trust
from gateway.addresses import is_loopback
from gateway.api import tls

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
BASE = "/api/v1"


class ApiError(RuntimeError):
    """The gateway answered with an error: its HTTP status and its `{"error", "message"}`."""

    def __init__(self, where: str, status: int, code: str, message: str, doc: dict[str, Any]) -> None:
        super().__init__(f"{where}: {status} {message}")
        self.status, self.code, self.message, self.doc = status, code, message, doc


# -- talking to the gateway ----------------------------------------------------------------------------------
def add_connection(p: argparse.ArgumentParser) -> None:
    """The options every command that talks to a running gateway takes."""
    p.add_argument("--url", default=os.environ.get("VENUE_GATEWAY_URL", DEFAULT_URL),
                   help=f"the gateway's HTTP API (default {DEFAULT_URL}, or VENUE_GATEWAY_URL)")
    p.add_argument("--token", help="API token (default: --token-file, VENUE_GATEWAY_TOKEN, VENUE_GATEWAY_TOKEN_FILE)")
    p.add_argument("--token-file", metavar="FILE", help="read the API token from FILE")
    p.add_argument("--ca-file", metavar="FILE", default=os.environ.get("VENUE_GATEWAY_CA_FILE"),
                   help="for an https URL: the CA that signed its certificate (default: the system's, or "
                        "VENUE_GATEWAY_CA_FILE)")
    p.add_argument("--fingerprint", metavar="SHA256", default=os.environ.get("VENUE_GATEWAY_FINGERPRINT"),
                   help="for an https URL: accept only the certificate with this SHA-256 fingerprint, as the gateway "
                        "logs it at start (its self-signed one; default: VENUE_GATEWAY_FINGERPRINT)")
    p.add_argument("--insecure-http", action="store_true",
                   help="send the token over plain http to an address off this box (a gateway with "
                        "api.insecure_http = true, on a network of your own); refused otherwise")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer (default 10)")


def _in_clear(args: argparse.Namespace) -> None:
    """RuntimeError when the token would go over plain http to an address off this box: it would be on the wire
    before the gateway (which serves HTTPS off loopback) could refuse it."""
    parts = urllib.parse.urlsplit(str(args.url))
    host = parts.hostname or ""
    if parts.scheme in ("http", "ws") and not is_loopback(host) and not getattr(args, "insecure_http", False):
        secure = str(args.url).replace(f"{parts.scheme}:", "https:", 1)
        raise RuntimeError(f"the token would cross the network in clear to {host}: refused, nothing sent (allowed: "
                           f"{secure}, plain http on this box, or --insecure-http for a gateway that serves plain "
                           "HTTP on purpose, api.insecure_http = true)")


def token(args: argparse.Namespace) -> str:
    _in_clear(args)
    if args.token:
        return str(args.token)
    path = args.token_file
    if path is None:
        if os.environ.get("VENUE_GATEWAY_TOKEN"):
            return os.environ["VENUE_GATEWAY_TOKEN"]
        path = os.environ.get("VENUE_GATEWAY_TOKEN_FILE")
    if not path:
        raise RuntimeError("a token is needed: --token, --token-file, VENUE_GATEWAY_TOKEN or VENUE_GATEWAY_TOKEN_FILE")
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise RuntimeError(f"the token file {path} cannot be read: {exc.strerror or exc}") from None
    if not secret:
        raise RuntimeError(f"the token file {path} is empty")
    return secret


def request(args: argparse.Namespace, method: str, path: str, body: Any = None, *, auth: bool = True,
            headers: dict[str, str] | None = None, certificate: list[str] | None = None) -> Any:
    """The gateway's JSON answer; ApiError when it answers with an error, RuntimeError when it cannot be reached or
    its certificate is not the one trusted. `certificate` collects the fingerprint of the certificate served."""
    data = None if body is None else json.dumps(body).encode()
    url = args.url.rstrip("/") + path
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", f"Bearer {token(args)}")
    seen = [] if certificate is None else certificate
    opener = urllib.request.build_opener(trust.Handler(trust.context(args), trust.pin(args), seen))
    try:
        with opener.open(req, timeout=args.timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        doc: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            loaded = json.load(exc)
            doc = loaded if isinstance(loaded, dict) else {}
        raise ApiError(f"{args.url}{path}", exc.code, str(doc.get("error", "")),
                       str(doc.get("message", exc.reason)), doc) from None
    except TimeoutError:
        raise RuntimeError(f"no answer from the gateway at {args.url} within {args.timeout:g} s") from None
    except (urllib.error.URLError, OSError) as exc:
        raise trust.unreachable(args, getattr(exc, "reason", exc)) from None
    return json.loads(raw) if raw else None


def _asset_path(asset: str) -> str:
    return f"{BASE}/twin/assets/{urllib.parse.quote(asset, safe=':@')}"


# -- what is printed -----------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _pairs(values: dict[str, Any] | None) -> str:
    return " ".join(f"{k}={_text(v)}" for k, v in (values or {}).items())


def _delivery(doc: dict[str, Any]) -> str:
    delivery = doc.get("delivery") or {}
    return "; ".join(f"{name}: {status}" for name, status in delivery.items()) or "no transmitter configured"


# -- the commands --------------------------------------------------------------------------------------------
def cmd_get(args: argparse.Namespace) -> int:
    doc = request(args, "GET", _asset_path(args.asset))
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return EXIT_OK
    about = [doc.get("kind") or "?"]
    if doc.get("zone"):
        about.append(f"zone {doc['zone']}")
    if doc.get("owner"):
        about.append(f"owned by {doc['owner']}")
    print(f"{doc['id']}  {', '.join(about)}; version {doc['version']}, updated {doc['updated_at']}")
    for part in ("reported", "desired"):
        values: dict[str, Any] = doc.get(part) or {}
        print(part if values else f"{part}  (nothing)")
        width = max((len(k) for k in values), default=0)
        for key in sorted(values):
            print(f"  {key:<{width}}  {_text(values[key])}")
    return EXIT_OK


def parse_object(items: list[str]) -> dict[str, Any]:
    """One JSON object, or KEY=VALUE pairs: VALUE is JSON when it reads as JSON (15, true, null, "x", [1, 2]),
    else the text itself; a dotted KEY sets a key inside an object (levels.10=255). ValueError says what is wrong."""
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            doc = json.loads(items[0])
        except ValueError as exc:
            raise ValueError(f"not a JSON object: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc
    patch: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is neither KEY=VALUE nor a JSON object")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = patch
        *parents, last = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{key}: {part} is given a value and keys at once")
            node = child
        if last in node:
            raise ValueError(f"{key} is given twice")
        node[last] = value
    return patch


def cmd_set(args: argparse.Namespace) -> int:
    try:
        patch = parse_object(args.values)
    except ValueError as exc:
        print(f"venue-gateway set: {exc}", file=sys.stderr)
        return EXIT_USAGE
    headers = {"If-Match": f'"{args.if_version}"'} if args.if_version is not None else None
    try:
        doc = request(args, "PATCH", _asset_path(args.asset) + "/desired", patch, headers=headers)
    except ApiError as exc:
        if exc.status == 422:
            why = f"refused, nothing changed: {exc.message.removeprefix(f'{args.asset}: ')}"
        elif exc.status == 412:
            why = (f"{args.asset} is at version {exc.doc.get('version')}, not {args.if_version}: nothing changed "
                   f"(read it again with `venue-gateway get {args.asset}`)")
        elif exc.status == 400:
            why = f"the gateway cannot read the change ({exc.code}): {exc.message}"
        else:
            raise
        print(f"venue-gateway set: {args.asset}: {why}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{doc['id']}: desired {_pairs(doc.get('desired')) or '(nothing)'}; version {doc['version']}")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    doc = request(args, "DELETE", f"{BASE}/effects")
    print(f"every effect stopped (effect {doc['effect_id']}, {', '.join(doc.get('zones') or []) or 'every zone'}); "
          f"{_delivery(doc)}")
    return EXIT_OK


def cmd_blackout(args: argparse.Namespace) -> int:
    doc = request(args, "POST", f"{BASE}/blackout", {})
    universes = doc.get("universes") or []
    dmx = (f"DMX universe{'s' if len(universes) > 1 else ''} {', '.join(map(str, universes))} at 0 until a level "
           "is raised" if universes else "no DMX universe configured")
    print(f"blackout: every effect stopped (effect {doc['effect_id']}; {_delivery(doc)}), {dmx}")
    return EXIT_OK


def cmd_tempo(args: argparse.Namespace) -> int:
    if args.tap:
        print("press Enter on each beat (Ctrl-D or Ctrl-C to end)", file=sys.stderr, flush=True)
        try:
            for _ in sys.stdin:
                doc = request(args, "POST", f"{BASE}/tempo/tap", {})
                print(f"{doc['tempo_bpm']:g} bpm", flush=True)
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    if args.bpm is None:
        doc = request(args, "GET", f"{BASE}/tempo")
    else:
        doc = request(args, "PUT", f"{BASE}/tempo", {"bpm": args.bpm})
    print(f"{doc['tempo_bpm']:g} bpm")
    return EXIT_OK


# -- following the change stream -----------------------------------------------------------------------------
class _Follower:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.version: int | None = args.since
        self.printed = 0

    def wanted(self, change: dict[str, Any]) -> bool:
        args = self.args
        if args.asset and not any(fnmatch.fnmatchcase(change.get("asset", ""), p) for p in args.asset):
            return False
        return not args.kind or change.get("kind") in args.kind

    def take(self, doc: dict[str, Any]) -> bool:
        """Print what a message carries; True once `--count` changes are printed."""
        if doc.get("type") == "snapshot":
            twin = doc.get("twin") or {}
            behind = self.version is not None
            self.version = twin.get("version")
            if behind:
                print(f"the change log no longer reaches what was asked for: a snapshot at version {self.version} "
                      "(the changes before it are not shown)", file=sys.stderr, flush=True)
            else:
                print(f"following {twin.get('gateway_id')} (venue {twin.get('venue')}) from version {self.version}, "
                      f"{len(twin.get('assets') or {})} assets", file=sys.stderr, flush=True)
        elif doc.get("type") == "changes":
            for change in doc.get("changes") or []:
                self.version = change.get("version", self.version)
                if not self.wanted(change):
                    continue
                print(self.line(change), flush=True)
                self.printed += 1
                if self.args.count and self.printed >= self.args.count:
                    return True
            self.version = doc.get("to", self.version)
        return False

    def line(self, change: dict[str, Any]) -> str:
        if self.args.json:
            return json.dumps(change, separators=(",", ":"), ensure_ascii=False)
        at = str(change.get("at", ""))
        parts = [str(change.get("version")), at[11:] if len(at) > 11 else at, str(change.get("asset"))]
        if change.get("removed"):
            parts.append("removed")
        for part in ("reported", "desired"):
            if change.get(part):
                parts.append(f"{part} {_pairs(change[part])}")
        return "  ".join(parts)


async def _follow(args: argparse.Namespace) -> int:
    _in_clear(args)  # before anything is set up
    follower = _Follower(args)
    url = args.url.rstrip("/").replace("http", "ws", 1) + f"{BASE}/twin/stream"
    if args.since is not None:
        url += f"?since={args.since}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.ensure_future(stop.wait())
    context, pin = trust.context(args), trust.pin(args)
    check: ssl.SSLContext | aiohttp.Fingerprint | bool = True
    if pin is not None:
        check = aiohttp.Fingerprint(pin)  # compared before the upgrade request (and its token) is sent
    elif context is not None:
        check = context
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=args.timeout)) as s:
            try:
                ws = await asyncio.wait_for(s.ws_connect(url, headers={"Authorization": f"Bearer {token(args)}"},
                                                         ssl=check, heartbeat=30,
                                                         max_msg_size=0), args.timeout)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (400, 401, 403, 404):  # the gateway's own words: the request without the upgrade
                    request(args, "GET", f"{BASE}/twin/stream")
                raise RuntimeError(f"{args.url}{BASE}/twin/stream: {exc.status} {exc.message}") from None
            except TimeoutError:
                raise RuntimeError(f"no answer from the gateway at {args.url} within {args.timeout:g} s") from None
            except aiohttp.ServerFingerprintMismatch as exc:
                raise RuntimeError(f"cannot reach the gateway at {args.url}: its certificate's SHA-256 fingerprint "
                                   f"is {tls.digest_text(exc.got)}, not the one given with --fingerprint: "
                                   "refused, nothing sent") from None
            except aiohttp.ClientConnectorCertificateError as exc:
                raise trust.unreachable(args, exc.certificate_error) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise RuntimeError(f"cannot reach the gateway at {args.url}: {exc}") from None
            async with ws:
                while True:
                    receive = asyncio.ensure_future(ws.receive())
                    await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if not receive.done():
                        receive.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await receive
                        break
                    msg = receive.result()
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        try:
                            doc = json.loads(msg.data)
                        except ValueError:
                            continue
                        if isinstance(doc, dict) and follower.take(doc):
                            return EXIT_OK
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                      aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        code = ws.close_code if ws.close_code is not None else "no close code"
                        why = f"{code}: {msg.extra}" if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra else code
                        where = f" at version {follower.version}: resume with --since {follower.version}" \
                            if follower.version is not None else ""
                        raise RuntimeError(f"the gateway closed the stream ({why}){where}")
    finally:
        stopper.cancel()
    if follower.version is not None:
        print(f"stopped at version {follower.version}: resume with --since {follower.version}", file=sys.stderr)
    return EXIT_OK


def cmd_follow(args: argparse.Namespace) -> int:
    return asyncio.run(_follow(args))


# -- the parsers ---------------------------------------------------------------------------------------------
def add_parsers(sub: Any) -> None:
    def command(name: str, func: Any, text: str, description: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=description)
        add_connection(p)
        p.set_defaults(func=func)
        return p

    p = command("get", cmd_get, "one asset of a running gateway's twin (viewer token)",
                "Print one asset of the twin: its kind, zone, owner and version, what it reported and what is "
                "desired of it.")
    p.add_argument("asset", metavar="ASSET", help="its id, e.g. amp:r01.1")
    p.add_argument("--json", action="store_true", help="print the asset's JSON document")

    p = command("set", cmd_set, "change an asset's desired state (admin token)",
                "Merge a change into an asset's desired state (a JSON merge patch: null removes a key); its driver "
                "applies it and reports back. A change the asset's driver cannot take (a key it has not, a value "
                "out of range) is refused with the reason, nothing changed, exit code 1.")
    p.epilog = ("examples: set amp:r01.1 enabled=false | set amp:r01.1 gain_db=-3 | "
                "set universe:1 levels.10=255 | set amp:r01.1 '{\"gain_db\": null}'")
    p.add_argument("asset", metavar="ASSET", help="its id, e.g. amp:r01.1")
    p.add_argument("values", nargs="+", metavar="KEY=VALUE|JSON",
                   help="KEY=VALUE pairs (VALUE read as JSON when it is: 3, true, null, \"x\"; a dotted KEY "
                        "reaches into an object), or one JSON object")
    p.add_argument("--if-version", type=int, metavar="V",
                   help="only if the asset is still at version V (as `get` showed it); else refused")

    command("stop", cmd_stop, "stop every effect on the wristbands (operator token)",
            "Stop every effect: a blackout of the wristbands, with no lead time (further zones still by their "
            "sound delay).")

    command("blackout", cmd_blackout, "stop every effect and black out DMX (operator token)",
            "What /vg/blackout does from a console: every effect stopped and every DMX level to 0; the universes' "
            "desired levels are cleared with it, so the light stays dark, across a restart too, until someone "
            "raises a level.")

    p = command("tempo", cmd_tempo, "show, set or tap the show's tempo (operator token to change it)",
                "Without BPM, print the show's tempo; with it, set it (presets without their own bpm or period "
                "follow it). With --tap, each Enter is a tap: from the second tap within 2.5 s, the taps' mean "
                "interval sets the tempo.")
    p.add_argument("bpm", nargs="?", type=float, metavar="BPM", help="beats per minute, 1 to 999")
    p.add_argument("--tap", action="store_true", help="tap the tempo with Enter")

    p = command("follow", cmd_follow, "print the twin's changes as they happen, one line each (viewer token)",
                "Follow the twin's change stream (the WebSocket): one line per change, `VERSION TIME ASSET "
                "reported K=V... desired K=V...` (patches: null is a key removed). Ctrl-C ends it and says the "
                "version to resume from with --since.")
    p.add_argument("--since", type=int, metavar="V", help="start after version V (default: from now)")
    p.add_argument("--asset", action="append", metavar="GLOB", help="only assets matching GLOB (amp:*; repeat)")
    p.add_argument("--kind", action="append", metavar="KIND", help="only assets of KIND (amplifier; repeat)")
    p.add_argument("--count", type=int, metavar="N", help="end after N changes")
    p.add_argument("--json", action="store_true", help="print each change as its JSON document, one a line")
