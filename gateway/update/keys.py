"""The keys that sign bundles (ed25519): a pair made by `venue-gateway bundle-keygen`, the private key kept by
whoever builds bundles (PEM, mode 0600), its public half put on each box in the trusted directory
(/etc/venue-gateway/update-keys/NAME.pub, PEM). A key is named in a bundle by its id: the first 16 hex digits of the
SHA-256 of its raw public bytes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TRUSTED_DIR = Path("/etc/venue-gateway/update-keys")
PUBLIC_SUFFIX = ".pub"


class KeyProblem(Exception):
    """A key that cannot be made, read or used: said in one line."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate(private_path: Path) -> tuple[Path, str]:
    """A new pair: the private key at `private_path` (0600, never overwritten) and the public one beside it with
    `.pub` added; (the public file, the key id)."""
    public_path = private_path.with_name(private_path.name + PUBLIC_SUFFIX)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyProblem(f"{private_path} exists: a key is never overwritten (choose another name)") from None
    except OSError as exc:
        raise KeyProblem(f"cannot write {private_path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return public_path, key_id(key.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        if path.stat().st_mode & 0o077:
            raise KeyProblem(f"{path} is open to other users: a signing key is its owner's alone (chmod 600 {path})")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyProblem(f"cannot read the signing key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem(f"{path} is not an ed25519 key (make one with `venue-gateway bundle-keygen`)")
    return key


@dataclass(frozen=True)
class Trusted:
    """The public keys a box accepts bundles from, by id, and where they were read."""

    directory: Path
    keys: dict[str, tuple[str, Ed25519PublicKey]]  # id: (file name, key)
    unreadable: list[str]  # files in the directory that are not ed25519 public keys

    def verify(self, ident: str, signature: bytes, data: bytes) -> str:
        """The name of the trusted key `ident` whose signature of `data` this is; KeyProblem says why not."""
        found = self.keys.get(ident)
        if found is None:
            names = ", ".join(sorted(name for name, _ in self.keys.values())) or "none"
            raise KeyProblem(f"signed by key {ident}, which this box does not trust (trusted in {self.directory}: "
                            f"{names})")
        name, public = found
        try:
            public.verify(signature, data)
        except InvalidSignature:
            raise KeyProblem(f"the signature by key {ident} ({name}) does not match the manifest: the bundle was "
                            "altered after it was signed") from None
        return name


def trusted(directory: Path) -> Trusted:
    keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
    unreadable: list[str] = []
    try:
        files = sorted(p for p in directory.iterdir() if p.name.endswith(PUBLIC_SUFFIX))
    except OSError as exc:
        raise KeyProblem(f"no trusted update keys: {directory} cannot be read ({exc.strerror}); put the public key of "
                        "whoever builds the bundles there (NAME.pub)") from None
    for path in files:
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError):
            unreadable.append(path.name)
            continue
        if isinstance(public, Ed25519PublicKey):
            keys[key_id(public)] = (path.name, public)
        else:
            unreadable.append(path.name)
    if not keys:
        raise KeyProblem(f"no trusted update keys in {directory}: put the public key of whoever builds the bundles "
                        "there (NAME.pub, from `venue-gateway bundle-keygen`)")
    return Trusted(directory, keys, unreadable)
