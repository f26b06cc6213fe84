"""`venue-gateway fixture-profile`: the crowd's fixture definition (Open Fixture Library JSON) and the patch sheet
(CSV) written from a configuration's patch, for the lighting console (`docs/consoles.md`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway import config as configuration
from gateway.show import profile

DEFAULT_CONFIG = "/etc/venue-gateway/gateway.toml"
DEFINITION_FILE = "venue-gateway-crowd.json"
SHEET_FILE = "venue-gateway-patch.csv"


def cmd_fixture_profile(args: argparse.Namespace) -> int:
    try:
        cfg = configuration.load(args.config)
    except configuration.ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 2
    if not cfg.show.patch and not cfg.show.macros:
        print(f"venue-gateway fixture-profile: {args.config} patches nothing (add [[show.patch]] fixtures)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / DEFINITION_FILE).write_text(json.dumps(profile.definition(cfg.show), indent=2) + "\n")
        (out / SHEET_FILE).write_text(profile.patch_sheet(cfg.show), newline="")
    except OSError as exc:
        print(f"venue-gateway fixture-profile: {exc}", file=sys.stderr)
        return 1
    for name in (DEFINITION_FILE, SHEET_FILE):
        print(out / name)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fixture-profile", help="write the crowd's fixture definition (Open Fixture Library JSON) "
                                               "and the patch sheet (CSV) from the configured patch")
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                   help=f"the gateway's configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--out", default=".", metavar="DIR",
                   help=f"where to write {DEFINITION_FILE} and {SHEET_FILE} (default: here)")
    p.set_defaults(func=cmd_fixture_profile)
