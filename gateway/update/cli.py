"""The update commands: `update BUNDLE` (and `--recover`, `--status`) on the box, `bundle` and `bundle-keygen` where
bundles are built. Only the standard library is imported here: `python -m gateway.update --recover`, which the unit
runs before every start, must be quick on a Raspberry Pi."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.update.service import Service

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
ETC = Path("/etc/venue-gateway")
ARCHES = ("aarch64", "x86_64")


def default_prefix() -> Path:
    """The prefix this gateway runs from when it is an installed version ($PREFIX/versions/<label>), else
    /opt/venue-gateway."""
    here = Path(sys.prefix).resolve()
    return here.parent.parent if here.parent.name == "versions" else Path("/opt/venue-gateway")


def seconds(text: str) -> float:
    """A time for --bound-s and --settle-s: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive, finite number of seconds")
    return value


def add_update_arguments(p: argparse.ArgumentParser) -> None:
    from gateway.update.journal import STATE_DIR
    from gateway.update.service import DEFAULT_BOUND_S, DEFAULT_COMMAND, DEFAULT_SETTLE_S

    p.add_argument("bundle", nargs="?", metavar="BUNDLE", help="the bundle to install (from `venue-gateway bundle`)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--recover", action="store_true",
                      help="finish or undo an update that was stopped halfway, and nothing else (the unit runs this "
                           "before every start)")
    what.add_argument("--status", action="store_true", help="say how the last update went")
    p.add_argument("--prefix", type=Path, default=default_prefix(),
                   help="where the versions are (default: the one this runs from, else /opt/venue-gateway)")
    p.add_argument("--state-dir", type=Path, default=STATE_DIR,
                   help="where the update's state and the store's backups go: a directory of root's that no one "
                        "else may write (default %(default)s, made by the installer)")
    p.add_argument("--config", type=Path, default=ETC / "gateway.toml",
                   help="the box's configuration: the store and the API to watch (default %(default)s)")
    p.add_argument("--keys", type=Path, default=ETC / "update-keys",
                   help="the public keys bundles may be signed by, NAME.pub (default %(default)s)")
    p.add_argument("--service-command", default=DEFAULT_COMMAND, metavar="COMMAND",
                   help="how the service is stopped, started and restarted, {action} standing for the verb "
                        "(default: %(default)r)")
    p.add_argument("--no-restart", action="store_true",
                   help="switch, but stop, start or watch nothing: the service is not running (an image being "
                        "built, the unit's own start); refused while it runs")
    p.add_argument("--url", help="the API to watch (default: from the configuration's api.listen, on this box)")
    p.add_argument("--bound-s", type=seconds, default=DEFAULT_BOUND_S, metavar="S",
                   help="how long the new version has to be healthy before it is rolled back (default %(default)g)")
    p.add_argument("--settle-s", type=seconds, default=DEFAULT_SETTLE_S, metavar="S",
                   help="how long it must stay healthy to count (default %(default)g)")
    p.add_argument("--no-compile", action="store_true",
                   help="do not byte-compile the new version (quicker to install, slower to start: the service "
                        "cannot write its own cache under ProtectSystem=strict)")


def add_parser(sub: Any) -> None:
    update = sub.add_parser(
        "update", help="install a signed bundle beside the running version, switch, restart, roll back if unhealthy",
        description="Verify BUNDLE (signed by a key in --keys, every member's hash, this box's Python and "
                    "architecture), install it as PREFIX/versions/LABEL, back up the store, switch PREFIX/current "
                    "to it, restart the service and wait for /health; when it is not healthy within --bound-s, "
                    "switch back (the store's backup restored if its schema changed) and restart. Exit 0 updated, "
                    "1 rolled back or failed, 2 refused (nothing installed). Run as root. docs/updates.md")
    add_update_arguments(update)
    update.set_defaults(func=cmd_update)

    machine = os.uname().machine
    made = sub.add_parser("bundle", help="build a signed update bundle from this source tree",
                          description="The project's wheel, every locked wheel for the target, the models and the "
                                      "README, in one tar with a manifest signed by KEY (docs/updates.md).")
    made.add_argument("--key", type=Path, required=True, metavar="KEY", help="the private key (`bundle-keygen`)")
    made.add_argument("--arch", choices=ARCHES, default=machine if machine in ARCHES else "aarch64",
                      help="the box's architecture (default: this machine's, else aarch64)")
    made.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    made.add_argument("--label", help="the version's label (default: VERSION-12 hex of the content)")
    made.add_argument("--wheels", type=Path, metavar="DIR",
                      help="wheels at hand (taken by their hash; a project wheel there, of the tree's version, is "
                           "used instead of one built from the tree, its hash folded into the label)")
    made.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2], metavar="DIR",
                      help="the source tree (default: the one this runs from, %(default)s)")
    made.set_defaults(func=cmd_bundle)

    keygen = sub.add_parser("bundle-keygen", help="make a key pair for signing bundles",
                            description="Write an ed25519 private key to FILE (mode 0600, never overwritten) and its "
                                        "public half to FILE.pub, which goes in each box's update-keys directory.")
    keygen.add_argument("file", type=Path, metavar="FILE")
    keygen.set_defaults(func=cmd_keygen)


def _say(text: str) -> None:
    print(f"update: {text}", flush=True)


def cmd_update(args: argparse.Namespace) -> int:
    from gateway.update.journal import Busy, JournalError, report

    if args.status:
        found = report(args.state_dir)
        print(found[1] if found else "no update has run on this box")
        return EXIT_OK if found is None or found[0] == "ok" else EXIT_FAILURE
    from gateway.update.backup import BackupError
    from gateway.update.service import Service

    service = None if args.no_restart else Service(args.service_command, args.bound_s)
    if args.recover:
        return _recover(args, service)
    if args.bundle is None:
        print("venue-gateway update: give a BUNDLE, --recover or --status", file=sys.stderr)
        return EXIT_USAGE
    from gateway.update import apply, bundle

    options = apply.Options(args.prefix, args.state_dir, args.config, args.keys, service, args.url, args.bound_s,
                            args.settle_s, not args.no_compile, args.service_command)
    _steady()
    try:
        outcome = apply.update(Path(args.bundle), options, _say)
    except bundle.BundleError as exc:
        print(f"venue-gateway update: {args.bundle}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (apply.UpdateError, Busy, JournalError, BackupError) as exc:
        print(f"venue-gateway update: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except PermissionError as exc:
        print(f"venue-gateway update: {exc.filename}: permission denied (run it as root)", file=sys.stderr)
        return EXIT_FAILURE
    print(outcome.line() if outcome.result != "installed" else f"venue-gateway {outcome.line()}")
    return EXIT_OK if outcome.result == "installed" and outcome.reason is None else EXIT_FAILURE


def _steady() -> None:
    """An update runs to its end once begun: a hang-up (the SSH session dropped) is ignored, and an interrupt or a
    termination is said and ignored; the update finishes, or rolls back by itself within its bound. (`kill -9`, or
    a power cut, is left to the recovery at the next start.)"""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def interrupted(signum: int, frame: object) -> None:
        # Written straight to the descriptor: the handler may run in the middle of a print.
        os.write(2, f"update: {signal.Signals(signum).name} ignored: the update finishes, or rolls back by "
                    "itself\n".encode())

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)


def _recover(args: argparse.Namespace, service: Service | None) -> int:
    from gateway.update.backup import BackupError
    from gateway.update.journal import STATE_DIR, Busy, Journal, JournalError
    from gateway.update.layout import Layout
    from gateway.update.recover import recover

    journal = Journal(args.state_dir)
    if not journal.exists():
        if args.state_dir != STATE_DIR:
            print(f"venue-gateway update: the update's state directory {args.state_dir} does not exist",
                  file=sys.stderr)
            return EXIT_USAGE
        _say("nothing to recover (no update has run on this box)")
        return EXIT_OK
    try:
        with journal.lock():
            outcome = recover(Layout(args.prefix), journal, service, _say, lambda: _store(args.config))
    except Busy as exc:
        _say(f"{exc}: nothing to recover here")
        return EXIT_OK
    except (JournalError, BackupError) as exc:
        print(f"venue-gateway update: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    _say(outcome.line() if outcome is not None else "nothing to recover")
    return EXIT_OK


def _store(config: Path) -> Path | None:
    """The store's file as the configuration names it; None (said) when it cannot be read."""
    from gateway import config as configuration
    from gateway.update.backup import STORE_FILE

    try:
        return configuration.load(config).data_dir / STORE_FILE
    except (configuration.ConfigError, OSError) as exc:
        _say(f"the configuration {config} cannot be read ({exc}): the store is left as it is")
        return None


def cmd_bundle(args: argparse.Namespace) -> int:
    from gateway.update import build, bundle, keys

    try:
        manifest = build.build(args.source, args.key, args.arch, args.output,
                               lambda text: print(f"bundle: {text}", flush=True), label=args.label, have=args.wheels)
    except (build.BuildError, bundle.BundleError, keys.KeyProblem) as exc:
        print(f"venue-gateway bundle: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"bundle: {args.output}: {manifest.label} for {manifest.python} {manifest.arch}, {len(manifest.members)} "
          f"members, {args.output.stat().st_size / 1048576:.1f} MB")
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from gateway.update import keys

    try:
        public, ident = keys.generate(args.file)
    except keys.KeyProblem as exc:
        print(f"venue-gateway bundle-keygen: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"key {ident}: private {args.file} (0600, keep it off the boxes), public {public}: copy it to each box's "
          f"{ETC / 'update-keys'}/")
    return EXIT_OK
