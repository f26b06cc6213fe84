"""A version from an unpacked bundle: a virtual environment made with the box's Python in versions/.build-<label>,
its wheels installed offline by the bundle's own pip (no index, no resolving: exactly the bundle's wheels), the
models and share/ copied in, then renamed to versions/<label>.

A virtual environment is not relocatable (pip writes the interpreter's path into every script), so it is built
through versions/<label> as a link to the build directory: the scripts name the final path, and the rename that
replaces the link puts a whole version there in one step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.durable import sync_directory
from gateway.update.bundle import Manifest
from gateway.update.layout import Layout


class InstallError(Exception):
    """The version cannot be built (pip failed, the disk is full): nothing was switched."""


def base_python() -> str:
    """The interpreter the running version was made from: the new one is made from the same."""
    return str(getattr(sys, "_base_executable", sys.executable))


def python_tag() -> str:
    return f"cp{sys.version_info[0]}{sys.version_info[1]}"


def build(layout: Layout, manifest: Manifest, unpacked: Path, *, compile_bytecode: bool = True) -> Path:
    label = manifest.label
    build_dir = layout.versions / f".build-{label}"
    final = layout.path(label)
    os.umask(0o022)  # the code is read by the service's user, written by root alone
    _run([base_python(), "-m", "venv", "--without-pip", str(build_dir)], "making the virtual environment")
    final.symlink_to(build_dir.name)
    wheels = [str(unpacked / name) for name in manifest.wheels()]
    pips = [w for w in wheels if Path(w).name.startswith("pip-")]
    if not pips:
        raise InstallError("the bundle has no pip wheel to install its wheels with")
    # pip run from its wheel, with no configuration of this machine (an index, constraints) and nothing fetched.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    _run([str(final / "bin" / "python"), f"{pips[0]}/pip", "install", "--quiet", "--no-index", "--no-deps",
          "--no-cache-dir", "--disable-pip-version-check", *([] if compile_bytecode else ["--no-compile"]), *wheels],
         "installing the wheels", env)
    for area in ("models", "share"):
        if (unpacked / area).is_dir():
            shutil.copytree(unpacked / area, build_dir / area, dirs_exist_ok=True)
            _readable(build_dir / area)
    about = {k: v for k, v in manifest.document().items() if k != "members"}
    (build_dir / "share" / "bundle.json").write_text(json.dumps(about, indent=1) + "\n", encoding="utf-8")
    _name_activation(build_dir, final)
    final.unlink()
    os.rename(build_dir, final)
    sync_directory(layout.versions)
    return final


def _readable(tree: Path) -> None:
    """Every directory 0755 and file 0644 under `tree`: the service's user reads them, whatever modes they came
    with."""
    os.chmod(tree, 0o755)
    for here, dirs, files in os.walk(tree):
        for name in dirs:
            os.chmod(os.path.join(here, name), 0o755)
        for name in files:
            os.chmod(os.path.join(here, name), 0o644)


def _name_activation(build_dir: Path, final: Path) -> None:
    """The activation scripts (`source bin/activate`) name the directory the environment was made in: the final
    one instead."""
    for script in (build_dir / "bin").glob("activate*"):
        text = script.read_text(encoding="utf-8")
        script.write_text(text.replace(str(build_dir), str(final)), encoding="utf-8")


def _run(argv: list[str], doing: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise InstallError(f"{doing} failed (exit {done.returncode})" + (f": {said[-1]}" if said else ""))
