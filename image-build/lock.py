"""Write the box's lock files: every package the installed gateway imports, pinned with the hash of the one wheel a box
of each architecture installs (`make lock`; image-build/install.sh installs them with `pip --require-hashes`).

pip resolves pyproject.toml's runtime dependencies (and the build backend, which builds the project itself on the
box, and pip, which install.sh installs first) for CPython 3.11 on Linux as a box runs it, wheels only, for each
architecture in turn, and reports what it would install; nothing is installed. A dependency without a wheel for an
architecture fails the run: the lock files are the proof that every one has. Each pin names its wheel in a comment,
so a review sees the platform it is for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPROJECT = HERE.parent / "pyproject.toml"
PYTHON = "3.11"
# The newest C library a wheel may need: glibc 2.31 (Debian 11, Ubuntu 20.04; Raspberry Pi OS 12 has 2.36). pip
# takes the manylinux tags a box accepts one by one: every glibc from 2.5 (manylinux1) up to this one.
GLIBC = (2, 31)
ARCHITECTURES = ("x86_64", "aarch64")


def lock_path(arch: str, python: str = PYTHON) -> Path:
    return HERE / f"requirements-cp{python.replace('.', '')}-{arch}.txt"


def requirements() -> list[str]:
    """The runtime dependencies and the build backend, as pyproject.toml gives them, and pip, which install.sh
    installs first."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return [*project["project"]["dependencies"], *project["build-system"]["requires"], "pip"]


def resolve(arch: str, wanted: list[str]) -> list[tuple[str, str, str, str]]:
    """(name, version, wheel file name, sha256) of everything pip would install for `arch`, sorted by name."""
    with tempfile.TemporaryDirectory() as target:
        found = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report", "-",
             "--only-binary=:all:", *(f"--platform=manylinux_2_{minor}_{arch}" for minor in range(5, GLIBC[1] + 1)),
             f"--python-version={PYTHON}",
             "--implementation=cp", f"--abi=cp{PYTHON.replace('.', '')}", "--target", target, *wanted],
            check=True, capture_output=True, text=True)
    report = json.loads(found.stdout)
    pins = []
    for item in report["install"]:
        info = item["download_info"]
        pins.append((item["metadata"]["name"].lower().replace("_", "-"), item["metadata"]["version"],
                     info["url"].rsplit("/", 1)[-1], info["archive_info"]["hashes"]["sha256"]))
    return sorted(pins)


def write(arch: str, pins: list[tuple[str, str, str, str]]) -> None:
    lines = [f"# venue-gateway's runtime set (and its build backend) for Linux {arch}, CPython {PYTHON}, wheels for",
             f"# glibc {GLIBC[0]}.{GLIBC[1]} or newer. Written by `make lock` (image-build/lock.py) from",
             "# pyproject.toml: do not edit; image-build/install.sh installs it with `pip install --require-hashes`.",
             ""]
    for name, version, wheel, sha256 in pins:
        lines += [f"# {wheel}", f"{name}=={version} \\", f"    --hash=sha256:{sha256}"]
    lock_path(arch).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    # pip evaluates the dependencies' environment markers (sys_platform, python_version) with the interpreter it runs
    # on: only one like the box's gives the box's set.
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if sys.platform != "linux" or sys.implementation.name != "cpython" or running != PYTHON:
        print(f"make lock runs on Linux with CPython {PYTHON}, as the box does (this is {sys.platform}, "
              f"{sys.implementation.name} {sys.version.split()[0]})", file=sys.stderr)
        return 2
    wanted = requirements()
    for arch in ARCHITECTURES:
        pins = resolve(arch, wanted)
        write(arch, pins)
        print(f"{lock_path(arch).relative_to(HERE.parent)}: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
