"""`venue-gateway discover`: the boxes on the network, as they announce themselves over mDNS/DNS-SD. Exit 1 when
none answers."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from gateway.discovery.browse import Box, browse

DEFAULT_TIMEOUT_S = 3.0  # mDNS answers come within a second; a box's first announcement repeats after one and three
# What any device on the LAN may put in an mDNS name or TXT value: a terminal's control sequences are shown as \xNN.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
COLUMNS = ("name", "address", "port", "gateway id", "venue", "version", "fingerprint", "osc")


def printable(text: str) -> str:
    """`text` with the characters a terminal would act on shown as escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _row(box: Box) -> tuple[str, ...]:
    cells = (box.name, ", ".join(box.addresses) or box.host, str(box.port), box.gateway_id, box.venue, box.version,
             box.fingerprint or f"({box.scheme})", str(box.osc_port) if box.osc_port is not None else "-")
    return tuple(printable(c) for c in cells)


def table(boxes: list[Box]) -> str:
    rows = [COLUMNS, *(_row(b) for b in boxes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_discover(args: argparse.Namespace) -> int:
    try:
        boxes = asyncio.run(browse(args.timeout))
    except OSError as exc:  # no interface this host can send multicast on
        print(f"venue-gateway discover: mDNS cannot run here: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([b.document() for b in boxes], indent=2))
    elif boxes:
        print(table(boxes))
    if not boxes:
        print(f"venue-gateway discover: no box answered within {args.timeout:g} s (is it on this network, with "
              "[discovery] enabled and its API off loopback?)", file=sys.stderr)
        return 1
    return 0


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= value <= 600:
        raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: from 0.1 to 600 seconds)")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("discover", help="list the boxes on the network (mDNS/DNS-SD); exit 1 if none answers")
    p.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"how long to listen for answers (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--json", action="store_true", help="print the boxes as JSON, with every TXT record")
    p.set_defaults(func=cmd_discover)
