"""The `venue-gateway` command: run the daemon, check a configuration, and talk to a running gateway.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__, client
from gateway import config as configuration
from gateway.box import cli as box_cli
from gateway.cloud import mirror_cli
from gateway.discovery import cli as discovery_cli
from gateway.show import profile_cli
from gateway.update import cli as update_cli

if TYPE_CHECKING:
    import ssl

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _load(path: str, box: bool = False) -> configuration.Config | None:
    try:
        return configuration.load(path, box=box)
    except configuration.ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file, box=not args.offline)
    if cfg is None:
        return EXIT_USAGE
    enabled = [d.name for d in cfg.drivers if d.enabled]
    alone = " (the file alone, --offline)" if args.offline else ""
    print(f"{args.file}: ok{alone} (gateway {cfg.gateway.id}, venue {cfg.gateway.venue}, "
          f"drivers: {', '.join(enabled) or 'none'})")
    return EXIT_OK


def _start(args: argparse.Namespace) -> configuration.Config | None:
    cfg = _load(args.config)
    if cfg is None:
        return None
    logging.basicConfig(level=(args.log_level or cfg.gateway.log_level).upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    for problem in configuration.check_box(cfg):  # said once here; the unit that needs it says so at each try
        logging.getLogger("gateway").warning("this box: %s", problem)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _start(args)
    return EXIT_USAGE if cfg is None else _launch(cfg, Path(args.data_dir).resolve() if args.data_dir else None)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway import demo

    cfg = _start(args)
    if cfg is None:
        return EXIT_USAGE
    data_dir = Path(args.data_dir).resolve() if args.data_dir else cfg.data_dir
    with demo.cloud_side(cfg, data_dir, args.outage_s) as run:
        return _launch(run, data_dir)


def _launch(cfg: configuration.Config, data_dir: Path | None) -> int:
    from gateway.api.auth import Tokens
    from gateway.daemon import Gateway, serve
    from gateway.settings import token_problem
    from gateway.store import StoreError

    secrets = []
    for i, token in enumerate(cfg.api.tokens):
        try:
            secret = configuration.resolve_secret(cfg, token)
        except ValueError as exc:
            print(f"{cfg.path}: api.tokens[{i}]: {exc}", file=sys.stderr)
            return EXIT_USAGE
        problem = None if token.demo_token is not None else token_problem(secret)
        if problem is not None:
            print(f"{cfg.path}: api.tokens[{i}].{'env' if token.env else 'file'}: {problem}", file=sys.stderr)
            return EXIT_USAGE
        secrets.append((secret, token.role))
        if token.demo_token is not None:
            logging.getLogger("gateway").info("demo %s token: %s", token.role, token.demo_token)
    if not secrets:
        logging.getLogger("gateway").warning("no API tokens configured: only /api/v1/health will answer")
    cloud = None
    if cfg.cloud is not None:
        # Resolved by the cloud unit at each start: a password or a CA file the box lacks keeps the cloud link
        # waiting (told in health and the log), while the rest of the box runs.
        from gateway.cloud.link import tls_context
        from gateway.cloud.settings import Credentials, credentials

        section, base = cfg.cloud, cfg.path.parent

        def cloud_access() -> tuple[Credentials, ssl.SSLContext | None]:
            creds = credentials(section, base)
            return creds, tls_context(creds) if section.tls else None

        cloud = cloud_access
    gateway = Gateway(cfg, Tokens(secrets), data_dir=data_dir, cloud=cloud)
    try:
        asyncio.run(serve(gateway))
    except StoreError as exc:
        logging.getLogger("gateway").error("cannot run: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def _get(args: argparse.Namespace, path: str) -> Any:
    return client.request(args, "GET", path)


def _mb(n: int) -> str:
    return f"{n / 1048576:.1f} MB"


def _token_given(args: argparse.Namespace) -> bool:
    return bool(args.token or args.token_file or os.environ.get("VENUE_GATEWAY_TOKEN")
                or os.environ.get("VENUE_GATEWAY_TOKEN_FILE"))


def cmd_status(args: argparse.Namespace) -> int:
    certificate: list[str] = []
    health = client.request(args, "GET", "/api/v1/health", auth=_token_given(args), certificate=certificate)
    if args.json:
        print(json.dumps(health, indent=2))
        return EXIT_OK
    code = EXIT_OK if health["status"] == "ok" else EXIT_FAILURE
    if "twin" not in health:  # no token (or not a valid one): the gateway says only its status
        print(f"gateway at {args.url}: {health['status']} (give a token for the details)")
        if certificate:
            print(f"  api      https, certificate SHA-256 {certificate[0]}")
        return code
    twin, store, lag = health["twin"], health["store"], health["loop_lag"]
    print(f"gateway {health['gateway_id']} (venue {health['venue']}): {health['status']}")
    for problem in health.get("problems", []):
        print(f"  problem  {problem}")
    if certificate:
        print(f"  api      https, certificate SHA-256 {certificate[0]}")
    print(f"  twin     version {twin['version']}, {twin['assets']} assets")
    print(f"  store    {store['state']}: {_mb(store['used_bytes'])} used of {_mb(store['limit_bytes'])}, "
          f"telemetry committed to #{store['committed_seq']}, {store['evicted_rows']} evicted, "
          f"{store['dropped_rows']} dropped" + (f" ({store['last_error']})" if store["last_error"] else ""))
    print(f"  loop lag p50 {lag['p50_ms']} ms, p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms")
    cloud = health["services"].get("cloud", {}).get("detail")
    if cloud:
        outbox = cloud.get("outbox", {})
        others = [b for b in cloud.get("brokers", []) if b != cloud["broker"]]
        print(f"  cloud    {cloud['link']} ({cloud['broker']}" + (f"; also {', '.join(others)}" if others else "")
              + f"): {outbox.get('readings', 0)} readings and "
              f"{outbox.get('events', 0)} events waiting"
              + (f" (the oldest {outbox['oldest_age_s']:,.0f} s old)" if outbox.get("oldest_age_s") else "")
              + f", {outbox.get('evicted_readings', 0)} evicted"
              + (f" ({cloud['last_error']})" if cloud.get("last_error") and cloud["link"] != "online" else ""))
    for section in ("drivers", "services"):
        for name, unit in health[section].items():
            extra = f", restarts {unit['restarts']}" if unit.get("restarts") else ""
            error = f"  ({unit['last_error']})" if unit.get("last_error") and unit["state"] != "running" else ""
            print(f"  {section[:-1]:7}  {name:16} {unit['state']}{extra}{error}")
    return code


def cmd_snapshot(args: argparse.Namespace) -> int:
    twin = _get(args, "/api/v1/twin")
    text = json.dumps(twin, indent=2, sort_keys=True)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"twin version {twin['version']}, {len(twin['assets'])} assets written to {args.output}",
              file=sys.stderr)
    else:
        print(text)
    return EXIT_OK


def cmd_fire(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"preset": args.preset}
    if args.zone:
        body["zones"] = args.zone
    if args.lead_ms is not None:
        body["lead_ms"] = args.lead_ms
    answer = client.request(args, "POST", "/api/v1/effects", body)
    print(f"effect {answer['effect_id']} ({args.preset}) starts at {answer['starts_at']} in "
          f"{', '.join(answer['zones']) or 'every zone'}; {client._delivery(answer)}")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="venue-gateway", description="Edge gateway for concert venues.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, func, text in (
            ("run", cmd_run, "run the gateway until SIGTERM/SIGINT"),
            ("demo", cmd_demo, "run the gateway with its cloud side: Mosquitto on the [cloud] section's loopback "
                               "broker and the reference consumer (`mirror`) beside it; `make run` runs this")):
        run = sub.add_parser(name, help=text)
        run.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration")
        run.add_argument("--data-dir", metavar="DIR", help="override gateway.data_dir")
        run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        run.set_defaults(func=func)
    sub.choices["demo"].add_argument("--outage-s", type=float, default=30.0, metavar="S",
                                     help="how long the demo's broker stays down when stopped (default 30)")

    check = sub.add_parser("check-config", help="validate a configuration file and what it needs from this box; exit 2 "
                                                        "listing every problem")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--offline", action="store_true",
                       help="check the file alone, away from its box: not its secrets, files or drivers' libraries")
    check.set_defaults(func=cmd_check_config)

    for name, func, text in (("status", cmd_status, "a running gateway's health (exit 1 unless ok)"),
                             ("snapshot", cmd_snapshot, "print the twin of a running gateway as JSON"),
                             ("fire", cmd_fire, "fire a preset on a running gateway (operator token)")):
        talker = sub.add_parser(name, help=text)
        client.add_connection(talker)
        talker.set_defaults(func=func)
    client.add_parsers(sub)
    mirror_cli.add_parser(sub)
    box_cli.add_parser(sub)
    discovery_cli.add_parser(sub)
    profile_cli.add_parser(sub)
    update_cli.add_parser(sub)
    sub.choices["status"].add_argument("--json", action="store_true", help="print the health document")
    sub.choices["snapshot"].add_argument("--output", "-o", metavar="FILE", help="write to FILE instead")
    sub.choices["fire"].add_argument("preset", metavar="PRESET")
    sub.choices["fire"].add_argument("--zone", action="append", metavar="ZONE", help="a zone (repeat for more)")
    sub.choices["fire"].add_argument("--lead-ms", type=int, metavar="MS", help="how far ahead it starts")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, so that a reader gone is told below, not as a traceback at exit
    except RuntimeError as exc:
        print(f"venue-gateway {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # Ctrl-C while a command waits on the gateway: no traceback
        return 130
    except BrokenPipeError:  # `venue-gateway get ... | head`: the reader has what it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor one when Python flushes at exit
        return 141
    return code
