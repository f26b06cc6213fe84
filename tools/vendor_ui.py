"""`make vendor`: the dashboard's front-end libraries, fetched from the npm registry at pinned versions, checked
against their recorded SHA-256, and written into gateway/ui/static/vendor/ with their licences. The box never runs
this (nor Node): the files it writes are committed. The one change made to a library: Preact's hooks import Preact
by its package name, which a browser without a bundler or an import map cannot resolve, so that import is pointed
at the vendored file beside it.

    python -m tools.vendor_ui
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "gateway" / "ui" / "static" / "vendor"

# package, version, SHA-256 of its tarball, {file in the tarball: name in vendor/}
PACKAGES = [
    ("preact", "10.27.2", "f1d9cb453deb8d922c2f21702d719d23d24aaa3cab1a89a3dd326d0d8f6b3c70",
     {"dist/preact.module.js": "preact.module.js", "hooks/dist/hooks.module.js": "hooks.module.js",
      "LICENSE": "LICENSE-preact"}),
    ("htm", "3.1.1", "2425b9bee11409177bcabc7f32e319926fc6690c1701c0b257c88bdff2d5ba90",
     {"dist/htm.module.js": "htm.module.js", "LICENSE": "LICENSE-htm"}),
    ("uplot", "1.6.32", "4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d",
     {"dist/uPlot.esm.js": "uPlot.esm.js", "dist/uPlot.min.css": "uPlot.min.css", "LICENSE": "LICENSE-uplot"}),
]
REWRITES = {"hooks.module.js": [(b'from"preact"', b'from"./preact.module.js"')]}


def fetch(package: str, version: str, sha256: str, into: Path) -> bytes:
    print(f"npm pack {package}@{version}", flush=True)
    subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=into, check=True,
                   stdout=subprocess.DEVNULL)
    data = next(into.glob(f"{package}-{version}.tgz")).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{package}@{version}: SHA-256 {digest}, recorded {sha256}: not written")
    return data


def main() -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    lines = ["# Vendored front-end libraries", "", "Written by `make vendor` (tools/vendor_ui.py): never edit by hand.",
             "", "| package | version | tarball SHA-256 | files |", "| --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory(prefix="vendor-ui-") as tmp:
        for package, version, sha256, files in PACKAGES:
            data = fetch(package, version, sha256, Path(tmp))
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member, name in files.items():
                    extracted = tar.extractfile(f"package/{member}")
                    if extracted is None:
                        raise SystemExit(f"{package}@{version}: no {member}")
                    body = extracted.read()
                    for old, new in REWRITES.get(name, []):
                        if old not in body:
                            raise SystemExit(f"{package}@{version}: {name} no longer holds {old!r}")
                        body = body.replace(old, new)
                    (VENDOR / name).write_bytes(body)
            lines.append(f"| {package} | {version} | `{sha256}` | {', '.join(files.values())} |")
    (VENDOR / "README.md").write_text("\n".join(lines) + "\n")
    print(f"written: {VENDOR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
