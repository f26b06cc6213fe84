"""`venue-gateway update BUNDLE`: verify the bundle, install its version beside the running one, back up the store,
switch, restart, and keep the new version only once it is healthy; else switch back by itself. Each step is in the
journal before it is taken (see `recover`), and printed with the time since the start."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway import config as configuration
from gateway.addresses import parse_listen
from gateway.update import backup, bundle, install, keys
from gateway.update.journal import STATE_DIR, Journal, Outcome, Update
from gateway.update.layout import Layout
from gateway.update.recover import finish, recover, roll_back
from gateway.update.service import DEFAULT_COMMAND, Service, acceptable, probe, wait_healthy


class UpdateError(Exception):
    """The update cannot go on; nothing was switched (or it was switched back)."""


@dataclass(frozen=True)
class Options:
    prefix: Path
    state_dir: Path
    config: Path
    keys: Path
    service: Service | None  # None: switch only, restart nothing (an image being built)
    url: str | None = None  # the API to watch (default: from the configuration)
    bound_s: float = 120.0
    settle_s: float = 10.0
    compile_bytecode: bool = True
    command: str = DEFAULT_COMMAND  # with `service` None: asked only whether the service is running


@dataclass(frozen=True)
class Box:
    """What the configuration says the updater needs: the store's file and the API's address."""

    store: Path | None
    url: str | None


def box(options: Options) -> Box:
    if not options.config.exists() and options.service is None:
        return Box(None, options.url)  # an image being built: no configuration yet, nothing running
    try:
        cfg = configuration.load(options.config)
    except configuration.ConfigError as exc:
        raise UpdateError(f"the configuration cannot be read: {'; '.join(exc.lines())}") from None
    host, port = parse_listen(cfg.api.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"{'https' if cfg.api.https() else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
    return Box(cfg.data_dir / backup.STORE_FILE, options.url or url)


def check(path: Path, options: Options, layout: Layout) -> bundle.Verified:
    """The bundle, verified, for this box, and new to it; BundleError says why not."""
    try:
        trusted = keys.trusted(options.keys)
    except keys.KeyProblem as exc:
        raise bundle.BundleError(str(exc)) from None
    verified = bundle.verify(path, trusted)
    m = verified.manifest
    machine = os.uname().machine
    if m.arch != machine or m.python != install.python_tag():
        raise bundle.BundleError(f"built for {m.python} on {m.arch}, and this box runs {install.python_tag()} on "
                                 f"{machine}: refused (build one with --arch {machine})")
    if layout.path(m.label).exists():
        where = {layout.link("current"): " (the current version)", layout.link("previous"): " (the previous one)"}
        raise bundle.BundleError(f"version {m.label} is installed already{where.get(m.label, '')}: refused")
    return verified


def update(path: Path, options: Options, say: Callable[[str], None]) -> Outcome:
    """Install the bundle at `path` and switch to it; the outcome (`installed`, `rolled back`). BundleError: refused
    before anything was written; UpdateError: stopped before the switch."""
    start = time.monotonic()

    def step(text: str) -> None:
        say(f"[{time.monotonic() - start:6.1f} s] {text}")

    os.umask(0o022)  # the code is read by the service's user, written by root alone, whatever root's umask
    layout, journal = Layout(options.prefix), Journal(options.state_dir)
    if not journal.exists():
        if options.state_dir != STATE_DIR:
            raise UpdateError(f"the update's state directory {options.state_dir} does not exist (make it, 0755 "
                              "root, or leave --state-dir out)")
        journal.create()
    with journal.lock():
        where = box(options)
        recovered = recover(layout, journal, options.service, step, lambda: where.store)
        if recovered is not None:
            step(recovered.line())
        verified = check(path, options, layout)
        m = verified.manifest
        step(f"bundle {m.label} (version {m.version}, built {m.created}, {m.python} {m.arch}), signed by "
             f"{verified.key}: {len(m.members)} members, {m.size / 1048576:.1f} MB, every hash checked")
        came_from, previous = layout.link("current"), layout.link("previous")
        if options.service is None and came_from is not None:
            _not_running(options, where)
        stored = where.store is not None and came_from is not None and backup.plain(where.store)
        record = Update("installing", m.label, came_from, previous, time.time(), bound_s=options.bound_s,
                        settle_s=options.settle_s)
        if stored:
            assert where.store is not None
            record.backup_schema = backup.schema(where.store)  # a store that cannot be read stops it here
        journal.write(record)
        _install(layout, journal, verified, options, step)
        baseline = probe(where.url) if options.service is not None and where.url is not None else None
        if stored and came_from is not None and where.store is not None:
            saved = journal.backup_path(came_from)
            try:
                size = backup.backup(where.store, saved)
            except backup.BackupError as exc:
                _abandon(layout, journal, record, str(exc))
                raise UpdateError(str(exc)) from None
            record.backed_up = True
            step(f"store backed up to {saved} ({size / 1048576:.1f} MB, schema {record.backup_schema})")
        os.sync()  # the new version's files on disk before anything names it (a power cut after the switch)
        # The switch. With a version before it, a trial until healthy; the first one has nothing to go back to.
        record.phase = "trial" if came_from is not None else "confirmed"
        record.switched = time.time()
        journal.write(record)
        if came_from is not None:
            layout.point("previous", came_from)
        layout.point("current", m.label)
        step(f"switched: current {m.label}" + (f", previous {came_from}" if came_from else ""))
        if options.service is None:
            return finish(layout, journal, record, step, time.monotonic() - start)
        restarted = time.monotonic()
        error = options.service.run("restart")
        if error is None and where.url is not None:
            step(f"restarted; waiting up to {options.bound_s:g} s for {where.url}/api/v1/health "
                 f"({' or '.join(sorted(acceptable(baseline)))}, {options.settle_s:g} s on end)")
            healthy, seen = wait_healthy(where.url, acceptable(baseline), options.bound_s, options.settle_s, say)
            error = None if healthy else seen
        if error is None:
            step(f"{m.label} is healthy {time.monotonic() - restarted:.1f} s after the restart")
            outcome = finish(layout, journal, record, step, time.monotonic() - start)
            step(f"updated to {m.label}" + (f"; {came_from} kept as the previous version" if came_from else ""))
            return outcome
        step(f"{m.label} failed: {error}")
        if came_from is None:
            step(f"no version to go back to: {m.label} stays current")
            return finish(layout, journal, record, step, time.monotonic() - start, unhealthy=error)
        failed = time.monotonic()
        outcome = roll_back(layout, journal, record, error, options.service, step, where.store)
        if where.url is not None:
            healthy, seen = wait_healthy(where.url, acceptable(baseline), options.bound_s, 0.0, say)
            step(f"{came_from} is " + ("healthy again" if healthy else f"NOT healthy either: {seen}"))
        step(f"rolled back to {came_from} in {time.monotonic() - failed:.1f} s")
        return outcome


def _not_running(options: Options, where: Box) -> None:
    """UpdateError when the service runs: --no-restart would switch it to a version never seen healthy."""
    active = Service(options.command, 10.0).run("is-active") is None
    if active or (where.url is not None and probe(where.url, timeout_s=1.0) is not None):
        raise UpdateError("the service is running (" + ("the service manager says it is active" if active else
                          f"its API answers at {where.url}") + "): --no-restart would switch it to a version never "
                          "seen healthy; leave --no-restart out, or stop the service first")


def _install(layout: Layout, journal: Journal, verified: bundle.Verified, options: Options,
             step: Callable[[str], None]) -> None:
    """The new version in versions/, whole; else removed again."""
    m = verified.manifest
    incoming = layout.versions / f".incoming-{m.label}"
    try:
        layout.versions.mkdir(parents=True, exist_ok=True)
        bundle.extract(verified, incoming)
        step(f"unpacked into {incoming}")
        target = install.build(layout, m, incoming, compile_bytecode=options.compile_bytecode)
        shutil.rmtree(incoming)
        step(f"installed {target}")
    except (bundle.BundleError, install.InstallError, OSError) as exc:
        shutil.rmtree(incoming, ignore_errors=True)
        _abandon(layout, journal, journal.update(), str(exc))
        raise UpdateError(str(exc)) from None


def _abandon(layout: Layout, journal: Journal, update: Update | None, reason: str) -> None:
    """Nothing was switched: the new version goes, and the outcome says why."""
    layout.clean()
    if update is not None:
        layout.remove(update.to)
        journal.write(None, Outcome("not installed", update.to, update.came_from, time.time(), reason))
