"""Updates with rollback, for real: bundles built from this tree (the locked wheels for this machine, the project's
wheel, the models) and signed; a prefix with real versions installed from them; the service run by a small manager
that does what systemd does with the unit (tests/update_service.py: the recovery before each start, READY=1,
Restart=on-failure); the updater run as a process from the installed version, as a tech runs it on the box.

Covered: a good update; a version that migrates the store and then fails on start (rolled back, the store restored,
the box says so); bundles refused (tampered, unsigned, unknown key, bad signature, a path escaping the bundle, another
architecture, a label installed already) with nothing installed; and `kill -9` of the updater after unpacking, after
the switch and during the health wait, each followed by the next start of the service: one whole version runs."""

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
    return Bundles(key, trusted, first, manifest["label"], second, third, broken)


@dataclass
class Box:
    root: Path
    prefix: Path
    state: Path
    config: Path
    trusted: Path
    service_dir: Path
    port: int

    @property
    def layout(self) -> Layout:
        return Layout(self.prefix)

    def args(self) -> list[str]:
        return ["--prefix", str(self.prefix), "--state-dir", str(self.state), "--config", str(self.config),
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
        assert journal.Journal(self.state).update() is None
        assert self.health() == "ok", self.logs()
        assert self.running() == label


@pytest.fixture(scope="module")
def box(bundles: Bundles, work: Path) -> Iterator[Box]:
    root = work / "box"
    root.mkdir()
    port = free_port()
    b = Box(root, root / "opt", root / "state", root / "etc" / "gateway.toml", bundles.trusted, root / "service",
            port)
    b.config.parent.mkdir()
    b.service_dir.mkdir()
    b.config.write_text(f'[gateway]\nid = "box-01"\nvenue = "test-hall"\ndata_dir = "{b.state}"\n\n'
                        f'[api]\nlisten = "127.0.0.1:{port}"\n')
    # The first version, installed as an image build would: switched to, nothing started.
    first = subprocess.run([str(Path(sys.executable).parent / "venue-gateway"), "update", str(bundles.first),
                            *b.args(), "--no-restart"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"updated to {bundles.first_label}" in first.stdout
    manager = subprocess.Popen([*SERVICE, "serve", str(b.service_dir), "--prefix", str(b.prefix), "--state-dir",
                                str(b.state), "--config", str(b.config)])
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
    (box.state / "update" / f"gateway-{OLDER}.db").write_bytes(b"")
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
    assert f"removed the older version {OLDER}" in second
    assert [p.name for p in (box.state / "update").glob("*.db")] == [f"gateway-{bundles.first_label}.db"]
    assert journal.report(box.state) == ("ok", journal.Journal(box.state).outcome().line())  # type: ignore[union-attr]
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


def _rewrite(src: Path, dst: Path, *, drop: str | None = None, change: str | None = None) -> None:
    """A copy of a bundle without member `drop`, or with one byte of member `change` altered."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin:
            if info.name == drop:
                continue
            data = tin.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == change:
                data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
            tout.addfile(info, io.BytesIO(data))


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
    assert f"update to {BROKEN} failed, rolled back to {SECOND} at " in out
    assert "this build fails on start, after migrating the store" in box.logs()
    box.one_whole_version(SECOND, bundles.first_label)
    after_id, after_schema, after_assets = box.store()
    assert (after_id, after_schema) == (store_id, schema) == (store_id, "2")
    assert {a for a, _ in assets} <= {a for a, _ in after_assets}
    # The box says so: doctor's check and `update --status`.
    status, line = journal.report(box.state)  # type: ignore[misc]
    assert status == "warn" and line.startswith(f"update to {BROKEN} failed, rolled back to {SECOND} at ")
    assert cli.main(["update", "--status", "--state-dir", str(box.state)]) == 1
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
    updater.send_signal(signal.SIGKILL)
    updater.wait()
    if phase.startswith("unpacked"):
        # Nothing switched: the service runs on, untouched. The recovery, as the unit runs it before a start.
        recovery = subprocess.run([str(box.prefix / "previous" / "bin" / "python"), "-I", "-m", "gateway.update",
                                   "--recover", "--no-restart", "--prefix", str(box.prefix), "--state-dir",
                                   str(box.state)], capture_output=True, text=True, timeout=60)
        assert recovery.returncode == 0 and f"update to {THIRD} was stopped halfway" in recovery.stdout, recovery
    else:
        box.ctl("restart")  # the next start of the service (a reboot, a crash, a restart): the recovery first
    box.one_whole_version(SECOND, bundles.first_label)
    outcome = journal.Journal(box.state).outcome()
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
