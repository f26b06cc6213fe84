"""`venue-gateway bundle`: a signed bundle from a source tree for one target (CPython 3.11 on aarch64 or x86_64):
the project's wheel (built by the locked setuptools, offline), the wheel of every package in the target's lock file
(image-build/requirements-cp311-<arch>.txt) checked against its hash, the shipped models and their cards, and the
README.

Wheels already at hand (`--wheels DIR`: a wheelhouse, a CI cache) are taken by their hash; the rest are fetched by
pip for the target's platform, by hash. A project wheel in that directory is taken instead of being built, when it
is of the tree's version. The label is the project's version and 12 hex digits of the content it is built from, as
image-build/install.sh computes it, so that a tree installed one way is recognised when it comes the other; a
project wheel taken from the directory is part of that content (its hash is folded in), so that it never ships under
the label of a tree it may not have been built from."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.update import bundle, keys

PYTHON = "3.11"
GLIBC_MINOR = 31  # as image-build/lock.py: wheels for glibc 2.31 or older
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\$")
_HASH = re.compile(r"^\s+--hash=sha256:([0-9a-f]{64})$")
_IGNORED = shutil.ignore_patterns(".git", ".venv", "var", "build", "dist", "__pycache__", "*.egg-info", ".*_cache",
                                  ".hypothesis")


class BuildError(Exception):
    """The bundle cannot be built: said in one line."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    wheel: str  # the wheel's file name, from the lock's comment
    sha256: str


def lock_path(source: Path, arch: str) -> Path:
    return source / "image-build" / f"requirements-cp{PYTHON.replace('.', '')}-{arch}.txt"


def read_lock(path: Path) -> list[Pin]:
    """The pins of a lock file written by image-build/lock.py: `# WHEEL`, `NAME==VERSION \\`, `--hash=sha256:H`."""
    pins, lines = [], path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        pin = _PIN.match(line)
        if pin is None:
            continue
        digest = _HASH.match(lines[i + 1]) if i + 1 < len(lines) else None
        wheel = lines[i - 1].removeprefix("# ").strip() if i > 0 and lines[i - 1].startswith("# ") else ""
        if digest is None or not wheel.endswith(".whl"):
            raise BuildError(f"{path}:{i + 1}: {pin[1]} has no wheel comment and hash (write it with `make lock`)")
        pins.append(Pin(pin[1], pin[2], wheel, digest[1]))
    if not pins:
        raise BuildError(f"{path} pins nothing")
    return pins


def content_label(source: Path, lock: Path) -> str:
    """The project's version and 12 hex of the SHA-256 of what a version is built from, as install.sh computes
    it."""
    files = {"lock": lock}
    for pattern in ("pyproject.toml", "README.md", "models/*.onnx", "models/*.md", "gateway/**/*", "drivers/**/*"):
        files |= {p.relative_to(source).as_posix(): p for p in source.glob(pattern)
                  if p.is_file() and "__pycache__" not in p.parts}
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{hashlib.sha256(files[name].read_bytes()).hexdigest()}\n".encode())
    return f"{project_version(source)}-{digest.hexdigest()[:12]}"


def project_version(source: Path) -> str:
    return str(tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def gather_wheels(pins: list[Pin], arch: str, have: Path | None, work: Path, say: Callable[[str], None]) -> list[Path]:
    """Each pinned wheel, from `have` when it is there with its hash, else fetched by pip for the target."""
    found: dict[str, Path] = {}
    for pin in pins:
        candidate = have / pin.wheel if have is not None else None
        if candidate is not None and candidate.is_file() and _sha256(candidate) == pin.sha256:
            found[pin.name] = candidate
    missing = [p for p in pins if p.name not in found]
    if missing:
        say(f"fetching {len(missing)} wheels for {arch} ({len(found)} at hand)")
        requirements = work / "missing.txt"
        requirements.write_text("".join(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in missing),
                                encoding="utf-8")
        fetched = work / "fetched"
        platforms = [f"--platform=manylinux_2_{minor}_{arch}" for minor in range(5, GLIBC_MINOR + 1)]
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", *platforms,
             f"--python-version={PYTHON}", "--implementation=cp", f"--abi=cp{PYTHON.replace('.', '')}",
             "--require-hashes", "-r", str(requirements), "-d", str(fetched)],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BuildError(f"pip could not fetch the locked wheels: {done.stderr.strip().splitlines()[-1:]}")
        for pin in missing:
            path = fetched / pin.wheel
            if not path.is_file() or _sha256(path) != pin.sha256:
                raise BuildError(f"{pin.wheel}: not fetched, or not with the lock's hash")
            found[pin.name] = path
    return [found[p.name] for p in pins]


def at_hand(source: Path, have: Path | None) -> Path | None:
    """The project's wheel in `have`, if there is one (BuildError when there are several, or it is of another
    version than the tree's)."""
    if have is None:
        return None
    ready = sorted(have.glob("venue_gateway-*.whl"))
    if len(ready) > 1:
        raise BuildError(f"{have} holds {len(ready)} wheels of the project: give one")
    if not ready:
        return None
    version = ready[0].name.split("-")[1]
    if version != project_version(source):
        raise BuildError(f"{ready[0]} is of version {version}, and the tree {source} is {project_version(source)}: "
                         "remove it, or build from its tree")
    return ready[0]


def project_wheel(source: Path, have: Path | None, deps: list[Path], work: Path) -> Path:
    """The project's wheel: the one in `have`, or built from a clean copy of the tree by the locked setuptools
    (pip with no index: only the wheels of the lock)."""
    name = "venue_gateway-"
    ready = at_hand(source, have)
    if ready is not None:
        return ready
    tree, wheelhouse, out = work / "tree", work / "build-deps", work / "project"
    shutil.copytree(source, tree, ignore=_IGNORED)
    wheelhouse.mkdir()
    for wheel in deps:
        (wheelhouse / wheel.name).symlink_to(wheel.resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                           "--find-links", str(wheelhouse), "-w", str(out), str(tree)],
                          capture_output=True, text=True, env=env, check=False)
    built = sorted(out.glob(f"{name}*.whl")) if out.is_dir() else []
    if done.returncode != 0 or len(built) != 1:
        raise BuildError(f"the project's wheel cannot be built: {done.stderr.strip().splitlines()[-1:]}")
    return built[0]


def build(source: Path, key_file: Path, arch: str, out: Path, say: Callable[[str], None], *,
          label: str | None = None, have: Path | None = None) -> bundle.Manifest:
    if not (source / "pyproject.toml").is_file() or not (source / "gateway").is_dir():
        raise BuildError(f"{source} is not a source tree of venue-gateway (give one with --source)")
    key = keys.load_private(key_file)
    lock = lock_path(source, arch)
    if not lock.is_file():
        raise BuildError(f"no lock file for {arch}: {lock} (write it with `make lock`)")
    pins = read_lock(lock)
    ready = at_hand(source, have)
    if label is None:
        label = content_label(source, lock)
        if ready is not None:  # not built from the tree here: the label says which wheel it is
            folded = hashlib.sha256(f"{label}\0{_sha256(ready)}".encode()).hexdigest()[:12]
            label = f"{project_version(source)}-{folded}"
            say(f"the project's wheel {ready.name} is taken from {have}: label {label}")
    label = bundle.check_label(label)
    with tempfile.TemporaryDirectory(prefix="vg-bundle-") as tmp:
        work = Path(tmp)
        deps = gather_wheels(pins, arch, have, work, say)
        project = project_wheel(source, have, deps, work)
        say(f"{len(deps)} locked wheels and {project.name}")
        files = {f"wheels/{w.name}": w for w in [*deps, project]}
        for model in sorted([*source.glob("models/*.onnx"), *source.glob("models/*.md")]):
            files[f"models/{model.name}"] = model
        files["share/README.md"] = source / "README.md"
        manifest = bundle.Manifest(label, project_version(source),
                                   dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                   f"cp{PYTHON.replace('.', '')}", arch, f"wheels/{project.name}",
                                   bundle.describe(files))
        bundle.write(out, manifest, files, key)
    return manifest
