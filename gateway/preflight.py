"""What a configuration needs from the box it runs on, found without starting anything: secrets that resolve, files
that are there and readable (a secret with a safe mode), the optional libraries a driver imports. `check-config`
lists every problem these find; `run` starts anyway, and the unit that needs what is missing waits for it.

Each helper answers with the problems it found (an empty list: fine), keyed like the configuration's own.
"""

from __future__ import annotations

import importlib
import os
import stat
from pathlib import Path

from gateway.schema import Problem

# A secret may be readable by the gateway's group (a 0640 file owned by root:venue-gateway), never by other users,
# and writable by no one but its owner.
UNSAFE_BITS = stat.S_IRWXO | stat.S_IWGRP
# A token, a key or a PEM private key is a few KB at most: a larger file is not one, and is not read whole.
MAX_SECRET_BYTES = 64 * 1024


def readable_file(path: Path, key: str, what: str) -> list[Problem]:
    """`path` is a regular file this user can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return [Problem(key, f"{what} {path} does not exist (allowed: the path of a readable file)")]
    except OSError as exc:
        return [Problem(key, f"{what} {path} cannot be looked at: {exc.strerror}")]
    if not stat.S_ISREG(st.st_mode):
        return [Problem(key, f"{what} {path} is not a regular file (allowed: the path of a readable file)")]
    if not os.access(path, os.R_OK):
        return [Problem(key, f"{what} {path} is not readable by this user (uid {os.geteuid()})")]
    return []


def read_secret(path: Path, what: str) -> str:
    """The text of the secret file `path`, stripped: the one way a token, key or password file is read, at
    `check-config` and at load alike. ValueError, with what to do, if it cannot be read, is not UTF-8, is empty, or
    other users may read it or anyone but its owner change it (mode & 0o027). The mode is that of the file opened,
    so a file swapped in between the check and the read is never read unchecked."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{what} {path} is not a regular file (allowed: the path of a readable file)")
            mode = stat.S_IMODE(st.st_mode)
            if mode & UNSAFE_BITS:
                raise ValueError(f"{what} {path} has mode {mode:04o}, open to other users (allowed: 0600 or 0640; "
                                 f"chmod 600 {path})")
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"{what} {path} is larger than {MAX_SECRET_BYTES // 1024} KB (allowed: a token or a key)")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    if not text:
        raise ValueError(f"{what} {path} is empty")
    return text


def secret_file(path: Path, key: str, what: str) -> list[Problem]:
    """`path` is a readable, non-empty file that other users cannot read or change (`read_secret` reads it)."""
    problems = readable_file(path, key, what)
    if problems:
        return problems
    try:
        read_secret(path, what)
    except ValueError as exc:
        return [Problem(key, str(exc))]
    return []


def environment_variable(name: str, key: str, what: str) -> list[Problem]:
    if os.environ.get(name, ""):
        return []
    return [Problem(key, f"environment variable {name} ({what}) is not set or empty (allowed: set it in the "
                         "service's EnvironmentFile, /etc/venue-gateway/environment)")]


def importable(module: str, key: str, extra: str) -> list[Problem]:
    """The optional library `module` imports: it comes with venue-gateway's `extra`."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return [Problem(key, f"needs the Python package {module!r}, which is not installed ({exc}); allowed: "
                             f"install venue-gateway[{extra}]")]
    return []


def writable_dir(path: Path, key: str) -> list[Problem]:
    """`path` is a directory this user can write, or one it can create."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [Problem(key, f"{path}: {existing} is not a directory")]
    if not os.access(existing, os.W_OK | os.X_OK):
        told = "" if existing == path else f" (it would be created in {existing})"
        return [Problem(key, f"{path} is not writable by this user (uid {os.geteuid()}){told}")]
    return []
