"""The bundle: one uncompressed tar file (its wheels are compressed already) holding a manifest, the manifest's
ed25519 signature, and the members the manifest lists with the SHA-256 and size of each:

    manifest.json   {"format": 1, "label", "version", "created", "python": "cp311", "arch": "aarch64",
                     "project": "wheels/venue_gateway-....whl", "members": {NAME: {"sha256", "size"}}}
    manifest.sig    {"key": KEY ID, "algorithm": "ed25519", "signature": BASE64 of the signature of manifest.json}
    wheels/*.whl    the project's wheel and the wheel of every locked dependency for the target
    models/*        the shipped models and their cards
    share/*         README.md

A bundle is refused, with nothing installed, when it is unsigned, its signature is bad or by a key the box does not
trust, a member is missing, unlisted, not a plain file, named outside the bundle's areas (`../`, an absolute path),
or its hash or size differ from the manifest's."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.update.keys import KeyProblem, Trusted, key_id
from gateway.update.layout import is_label

FORMAT = 1
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
AREAS = ("wheels", "models", "share")
MAX_MEMBERS = 4096
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CHUNK = 1 << 20


class BundleError(Exception):
    """A bundle refused: why, in one line. Nothing was installed."""


@dataclass(frozen=True)
class Member:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    label: str
    version: str
    created: str
    python: str  # the CPython tag of the box's interpreter, "cp311"
    arch: str  # the box's machine, as `uname -m` says it: aarch64, x86_64
    project: str  # the project's wheel among the members
    members: dict[str, Member]

    def document(self) -> dict[str, Any]:
        return {"format": FORMAT, "label": self.label, "version": self.version, "created": self.created,
                "python": self.python, "arch": self.arch, "project": self.project,
                "members": {n: {"sha256": m.sha256, "size": m.size} for n, m in sorted(self.members.items())}}

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members.values())

    def wheels(self) -> list[str]:
        return sorted(n for n in self.members if n.startswith("wheels/"))


def check_label(label: str) -> str:
    if not is_label(label):
        raise BundleError(f"{label!r} is not a version label (allowed: letters, digits and . _ + -, starting with a "
                          "letter or digit, at most 100)")
    return label


def member_problem(name: str) -> str | None:
    """Why `name` cannot be a member's name (None when it can): a relative path inside one of the areas, with no
    empty, `.` or `..` part."""
    if "\\" in name or "\0" in name:
        return "has a backslash or a NUL in its name"
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return "escapes the bundle (an absolute path, or . or .. in it)"
    if len(parts) < 2 or parts[0] not in AREAS:
        return f"is outside the bundle's areas ({', '.join(AREAS)})"
    return None


def _parse_manifest(raw: bytes) -> Manifest:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BundleError(f"the manifest is not of format {FORMAT} (this updater reads format {FORMAT})")
        members = {str(n): Member(str(m["sha256"]), int(m["size"])) for n, m in dict(doc["members"]).items()}
        manifest = Manifest(check_label(str(doc["label"])), str(doc["version"]), str(doc["created"]),
                            str(doc["python"]), str(doc["arch"]), str(doc["project"]), members)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"the manifest cannot be read: {exc!r}") from None
    for name in manifest.members:
        problem = member_problem(name)
        if problem is not None:
            raise BundleError(f"member {name!r} {problem}: refused")
    if manifest.project not in manifest.members or not manifest.project.endswith(".whl"):
        raise BundleError(f"the manifest's project wheel {manifest.project!r} is not among its members")
    return manifest


def _hash(stream: IO[bytes], out: IO[bytes] | None = None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest(), size


def write(path: Path, manifest: Manifest, files: dict[str, Path], key: Ed25519PrivateKey) -> None:
    """Write the bundle: `files` are the members (by name), whose hashes `manifest` already holds (see `describe`);
    written beside `path` and renamed onto it."""
    raw = json.dumps(manifest.document(), indent=1).encode() + b"\n"
    signature = {"key": key_id(key.public_key()), "algorithm": "ed25519",
                 "signature": base64.b64encode(key.sign(raw)).decode()}
    partial = path.with_name(path.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((MANIFEST, raw), (SIGNATURE, json.dumps(signature).encode() + b"\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = manifest.members[name].size, 0o644, 0
            with files[name].open("rb") as f:
                tar.addfile(info, f)
    os.replace(partial, path)


def describe(files: dict[str, Path]) -> dict[str, Member]:
    members = {}
    for name, path in files.items():
        with path.open("rb") as f:
            members[name] = Member(*_hash(f))
    return members


@dataclass(frozen=True)
class Verified:
    path: Path
    manifest: Manifest
    key: str  # the trusted key's file name


def verify(path: Path, keys: Trusted) -> Verified:
    """Check the whole bundle before anything is written: its signature by a trusted key, then every member against
    the manifest (name, type, hash, size). BundleError says why it is refused."""
    try:
        with tarfile.open(path, "r:") as tar:
            infos = _members(tar)
            raw = _small(tar, infos.get(MANIFEST), "is not a bundle: it has no manifest.json")
            sig_raw = _small(tar, infos.get(SIGNATURE), "is not signed (no manifest.sig): refused")
            key_name = _check_signature(keys, raw, sig_raw)
            manifest = _parse_manifest(raw)
            listed, present = set(manifest.members), set(infos) - {MANIFEST, SIGNATURE}
            if present - listed:
                raise BundleError(f"member {sorted(present - listed)[0]} is not in the manifest: refused")
            if listed - present:
                raise BundleError(f"member {sorted(listed - present)[0]} of the manifest is missing: refused")
            for name in sorted(listed):
                stream = tar.extractfile(infos[name])
                assert stream is not None  # a regular file, checked by _members
                _expect(name, manifest.members[name], *_hash(stream))
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path} is not a readable bundle (a tar file): {exc}") from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    return Verified(path, manifest, key_name)


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    infos: dict[str, tarfile.TarInfo] = {}
    for info in tar:
        if len(infos) >= MAX_MEMBERS:
            raise BundleError(f"has more than {MAX_MEMBERS} members: refused")
        name = info.name
        if name not in (MANIFEST, SIGNATURE):
            problem = member_problem(name)
            if problem is not None:
                raise BundleError(f"member {name!r} {problem}: refused")
        if not info.isreg():
            raise BundleError(f"member {name!r} is not a plain file (a link, a directory or a device): refused")
        if name in infos:
            raise BundleError(f"member {name!r} is in the bundle twice: refused")
        infos[name] = info
    return infos


def _small(tar: tarfile.TarFile, info: tarfile.TarInfo | None, missing: str) -> bytes:
    if info is None:
        raise BundleError(missing)
    if info.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{info.name} is larger than {MAX_MANIFEST_BYTES // 1048576} MB: refused")
    stream = tar.extractfile(info)
    assert stream is not None
    return stream.read()


def _check_signature(keys: Trusted, raw: bytes, sig_raw: bytes) -> str:
    try:
        doc = json.loads(sig_raw)
        ident, algorithm = str(doc["key"]), str(doc["algorithm"])
        signature = base64.b64decode(str(doc["signature"]), validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BundleError(f"manifest.sig cannot be read ({exc!r}): refused") from None
    if algorithm != "ed25519":
        raise BundleError(f"signed with {algorithm!r} (allowed: ed25519): refused")
    try:
        return keys.verify(ident, signature, raw)
    except KeyProblem as exc:
        raise BundleError(f"{exc}: refused") from None


def _expect(name: str, member: Member, sha256: str, size: int) -> None:
    if sha256 != member.sha256 or size != member.size:
        raise BundleError(f"member {name}: its SHA-256 differs from the manifest's (the bundle was altered or damaged "
                          "after it was signed): refused")


def extract(verified: Verified, dest: Path) -> None:
    """Write every member under `dest` (a new directory), hashing it again as it is written: a bundle changed on
    disk since `verify` is refused here too."""
    manifest = verified.manifest
    dest.mkdir(mode=0o755)
    try:
        with tarfile.open(verified.path, "r:") as tar:
            infos = _members(tar)
            for name in sorted(manifest.members):
                if name not in infos:
                    raise BundleError(f"member {name} of the manifest is missing: refused")
                target = dest.joinpath(*PurePosixPath(name).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                stream = tar.extractfile(infos[name])
                assert stream is not None
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    _expect(name, manifest.members[name], *_hash(stream, out))
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{verified.path} cannot be read any more: {exc}") from None
