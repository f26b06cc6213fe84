"""`venue-gateway first-boot`: what a new box does once, as root, before the gateway's first start (a oneshot unit
ordered before venue-gateway.service): its host name from the box, the API's tokens and TLS certificate, the
shipped configuration turned to that certificate, and the tokens and the certificate's fingerprint shown once on
the console. Every file is written whole or not at all (gateway.box.files) and nothing that exists is replaced, so
a power cut at any point is mended by the next boot, which runs it again; once it has finished it records so in
the state directory, and runs after that only say so."""

from __future__ import annotations

import datetime as dt
import grp
import json
import re
import secrets
import shutil
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway import config as configuration
from gateway.api import tls
from gateway.box import files, hostname

MARKER = "first-boot.json"  # in the state directory: when first boot finished, and what it made
ROLES = ("admin", "operator")  # tokens/<role> in the configuration directory, as config/venue.example.toml names them
GROUP = "venue-gateway"
CERT, KEY = "api.pem", "api.key"
ENVIRONMENT = "environment"  # the unit's EnvironmentFile in the configuration directory: NAME=value lines, 0600 root
# The shipped example's commented lines for the API's certificate, in its [api] table.
_COMMENTED = re.compile(r'^#[ \t]*(cert_file|key_file)[ \t]*=[ \t]*"[^"\n]*"', re.MULTILINE)
_TABLE = re.compile(r"^[ \t]*\[", re.MULTILINE)


@dataclass(frozen=True)
class Options:
    etc: Path = Path("/etc/venue-gateway")
    state: Path = Path("/var/lib/venue-gateway")
    group: str = GROUP  # the gateway's group: it reads the tokens and the key (0640); without it, 0600 for root
    hostname_from: tuple[Path, ...] = hostname.SOURCES
    hostname_file: Path | None = None  # the host name written there instead of set (an image being made, a test)
    console: str = "/dev/console"  # where the secrets are shown once; "-" for standard output


def record(state: Path) -> dict[str, object] | None:
    """What the finished first boot recorded, or None before it has finished."""
    try:
        doc = json.loads((state / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def run(options: Options, out: TextIO) -> int:
    """Do what is left of the first boot, saying each step on `out` (the journal: never a secret there)."""
    done = record(options.state)
    if done is not None:
        print(f"first boot was done at {done.get('done_at')} (host name {done.get('hostname')}): nothing to do",
              file=out)
        return 0
    try:
        gid: int | None = grp.getgrnam(options.group).gr_gid
    except KeyError:
        gid = None
        print(f"no group {options.group}: the tokens and the key are made 0600, for their owner alone", file=out)
    secret_mode = 0o640 if gid is not None else 0o600

    name = _hostname(options, out)
    files.directory(options.etc, 0o750, gid)
    files.directory(options.etc / "tokens", 0o750, gid)
    tokens = {}
    for role in ROLES:
        path = options.etc / "tokens" / role
        made = files.create(path, f"{secrets.token_hex(32)}\n".encode(), secret_mode, gid)
        print(f"{role} token {path}: {'made' if made else 'kept (it was there)'}", file=out)
        tokens[role] = path.read_text(encoding="utf-8").strip()
    tokens |= _environment_tokens(options.etc, out)
    made_cert, key = _certificate(options.etc, name, gid, secret_mode, out)
    print(f"API certificate {made_cert}: SHA-256 {tls.file_fingerprint(made_cert)}", file=out)
    said, cert = _configure(options.etc / "gateway.toml", made_cert, key)
    print(said, file=out)
    try:
        fingerprint = tls.file_fingerprint(cert) if cert is not None else None
    except (OSError, ValueError):
        fingerprint = None  # the venue's own, not there yet

    _show(options.console, name, tokens, cert, fingerprint, options.etc, out)
    doc = {"done_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "hostname": name,
           "tokens": {role: str(options.etc / "tokens" / role) for role in ROLES},
           "certificate": str(cert) if cert else None, "fingerprint": fingerprint}
    if not options.state.exists():
        files.directory(options.state, 0o750)
    files.replace(options.state / MARKER, (json.dumps(doc, indent=2) + "\n").encode(), 0o644)
    print(f"first boot done: recorded in {options.state / MARKER}", file=out)
    return 0


def _hostname(options: Options, out: TextIO) -> str:
    try:
        name, source = hostname.derive(options.hostname_from)
    except OSError as exc:
        name = hostname.current(options.hostname_file)
        print(f"host name left as {name!r}: {exc}", file=out)
        return name
    if hostname.current(options.hostname_file) == name:
        print(f"host name {name} (from {source}): already set", file=out)
    else:
        print(f"host name {name} (from {source}): {hostname.set_hostname(name, options.hostname_file)}", file=out)
    return name


def _environment_tokens(etc: Path, out: TextIO) -> dict[str, str]:
    """The configuration's tokens that come from an environment variable (the example's viewer token for the cloud
    backend, `env = "VG_TOKEN_CLOUD"`), made in the unit's environment file where it does not set them yet: the
    gateway does not start with a token it cannot read. Keyed by the variable, for the console."""
    try:
        doc = tomllib.loads((etc / "gateway.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    api = doc.get("api")
    entries = api.get("tokens") if isinstance(api, dict) else None
    names = [t["env"] for t in entries if isinstance(t, dict) and isinstance(t.get("env"), str)
             and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t["env"])] if isinstance(entries, list) else []
    path = etc / ENVIRONMENT
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    present = {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line}
    made = {name: secrets.token_hex(32) for name in dict.fromkeys(names) if name not in present}
    if not made:
        return {}
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{name}={secret}\n" for name, secret in made.items())
    files.replace(path, text.encode("utf-8"), 0o600)
    print(f"{', '.join(made)} (named by the configuration's tokens) made in {path}", file=out)
    return made


def _certificate(etc: Path, name: str, gid: int | None, mode: int, out: TextIO) -> tuple[Path, Path]:
    """The API's certificate and key in `etc`, made (self-signed, as the gateway makes its own) unless both are
    there. The key is written first and the certificate last, so a certificate there means a whole pair."""
    cert, key = etc / CERT, etc / KEY
    if cert.exists() and key.exists():
        print(f"API certificate {cert}: kept (it was there)", file=out)
        return cert, key
    work = etc / ".first-boot-tls"
    shutil.rmtree(work, ignore_errors=True)
    try:
        made_cert, made_key = tls.self_signed(work, name or socket.gethostname())
        files.replace(key, made_key.read_bytes(), mode, gid)
        files.replace(cert, made_cert.read_bytes(), 0o644, gid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cert, key


def _configure(path: Path, cert: Path, key: Path) -> tuple[str, Path | None]:
    """Turn the shipped example's API to the certificate made here (its commented `cert_file` and `key_file`
    lines in [api], made real); a configuration of the venue's own is left as it is. Says what it did, and which
    certificate file the API serves (None: one the gateway makes itself at its first start)."""
    try:
        text = path.read_text(encoding="utf-8")
        api = configuration.parse(path, text).api
    except OSError as exc:
        return f"configuration {path}: not there ({exc.strerror}); the API's certificate is {cert}", cert
    except configuration.ConfigError as exc:
        return f"configuration {path}: left as it is, it does not load ({exc.problems[0]})", None
    if api.cert_file is not None:
        return f"configuration {path}: names its own certificate ({api.cert_file}), left as it is", \
            path.parent / api.cert_file
    changed = _example_with(text, cert, key) if api.tls != "off" else None
    if changed is None:
        return (f"configuration {path}: not the shipped example (no commented cert_file and key_file in [api]), "
                f'left as it is: set api.cert_file = "{cert}" and api.key_file = "{key}" to use them'), None
    configuration.parse(path, changed)  # (the example's lines made real: it loads as it did)
    st = path.stat()
    files.replace(path, changed.encode("utf-8"), st.st_mode & 0o7777, st.st_gid)
    return f"configuration {path}: the API serves HTTPS with {cert}", cert


def _example_with(text: str, cert: Path, key: Path) -> str | None:
    """The shipped example's text with the commented certificate lines of its [api] table made real; None for a
    text without them."""
    start = re.search(r"^\[api\][ \t]*$", text, re.MULTILINE)
    if start is None:
        return None
    end = _TABLE.search(text, start.end())
    stop = end.start() if end else len(text)
    table = text[start.end():stop]
    if sorted(m.group(1) for m in _COMMENTED.finditer(table)) != ["cert_file", "key_file"]:
        return None
    made = {"cert_file": cert, "key_file": key}
    table = _COMMENTED.sub(lambda m: f'{m.group(1)} = "{made[m.group(1)]}"', table)
    return text[:start.end()] + table + text[stop:]


def _show(console: str, name: str, tokens: dict[str, str], cert: Path | None, fingerprint: str | None,
          etc: Path, out: TextIO) -> None:
    """The secrets, once, where the person at the box sees them and the journal does not keep them."""
    rule = "=" * 78
    if fingerprint is not None:
        certificate = [f"  API certificate  SHA-256 {fingerprint}",
                       f"  ({cert}: pin it, venue-gateway status --url https://BOX:8080 --fingerprint "
                       f"{fingerprint[:8]}...)"]
    else:
        certificate = [f"  API certificate  {cert or 'made by the gateway at its first start'}: its fingerprint is "
                       "in `sudo venue-gateway doctor`"]
    text = "\n".join([
        rule, f"venue-gateway: this box is {name}. Note these now; they are shown this once.",
        *(f"  {role:<9} token  {secret}" for role, secret in tokens.items()), *certificate,
        f"On the box, `sudo venue-gateway doctor` shows them again (they are in {etc / 'tokens'}).", rule, ""])
    if console == "-":
        out.write(text)
        return
    try:
        with open(console, "w", encoding="utf-8") as screen:
            screen.write(text)
    except OSError as exc:
        print(f"the tokens could not be shown on {console} ({exc.strerror}): `sudo venue-gateway doctor` shows them",
              file=out)
