"""HTTPS for the API: the server's TLS context from the configured certificate and key, or from a self-signed pair
made once in the data directory; and certificate fingerprints (SHA-256 of the DER form), which the CLI pins.

A self-signed certificate is trusted by pinning: its fingerprint is logged when the API starts, `venue-gateway
status` prints the one it was served, and a client given `--fingerprint` (or VENUE_GATEWAY_FINGERPRINT) accepts that
certificate and no other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

SELF_SIGNED_DIR = "tls"
SELF_SIGNED_CERT = "api.pem"
SELF_SIGNED_KEY = "api.key"
SELF_SIGNED_DAYS = 3650  # a box's lifetime: nothing renews it, and its clients pin it, not its dates
_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as `openssl x509 -fingerprint -sha256` writes it
    (AB:CD:...)."""
    return digest_text(hashlib.sha256(der).digest())


def digest_text(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def parse_fingerprint(text: str) -> bytes:
    """A SHA-256 fingerprint as given on a command line (with or without colons, either case, an optional
    `sha256:` or `SHA256 Fingerprint=` in front) as its 32 bytes; ValueError says what is allowed."""
    cleaned = text.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        cleaned = cleaned.removeprefix(prefix)
    cleaned = cleaned.replace(":", "").replace(" ", "")
    if not _HEX.fullmatch(cleaned):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (allowed: 64 hexadecimal digits, colons between "
                         "pairs or not, as the gateway logs it at start)")
    return bytes.fromhex(cleaned)


def file_fingerprint(cert_file: Path) -> str:
    """The fingerprint of the first certificate of a PEM file (the server's own, before its chain)."""
    pem = cert_file.read_text(encoding="ascii")
    start = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem[start:end]))


def self_signed(data_dir: Path, name: str) -> tuple[Path, Path]:
    """The self-signed certificate and key of this box in `data_dir`/tls, made on the first call (the key readable
    by its owner only) and the same ever after, so that a fingerprint pinned once stays valid."""
    directory = data_dir / SELF_SIGNED_DIR
    cert_file, key_file = directory / SELF_SIGNED_CERT, directory / SELF_SIGNED_KEY
    if cert_file.exists() and key_file.exists():
        # (a directory restored from a copy that lost its modes: the key is made its owner's only again, with a log)
        for path, mode in ((directory, 0o700), (key_file, 0o600)):
            if path.stat().st_mode & 0o077:
                log.warning("API: %s was open to other users; made %o", path, mode)
                path.chmod(mode)
        return cert_file, key_file
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    hosts = sorted({"localhost", socket.gethostname()})
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName([*map(x509.DNSName, hosts),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    # The key first, created with its mode (never readable by others, not even for a moment), then the certificate:
    # a crash in between leaves no certificate, and the next start makes both again.
    key_tmp, cert_tmp = key_file.with_suffix(".key.tmp"), cert_file.with_suffix(".pem.tmp")
    for path, data, mode in ((key_tmp, key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()), 0o600),
                             (cert_tmp, cert.public_bytes(serialization.Encoding.PEM), 0o644)):
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    key_tmp.replace(key_file)
    cert_tmp.replace(cert_file)
    return cert_file, key_file


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context of TLS 1.2 and later with this certificate; OSError or ssl.SSLError says what is wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
