"""The box's lock files (image-build/requirements-cp311-*.txt, written by `make lock`) agree with pyproject.toml:
every runtime dependency and the build backend pinned within its range, with the hash of a wheel built for that
architecture. Read from the files alone: no network."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags, parse_tag
from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.conftest import ROOT

ARCHITECTURES = ("x86_64", "aarch64")
PIN = re.compile(r"# (?P<wheel>\S+\.whl)\n(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+) \\\n"
                 r"(?P<hashes>(?:    --hash=sha256:[0-9a-f]{64}(?: \\\n|\n))+)")


def box_tags(arch: str) -> set[Tag]:
    """The wheel tags a box of `arch` accepts: CPython 3.11's, manylinux for glibc 2.5 to 2.31 (image-build/lock.py)."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    platforms = [f"{name}_{arch}" for minor in range(31, 4, -1)
                 for name in (f"manylinux_2_{minor}", legacy.get(minor)) if name]
    return {*cpython_tags((3, 11), ["cp311"], platforms), *compatible_tags((3, 11), "cp311", platforms)}


def pins(arch: str) -> dict[str, tuple[str, str, list[str]]]:
    """name: (version, wheel file name, hashes), as the lock file for `arch` has them; every line accounted for."""
    text = (ROOT / "image-build" / f"requirements-cp311-{arch}.txt").read_text(encoding="utf-8")
    body = text[text.index("\n\n") + 2:]
    found = list(PIN.finditer(body))
    assert "".join(m.group(0) for m in found) == body, "a line of the lock file is not a pin with its wheel and hash"
    return {canonicalize_name(m["name"]): (m["version"], m["wheel"], re.findall(r"[0-9a-f]{64}", m["hashes"]))
            for m in found}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_runtime_dependency_is_pinned_within_its_range_with_a_hashed_wheel_for_the_architecture(
        arch: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [Requirement(r) for r in (*project["project"]["dependencies"], *project["build-system"]["requires"],
                                       "pip")]
    locked = pins(arch)
    for requirement in wanted:
        wanted_name = canonicalize_name(requirement.name)
        assert wanted_name in locked, f"{requirement} is not in the {arch} lock (make lock)"
        version, _, _ = locked[wanted_name]
        assert requirement.specifier.contains(version, prereleases=True), f"{wanted_name}=={version} is outside " \
                                                                          f"{requirement}"
    for name, (version, wheel, hashes) in locked.items():
        assert hashes, name
        wheel_name, wheel_version, _, tags = parse_wheel_filename(wheel)
        assert (wheel_name, str(wheel_version)) == (name, version), wheel
        # The box (CPython 3.11, glibc 2.31 or newer, this architecture) installs it: pip would pick it there.
        assert tags & box_tags(arch), f"{wheel} does not install on CPython 3.11 on Linux {arch}"


def test_both_architectures_lock_the_same_packages() -> None:
    x86, arm = pins("x86_64"), pins("aarch64")
    assert {n: v for n, (v, _, _) in x86.items()} == {n: v for n, (v, _, _) in arm.items()}
    # A pure wheel is one file for both; a compiled one differs, and so does its hash.
    for name, (_, wheel, hashes) in x86.items():
        pure = all(t.platform == "any" for t in parse_tag(wheel.removesuffix(".whl").split("-", 2)[2]))
        assert (hashes == arm[name][2]) == pure, name


def test_the_installer_takes_every_package_from_the_lock_by_hash() -> None:
    script = (ROOT / "image-build" / "install.sh").read_text(encoding="utf-8")
    assert 'pip_install() { "$target/bin/python" -m pip install -q "$@"; }' in script
    installs = [line.strip() for line in script.splitlines() if re.match(r"\s*pip_install ", line)]
    assert installs == ['pip_install --require-hashes --only-binary=:all: -r "$pip_pin"',
                        'pip_install --require-hashes --only-binary=:all: -r "$LOCK"',
                        'pip_install --no-deps --no-build-isolation "$src"']
