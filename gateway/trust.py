"""How the `venue-gateway` commands trust a gateway's certificate (gateway.client uses it): a pinned SHA-256
fingerprint (a gateway's own self-signed certificate), compared after the handshake and before a byte of the request
(and its token) is sent; or the CA that signed it. And what to tell the tech when neither holds: the fingerprint the
gateway serves, to pin if it is the one the gateway logged."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.client
import socket
import ssl
import urllib.parse
import urllib.request
from typing import Any

from gateway.api import tls


class CertificateRefused(OSError):
    """The gateway's certificate is not the one pinned: nothing was sent to it."""


def pin(args: argparse.Namespace) -> bytes | None:
    if not getattr(args, "fingerprint", None):
        return None
    try:
        return tls.parse_fingerprint(str(args.fingerprint))
    except ValueError as exc:
        raise RuntimeError(f"--fingerprint: {exc}") from None


def context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client context for an https URL: with a pinned fingerprint, any certificate is taken through the
    handshake and then compared with the pin before a byte is sent; else it must chain to the CA (and name the
    host)."""
    if not str(args.url).startswith("https:"):
        return None
    if pin(args) is not None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=args.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise RuntimeError(f"the CA file {args.ca_file} cannot be used: {exc}") from None


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection that notes the certificate it was served and, when one is pinned, refuses any other
    before the request (and its token) is sent."""

    def __init__(self, *args: Any, pin: bytes | None, seen: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pin, self._seen = pin, seen

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True) or b""
        self._seen.append(tls.fingerprint(der))
        if self._pin is not None and hashlib.sha256(der).digest() != self._pin:
            self.sock.close()
            raise CertificateRefused(f"its certificate's SHA-256 fingerprint is {tls.fingerprint(der)}, not the one "
                                     "given with --fingerprint: refused, nothing sent")


class Handler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext | None, pin: bytes | None, seen: list[str]) -> None:
        super().__init__(context=context)
        self._tls, self._pin, self._seen = context, pin, seen

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_Connection, pin=self._pin, seen=self._seen)
        return self.do_open(connection, req, context=self._tls)


def served_fingerprint(url: str, timeout: float) -> str | None:
    """The fingerprint of the certificate `url` serves, taken without trusting it (to say what to pin)."""
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 443), timeout) as raw, \
                context.wrap_socket(raw, server_hostname=parts.hostname) as sock:
            return tls.fingerprint(sock.getpeercert(binary_form=True) or b"")
    except (OSError, ValueError):
        return None


def unreachable(args: argparse.Namespace, reason: Any) -> RuntimeError:
    if isinstance(reason, ssl.SSLCertVerificationError):
        served = served_fingerprint(str(args.url), args.timeout)
        how = (f"its SHA-256 fingerprint is {served}: if it is the one the gateway logged at start, pin it with "
               f"--fingerprint {served} (or VENUE_GATEWAY_FINGERPRINT), or give its CA with --ca-file"
               if served else "give its CA with --ca-file, or pin its fingerprint with --fingerprint")
        return RuntimeError(f"the certificate of the gateway at {args.url} is not trusted "
                            f"({reason.verify_message}): {how}")
    if isinstance(reason, http.client.RemoteDisconnected) and str(args.url).startswith("http:"):
        # a box off loopback serves HTTPS, and closes a connection that does not begin with a TLS handshake
        return RuntimeError(f"cannot reach the gateway at {args.url}: {reason} (off loopback the API is HTTPS: "
                            f"try {args.url.replace('http:', 'https:', 1)})")
    return RuntimeError(f"cannot reach the gateway at {args.url}: {reason}")
