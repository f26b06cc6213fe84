"""Updates with rollback, for real: bundles built from this tree (the locked wheels for this machine, the project's
wheel, the models) and signed; a prefix with real versions installed from them; the service run by a small manager
that does what systemd does with the unit (tests/update_service.py: the recovery before each start, READY=1,
Restart=on-failure); the updater run as a process from the installed version, as a tech runs it on the box.

Covered: a good update (the first version installed under umask 077, readable all the same); a version that migrates
the store and then fails on start (rolled back, the store restored and the one it replaced kept aside, the box says
so); bundles refused (tampered, unsigned, unknown key, bad signature, a path escaping the bundle, a link, a device, a
member twice or unlisted, another architecture, a label installed already) with nothing installed; `--no-restart`
refused while the service runs; and `kill -9` of the updater after unpacking, after the switch and during the health
wait (SIGHUP, SIGINT and SIGTERM before it ignored), each followed by the next start of the service: one whole version
runs. Without a service: a journal forged in a state directory another user may write, a link planted where root
writes the restored store, a trial interrupted just now or days ago, errors said in one line, a project wheel at
hand under a label of its own, an update key not named .pub refused by the installer."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import cli
from gateway.update import bundle, journal
from gateway.update.build import lock_path, read_lock
from gateway.update.keys import load_private
from gateway.update.layout import Layout
from gateway.update.service import acceptable, wait_healthy
from tests.conftest import ROOT, free_port, require

MACHINE = os.uname().machine
# The locked wheels for this machine, fetched once and kept between runs (var/ is not in git).
WHEELS = ROOT / "var" / "wheels" / f"cp311-{MACHINE}"
SERVICE = [sys.executable, str(ROOT / "tests" / "update_service.py")]
SECOND, THIRD, BROKEN, OLDER = "0.1.0-second", "0.1.0-third", "0.1.0-broken", "0.0.9-older"

# Appended to gateway/database.py in the broken version's wheel: it migrates the store to a newer schema (which the
# version before refuses to open), then fails on start, as a bad release would.
INJECTED = b'''

SCHEMA_VERSION = SCHEMA_VERSION + 1
_open_database = open_database


def open_database(path, synchronous):  # type: ignore[no-redef]
    _open_database(path, synchronous)
    raise StoreError("this build fails on start, after migrating the store")
'''


@dataclass(frozen=True)
class Bundles:
    key: Path
    trusted: Path
    first: Path
    first_label: str
    second: Path
    third: Path
    broken: Path
    project: Path  # the locked wheels and the project's wheel built from this tree


def _fetch_wheels() -> None:
    lock = lock_path(ROOT, MACHINE)
    require(sys.version_info[:2] == (3, 11) and lock.is_file(), f"CPython 3.11 and a lock file for {MACHINE}")
    missing = [p for p in read_lock(lock) if not (WHEELS / p.wheel).is_file()]
    if not missing:
        return
    WHEELS.mkdir(parents=True, exist_ok=True)
    requirements = WHEELS / "missing.txt"
    requirements.write_text("".join(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in missing))
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                           "--require-hashes", "-r", str(requirements), "-d", str(WHEELS)],
                          capture_output=True, text=True, timeout=300)
    requirements.unlink()
    require(done.returncode == 0, f"the locked wheels from the package index ({done.stderr.strip()[-300:]})")


def _broken_wheel(wheel: Path, out: Path) -> None:
    """The project's wheel with INJECTED appended to gateway/database.py, and its RECORD line to match."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out / wheel.name, "w", zipfile.ZIP_DEFLATED) as dst:
        patched = src.read("gateway/database.py") + INJECTED
        digest = base64.urlsafe_b64encode(hashlib.sha256(patched).digest()).rstrip(b"=").decode()
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "gateway/database.py":
                data = patched
            elif info.filename.endswith(".dist-info/RECORD"):
                data = b"\n".join(f"gateway/database.py,sha256={digest},{len(patched)}".encode()
                                  if line.startswith(b"gateway/database.py,") else line
                                  for line in data.split(b"\n"))
            dst.writestr(info, data)


def _bundle(key: Path, out: Path, *extra: str) -> None:
    assert cli.main(["bundle", "--key", str(key), "-o", str(out), *extra]) == 0


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the bundles and the box go: in memory (/dev/shm, a tmpfs) where there is one, as the versions' files
    are many and the disk is shared with every other test."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="vg-update-", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("update")


@pytest.fixture(scope="module")
def bundles(work: Path) -> Bundles:
    _fetch_wheels()
    d = work / "bundles"
    d.mkdir()
    key, trusted = d / "publisher", d / "trusted"
    assert cli.main(["bundle-keygen", str(key)]) == 0
    trusted.mkdir()
    (trusted / "publisher.pub").write_bytes(key.with_name("publisher.pub").read_bytes())
    first = d / "first.vgb"
    _bundle(key, first, "--wheels", str(WHEELS))  # the project's wheel built from this tree
    with tarfile.open(first) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        project = d / "project" / Path(manifest["project"]).name
        project.parent.mkdir()
        project.write_bytes(tar.extractfile(manifest["project"]).read())  # type: ignore[union-attr]
    broken_dir = d / "broken-wheels"
    broken_dir.mkdir()
    _broken_wheel(project, broken_dir)
    for wheel in WHEELS.glob("*.whl"):
        (project.parent / wheel.name).symlink_to(wheel)
        (broken_dir / wheel.name).symlink_to(wheel)
    # The same wheels under other labels; the broken one with its patched project wheel.
    second, third, broken = d / "second.vgb", d / "third.vgb", d / "broken.vgb"
    _bundle(key, second, "--wheels", str(project.parent), "--label", SECOND)
    _bundle(key, third, "--wheels", str(project.parent), "--label", THIRD)
    _bundle(key, broken, "--wheels", str(broken_dir), "--label", BROKEN)
    return Bundles(key, trusted, first, manifest["label"], second, third, broken, project.parent)


@dataclass
class Box:
    root: Path
    prefix: Path
    state: Path  # the service's (the store's)
    updates: Path  # the updater's, root's alone
    config: Path
    trusted: Path
    service_dir: Path
    port: int

    @property
    def layout(self) -> Layout:
        return Layout(self.prefix)

    def args(self) -> list[str]:
        return ["--prefix", str(self.prefix), "--state-dir", str(self.updates), "--config", str(self.config),
                "--keys", str(self.trusted), "--no-compile", "--bound-s", "30", "--settle-s", "1",
                "--service-command", " ".join([*SERVICE, "ctl", str(self.service_dir), "{action}"])]

    def updater(self, path: Path) -> subprocess.Popen[str]:
        """The installed version's updater (`python -m gateway.update`, the `update` command alone)."""
        return subprocess.Popen([str(self.prefix / "current" / "bin" / "python"), "-I", "-m", "gateway.update",
                                 str(path), *self.args()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def ctl(self, action: str) -> None:
        done = subprocess.run([*SERVICE, "ctl", str(self.service_dir), action], capture_output=True, text=True,
                              timeout=90)
        assert done.returncode == 0, done.stderr + self.logs()

    def health(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=5) as r:
                return str(json.loads(r.read())["status"])
        except OSError:
            return None

    def running(self) -> str:
        """The label of the version the service's daemon runs, from its command line."""
        log = (self.service_dir / "service.log").read_text().splitlines()
        started = [line for line in log if " started pid " in line]
        pid = started[-1].split(" started pid ")[1].split(":")[0]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        interpreter = Path(argv[0].decode())  # the script's shebang: versions/<label>/bin/python
        assert interpreter.parent.parent.parent == self.prefix / "versions", argv
        return interpreter.parent.parent.name

    def store(self) -> tuple[str, str, list[tuple[str, int]]]:
        """The store's id, schema and assets, read as the service sees them."""
        with sqlite3.connect(f"file:{self.state / 'gateway.db'}?mode=ro", uri=True) as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            assets = conn.execute("SELECT id, version FROM assets ORDER BY id").fetchall()
        return meta["store_id"], meta["schema"], assets

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.service_dir.glob("*.log")))

    def one_whole_version(self, label: str, previous: str) -> None:
        """The box as a tech would find it: `label` current and running healthy, `previous` kept, nothing else."""
        layout = self.layout
        assert (layout.link("current"), layout.link("previous")) == (label, previous)
        assert layout.whole(label) and layout.whole(previous)
        assert sorted(p.name for p in layout.versions.iterdir()) == sorted([label, previous])
        assert not list(self.prefix.glob(".*.new"))
        assert journal.Journal(self.updates).update() is None
        assert self.health() == "ok", self.logs()
        assert self.running() == label


@pytest.fixture(scope="module")
def box(bundles: Bundles, work: Path) -> Iterator[Box]:
    root = work / "box"
    root.mkdir()
    port = free_port()
    b = Box(root, root / "opt", root / "state", root / "updates", root / "etc" / "gateway.toml", bundles.trusted,
            root / "service", port)
    b.updates.mkdir(mode=0o700)
    b.config.parent.mkdir()
    b.service_dir.mkdir()
    b.config.write_text(f'[gateway]\nid = "box-01"\nvenue = "test-hall"\ndata_dir = "{b.state}"\n\n'
                        f'[api]\nlisten = "127.0.0.1:{port}"\n')
    # The first version, installed as an image build would: switched to, nothing started; by a root whose umask
    # lets no one else read what it makes.
    first = subprocess.run([str(Path(sys.executable).parent / "venue-gateway"), "update", str(bundles.first),
                            *b.args(), "--no-restart"], capture_output=True, text=True, timeout=300,
                           preexec_fn=lambda: os.umask(0o077))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"updated to {bundles.first_label}" in first.stdout
    manager = subprocess.Popen([*SERVICE, "serve", str(b.service_dir), "--prefix", str(b.prefix), "--state-dir",
                                str(b.updates), "--config", str(b.config)])
    try:
        deadline = time.monotonic() + 10
        while not (b.service_dir / "control.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        b.ctl("start")
        yield b
    finally:
        manager.terminate()
        manager.wait(30)


def _run(updater: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = updater.communicate(timeout=240)
    return updater.returncode, out


def _seconds(out: str, text: str) -> float:
    """The time the updater printed on its line with `text`."""
    line = next(line for line in out.splitlines() if text in line)
    return float(line.split("[", 1)[1].split(" s]", 1)[0])


@pytest.fixture(scope="module")
def second(box: Box, bundles: Bundles) -> str:
    """The box updated from its first version to the second (which the other tests start from): what the updater
    printed."""
    assert box.running() == bundles.first_label
    # An older version (and its store's backup) left from before: pruned once the second one is healthy.
    (box.prefix / "versions" / OLDER / "bin").mkdir(parents=True)
    (box.prefix / "versions" / OLDER / "bin" / "venue-gateway").write_text("#!/bin/sh\n")
    (box.updates / f"gateway-{OLDER}.db").write_bytes(b"")
    code, out = _run(box.updater(bundles.second))
    assert code == 0, out + box.logs()
    return out


def test_a_good_update(box: Box, bundles: Bundles, second: str) -> None:
    assert f"updated to {SECOND} at " in second
    # Each step with its time since the start.
    for step in ("every hash checked", "unpacked into", "installed", "store backed up", "switched: current",
                 "is healthy"):
        assert _seconds(second, step) >= 0, step
    box.one_whole_version(SECOND, bundles.first_label)
    # The first version was installed under umask 077: what the service's user reads is readable all the same.
    first = box.prefix / "versions" / bundles.first_label
    for path in [first / "models", *(first / "models").iterdir(), first / "share", first / "share" / "README.md"]:
        assert path.stat().st_mode & 0o755 == (0o755 if path.is_dir() else 0o644), path
    assert f"removed the older version {OLDER}" in second
    assert [p.name for p in box.updates.glob("*.db")] == [f"gateway-{bundles.first_label}.db"]
    assert journal.report(box.updates) == ("ok", journal.Journal(box.updates).outcome().line())  # type: ignore[union-attr]
    print(f"\nupdate: {_seconds(second, 'updated to'):.1f} s in all, the service healthy "
          f"{second.split('is healthy ')[1].split(' s')[0]} s after its restart")


def _small_bundle(path: Path, key: Path, *, label: str = "0.1.0-small", arch: str = MACHINE,
                  member: str = "share/README.md") -> None:
    """A signed bundle of two small members (enough to be refused on what it says, before anything is
    installed)."""
    readme = path.with_suffix(".txt")
    readme.write_text("a small bundle\n")
    files = {member: readme, "wheels/venue_gateway-0.1.0-py3-none-any.whl": readme}
    manifest = bundle.Manifest(label, "0.1.0", "2026-01-01T00:00:00Z", "cp311", arch,
                               "wheels/venue_gateway-0.1.0-py3-none-any.whl", bundle.describe(files))
    bundle.write(path, manifest, files, load_private(key))


def _rewrite(src: Path, dst: Path, *, drop: str | None = None, change: str | None = None,
             add: tarfile.TarInfo | None = None) -> None:
    """A copy of a bundle without member `drop`, with one byte of member `change` altered, or with `add` (a link, a
    device, or a file of 3 bytes) after the rest."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin:
            if info.name == drop:
                continue
            data = tin.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == change:
                data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
            tout.addfile(info, io.BytesIO(data))
        if add is not None:
            tout.addfile(add, io.BytesIO(b"abc") if add.isreg() else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/shadow"
    elif kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    else:
        info.size = 3
    return info


def test_bundles_refused(box: Box, bundles: Bundles, second: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    stranger = tmp_path / "stranger"
    assert cli.main(["bundle-keygen", str(stranger)]) == 0
    capsys.readouterr()
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, expected: str) -> Path:
        path = tmp_path / f"{name}.vgb"
        cases[name] = (path, expected)
        return path

    small = tmp_path / "small.vgb"
    _small_bundle(small, bundles.key)
    with tarfile.open(bundles.third) as tar:
        numpy = next(n for n in tar.getnames() if n.startswith("wheels/numpy-"))
    _rewrite(bundles.third, case("tampered", "its SHA-256 differs from the manifest's"), change=numpy)
    _rewrite(small, case("unsigned", "is not signed (no manifest.sig): refused"), drop=bundle.SIGNATURE)
    _small_bundle(case("unknown key", "which this box does not trust"), stranger)
    _rewrite(small, case("bad signature", "does not match the manifest"), change=bundle.MANIFEST)
    _small_bundle(case("escaping", "escapes the bundle"), bundles.key, member="share/../../../etc/cron.d/x")
    _rewrite(small, case("link", "'share/link' is not a plain file"), add=_member("share/link", tarfile.SYMTYPE))
    _rewrite(small, case("device", "'share/null' is not a plain file"), add=_member("share/null", tarfile.CHRTYPE))
    _rewrite(small, case("duplicate", "'share/README.md' is in the bundle twice"), add=_member("share/README.md"))
    _rewrite(small, case("unlisted", "member share/extra is not in the manifest"), add=_member("share/extra"))
    _small_bundle(case("wrong arch", "this box runs cp311"), bundles.key, arch="riscv64")
    _small_bundle(case("installed", f"version {SECOND} is installed already (the current version)"), bundles.key,
                  label=SECOND)
    before = sorted(p.name for p in box.layout.versions.iterdir())
    for name, (path, expected) in cases.items():
        code = cli.main(["update", str(path), *box.args()])
        err = capsys.readouterr().err
        assert code == 2 and expected in err, (name, err)
        assert "Traceback" not in err
        assert sorted(p.name for p in box.layout.versions.iterdir()) == before, name  # nothing installed
    box.one_whole_version(SECOND, bundles.first_label)


def test_an_update_that_fails_on_start_is_rolled_back(box: Box, bundles: Bundles, second: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    store_id, schema, assets = box.store()
    code, out = _run(box.updater(bundles.broken))
    assert code == 1, out + box.logs()
    assert "the daemon exited 1 before it was ready" in out
    assert "the store's schema went from 2 to 3: restored from" in out
    # The store the broken version wrote is kept aside, and named.
    [replaced] = (box.updates / "replaced").glob(f"gateway-{BROKEN}-*.db")
    assert f"the store it replaced is kept in {replaced}" in out
    assert sqlite3.connect(replaced).execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("3",)
    assert f"update to {BROKEN} failed, rolled back to {SECOND} at " in out
    assert "this build fails on start, after migrating the store" in box.logs()
    box.one_whole_version(SECOND, bundles.first_label)
    after_id, after_schema, after_assets = box.store()
    assert (after_id, after_schema) == (store_id, schema) == (store_id, "2")
    assert {a for a, _ in assets} <= {a for a, _ in after_assets}
    # The box says so: doctor's check and `update --status`.
    status, line = journal.report(box.updates)  # type: ignore[misc]
    assert status == "warn" and line.startswith(f"update to {BROKEN} failed, rolled back to {SECOND} at ")
    assert cli.main(["update", "--status", "--state-dir", str(box.updates)]) == 1
    assert capsys.readouterr().out.startswith(f"update to {BROKEN} failed, rolled back to {SECOND} at ")
    print(f"\nrollback: {_seconds(out, 'rolled back to')- _seconds(out, 'failed:'):.1f} s from the failed start to "
          f"{SECOND} healthy again; {_seconds(out, 'rolled back to'):.1f} s in all")


@pytest.mark.parametrize(("phase", "after"), [("unpacked into", "not installed (interrupted while installing"),
                                             ("switched: current", "failed, rolled back"),
                                             ("restarted; waiting", "failed, rolled back")])
def test_kill_9_of_the_updater(box: Box, bundles: Bundles, second: str, phase: str, after: str) -> None:
    updater = box.updater(bundles.third)
    assert updater.stdout is not None
    seen = []
    for line in updater.stdout:
        seen.append(line)
        if phase in line:
            break
    else:
        pytest.fail("".join(seen))
    if phase.startswith("restarted"):
        time.sleep(0.5)  # the new version started, not yet healthy for --settle-s
    # A dropped SSH session (SIGHUP), Ctrl-C, a plain kill: the updater goes on.
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        updater.send_signal(sig)
    time.sleep(0.2)
    assert updater.poll() is None, updater.stdout.read()
    updater.send_signal(signal.SIGKILL)
    updater.wait()
    if phase.startswith("unpacked"):
        # Nothing switched: the service runs on, untouched. The recovery, as the unit runs it before a start.
        recovery = subprocess.run([str(box.prefix / "previous" / "bin" / "python"), "-I", "-m", "gateway.update",
                                   "--recover", "--no-restart", "--prefix", str(box.prefix), "--state-dir",
                                   str(box.updates), "--config", str(box.config)], capture_output=True, text=True,
                                  timeout=60)
        assert recovery.returncode == 0 and f"update to {THIRD} was stopped halfway" in recovery.stdout, recovery
    else:
        box.ctl("restart")  # the next start of the service (a reboot, a crash, a restart): the recovery first
    box.one_whole_version(SECOND, bundles.first_label)
    outcome = journal.Journal(box.updates).outcome()
    assert outcome is not None and outcome.to == THIRD and after in outcome.line(), outcome


class _Health:
    """A /health that answers what `statuses` says at each request (the last one from then on), on a real port."""

    def __init__(self, statuses: list[str | None]) -> None:
        answers = iter(statuses)
        last: list[str | None] = [None]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                last[0] = next(answers, last[0])
                if last[0] is None:
                    self.send_error(503)
                    return
                body = json.dumps({"status": last[0]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_health_within_the_bound() -> None:
    said: list[str] = []
    # Starting, then ok: healthy once ok has lasted the settle time.
    health = _Health([None, "starting", "ok"])
    try:
        assert wait_healthy(health.url, acceptable("ok"), 5.0, 0.3, said.append) == (True, "ok")
    finally:
        health.close()
    assert [line.split("/health: ")[1] for line in said] == ["no answer", "starting", "ok"]
    # Ok for a moment, then failing, then never ok again: not healthy, once the bound has passed.
    health = _Health(["ok", None, "degraded"])
    try:
        start = time.monotonic()
        healthy, why = wait_healthy(health.url, acceptable("ok"), 1.0, 0.5, said.append)
        assert not healthy and 1.0 <= time.monotonic() - start < 3
        assert why == "not healthy within 1 s (/health answered 'degraded'; healthy is ok)"
        # Degraded is healthy enough after a version that was degraded too (or not running).
        assert wait_healthy(health.url, acceptable("degraded"), 3.0, 0.2, said.append) == (True, "degraded")
        assert acceptable(None) == {"ok", "degraded"}
    finally:
        health.close()


def test_no_restart_is_refused_while_the_service_runs(box: Box, bundles: Bundles, second: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["update", str(bundles.third), *box.args(), "--no-restart"]) == 1
    err = capsys.readouterr().err
    assert f"the service is running (its API answers at http://127.0.0.1:{box.port})" in err, err
    box.one_whole_version(SECOND, bundles.first_label)


def test_a_project_wheel_at_hand(bundles: Bundles, tmp_path: Path) -> None:
    from gateway.update import build

    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "venue_gateway-0.0.1-py3-none-any.whl").write_bytes(b"an old build")
    with pytest.raises(build.BuildError, match=r"is of version 0\.0\.1, and the tree"):
        build.build(ROOT, bundles.key, MACHINE, tmp_path / "stale.vgb", print, have=stale)
    # One of the tree's version is taken, under a label of its own: never the tree's, which it may not be built from.
    made = build.build(ROOT, bundles.key, MACHINE, tmp_path / "at-hand.vgb", print, have=bundles.project)
    assert made.label != bundles.first_label and made.label.startswith(build.project_version(ROOT) + "-")


A, B = "0.1.0-aaaaaaaaaaaa", "0.1.0-bbbbbbbbbbbb"


@dataclass(frozen=True)
class Scratch:
    """A prefix with two (empty) whole versions after a switch, current B and previous A; the updater's state
    directory; the service's, with its store; a configuration naming it."""

    layout: Layout
    updates: Path
    store: Path
    config: Path

    def recover(self) -> list[str]:
        return ["update", "--recover", "--no-restart", "--prefix", str(self.layout.prefix), "--state-dir",
                str(self.updates), "--config", str(self.config)]

    def links(self) -> tuple[str, str]:
        return os.readlink(self.layout.prefix / "current"), os.readlink(self.layout.prefix / "previous")


def _scratch(where: Path) -> Scratch:
    layout = Layout(where / "opt")
    for label in (A, B):
        (layout.path(label) / "bin").mkdir(parents=True)
        (layout.path(label) / "bin" / "venue-gateway").write_text("#!/bin/sh\n")
    layout.point("previous", A)
    layout.point("current", B)
    updates, data = where / "updates", where / "data"
    updates.mkdir(mode=0o700)
    data.mkdir()
    config = where / "gateway.toml"
    config.write_text(f'[gateway]\nid = "box-01"\nvenue = "test-hall"\ndata_dir = "{data}"\n\n'
                      f'[api]\nlisten = "127.0.0.1:{free_port()}"\n')
    return Scratch(layout, updates, data / "gateway.db", config)


def _store(path: Path, schema: int, rows: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(schema),))
        conn.execute("CREATE TABLE IF NOT EXISTS readings (n INTEGER)")
        conn.execute("DELETE FROM readings")
        conn.executemany("INSERT INTO readings VALUES (?)", [(n,) for n in range(rows)])
    conn.close()


def _contents(path: Path) -> tuple[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0],
                conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        conn.close()


def test_the_journal_cannot_be_forged_by_the_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = _scratch(tmp_path)
    evil = box.store.parent / "evil" / "bin"
    evil.mkdir(parents=True)
    (evil / "python").write_text("#!/bin/sh\n")
    forged = {"phase": "trial", "to": B, "came_from": A, "previous": "../../data/evil", "started": time.time()}
    (box.updates / "state.json").write_text(json.dumps({"update": forged, "last": None}))
    assert cli.main(box.recover()) == 1
    err = capsys.readouterr().err
    assert "holds an update that makes no sense ('../../data/evil' is not a version label): refused" in err, err
    assert box.links() == (f"versions/{B}", f"versions/{A}")
    # A state directory the service's user could have made, or may write: refused before anything in it is read.
    forged["previous"] = None
    (box.updates / "state.json").write_text(json.dumps({"update": forged, "last": None}))
    for uid, mode in ((65534, 0o700), (0, 0o770)):
        os.chown(box.updates, uid, uid)
        os.chmod(box.updates, mode)
        assert cli.main(box.recover()) == 1
        err = capsys.readouterr().err
        assert "is not a directory of uid 0's that no one else may write" in err and "Traceback" not in err, err
        assert box.links() == (f"versions/{B}", f"versions/{A}")


def test_a_link_in_the_services_directory_is_never_written_through(tmp_path: Path) -> None:
    from gateway.update import backup

    box = _scratch(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's own\n")
    saved = box.updates / f"gateway-{A}.db"
    _store(saved, 2, 1)
    _store(box.store, 3, 5)
    (box.store.parent / "gateway.db.restore").symlink_to(victim)
    backup.restore(saved, box.store)
    assert victim.read_bytes() == b"root's own\n"
    assert not box.store.is_symlink() and _contents(box.store) == ("2", 1)
    # A store that is a link: neither read nor replaced.
    box.store.unlink()
    box.store.symlink_to(victim)
    with pytest.raises(backup.BackupError, match="is not a plain file"):
        backup.restore(saved, box.store)
    with pytest.raises(backup.BackupError, match="is not a plain file"):
        backup.schema(box.store)
    assert victim.read_bytes() == b"root's own\n" and box.store.is_symlink()


@pytest.mark.parametrize(("age_s", "schema", "after"), [
    (0.0, 3, "rolled back, the store restored, the one it replaced kept"),
    (3 * 86400.0, 2, "rolled back, the store kept"),
    (3 * 86400.0, 3, "kept, the store kept"),
])
def test_an_interrupted_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str], age_s: float, schema: int,
                              after: str) -> None:
    """The updater stopped during the trial: just now (undone, as a failure), or days ago, the new version having
    run since (its store, with what it wrote, kept)."""
    box = _scratch(tmp_path)
    _store(box.updates / f"gateway-{A}.db", 2, 1)
    _store(box.store, schema, 500)
    switched = time.time() - age_s
    journal.Journal(box.updates).write(journal.Update("trial", B, A, None, switched - 20, backed_up=True,
                                                      backup_schema=2, switched=switched, bound_s=30, settle_s=1))
    assert cli.main(box.recover()) == 0
    out = capsys.readouterr().out
    outcome = journal.Journal(box.updates).outcome()
    assert outcome is not None and journal.Journal(box.updates).update() is None
    replaced = list((box.updates / "replaced").glob(f"gateway-{B}-*.db"))
    if after.startswith("rolled back"):
        assert os.readlink(box.layout.prefix / "current") == f"versions/{A}" and not box.layout.path(B).exists()
        assert outcome.result == "rolled back"
    if after == "rolled back, the store restored, the one it replaced kept":
        assert _contents(box.store) == ("2", 1) and len(replaced) == 1 and _contents(replaced[0]) == ("3", 500)
        assert outcome.replaced == str(replaced[0]) and str(replaced[0]) in outcome.line()
        return
    assert _contents(box.store) == (str(schema), 500) and not replaced
    if after == "kept, the store kept":
        assert box.links() == (f"versions/{B}", f"versions/{A}")
        assert outcome.result == "installed" and f"{B} is KEPT, never confirmed healthy" in str(outcome.reason)
        assert "WARNING" in out


def test_clear_errors(bundles: Bundles, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = _scratch(tmp_path)
    small = tmp_path / "small.vgb"
    _small_bundle(small, bundles.key)
    update = ["update", str(small), "--prefix", str(box.layout.prefix), "--state-dir", str(box.updates), "--config",
              str(box.config), "--keys", str(bundles.trusted), "--no-restart", "--service-command", "false {action}"]

    def refused(argv: list[str], code: int, expected: str) -> None:
        assert cli.main(argv) == code
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)
        assert sorted(p.name for p in box.layout.versions.iterdir()) == [A, B]

    # A store that is not one: said before anything is installed.
    box.store.write_bytes(b"not a database at all" * 100)
    refused(update, 1, f"the store {box.store} cannot be read (file is not a database)")
    box.store.unlink()
    # A state.json that cannot be read.
    (box.updates / "state.json").write_text('{"update": {"phase": "trial", "to": ')
    refused(update, 1, "state.json cannot be read")
    refused(box.recover(), 1, "state.json cannot be read")
    (box.updates / "state.json").write_text('{"update": {"phase": "trial", "to": 5}}')
    refused(box.recover(), 1, "holds an update that makes no sense")
    # A state directory that is not there (and is not the default, which the installer makes).
    missing = str(tmp_path / "x" / "y")
    refused([*box.recover()[:-4], "--state-dir", missing], 2, f"the update's state directory {missing} does not exist")
    refused([*update, "--state-dir", missing], 1, f"the update's state directory {missing} does not exist")
    assert not (tmp_path / "x").exists()
    # Times that are not one.
    for bad in ("-1", "0", "nan", "inf"):
        for option in ("--bound-s", "--settle-s"):
            with pytest.raises(SystemExit) as exited:
                cli.main([*box.recover(), option, bad])
            assert exited.value.code == 2 and "give a positive, finite number of seconds" in capsys.readouterr().err


def test_install_refuses_an_update_key_not_named_pub(tmp_path: Path) -> None:
    done = subprocess.run(["sh", str(ROOT / "image-build" / "install.sh")], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PREFIX": str(tmp_path / "opt"), "ETC": str(tmp_path / "etc"),
                               "SYSTEMD": "no", "UPDATE_KEY": str(tmp_path / "publisher")})
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"UPDATE_KEY names a public key, NAME.pub (from venue-gateway bundle-keygen), not {tmp_path}/publisher" \
        in done.stderr
    assert not (tmp_path / "opt").exists()
