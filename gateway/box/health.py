"""The running gateway's health, as a client on the box sees it: `/api/v1/health` on the configured listener and
scheme, its certificate compared with the one configured. With a token the box holds (a file root can read, the
environment, a demo token) it has the details the radio's and the real-time checks read: it is fetched once for
them all."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import config as configuration
from gateway import trust
from gateway.addresses import parse_listen
from gateway.api import tls
from gateway.box.check import Box


@dataclass(frozen=True)
class Health:
    url: str
    doc: dict[str, Any] | None  # None: it did not answer (`error` says why)
    detailed: bool  # answered to a token: the drivers, services and scheduling are there
    error: str | None = None
    served: str | None = None  # the fingerprint of the certificate it served (https)
    expected: str | None = None  # the fingerprint of the certificate it is configured with, where readable
    other_certificate: bool = False  # it served another certificate than `expected`: nothing was sent


def url(cfg: configuration.Config) -> str:
    host, port = parse_listen(cfg.api.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if cfg.api.https() else 'http'}://{host}:{port}"


def certificate(cfg: configuration.Config) -> Path:
    if cfg.api.cert_file is not None:
        return cfg.path.parent / cfg.api.cert_file
    return cfg.data_dir / tls.SELF_SIGNED_DIR / tls.SELF_SIGNED_CERT


def _token(cfg: configuration.Config) -> str | None:
    for token in cfg.api.tokens:
        try:
            return configuration.resolve_secret(cfg, token)
        except ValueError:
            continue  # not one this user can read
    return None


def health(box: Box) -> Health:
    """The running gateway's health, asked once for every check."""
    return box.once("health", lambda: _fetch(box))  # type: ignore[no-any-return]


def _fetch(box: Box) -> Health:
    assert box.config is not None
    cfg = box.config
    base = url(cfg)
    expected = None
    if base.startswith("https:"):
        try:
            expected = tls.file_fingerprint(certificate(cfg))
        except (OSError, ValueError):
            expected = None  # not readable by this user (or not made yet): what it serves is shown as it is
    context = None
    if base.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the pin is compared instead
    pin = tls.parse_fingerprint(expected) if expected else None
    token = _token(cfg)
    seen: list[str] = []
    for auth in ([token, None] if token else [None]):
        request = urllib.request.Request(base + "/api/v1/health",
                                         headers={"Authorization": f"Bearer {auth}"} if auth else {})
        opener = urllib.request.build_opener(trust.Handler(context, pin, seen))
        try:
            with opener.open(request, timeout=box.timeout_s) as response:
                doc = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and auth:
                continue  # a token it does not take: the status alone
            return Health(base, None, False, f"HTTP {exc.code}", seen[-1] if seen else None, expected)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return Health(base, None, False, str(reason), seen[-1] if seen else None, expected,
                          isinstance(reason, trust.CertificateRefused))
        return Health(base, doc, "drivers" in doc, None, seen[-1] if seen else None, expected)
    return Health(base, None, False, "no answer", None, expected)
