"""The commands of the box itself: `venue-gateway first-boot` and `venue-gateway doctor` (docs/doctor.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway import config as configuration
from gateway.box import doctor, firstboot, hostname

EXIT_OK, EXIT_FAILURE = 0, 1


def cmd_first_boot(args: argparse.Namespace) -> int:
    options = firstboot.Options(etc=args.etc, state=args.state, group=args.group,
                                hostname_from=tuple(args.hostname_from or hostname.SOURCES),
                                hostname_file=args.hostname_file, console=args.console)
    try:
        return firstboot.run(options, sys.stdout)
    except (OSError, configuration.ConfigError) as exc:
        print(f"venue-gateway first-boot: {exc} (run it as root; run it again to finish: what is done is kept)",
              file=sys.stderr)
        return EXIT_FAILURE


def environment(path: Path) -> None:
    """The service's environment file (KEY=VALUE lines, as systemd reads EnvironmentFile=), where this user may read
    it, for the variables not already set: the doctor then sees the secrets the service sees."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith(("#", ";")):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            os.environ.setdefault(key.strip(), value)


def cmd_doctor(args: argparse.Namespace) -> int:
    environment(Path(args.config).parent / "environment")
    return doctor.report(args.config, sys.stdout, as_json=args.json)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    boot = sub.add_parser(
        "first-boot", help="set up a new box once, as root: host name, API tokens and certificate (docs/doctor.md)",
        description="Run once as root before the gateway's first start: the host name from the box (vg- and the "
                    "end of its serial number or machine id), the admin and operator tokens (ETC/tokens/), the API's "
                    "certificate (ETC/api.pem, api.key) and the shipped configuration turned to it, the tokens and "
                    "the fingerprint shown once on the console. Nothing that exists is replaced; a run after a "
                    "finished one only says so.")
    boot.add_argument("--etc", type=Path, default=firstboot.Options.etc, metavar="DIR",
                      help=f"the configuration directory (default {firstboot.Options.etc})")
    boot.add_argument("--state", type=Path, default=firstboot.Options.state, metavar="DIR",
                      help=f"the state directory, where the run is recorded (default {firstboot.Options.state})")
    boot.add_argument("--group", default=firstboot.GROUP,
                      help=f"the group that reads the tokens and the key, mode 0640 (default {firstboot.GROUP}; "
                           "without it, 0600)")
    boot.add_argument("--hostname-from", type=Path, action="append", metavar="FILE",
                      help="where the box's identity is read, first found wins (repeat; default: "
                           f"{', '.join(map(str, hostname.SOURCES))})")
    boot.add_argument("--hostname-file", type=Path, metavar="FILE",
                      help="write the host name to FILE instead of setting this system's (an image being made)")
    boot.add_argument("--console", default=firstboot.Options.console, metavar="PATH",
                      help="where the tokens are shown, once (default /dev/console; - for standard output)")
    boot.set_defaults(func=cmd_first_boot)

    check = sub.add_parser(
        "doctor", help="check the box before doors: each problem with its fix; exit 1 on a problem (docs/doctor.md)",
        description="What a tech checks before doors: the configuration, the clock, disk and store, serial ports, "
                    "Bluetooth and the wristband radio, the broker, the API, real-time scheduling, a Raspberry Pi's "
                    "temperature and throttling, the tokens, the last update. Run as root to see the tokens.")
    check.add_argument("--config", default=doctor.DEFAULT_CONFIG, metavar="FILE",
                       help=f"the gateway's configuration (default {doctor.DEFAULT_CONFIG})")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.set_defaults(func=cmd_doctor)
